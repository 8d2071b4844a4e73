# Alarm rules: one small state machine per rule, pure logic (the caller owns the clock,
# the flash and the uplink). See docs/alarms.md for the rules, keys and event format.
#
#   normal --condition--> pending --held for delay_s--> raised --condition ends--> normal
#                           |  (emits nothing)            (emits "raised")   (emits "cleared")
#                           +--condition ends before delay_s--> normal (emits nothing)
#
# An excursion starts when the value passes the limit and ends only when it is back beyond
# limit -/+ hysteresis, in pending as in raised: a value hovering at the limit neither
# chatters nor restarts the minimum duration at every reading.
#
# Reboots: the caller saves state() whenever `changed` is true after evaluate() and hands it
# to restore() after boot. Times are Unix seconds, so a pending rule keeps its real start
# (the minimum duration counts across the reboot), a raised rule stays raised (no second
# "raised") and the peak is kept.
from tracker import config as _config
from tracker.alarms import geofence

NORMAL = "normal"
PENDING = "pending"
RAISED = "raised"
_STATES = (PENDING, RAISED)
# A battery sags under a modem's transmit burst (up to 2 A on 2G): one low reading is not a
# low battery. Two readings at least this far apart are.
BATTERY_DELAY_S = 60
BATTERY_HYSTERESIS_V = 0.1


class Rule:
    """One rule's state. `above`: the condition is value > limit (peak is the maximum), else
    value < limit (peak is the minimum). A rule without limit (sensor failure) is true when
    the value is not None/empty."""

    state = NORMAL
    since = None  # Unix s the current excursion began (pending start)
    peak = None
    value = None
    cleared_at = None  # when the last excursion that was raised ended
    fence = None

    def __init__(self, rid, alarm, sig, field, limit, hysteresis, delay_s, above):
        self.rid = rid  # unique id: the alarm name, ":fence" for geofences
        self.alarm = alarm
        self.field = field  # the reading's key this rule watches
        self.sig = sig  # its parameters as text: a change of any of them resets the state
        self.limit = limit
        self.hysteresis = hysteresis
        self.delay_s = delay_s
        self.above = above

    def measure(self, reading, position):
        """The value this rule watches, or None when the reading has none."""
        return reading.get(self.field)

    def _begins(self, v):
        if self.limit is None:
            return True
        return v > self.limit if self.above else v < self.limit

    def _ends(self, v):
        if self.limit is None:
            return False
        h = self.hysteresis
        return v <= self.limit - h if self.above else v >= self.limit + h

    def _worse(self, v):
        if self.peak is None:
            return True
        return v > self.peak if self.above else v < self.peak

    def step(self, v, now):
        """Advance with value `v` (None: the condition is false for a sensor-failure rule,
        no news for the others). Returns (event or None, whether the state changed)."""
        moved = self.since is not None and now < self.since
        if moved:
            # The clock went back (a board that booted without the time, then learnt it):
            # count the delay from now rather than raise on a duration that never was.
            self.since = now
        event, changed = self._step(v, now)
        return event, changed or moved

    def _step(self, v, now):
        if v is None:
            if self.limit is not None or self.state == NORMAL:
                return None, False  # no reading: nothing is known, nothing changes
            self.value = None
            return self._end(now)
        if self.state == NORMAL:
            if not self._begins(v):
                return None, False
            self.state = PENDING
            self.since = now
            self.peak = v if self.limit is not None else None
            self.value = v
            return self._maybe_raise(now), True
        if self._ends(v):
            self.value = v  # the cleared event tells the value that ended the excursion
            return self._end(now)
        changed = False
        if self.limit is not None and self._worse(v):
            self.peak = v
            changed = True
        self.value = v
        if self.state == PENDING:
            event = self._maybe_raise(now)
            return event, changed or event is not None
        return None, changed

    def _maybe_raise(self, now):
        if now - self.since < self.delay_s:
            return None
        self.state = RAISED
        return self._event(RAISED, now)

    def _end(self, now):
        was = self.state
        self.state = NORMAL
        if was != RAISED:  # a pending excursion that ended early: nothing to tell
            self.since = self.peak = self.value = None
            return None, True
        self.cleared_at = now
        event = self._event("cleared", now)
        self.since = self.peak = self.value = None
        return event, True

    def _event(self, what, now):
        e = {"alarm": self.alarm, "state": what, "since": self.since, "value": self.value,
             "duration_s": None if now is None else now - self.since}  # fmt: skip
        if what == RAISED:
            e["at"] = now
        else:
            e["cleared_at"] = now
        self._describe(e)
        return e

    def _describe(self, d):
        if self.fence is not None:
            d["fence"] = self.fence
            d["peak"] = self.peak  # metres beyond the boundary at the worst
        elif self.limit is not None:
            d["peak"] = self.peak
            d["limit"] = self.limit

    def summary(self):
        s = {"alarm": self.alarm, "state": self.state, "since": self.since, "value": self.value}
        self._describe(s)
        return s


