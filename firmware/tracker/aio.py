# The few time and asyncio helpers that differ between MicroPython and CPython.
# Feature detection only (never sys.platform), so the same files run on both.
import asyncio
import time

try:
    from micropython import const  # noqa: F401
except ImportError:

    def const(x):
        return x


if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:
    # As MicroPython's: a counter that wraps at 2^30 ms (12.4 days), differences valid within
    # half of that (extmod/modtime.c). The device reads a value that is not a ticks value (a
    # long int from `t + interval` past the wrap) as a nonsense small int; here it is an error.
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD // 2
    _ticks_shift = 0  # set_ticks_ms(): tests start the counter anywhere, e.g. near the wrap

    def ticks_ms():
        return (int(time.monotonic() * 1000) + _ticks_shift) & (_TICKS_PERIOD - 1)

    def _ticks(t):
        if type(t) is not int or not 0 <= t < _TICKS_PERIOD:
            raise ValueError("not a ticks_ms() value: %r" % (t,))
        return t

    def ticks_diff(a, b):
        return ((_ticks(a) - _ticks(b) + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF

    def ticks_add(a, delta):
        if not -_TICKS_HALF < delta < _TICKS_HALF:
            raise OverflowError("ticks interval overflow")
        return (_ticks(a) + delta) & (_TICKS_PERIOD - 1)

    def set_ticks_ms(t):
        """CPython only, for tests: ticks_ms() reads t now and counts on from there (None:
        from the host's monotonic clock again)."""
        global _ticks_shift
        _ticks_shift = 0 if t is None else _ticks(t) - int(time.monotonic() * 1000)


if hasattr(asyncio, "sleep_ms"):
    sleep_ms = asyncio.sleep_ms
else:

    def sleep_ms(ms):
        return asyncio.sleep(ms / 1000)


if hasattr(asyncio, "wait_for_ms"):
    wait_for_ms = asyncio.wait_for_ms
else:

    def wait_for_ms(aw, ms):
        return asyncio.wait_for(aw, ms / 1000)


TimeoutError = asyncio.TimeoutError

# Seconds between 1970-01-01 and the platform's epoch (2000-01-01 on ESP32 MicroPython).
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def unix_time():
    """Wall-clock seconds since 1970-01-01 UTC on every port."""
    return int(time.time()) + EPOCH_OFFSET
