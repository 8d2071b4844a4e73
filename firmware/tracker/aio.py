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
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD // 2

    def ticks_ms():
        return int(time.monotonic() * 1000) & (_TICKS_PERIOD - 1)

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF

    def ticks_add(a, delta):
        return (a + delta) & (_TICKS_PERIOD - 1)


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
