# Time as an ESP32 keeps it. ticks_ms() wraps at 2^30 ms (12.4 days); ticks_diff() tells
# apart only differences below 2^29 ms (6.2 days); small ints are 31-bit, so `t + n` past the
# wrap is a long int, which the device's ticks_diff() reads as nonsense (extmod/modtime.c
# takes its arguments for small ints). Hence: deadlines only through ticks_add(), comparisons
# only through ticks_diff(), and anything longer than days counted in seconds.
from tracker.aio import ticks_add, ticks_diff, ticks_ms


class Uptime:
    """Seconds since start, correct for decades. ticks_diff(now, start) turns negative after
    6.2 days and starts over every 12.4; this folds the ticks elapsed since the previous read
    into whole seconds (a small int for 34 years). Read it at least every 2^29 ms: the
    health loop does every few seconds."""

    def __init__(self, clock=ticks_ms):
        self._clock = clock
        self._last = clock()
        self._s = 0
        self._ms = 0  # elapsed, below 1000: not yet a whole second

    def seconds(self):
        now = self._clock()
        ms = self._ms + ticks_diff(now, self._last)
        self._last = now
        self._s += ms // 1000
        self._ms = ms % 1000
        return self._s


class Every:
    """Deadlines every period_ms: the next is the previous plus the period (no drift), and
    after falling behind it starts again from now (no burst of catch-up work)."""

    def __init__(self, period_ms, clock=ticks_ms):
        if not 0 < period_ms < 1 << 29:
            raise ValueError("period_ms %r: not within (0, 2^29)" % (period_ms,))
        self.period_ms = period_ms
        self._clock = clock
        self._next = clock()

    def wait_ms(self):
        """Milliseconds from now to the next deadline, which it moves on by one period."""
        self._next = ticks_add(self._next, self.period_ms)
        delay = ticks_diff(self._next, self._clock())
        if delay < 0:  # fell behind (slow bus, long GC): don't burst to catch up
            self._next = self._clock()
            return 0
        return delay


# ---- civil dates (UTC), by integer arithmetic: no time.mktime on MicroPython's epochs ----


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm); a day
    past the month's end counts on into the next month, as C's mkgmtime does."""
    if m <= 2:
        y -= 1
    era = y // 400  # floor division: right for years before 0 too
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of a day number from days_from_civil."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (yoe + era * 400 + (1 if m <= 2 else 0), m, d)
