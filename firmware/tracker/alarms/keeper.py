# The app's side of alarms: runs the rules on every reading, keeps their state (and the
# cold-chain window and trip) on flash, and puts each event on the priority lane exactly once,
# across reboots and power cuts.
#
# Exactly once: an event is first written into the state file's outbox with the sequence
# number the alarm store will give it, then appended to the store, then the outbox is
# emptied. A cut before the state write loses nothing (the rules had not moved on either: the
# reading re-evaluates after the reboot); a cut between the two writes leaves the event in the
# outbox, and at boot it is appended unless the store already holds that number.
import json
import os

from tracker import log
from tracker.alarms.coldchain import Stats, Trip
from tracker.alarms.rules import AlarmRules
from tracker.store.layout import write_atomic

_TAG = "alarm"
STATE_PATH = "alarms.json"
STATS_EVERY = 10  # readings between state writes when only the statistics moved
_MAX_STATE_BYTES = 8192


def _load(path):
    try:
        # The size first: read(n) on MicroPython allocates n bytes whatever the file holds.
        if os.stat(path)[6] > _MAX_STATE_BYTES:
            raise ValueError("too big")
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}
    except ValueError:
        text = ""
    try:
        state = json.loads(text) if text else None
    except ValueError:
        state = None
    if not isinstance(state, dict):
        log.w(_TAG, "%s unreadable: alarm state starts afresh" % path)
        return {}
    return state


class AlarmKeeper:
    def __init__(self, cfg, store, device_id, path=STATE_PATH):
        self.cfg = cfg
        self.store = store  # the priority lane (tracker.store.queue.Store)
        self.device_id = device_id
        self.path = path
        self.rules = AlarmRules(cfg)
        self.window = Stats(cfg)  # the reporting window (stats_window_s) in progress
        self.window_end = None  # Unix second the window closes (set by its first reading)
        self.trip = Trip(cfg)
        self.counters = {"events": 0, "replayed": 0}
        self._since_save = 0
        state = _load(path)
        try:
            self.rules.restore(state.get("rules") or {})
            if self.window.restore(state.get("window")):
                end = state.get("window_end")
                self.window_end = end if isinstance(end, int) else None
            self.trip.restore(state.get("trip"))
        except Exception as e:  # noqa: BLE001 (a state file must never stop the tracker)
            log.w(_TAG, "alarm state not restored: %s" % e)
        self._replay(state.get("outbox") or [])

    def _replay(self, outbox):
        for item in outbox:
            try:
                seq, rec = item
            except (TypeError, ValueError):
                continue
            if isinstance(seq, int) and self.store.next_seq > seq:
                continue  # appended before the cut
            if isinstance(rec, dict):
                rec["seq"] = self.store.next_seq
                self.store.append(json.dumps(rec).encode())
                self.counters["replayed"] += 1
                log.w(_TAG, "alarm %s %s recovered after a power cut"
                      % (rec.get("alarm"), rec.get("state")))  # fmt: skip
        if outbox:
            self._save([])

    def _save(self, outbox):
        state = {
            "rules": self.rules.state(),
            "window": self.window.state(),
            "window_end": self.window_end,
            "trip": self.trip.state(),
            "outbox": outbox,
        }
        write_atomic(self.path, json.dumps(state))
        self._since_save = 0

    def reading(self, reading, now_s, position=None):
        """Run the rules and statistics on one stored reading. Returns the window summary
        when this reading closes a reporting window (for the telemetry record), else None;
        alarm events go to the priority lane before it returns."""
        events = self.rules.evaluate(reading, now_s, position)
        t = reading.get("temperature")
        window = None
        if self.window_end is None:
            self.window_end = now_s + self.cfg["stats_window_s"]
        self.window.add(t, now_s)
        self.trip.add(t, now_s)
        if now_s >= self.window_end:
            window = self.window.close()
            window["end"] = now_s
            self.window_end = now_s + self.cfg["stats_window_s"]
        self._since_save += 1
        if events:
            outbox = []
            seq = self.store.next_seq
            for ev in events:
                rec = {"device_id": self.device_id, "seq": seq, "ts": now_s}
                rec.update(ev)
                outbox.append([seq, rec])
                seq += 1
            self._save(outbox)
            for _seq, rec in outbox:
                self.store.append(json.dumps(rec).encode())
                self.counters["events"] += 1
                log.w(_TAG, "%s %s (value %s, limit %s)" % (rec.get("alarm"), rec.get("state"),
                      rec.get("value"), rec.get("limit")))  # fmt: skip
            self._save([])
        elif self.rules.changed or window is not None or self._since_save >= STATS_EVERY:
            self._save([])
        return window, len(events)

    def flush(self):
        """Save the statistics now (before a reboot or deep sleep): between saves a power cut
        loses at most STATS_EVERY - 1 readings of them, never an alarm."""
        if self._since_save:
            self._save([])

    def configure(self, now_s=None):
        """The config changed: rebuild the rules, keeping what did not change."""
        self.rules.configure(self.cfg, now_s)
        self.window.configure(self.cfg)
        self.trip.configure(self.cfg)

    def start_trip(self, now_s):
        if self.trip.running:
            raise ValueError("a trip is already running (since %s)" % self.trip.started_at)
        self.trip.start(now_s)
        self._save([])
        return self.trip.summary(now_s)

    def stop_trip(self, now_s):
        if not self.trip.running:
            raise ValueError("no trip is running")
        summary = self.trip.stop(now_s)
        self._save([])
        return summary

    def status(self, now_s=None):
        return {
            "active": self.rules.active(),
            "trip": self.trip.summary(now_s),
            "lane": {"pending": self.store.pending(), "next_seq": self.store.next_seq},
            "events": self.counters["events"],
        }
