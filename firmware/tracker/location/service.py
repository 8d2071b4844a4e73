# The location module: when GNSS is powered, what the last position is and how old, and when
# movement calls for a report (docs/location.md).
#
#   searching --fix--> tracking --no movement for stationary_after_s--> parked (GNSS off)
#   searching --gnss_fix_timeout_s without a fix--> resting (GNSS off)
#   parked / resting --every parked_check_s--> searching; a fix that moved move_distance_m
#   from where it parked means tracking again, otherwise parked again.
# While tracking, a fix that moved move_distance_m or turned move_heading_deg since the last
# reported one asks the app for a reading (the app keeps report_min_s between readings).
# A missing fix never blocks anything: readings carry the last position and its age, or the
# reason there is none.
from tracker import log
from tracker.aio import sleep_ms, ticks_add, ticks_diff, ticks_ms
from tracker.location.fix import distance_m, heading_change

_TAG = "gnss"
POLL_MS = 1000  # receivers report at 1 Hz (a receiver may ask for less: poll_ms)
MIN_HEADING_SPEED = 1.0  # m/s: below it a GNSS course is noise


class Location:
    def __init__(self, receiver, cfg, clock=ticks_ms):
        self.receiver = receiver
        self.cfg = cfg
        self._clock = clock
        self.state = "off"
        self.last = None  # the last Fix this boot
        self.triggered = None  # why the app should take a reading now ("distance", ...)
        self.ttff_ms = None  # time to first fix of the last session that got one
        self.counters = {
            k: 0 for k in "fixes sessions timeouts triggers parks unparks on_ms".split()
        }
        self._on_at = None  # ticks_ms() GNSS went on, or None while it is off
        self._session_at = 0  # when the current search began
        self._checking = False  # a search out of parked: decides parked vs moving
        self._fresh = False  # no fix yet since GNSS went on
        self._locate_report = False  # locate(): the next fix asks for a reading
        self._anchor = None  # where the asset last moved (stationary detection)
        self._moved_at = 0
        self._reported = None  # the fix of the last reading
        self._next_check = 0
        self._locate = False

    # ---- what the app reads -------------------------------------------------------------

    def snapshot(self):
        """(last Fix or None, why the GNSS has no current fix or None, fix age in s or None)."""
        fix = self.last
        age = None if fix is None else ticks_diff(self._clock(), fix.at) // 1000
        return fix, self.reason(), age

    def reason(self):
        if self.receiver is None:
            return None
        if self.cfg["gnss"] == "off":
            return "off"
        if self.state in ("tracking", "parked"):
            return None
        if self.state == "resting":
            return "timeout"
        return self.receiver.reason or "searching"

    def reported(self, fix):
        """The app put `fix` in a reading: movement is measured from it from now on."""
        self._reported = fix
        self.triggered = None

    def locate(self):
        """A fresh fix wanted now (technician or remote command): search at once, and the
        next fix asks for a reading of its own."""
        self._locate = True
        self._locate_report = True

    def on_seconds(self):
        ms = self.counters["on_ms"]
        if self._on_at is not None:
            ms += ticks_diff(self._clock(), self._on_at)
        return ms // 1000

    def status(self):
        fix, reason, age = self.snapshot()
        receiver = dict(self.receiver.counters)
        nmea = getattr(self.receiver, "nmea", None)
        if nmea is not None:  # what the NMEA parser refused (bad checksums, garbage)
            receiver.update(nmea.counters)
        return {
            "source": self.receiver.source if self.receiver else None,
            "state": self.state,
            "reason": reason,
            "fix_age_s": age,
            "ttff_s": None if self.ttff_ms is None else self.ttff_ms / 1000,
            "on_s": self.on_seconds(),
            "fixes": self.counters["fixes"],
            "sessions": self.counters["sessions"],
            "timeouts": self.counters["timeouts"],
            "triggers": self.counters["triggers"],
            "parks": self.counters["parks"],
            "receiver": receiver,
        }

    # ---- the task -----------------------------------------------------------------------

    async def run(self):
        every = getattr(self.receiver, "poll_ms", POLL_MS) if self.receiver else POLL_MS
        while True:
            await self.step()
            await sleep_ms(every)

    async def step(self):
        """One second of the state machine (tests drive it with their own clock)."""
        now = self._clock()
        if self.cfg["gnss"] == "off":
            if self.state != "off":
                await self._power(False, now)
                self.state = "off"
                log.i(_TAG, "GNSS off by config")
            return
        if self.state == "off":
            await self._search(now)
            return
        if self.state in ("parked", "resting"):
            if self._locate or ticks_diff(now, self._next_check) >= 0:
                self._checking = self.state == "parked"
                await self._search(now)
            return
        fix = await self.receiver.poll(now)
        if fix is not None:
            await self._take(fix, now)
        elif ticks_diff(now, self._session_at) >= self.cfg["gnss_fix_timeout_s"] * 1000:
            self.counters["timeouts"] += 1
            log.w(_TAG, "no fix in %d s: GNSS off until the next check"
                  % self.cfg["gnss_fix_timeout_s"])  # fmt: skip
            await self._rest("resting", now)
        elif self.state == "tracking" and self.last is not None:
            if ticks_diff(now, self.last.at) >= 5000:
                self.state = "searching"  # fix lost (tunnel, jamming): the timeout runs again
                self._session_at = now

    async def _search(self, now):
        self.state = "searching"
        self._session_at = now
        self._fresh = True
        self._locate = False
        self.counters["sessions"] += 1
        await self._power(True, now)

    async def _power(self, on, now):
        if on and self._on_at is None:
            self._on_at = now
        elif not on and self._on_at is not None:
            self.counters["on_ms"] += ticks_diff(now, self._on_at)
            self._on_at = None
        await self.receiver.power(on, now)

    async def _rest(self, state, now):
        self.state = state
        self._next_check = ticks_add(now, self.cfg["parked_check_s"] * 1000)
        await self._power(False, now)

    async def _take(self, fix, now):
        first = self._fresh
        self._fresh = False
        self.counters["fixes"] += 1
        self.last = fix
        if self._locate_report:
            self._locate_report = False
            self._trigger("locate")
        if first:  # the first fix since GNSS went on (the modem's: since it took the command)
            since = getattr(self.receiver, "started_at", None)
            if since is None or ticks_diff(since, self._session_at) < 0:
                since = self._session_at
            self.ttff_ms = ticks_diff(now, since)
            log.i(_TAG, "fix after %d ms: %r" % (self.ttff_ms, fix))
        cfg = self.cfg
        move_m = cfg["move_distance_m"]
        if first and self._checking:
            self._checking = False
            if self._anchor is not None and not self._moved(self._anchor, fix, move_m):
                # Still where it parked: a position for the readings, then off again.
                return await self._rest("parked", now)
            self.counters["unparks"] += 1
            log.i(_TAG, "moving again: tracking")
            self._anchor = None
        self.state = "tracking"
        if self._anchor is None or self._moved(self._anchor, fix, move_m):
            self._anchor = fix
            self._moved_at = now
        elif 0 < cfg["stationary_after_s"] * 1000 <= ticks_diff(now, self._moved_at):
            self.counters["parks"] += 1
            log.i(_TAG, "no movement for %d s: parked, GNSS off" % cfg["stationary_after_s"])
            self._trigger("parked")  # one reading with the parked position
            return await self._rest("parked", now)
        self._check_triggers(fix)

    @staticmethod
    def _moved(a, b, move_m):
        return move_m > 0 and distance_m(a.lat, a.lon, b.lat, b.lon) >= move_m

    def _check_triggers(self, fix):
        ref = self._reported
        if ref is None:
            return self._trigger("first_fix")
        if self._moved(ref, fix, self.cfg["move_distance_m"]):
            return self._trigger("distance")
        turn = self.cfg["move_heading_deg"]
        if (
            turn > 0
            and fix.heading is not None
            and ref.heading is not None
            and (fix.speed or 0) >= MIN_HEADING_SPEED
            and heading_change(ref.heading, fix.heading) >= turn
        ):
            self._trigger("heading")

    def _trigger(self, why):
        if self.triggered is None:
            self.counters["triggers"] += 1
            self.triggered = why