class SensorRule(Rule):
    def measure(self, reading, position):
        return reading.get("sensor_error") or None


class FenceRule(Rule):
    """Geofence: the value is metres outside the fence (exit; > 0 is outside) or inside it
    (enter); limit 0, so the usual "above" logic with the hysteresis in metres applies."""

    def __init__(self, rid, alarm, sig, hysteresis, delay_s, fence):
        super().__init__(rid, alarm, sig, None, 0, hysteresis, delay_s, True)
        self.fence = fence[0]
        self._geom = fence

    def measure(self, reading, position):
        if position is None:
            return None  # inert without a fix
        last = _last_distance  # the enter and exit rules of a fence follow each other
        if last[0] is self._geom and last[1] == position:
            out = last[2]
        else:
            out = geofence.outside_m(self._geom, position[0], position[1])
            last[0], last[1], last[2] = self._geom, position, out
        return round(out if self.alarm == "geofence_exit" else -out)


_last_distance = [None, None, 0.0]  # fence, position, signed metres


def _get(cfg, name):
    try:
        return cfg[name]
    except (KeyError, ValueError):
        return _config.key(name).default


def _threshold_rules(cfg, what, unit, field):
    mode = _get(cfg, "alarm_" + what)
    delay = _get(cfg, "alarm_%s_delay_s" % what)
    hyst = _get(cfg, "alarm_%s_hysteresis_%s" % (what, unit))
    out = []
    for side, above in (("high", True), ("low", False)):
        if mode in (side, "both"):
            limit = _get(cfg, "alarm_%s_%s_%s" % (what, side, unit))
            name = what + "_" + side
            sig = "%s/%s/%s" % (limit, hyst, delay)
            out.append(Rule(name, name, sig, field, limit, hyst, delay, above))
    return out


def build(cfg):
    """The rules the config `cfg` enables, each with a fresh state."""
    rules = _threshold_rules(cfg, "temp", "c", "temperature")
    rules += _threshold_rules(cfg, "humidity", "pct", "humidity")
    if _get(cfg, "alarm_sensor"):
        delay = _get(cfg, "alarm_sensor_delay_s")
        rule = SensorRule("sensor", "sensor", str(delay), "sensor_error", None, 0, delay, True)
        rules.append(rule)
    low_v = _get(cfg, "alarm_battery_low_v")
    if low_v > 0:
        sig = "%s/%s/%s" % (low_v, BATTERY_HYSTERESIS_V, BATTERY_DELAY_S)
        h = BATTERY_HYSTERESIS_V
        rules.append(
            Rule("battery_low", "battery_low", sig, "battery", low_v, h, BATTERY_DELAY_S, False)
        )
    mode = _get(cfg, "alarm_geofence")
    if mode != "off":
        try:
            fences = geofence.parse(_get(cfg, "geofences"))
        except ValueError:
            fences = []  # the schema refuses a bad spec; a bare dict may still hold one
        hyst = _get(cfg, "alarm_geofence_hysteresis_m")
        delay = _get(cfg, "alarm_geofence_delay_s")
        for fence in fences:
            for alarm in ("geofence_enter", "geofence_exit"):
                if mode == "both" or alarm.endswith(mode):
                    sig = "%r/%s/%s" % (fence[1:], hyst, delay)
                    rules.append(FenceRule(alarm + ":" + fence[0], alarm, sig, hyst, delay, fence))
    return rules


