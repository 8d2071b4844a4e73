# Cold-chain statistics of a series of temperature readings: per reporting window and per
# trip. Pure logic; the caller feeds readings and persists state() (docs/alarms.md).
#
# Single precision (ESP32 floats have a 24-bit mantissa, ~7 digits) shapes the arithmetic:
# - The mean sums deviations from the first reading, with Kahan compensation, so a trip of
#   100,000 readings keeps its mean to ~1e-5 degC instead of losing digits to a large sum.
# - The mean kinetic temperature (USP <1079.2>, ICH Q1A)
#       MKT = (dH/R) / -ln( sum(exp(-dH/(R*T_i))) / n )           T in kelvin
#   would have exp(-dH/(R*T)) near exp(-36) = 2e-16 with every term alike in its leading
#   digits. Relative to a reference temperature Tr (the first reading),
#       exp(-a/T_i) = exp(-a/Tr) * exp(x_i),   x_i = a * (T_i - Tr) / (T_i * Tr),  a = dH/R
#   so  MKT = a / (a/Tr - ln(mean(exp(x_i)))),  where exp(x_i) is near 1 for readings near
#   Tr. Tr starts at the first reading. A reading so much hotter that exp(x) would near the
#   float limit (e^88) moves Tr to it: the sum is scaled by exp(-x), and terms that become
#   too small to matter underflow harmlessly to 0 (colder readings do so anyway).
from math import exp, log

from tracker import config as _config

R = 8.3144598  # J/(mol K)
KELVIN = 273.15
# exp(40) = 2.4e17: the sum of a million such terms is still far below the single-precision
# limit (3.4e38), and exp(-40) keeps 1e-17 of the old sum, well below its precision.
_REBASE_X = 40.0


class Stats:
    """count, min, max, mean, MKT, seconds above `high` and below `low` (each interval
    between readings counts as the earlier reading's side: the temperature is taken to hold
    until it is measured again) and excursions (entries above high or below low; one ends
    when the temperature is back within the limit by `hysteresis`)."""

    def __init__(self, high, low=None, activation_kj=83.144, hysteresis=0.0):
        """Stats(high, low, activation_kj, hysteresis), or Stats(cfg) reading them from the
        config keys alarm_temp_high_c, alarm_temp_low_c, mkt_activation_kj and
        alarm_temp_hysteresis_c."""
        high, low, activation_kj, hysteresis = _params(high, low, activation_kj, hysteresis)
        self.high = high
        self.low = low
        self.hysteresis = hysteresis
        self.activation_kj = activation_kj
        self._a = activation_kj * 1000.0 / R
        self.clear()

    def configure(self, cfg):
        """New limits and hysteresis for the readings that follow. The activation energy
        stays the one this Stats began with (its sum cannot mix two), so a change of it
        applies from the next window or trip."""
        self.high, self.low, _, self.hysteresis = _params(cfg, None, None, None)

    def close(self):
        """as_dict() of this window, then empty for the next one. The last reading's side
        and a running excursion carry over: the time until the next reading counts in the
        next window, and an excursion that spans the boundary is not counted twice."""
        d = self.as_dict()
        last_at, side, exc = self.last_at, self._side, self._exc
        self.clear()
        self.last_at, self._side, self._exc = last_at, side, exc
        return d

    def clear(self):
        self.n = 0
        self.min = None
        self.max = None
        self.first_at = None
        self.last_at = None
        self._ref = None  # first reading (degC): the reference of the mean's sum
        self._kref = None  # Tr of the MKT's sum (degC)
        self._dsum = 0.0  # sum of (t - ref), Kahan-compensated by _dc
        self._dc = 0.0
        self._esum = 0.0  # sum of exp(x_i), Kahan-compensated by _ec
        self._ec = 0.0
        self.above_s = 0
        self.below_s = 0
        self.excursions = 0
        self._side = 0  # the last reading: 1 above high, -1 below low, 0 within, None unknown
        self._exc = 0  # the excursion in progress: 1 above, -1 below, 0 none

    def add(self, temp_c, now_s):
        """One reading at Unix second now_s; temp_c None (a failed reading) ends the time
        counted for the previous one without adding a value."""
        if self.last_at is not None and self._side and now_s > self.last_at:
            if self._side > 0:
                self.above_s += now_s - self.last_at
            else:
                self.below_s += now_s - self.last_at
        self.last_at = now_s
        if temp_c is None:
            self._side = None
            return
        temp_c = float(temp_c)
        if self.first_at is None:
            self.first_at = now_s
        if self.n == 0:
            self._ref = self._kref = temp_c
            self.min = self.max = temp_c
        elif temp_c < self.min:
            self.min = temp_c
        elif temp_c > self.max:
            self.max = temp_c
        self.n += 1
        self._dsum, self._dc = _kahan(self._dsum, self._dc, temp_c - self._ref)
        x = self._a * (temp_c - self._kref) / ((temp_c + KELVIN) * (self._kref + KELVIN))
        if x > _REBASE_X:
            scale = exp(-x)
            self._esum *= scale
            self._ec *= scale
            self._kref = temp_c
            x = 0.0
        self._esum, self._ec = _kahan(self._esum, self._ec, exp(x))
        self._side = 1 if temp_c > self.high else (-1 if temp_c < self.low else 0)
        self._excursion(temp_c)

    def _excursion(self, t):
        if self._exc > 0 and t <= self.high - self.hysteresis:
            self._exc = 0
        elif self._exc < 0 and t >= self.low + self.hysteresis:
            self._exc = 0
        if self._side and self._side != self._exc:
            self._exc = self._side
            self.excursions += 1

    def mean(self):
        return None if self.n == 0 else self._ref + self._dsum / self.n

    def mkt(self):
        """Mean kinetic temperature in degC (None without readings)."""
        if self.n == 0:
            return None
        tr = self._kref + KELVIN
        return self._a / (self._a / tr - log(self._esum / self.n)) - KELVIN

    def as_dict(self):
        """The statistics for the wire: temperatures to 0.01 degC, times in whole seconds."""
        return {
            "n": self.n,
            "min": _r2(self.min),
            "max": _r2(self.max),
            "mean": _r2(self.mean()),
            "mkt": _r2(self.mkt()),
            "above_s": self.above_s,
            "below_s": self.below_s,
            "excursions": self.excursions,
            "from": self.first_at,
            "to": self.last_at,
        }

    def state(self):
        """JSON-able, for persistence; restore() takes it back."""
        return [self.high, self.low, self.activation_kj, self.hysteresis, self.n, self.min,
                self.max, self.first_at, self.last_at, self._ref, self._dsum, self._dc,
                self._esum, self._ec, self.above_s, self.below_s, self.excursions, self._side,
                self._exc, self._kref]  # fmt: skip

    def restore(self, state):
        """Take back a state(), with the limits and activation energy it was taken with (a
        sum of exp(x_i) only adds up under one activation energy). False, and the statistics
        left empty, when it is not one."""
        try:
            if len(state) != 20:
                raise ValueError("length")
            for i, v in enumerate(state):
                # Numbers everywhere; None only where an empty Stats has it.
                if v is None and i in _MAYBE_NONE:
                    continue
                if not isinstance(v, (int, float)) or v is True or v is False:
                    raise ValueError("field %d" % i)
            high, low, kj, hyst, n = state[:5]
            if n < 0 or not isinstance(n, int) or (n and (state[12] <= 0 or state[5] is None)):
                raise ValueError("counts")
            self.__init__(high, low, kj, hyst)
            (self.n, self.min, self.max, self.first_at, self.last_at, self._ref, self._dsum,
             self._dc, self._esum, self._ec, self.above_s, self.below_s, self.excursions,
             self._side, self._exc, self._kref) = state[4:]  # fmt: skip
        except Exception:  # noqa: BLE001 -- garbage from flash must not stop a boot
            self.clear()
            return False
        return True


