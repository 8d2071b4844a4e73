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
Signal = _unix_machine.Signal
PinBase = _unix_machine.PinBase
time_pulse_us = _unix_machine.time_pulse_us


# The ESP32's reset-reason register (RTC_CNTL_RESET_STATE_REG, bits 0..5: the ROM's RESET_REASON
# codes): after a brown-out machine.reset_cause() says PWRON_RESET (ports/esp32/modmachine.c)
# and only this register says 15, so the boards read it (boards/esp32_generic_sim7600/
# esp32_board.py). The supervisor names the reason of a simulated brown-out in
# ALBATROSS_RTC_RESET_REASON; otherwise it follows the reset: 1 POWERON_RESET, 12 SW_CPU_RESET
# (machine.reset() and the task watchdog's panic both restart the CPU), 5 DEEPSLEEP_RESET.
RTC_CNTL_RESET_STATE_REG = 0x3FF48034
_RTC_REASONS = {PWRON_RESET: 1, HARD_RESET: 12, WDT_RESET: 12, DEEPSLEEP_RESET: 5}


class _Mem32:
    """machine.mem32 that answers the reset-reason register; every other address is the
    Unix port's mem32 (host memory: an ESP32 peripheral address there would crash)."""

    def __getitem__(self, addr):
        if addr == RTC_CNTL_RESET_STATE_REG:
            given = os.getenv("ALBATROSS_RTC_RESET_REASON")
            return int(given) if given else _RTC_REASONS.get(reset_cause(), 1)
        return _unix_machine.mem32[addr]

    def __setitem__(self, addr, value):
        _unix_machine.mem32[addr] = value


mem32 = _Mem32()


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


_WORD_MIN = -0x80000000  # mp_int_t on the ESP32 is 32 bits
_WORD_MAX = 0x7FFFFFFF


def _machine_int(value):
    """An argument as MicroPython's mp_obj_get_int() takes it on a 32-bit port."""
    if not isinstance(value, int):
        raise TypeError("can't convert %s to int" % type(value).__name__)
    if not _WORD_MIN <= value <= _WORD_MAX:
        raise OverflowError("overflow converting long int to machine word")
    return value


class WDT:
    """machine.WDT as ports/esp32/machine_wdt.c makes it: one task-watchdog user, so every
    WDT(...) returns the same object and reconfigures its timeout (which restarts the count);
    id must be 0 and timeout_ms > 0 (any 32-bit value above that). There is no deinit() and
    no timeout_ms(): once started it cannot be stopped, not even by a soft reset (the
    supervisor keeps counting). When feed() stops for `timeout` ms the supervisor resets the
    board with WDT_RESET. feed() writes a preallocated message: it allocates nothing."""

    _the = None

    def __new__(cls, id=0, timeout=5000):
        id = _machine_int(id)
        timeout = _machine_int(timeout)
        if id != 0:
            raise ValueError
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        if cls._the is None:
            cls._the = object.__new__(cls)
        _vctl.send(b"w%d" % timeout)
        return cls._the

    def feed(self):
        _vctl.feed()