class AlarmRules:
    """All the rules of a config. evaluate() after each reading; `changed` says whether
    state() differs from what it was before that call (persist it then)."""

    def __init__(self, cfg):
        self.rules = []
        self.changed = False
        self.restore_ignored = 0  # entries of a state that restore() could not use
        self.configure(cfg)

    def configure(self, cfg, now_s=None):
        """Rebuild the rules after a config change, keeping the state of every rule whose
        parameters are unchanged. A raised rule that is switched off or changed ends with a
        "cleared" event carrying "reason": "config" (the list returned), so no alarm stays
        up forever at the operator's end (cleared_at is now_s, None if not given). Sets
        `changed` when a rule with a state went."""
        old = {}
        for r in self.rules:
            old[r.rid] = r
        rules = []
        for r in build(cfg):
            prev = old.get(r.rid)
            if prev is not None and prev.sig == r.sig:
                del old[r.rid]
                r = prev
            rules.append(r)
        events = []
        self.changed = False
        for r in old.values():
            if r.state != NORMAL:
                self.changed = True
                event, _ = r._end(now_s)
                if event is not None:
                    event["reason"] = "config"
                    events.append(event)
        self.rules = rules
        return events

    def evaluate(self, reading, now_s, position=None):
        """Feed one reading (see docs/alarms.md); returns the list of events (mostly empty)."""
        events = []
        changed = False
        for r in self.rules:
            event, ch = r.step(r.measure(reading, position), now_s)
            if event is not None:
                events.append(event)
            changed = changed or ch
        self.changed = changed
        return events

    def active(self):
        """{rule id: summary} of pending and raised rules (for the status)."""
        out = {}
        for r in self.rules:
            if r.state != NORMAL:
                out[r.rid] = r.summary()
        return out

    def state(self):
        """JSON-able state for persistence: {"v": 1, "rules": {rule id: [...]}}, holding the
        rules that are pending or raised (any rule not listed is normal)."""
        rules = {}
        for r in self.rules:
            if r.state != NORMAL:
                # Not the last value: it changes at every reading, and saving at every
                # reading would wear the flash for a number only the status shows.
                rules[r.rid] = [r.sig, r.state, r.since, r.peak]
        return {"v": 1, "rules": rules}

    def restore(self, state):
        """Take back a state() after boot. Entries for rules that no longer exist, whose
        parameters changed, or that are malformed are ignored and counted in
        restore_ignored; never raises."""
        self.restore_ignored = 0
        try:
            saved = state.get("rules") if state.get("v") == 1 else None
            if not isinstance(saved, dict):
                raise ValueError
        except Exception:  # noqa: BLE001 -- garbage from flash must not stop a boot
            self.restore_ignored += 1
            return
        by_id = {}
        for r in self.rules:
            by_id[r.rid] = r
        for rid in saved:
            r = by_id.get(rid)
            if r is None or not _restore_rule(r, saved[rid]):
                self.restore_ignored += 1


def _number(v):
    return (isinstance(v, (int, float)) and v is not True and v is not False) or v is None


def _restore_rule(r, entry):
    try:
        sig, st, since, peak = entry
    except Exception:  # noqa: BLE001 -- not a 4-item list
        return False
    if sig != r.sig or st not in _STATES or not _number(since) or since is None:
        return False
    if not isinstance(since, int) or not _number(peak):
        return False
    r.state = st
    r.since = since
    r.peak = peak
    r.value = None  # until the next reading
    return True
