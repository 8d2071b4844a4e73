"""machine.WDT on the virtual board behaves as ports/esp32/machine_wdt.c: the same argument
checks, one watchdog that a second WDT() reconfigures, no way to stop it (not the REPL, not a
soft reset), and a reset with WDT_RESET (3) when feeding stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from host_tools import image as img
from host_tools.vboard.runner import VirtualBoard

pytestmark = pytest.mark.e2e

ARGS_MAIN = b"""
import machine
print("main: cause", machine.reset_cause())
if machine.reset_cause() != 3:
    for kw in ({"id": 1}, {"timeout": 0}, {"timeout": -5}, {"timeout": 1.5},
               {"timeout": 2**31}, {"timeout": "5000"}):
        try:
            machine.WDT(**kw)
            print("main: wdt", kw, "accepted")
        except Exception as e:
            print("main: wdt", sorted(kw)[0], type(e).__name__, e)
    a = machine.WDT(timeout=60000)
    b = machine.WDT(0, 700)  # the same watchdog, reconfigured: 700 ms from now
    print("main: same", a is b, "stop", hasattr(a, "deinit"), hasattr(a, "timeout_ms"))
    print("main: leaving the watchdog to the REPL")
"""

FEED_MAIN = b"""
import machine, time
c = machine.reset_cause()
print("main: cause", c)
if c == 1:
    w = machine.WDT(timeout=1500)
    t = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t) < 3000:
        w.feed()
        time.sleep_ms(200)
    print("main: fed for 3 s")
    time.sleep_ms(1000)  # 500 ms of the timeout left
    machine.soft_reset()
"""


def _board(tmp_path: Path, main: bytes) -> VirtualBoard:
    image = img.build_image(tmp_path / "flash.img", board="unix_sim", extra=[("main.py", main)])
    return VirtualBoard(name="t", workdir=tmp_path / "work", image=image)


def test_wdt_checks_arguments_as_the_esp32_and_the_repl_does_not_feed_it(
    tmp_path: Path,
) -> None:
    with _board(tmp_path, ARGS_MAIN) as vb:
        out = vb.wait_console("main: cause 3", 15)
        assert "main: wdt id ValueError" in out
        assert out.count("main: wdt timeout ValueError WDT timeout too short") == 2
        assert "main: wdt timeout TypeError can't convert float to int" in out
        assert "main: wdt timeout OverflowError" in out
        assert "main: wdt timeout TypeError can't convert str to int" in out
        assert "accepted" not in out
        assert "main: same True stop False False" in out
        # Evidence of the reset: the task watchdog's report, then a boot with WDT_RESET.
        report = out.index("task_wdt: Task watchdog got triggered")
        assert out.index("main: leaving the watchdog") < report < out.index("main: cause 3")
        assert " - mpy_machine_wdt" in out and "Rebooting..." in out
        assert vb.supervisor is not None
        assert vb.supervisor.status()["resets"] == {"power_on": 1, "watchdog": 1}


def test_feeding_keeps_the_board_up_and_a_soft_reset_does_not_stop_the_watchdog(
    tmp_path: Path,
) -> None:
    with _board(tmp_path, FEED_MAIN) as vb:
        out = vb.wait_console("main: cause 5", 15)
        soft_at = time.monotonic()
        assert "main: fed for 3 s" in out and "task_wdt" not in out  # 3 s > 1.5 s timeout
        out = vb.wait_console("main: cause 3", 10)
        waited = time.monotonic() - soft_at
        # It kept counting through the soft reset: it fired 1.5 s after the last feed (0.5 s
        # after the soft reset), not 1.5 s after the new interpreter started.
        assert waited < 1.2, waited
        assert out.index("main: cause 5") < out.index("task_wdt") < out.index("main: cause 3")
        assert vb.supervisor is not None
        st = vb.supervisor.status()
        assert st["resets"] == {"power_on": 1, "soft": 1, "watchdog": 1}, st
