# The configuration schema and its persistence.
#
# SCHEMA is the single source of truth: the technician CLI, remote config over MQTT and the
# host tools (which import this very file under CPython) all read types, ranges, enums,
# character rules, secrets and help text from here.
#
# On disk the config is one JSON object, written atomically (temp file + rename). Loading
# never raises: a device that cannot read its config must still boot, report the problem
# (Config.load_error) and stay reachable, not boot-loop.
import json
import os

from tracker import log

_TAG = "config"
_MASK = "***"
# Far above the largest valid file (about 1 KB), small enough to read on a 110 KB heap.
_MAX_FILE_BYTES = 4096
_ENOENT = 2
_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A key is unknown or a value is not allowed for it. str() is ready to show a user."""

    def __init__(self, key, reason):
        super().__init__("%s: %s" % (key, reason))
        self.key = key
        self.reason = reason


def _show(value):
    """User input as error messages quote it (text in double quotes; garbage can be long)."""
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 24 else text[:20] + '..."'


def _char_ranges(chars):
    # `chars` is the body of a regex character class ("A-Za-z0-9_-"), so host tools can
    # turn it into a regex as is. A "-" between two characters is a range, elsewhere a
    # literal, as in a regex; no escapes are used.
    ranges = []
    i = 0
    n = len(chars)
    while i < n:
        if i + 2 < n and chars[i + 1] == "-":
            ranges.append((ord(chars[i]), ord(chars[i + 2])))
            i += 3
        else:
            ranges.append((ord(chars[i]), ord(chars[i])))
            i += 1
    return ranges


class Key:
    """One configuration key. For str keys `min`/`max` bound the length in characters."""

    # Unset options stay class attributes, so each key's instance dict holds only what it
    # uses (the schema stays resident all the time on a ~110 KB heap).
    min = None
    max = None
    enum = None
    chars = None
    secret = False
    # A str key's format check beyond `chars`: check(value) -> None, or why it is refused.
    check = None
    # When a change takes effect: "now", "connect" (the next connection to the broker; the
    # uplink reads these keys for every session) or "reboot".
    applies = "reboot"

    def __init__(
        self, name, type, default, help, *, min=None, max=None, enum=None, chars=None,
        secret=False, applies=None, check=None,
    ):  # fmt: skip
        self.name = name
        self.type = type
        self.default = default
        self.help = help
        if min is not None:
            self.min = min
        if max is not None:
            self.max = max
        if enum is not None:
            self.enum = enum
        if chars is not None:
            self.chars = chars
        if secret:
            self.secret = True
        if applies is not None:
            self.applies = applies
        if check is not None:
            self.check = check

    def _chars_ok(self, text):
        if self.chars is None:
            return True
        ranges = _char_ranges(self.chars)
        for ch in text:
            c = ord(ch)
            for lo, hi in ranges:
                if lo <= c <= hi:
                    break
            else:
                return False
        return True

    def char_ok(self, ch):
        """Whether the one character `ch` is allowed in this (str) key."""
        return self._chars_ok(ch)

    def _fail(self, reason, value):
        # Never echo a secret back: error messages end up in logs and MQTT replies.
        if self.secret:
            raise ConfigError(self.name, reason)
        raise ConfigError(self.name, "%s, got %s" % (reason, _show(value)))

    def _range_text(self):
        return "%s..%s" % (self.min, self.max)

    def parse(self, value):
        """The stored form of `value` (typed, or a string as a technician types it).

        Raises ConfigError naming the key and what is allowed; never another exception.
        """
        t = self.type
        if t is bool:
            v = self._parse_bool(value)
        elif t is int:
            v = self._parse_int(value)
        elif t is float:
            v = self._parse_float(value)
        else:
            v = self._parse_str(value)
        return v

    def _parse_bool(self, value):
        if value is True or value is False:
            return value
        if type(value) is int and value in (0, 1):
            return value == 1
        if isinstance(value, str):
            s = value.strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
        self._fail("must be true or false", value)

    def _number(self, value, what):
        # bool is not a number here, although CPython makes it an int subclass.
        if value is True or value is False or value is None:
            self._fail("must be %s in %s" % (what, self._range_text()), value)
        if isinstance(value, (int, float)):
            return value
        if not isinstance(value, str):
            self._fail("must be %s in %s" % (what, self._range_text()), value)
        s = value.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            self._fail("must be %s in %s" % (what, self._range_text()), value)

    def _check_range(self, v, value):
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            what = "an integer" if self.type is int else "a number"
            self._fail("must be %s in %s" % (what, self._range_text()), value)

    def _parse_int(self, value):
        v = self._number(value, "an integer")
        if isinstance(v, float):
            # Accept 30.0 (JSON from some tools) and "1e1", but not 30.5 or inf/nan.
            if v != v or v in (float("inf"), float("-inf")) or v != int(v):
                self._fail("must be an integer in %s" % self._range_text(), value)
            v = int(v)
        self._check_range(v, value)
        return v

    def _parse_float(self, value):
        n = self._number(value, "a number")
        try:
            v = float(n)
        except OverflowError:  # an int too big for a float
            self._fail("must be in %s" % self._range_text(), value)
        if v != v or v in (float("inf"), float("-inf")):
            self._fail("must be a finite number in %s" % self._range_text(), value)
        self._check_range(v, value)
        return v

    def _parse_str(self, value):
        if self.enum is not None:
            if isinstance(value, str):
                if value in self.enum:
                    return value
                s = value.strip().lower()
                if s in self.enum:
                    return s
            self._fail("must be one of %s" % ", ".join(self.enum), value)
        if not isinstance(value, str):
            self._fail("must be text", value)
        n = len(value)
        if self.min is not None and n < self.min:
            self._fail("must be at least %d characters" % self.min, value)
        if self.max is not None and n > self.max:
            self._fail("must be at most %d characters" % self.max, value)
        if not self._chars_ok(value):
            self._fail("may only contain the characters %s" % self.chars, value)
        if self.check is not None:
            problem = self.check(value)
            if problem is not None:
                self._fail(problem, value)
        return value

    def doc(self):
        is_str = self.type is str
        return {
            "key": self.name,
            "type": _TYPE_NAMES[self.type],
            "default": self.default,
            "min": None if is_str else self.min,
            "max": None if is_str else self.max,
            "min_len": self.min if is_str else None,
            "max_len": self.max if is_str else None,
            "enum": list(self.enum) if self.enum else None,
            "chars": self.chars,
            "secret": self.secret,
            "applies": self.applies,
            "help": self.help,
        }


# Printable ASCII: what a technician can type on any serial terminal.
_PRINTABLE = " -~"
_SIDES = ("off", "high", "low", "both")


def _check_geofences(spec):
    # Imported when a spec is checked, so a tracker without fences never loads the module.
    from tracker.alarms.geofence import config_check

    return config_check(spec)


SCHEMA = (
    Key("device_id", str, "",
        "Device name in MQTT topics; empty means derived from the board's unique id",
        min=0, max=32, chars="A-Za-z0-9_-"),
    Key("broker_host", str, "127.0.0.1", "MQTT broker host name or IP address",
        min=1, max=253, chars="A-Za-z0-9.:-", applies="connect"),
    Key("broker_port", int, 1883, "MQTT broker TCP port", min=1, max=65535, applies="connect"),
    Key("mqtt_user", str, "", "MQTT user name (empty: connect without one)",
        min=0, max=128, chars=_PRINTABLE, applies="connect"),
    Key("mqtt_password", str, "", "MQTT password", min=0, max=128, chars=_PRINTABLE,
        secret=True, applies="connect"),
    Key("mqtt_keepalive_s", int, 60, "MQTT keepalive in seconds", min=10, max=3600,
        applies="connect"),
    Key("interval_s", float, 60.0,
        "Seconds between measurements (fractions for bench and test runs)",
        min=0.02, max=86400.0, applies="now"),
    Key("batch_size", int, 20, "Most readings per telemetry message (a backlog drains in "
        "batches; QoS 1 and a PUBACK per message)", min=1, max=100, applies="now"),
    Key("store_capacity", int, 20000, "Most unsent readings kept on flash (never more than "
        "the filesystem holds: see capacity in the store status); beyond it the oldest are "
        "dropped and counted", min=100, max=200000),
    Key("status_interval_s", int, 900,
        "Seconds between retained status reports (also sent on connect and on faults)",
        min=10, max=86400, applies="now"),
    Key("watchdog_s", int, 30,
        "Seconds the hardware watchdog waits for a feed before it resets the board; it is "
        "fed only while sampling, the uplink and the modem reader make progress",
        min=2, max=3600),
    Key("apn", str, "", "Access point name of the SIM's data plan (empty: network default)",
        min=0, max=63, chars="A-Za-z0-9.-"),
    Key("rat", str, "auto", "Radio access preference of the modem",
        enum=("auto", "lte", "ltem", "nbiot", "gsm")),
    Key("log_level", str, "info", "Lowest log level kept",
        enum=("debug", "info", "warning", "error"), applies="now"),
    Key("sht4x_precision", str, "high",
        "SHT4x repeatability: high is least noisy, low uses least energy",
        enum=("high", "medium", "low"), applies="now"),
    Key("temperature_offset_c", float, 0.0,
        "Added to measured temperature (e.g. enclosure self-heating); "
        "humidity is corrected to match", min=-10.0, max=10.0, applies="now"),
    # Location and motion-aware reporting (docs/location.md). interval_s is the longest gap
    # between readings; movement adds readings, never closer than report_min_s.
    Key("gnss", str, "auto", "GNSS use: auto (the board's receiver, powered only when "
        "needed) or off (never powered; readings carry no position)",
        enum=("auto", "off"), applies="now"),
    Key("report_min_s", int, 10, "Shortest gap in seconds between readings that movement "
        "asks for (distance or heading)", min=1, max=86400, applies="now"),
    Key("move_distance_m", int, 100, "Metres moved since the last reading that ask for a "
        "new one; also the radius within which the asset counts as not moving (0: off)",
        min=0, max=100000, applies="now"),
    Key("move_heading_deg", int, 30, "Change of heading in degrees since the last reading "
        "that asks for a new one, when moving faster than 1 m/s (0: off)",
        min=0, max=180, applies="now"),
    Key("stationary_after_s", int, 300, "Seconds without movement after which the asset "
        "is parked: GNSS off, readings only every interval_s (0: never park)",
        min=0, max=86400, applies="now"),
    Key("parked_check_s", int, 900, "While parked (or after a fix timeout), seconds between "
        "GNSS checks for movement", min=30, max=86400, applies="now"),
    Key("gnss_fix_timeout_s", int, 120, "Seconds GNSS may search for a fix before it is "
        "switched off until the next check", min=10, max=3600, applies="now"),
    # Alarm rules and cold-chain statistics (tracker/alarms, docs/alarms.md): every alarm is
    # off until enabled; all are read at each reading. Help texts stay short: the schema is
    # resident and each key costs heap.
    Key("alarm_temp", str, "off", "Temperature alarm: above high, below low, or both",
        enum=_SIDES, applies="now"),
    Key("alarm_temp_high_c", float, 8.0, "Temperature alarm and cold-chain high limit",
        min=-100.0, max=200.0, applies="now"),
    Key("alarm_temp_low_c", float, 2.0, "Temperature alarm and cold-chain low limit",
        min=-100.0, max=200.0, applies="now"),
    Key("alarm_temp_delay_s", int, 600, "Seconds beyond a limit before the alarm is raised",
        min=0, max=86400, applies="now"),
    Key("alarm_temp_hysteresis_c", float, 0.5, "How far back inside a limit clears",
        min=0.0, max=50.0, applies="now"),
    Key("alarm_humidity", str, "off", "Humidity alarm: above high, below low, or both",
        enum=_SIDES, applies="now"),
    Key("alarm_humidity_high_pct", float, 80.0, "Humidity alarm high limit (%RH)",
        min=0.0, max=100.0, applies="now"),
    Key("alarm_humidity_low_pct", float, 20.0, "Humidity alarm low limit (%RH)",
        min=0.0, max=100.0, applies="now"),
    Key("alarm_humidity_delay_s", int, 600, "Seconds beyond a limit before the alarm is "
        "raised", min=0, max=86400, applies="now"),
    Key("alarm_humidity_hysteresis_pct", float, 2.0, "How far back inside a limit clears",
        min=0.0, max=50.0, applies="now"),
    Key("alarm_sensor", bool, False, "Alarm when the sensor fails", applies="now"),
    Key("alarm_sensor_delay_s", int, 0, "Seconds of failed readings before the alarm "
        "(0: at the first)", min=0, max=86400, applies="now"),
    Key("alarm_battery_low_v", float, 0.0, "Battery alarm below this voltage (0: off)",
        min=0.0, max=5.0, applies="now"),
    Key("alarm_geofence", str, "off", "Geofence alarms: on entering, leaving, or both",
        enum=("off", "enter", "exit", "both"), applies="now"),
    Key("geofences", str, "", "Fences NAME:c:LAT,LON,RADIUS_M or NAME:p:LAT,LON LAT,LON ..."
        " separated by ;", min=0, max=240, chars="A-Za-z0-9_.,:; -", applies="now",
        check=_check_geofences),
    Key("alarm_geofence_delay_s", int, 0, "Seconds inside/outside before a geofence alarm",
        min=0, max=86400, applies="now"),
    Key("alarm_geofence_hysteresis_m", int, 25, "Metres back across a fence that clear its "
        "alarm", min=0, max=10000, applies="now"),
    Key("mkt_activation_kj", float, 83.144, "Activation energy for the mean kinetic "
        "temperature (kJ/mol)", min=10.0, max=500.0, applies="now"),
    Key("stats_window_s", int, 3600, "Seconds in a cold-chain statistics window: the reading "
        "that closes one carries its min, max, mean, MKT and time out of range",
        min=60, max=86400, applies="now"),
)  # fmt: skip

_BY_NAME = {}
for _k in SCHEMA:
    _BY_NAME[_k.name] = _k


def key(name):
    """The Key for `name`; ConfigError if there is none."""
    k = _BY_NAME.get(name)
    if k is None:
        raise ConfigError(name, "unknown key")
    return k


def check_together(values, changing):
    """ConfigError for a combination of values the tracker cannot work with (each value
    being valid on its own) that a change of the keys in `changing` would make: the
    settings refuse it before anything is stored. (A stored config that already has one
    still loads, and changes to other keys go through.)"""
    if ("mqtt_password" in changing or "mqtt_user" in changing) and (
        values["mqtt_password"] and not values["mqtt_user"]
    ):
        raise ConfigError(
            "mqtt_password", "needs mqtt_user too (MQTT 3.1.1 sends no password without a user)"
        )
    for what, unit in (("temp", "c"), ("humidity", "pct")):
        low = "alarm_%s_low_%s" % (what, unit)
        high = "alarm_%s_high_%s" % (what, unit)
        # A low limit at or above the high one would hold one of the alarms up at all times.
        if (low in changing or high in changing) and values[low] >= values[high]:
            if low in changing:
                raise ConfigError(low, "must stay below %s (%s)" % (high, values[high]))
            raise ConfigError(high, "must stay above %s (%s)" % (low, values[low]))


def schema_doc():
    """The schema as plain data (list of dicts in schema order) for host tools and the CLI."""
    return [k.doc() for k in SCHEMA]


def _errno(err):
    code = getattr(err, "errno", None)
    if code is None and err.args:
        code = err.args[0]
    return code


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


# States of json_object_problem(): what the next token may be.
_VALUE = 0  # any value (at the top: only an object)
_KEY = 1  # a key string (after "," in an object)
_KEY_OR_END = 2  # a key string or "}" (just after "{")
_COLON = 3
_VALUE_OR_END = 4  # a value or "]" (just after "[")
_AFTER = 5  # "," or the closing bracket of the innermost container
_DONE = 6  # only whitespace
_SCALAR = b"+-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NUMBER = b"+-.0123456789eE"


def json_object_problem(raw):
    """Why the bytes `raw` are not exactly one JSON object (a short reason), or None.

    Checks the structure (brackets, strings, one value between "," and ":", nothing after
    the object); json.loads then parses the numbers. Needed because MicroPython's json is
    lenient: before v1.26 loads() returns the part it read of a truncated object (a config
    cut by a power loss would load half and be saved back), and every version skips ","
    and ":" like spaces and accepts "]" for "}" (tracker/compat.py)."""
    if isinstance(raw, str):
        raw = raw.encode()
    stack = []  # the open containers, "{" or "["
    state = _VALUE
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        i += 1
        if c == 32 or c == 10 or c == 13 or c == 9:
            continue
        at = i - 1
        if state == _DONE:
            return "text after the object at byte %d" % at
        if c == 123 or c == 91:  # { [
            if state != _VALUE and state != _VALUE_OR_END:
                return "unexpected %r at byte %d" % (chr(c), at)
            if not stack and c != 123:
                return "not a JSON object"
            stack.append(c)
            state = _KEY_OR_END if c == 123 else _VALUE_OR_END
            continue
        if c == 125 or c == 93:  # } ]
            opener = 123 if c == 125 else 91
            end_ok = state == _KEY_OR_END if c == 125 else state == _VALUE_OR_END
            if not stack or stack[-1] != opener or not (state == _AFTER or end_ok):
                return "unexpected %r at byte %d" % (chr(c), at)
            stack.pop()
            state = _AFTER if stack else _DONE
            continue
        if c == 44:  # ,
            if state != _AFTER:
                return "unexpected ',' at byte %d" % at
            state = _KEY if stack[-1] == 123 else _VALUE
            continue
        if c == 58:  # :
            if state != _COLON:
                return "unexpected ':' at byte %d" % at
            state = _VALUE
            continue
        if not stack:
            return "not a JSON object"
        if c == 34:  # a string: skip to its closing quote
            while True:
                if i >= n:
                    return "truncated inside a string"
                c = raw[i]
                i += 1
                if c == 34:
                    break
                if c == 92:  # backslash: the next byte is escaped
                    i += 1
                elif c < 32:
                    return "control character in a string at byte %d" % (i - 1)
            if state == _KEY or state == _KEY_OR_END:
                state = _COLON
                continue
        elif c in _SCALAR:  # a number, true, false or null
            while i < n and raw[i] in _SCALAR:
                i += 1
            word = raw[at:i]
            if word != b"true" and word != b"false" and word != b"null":
                # MicroPython reads "1true" or "truefalse" as two values: a lost ","
                for b in word:
                    if b not in _NUMBER:
                        return "bad value at byte %d" % at
        else:
            return "unexpected byte 0x%02x at byte %d" % (c, at)
        if state != _VALUE and state != _VALUE_OR_END:
            return "unexpected value at byte %d" % at
        state = _AFTER
    if state == _DONE:
        return None
    return "no JSON object" if state == _VALUE else "truncated (the object never ends)"


def _read_json_object(path):
    """The parsed JSON object in `path`. OSError if unreadable, ValueError if not valid."""
    size = os.stat(path)[6]
    if size > _MAX_FILE_BYTES:
        raise ValueError("file is %d bytes, limit %d" % (size, _MAX_FILE_BYTES))
    with open(path, "rb") as f:
        # Read what is there, not the limit: a 4 KB buffer is a lot on a fragmented heap.
        raw = f.read(size + 1)
    problem = json_object_problem(raw)
    if problem is not None:
        raise ValueError(problem)
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


class Config:
    """Typed configuration values; Config() holds the defaults."""

    def __init__(self):
        self._values = {}
        for k in SCHEMA:
            self._values[k.name] = k.default
        # Set by load(): why the file was not used (None when it was, or there was none),
        # and per-key problems (dropped unknown keys, invalid values reset to default).
        self.load_error = None
        self.load_warnings = []

    def __getitem__(self, name):
        key(name)
        return self._values[name]

    def __contains__(self, name):
        return name in _BY_NAME

    def __repr__(self):
        return "Config(%r)" % (self.to_dict(),)

    def keys(self):
        return [k.name for k in SCHEMA]

    def set(self, name, value):
        """Validate and store one value; returns the stored (typed) value."""
        v = key(name).parse(value)
        self._values[name] = v
        return v

    def reset(self, name):
        """Put one key back to its default; returns the default."""
        k = key(name)
        self._values[name] = k.default
        return k.default

    def update(self, changes):
        """Set several keys, all or nothing; returns {key: new value} for those that changed.

        Raises ConfigError for the first bad key and then nothing has been changed.
        """
        if not isinstance(changes, dict):
            raise ConfigError("*", "expected an object of key: value pairs")
        parsed = {}
        for name in changes:
            parsed[name] = key(name).parse(changes[name])
        changed = {}
        for name in parsed:
            if self._values[name] != parsed[name]:
                changed[name] = parsed[name]
            self._values[name] = parsed[name]
        return changed

    def to_dict(self, secrets=False):
        """The values; secret ones shown as "***" when set unless secrets=True."""
        out = {}
        for k in SCHEMA:
            v = self._values[k.name]
            if k.secret and not secrets and v != "":
                v = _MASK
            out[k.name] = v
        return out

    def _apply_loaded(self, data, path):
        for name in data:
            k = _BY_NAME.get(name)
            if k is None:
                self._warn("%s: unknown key %s dropped" % (path, _show(name)))
                continue
            try:
                self._values[name] = k.parse(data[name])
            except ConfigError as err:
                self._warn("%s: %s; using default %s" % (path, err, _show(k.default)))

    def _warn(self, msg):
        self.load_warnings.append(msg)
        log.w(_TAG, msg)

    @classmethod
    def load(cls, path):
        """The config stored at `path`. Never raises.

        Missing file: defaults, silently. Unreadable or corrupt file: defaults, load_error set
        and logged. Unknown keys are dropped and invalid values fall back to their default,
        each with a warning, keeping the valid rest.
        """
        cfg = cls()
        tmp = path + ".tmp"
        try:
            if _exists(path):
                # A .tmp beside a real file is an interrupted save; the real file is the
                # last complete one.
                _remove_quietly(tmp)
            elif _exists(tmp):
                # save() fell back to remove-then-rename and power was cut in between: the
                # .tmp was closed before the old file was removed, so if it parses it is
                # the newest complete config. A .tmp that does not parse is a first save
                # that never finished, and defaults are what the device had before it.
                try:
                    data = _read_json_object(tmp)
                except (OSError, ValueError) as err:
                    cfg._warn("discarding unfinished %s: %s" % (tmp, err))
                    _remove_quietly(tmp)
                    return cfg
                cfg._apply_loaded(data, tmp)
                try:
                    os.rename(tmp, path)
                except OSError as err:
                    log.w(_TAG, "could not move %s into place: %s" % (tmp, err))
                return cfg
            try:
                data = _read_json_object(path)
            except OSError as err:
                if _errno(err) == _ENOENT:
                    return cfg
                raise
            cfg._apply_loaded(data, path)
        except MemoryError:
            # Not a bad config: the board is short of RAM. Falling back to defaults would
            # report to the default broker; crashing lets the watchdog reboot try again.
            raise
        except Exception as err:  # noqa: BLE001 -- a config problem must never stop a boot
            cfg = cls()
            cfg.load_error = "%s: %s: %s" % (path, type(err).__name__, err)
            log.e(_TAG, "using defaults, " + cfg.load_error)
        return cfg

    def text(self):
        """The file content save() writes: one key per line, in schema order."""
        return self._serialise()

    def _serialise(self):
        # One key per line in schema order: readable, diffable, deterministic on every port.
        lines = []
        for k in SCHEMA:
            lines.append("  %s: %s" % (json.dumps(k.name), json.dumps(self._values[k.name])))
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def save(self, path):
        """Write atomically: a crash at any point leaves the old or the new file loadable.

        Raises OSError if the filesystem refuses (e.g. full); the old file is then intact.
        """
        tmp = path + ".tmp"
        text = self._serialise()
        try:
            with open(tmp, "w") as f:
                f.write(text)
                # Closing commits the file on littlefs (and flushes on POSIX) before the
                # rename below makes it visible under the real name.
                f.flush()
            try:
                # littlefs and POSIX rename() replace an existing target atomically.
                os.rename(tmp, path)
            except OSError:
                # Some VFS (FAT) refuse to rename over an existing file. Remove it first;
                # a cut between these two steps leaves only the complete .tmp, which
                # load() recognises and uses.
                if not _exists(path):
                    raise
                os.remove(path)
                os.rename(tmp, path)
        except OSError:
            if _exists(path):
                _remove_quietly(tmp)
            raise
