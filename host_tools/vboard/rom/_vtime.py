# ROM `time` module of the virtual board: the Unix port's, with a wall clock that
# machine.RTC().datetime(...) sets, as on the ESP32, where the RTC is the system time that
# time.time() reads. The runtime starts the clock at ALBATROSS_CLOCK_START (2000-01-01 after
# an ESP32 power-on); the supervisor is told of every setting, so that the next boot starts
# where the RTC has got to: it keeps counting through every reset but a power cut.
import time as _unix_time
from time import *  # noqa: F403 - ticks, sleeps, mktime: the Unix port's own

import _vctl

_shift = 0  # seconds RTC().datetime(...) moved the clock since this boot


def time():
    return _unix_time.time() + _shift


def time_ns():
    return _unix_time.time_ns() + _shift * 1000000000


def gmtime(secs=None):
    return _unix_time.gmtime(time() if secs is None else secs)


def localtime(secs=None):
    return _unix_time.localtime(time() if secs is None else secs)


def set_time(unix_s):
    global _shift
    _shift = unix_s - _unix_time.time()
    _vctl.send(b"c%d" % unix_s)


class RTC:
    """machine.RTC (ports/esp32/machine_rtc.c): datetime() is (year, month, day, weekday,
    hours, minutes, seconds, subseconds) in UTC; given such a tuple it sets the clock (the
    weekday is ignored, as the chip ignores it)."""

    def __init__(self, id=0):
        pass

    def datetime(self, t=None):
        if t is None:
            y, mo, d, h, mi, s, wd = gmtime()[:7]  # the Unix port adds yday and isdst
            return (y, mo, d, wd, h, mi, s, 0)
        y, mo, d, _, h, mi, s = t[:7]
        # The supervisor runs the board with TZ=UTC0 (an ESP32 has no time zone), so the
        # C library's mktime() is UTC.
        set_time(_unix_time.mktime((y, mo, d, h, mi, s, 0, 0)))

    def init(self, t):
        self.datetime(t)