# Fields of state() that are None in a Stats without readings (min, max, first_at, last_at,
# the references) or after a failed reading (side).
_MAYBE_NONE = (5, 6, 7, 8, 9, 17, 19)


def _params(high, low, activation_kj, hysteresis):
    if low is not None:
        return high, low, activation_kj, hysteresis
    cfg = high  # a config mapping (tracker.config.Config or a dict)
    out = []
    for name in ("alarm_temp_high_c", "alarm_temp_low_c", "mkt_activation_kj",
                 "alarm_temp_hysteresis_c"):  # fmt: skip
        try:
            out.append(cfg[name])
        except (KeyError, ValueError):
            out.append(_config.key(name).default)
    return out


def _kahan(total, comp, value):
    y = value - comp
    t = total + y
    return t, (t - total) - y


def _r2(v):
    return None if v is None else round(v, 2)


class Trip:
    """The running trip: Stats over every reading from start() to stop()."""

    def __init__(self, high, low=None, activation_kj=83.144, hysteresis=0.0):
        """Trip(high, low, activation_kj, hysteresis) or Trip(cfg), as Stats."""
        self._params = tuple(_params(high, low, activation_kj, hysteresis))
        self.stats = None
        self.started_at = None

    @property
    def running(self):
        return self.stats is not None

    def start(self, now_s):
        """Start a new trip (a running one is dropped: stop() it first to keep its summary)."""
        self.stats = Stats(*self._params)
        self.started_at = now_s

    def add(self, temp_c, now_s):
        if self.stats is not None:
            self.stats.add(temp_c, now_s)

    def configure(self, cfg):
        """New limits for the rest of the trip and for the next one (see Stats.configure)."""
        self._params = tuple(_params(cfg, None, None, None))  # for the next trip
        if self.stats is not None:
            self.stats.configure(cfg)

    def summary(self, now_s=None):
        """The running trip as a dict (None when no trip runs)."""
        if self.stats is None:
            return None
        d = self.stats.as_dict()
        d["started_at"] = self.started_at
        if now_s is not None:
            d["duration_s"] = now_s - self.started_at
        return d

    as_dict = summary

    def stop(self, now_s):
        """End the trip; its final summary with "stopped_at" (None when none was running)."""
        d = self.summary(now_s)
        if d is not None:
            d["stopped_at"] = now_s
        self.stats = None
        self.started_at = None
        return d

    def state(self):
        if self.stats is None:
            return None
        return {"started_at": self.started_at, "stats": self.stats.state()}

    def restore(self, state):
        """Take back a state(); False when it cannot (then no trip runs)."""
        self.stats = None
        self.started_at = None
        if state is None:
            return True
        try:
            stats = Stats(*self._params)
            if not stats.restore(state["stats"]) or not isinstance(state["started_at"], int):
                return False
        except Exception:  # noqa: BLE001 -- garbage from flash must not stop a boot
            return False
        self.stats = stats
        self.started_at = state["started_at"]
        return True
