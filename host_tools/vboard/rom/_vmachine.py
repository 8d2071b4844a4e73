# ROM `machine` module of the virtual board. On an ESP32 these functions are built into the
# MicroPython firmware; here they ask the supervisor (over the control pipe) to do what the
# silicon would: reset the chip, sleep, run a watchdog. Peripherals (I2C, ADC, UART, pins)
# are the board's business: boards/unix_sim/ builds them.
import os
import time

import _vctl
import machine as _unix_machine  # the Unix port's built-in module, re-exported below
from _vtime import RTC  # noqa: F401 - with the clock it sets

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

mem8 = _unix_machine.mem8
mem16 = _unix_machine.mem16
mem32 = _unix_machine.mem32
Signal = _unix_machine.Signal
PinBase = _unix_machine.PinBase
time_pulse_us = _unix_machine.time_pulse_us


def idle():
    time.sleep_ms(1)


def reset_cause():
    return int(os.getenv("ALBATROSS_RESET_CAUSE") or PWRON_RESET)


def unique_id():
    uid = os.getenv("ALBATROSS_UID") or "a1b2c3d4e5f6"
    return bytes(int(uid[i : i + 2], 16) for i in range(0, len(uid), 2))


def freq(hz=None):
    return 240000000


def reset():
    """Hard reset: the supervisor restarts the process at once, as the chip would."""
    _vctl.request(b"H")


def soft_reset():
    """As on ESP32: a SystemExit that the REPL (or the boot sequence) turns into a soft reset,
    so a raw-REPL caller still gets its end-of-output markers first."""
    raise SystemExit


def deepsleep(ms=0):
    _vctl.request(b"D%d" % ms)


def lightsleep(ms=0):
    time.sleep_ms(ms)


class WDT:
    """The supervisor resets the board with WDT_RESET when feed() stops for `timeout` ms.
    As on ESP32, a started watchdog cannot be stopped."""

    def __init__(self, id=0, timeout=5000):
        self._timeout = timeout
        _vctl.send(b"w%d" % timeout)

    def feed(self):
        _vctl.send(b"f")
