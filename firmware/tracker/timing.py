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
