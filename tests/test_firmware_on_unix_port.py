"""The firmware's unit tests also pass on MicroPython, on the ESP32-faithful runtime (32-bit,
single-precision floats: host_tools/vboard/runtime) within a device-sized heap: what runs on
CPython in pytest must run where the firmware really runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from host_tools.vboard import runtime as rt

REPO = Path(__file__).resolve().parents[1]
RUNTIME = rt.resolve()
# An ESP32 without PSRAM gives MicroPython 111,936 B (boards/esp32_generic_sim7600), and runs
# the app frozen (hil_tests/test_fit.py proves it fits). Here the tests compile their sources
# and the firmware's in RAM: a module importing the whole Tracker (app, downlink, alarms,
# location, a 42-key schema) needs 176k on the 32-bit runtime (144k ran out once remote config
# and alarms came in); the 64-bit fallback about 1.7x for the same objects.
HEAP = "176k" if RUNTIME.faithful else "300k"
HEAP_FOR = {"test_cli": "320k" if RUNTIME.faithful else "520k"}  # 256k: MemoryError seen
# test_ticks runs a whole Tracker's status() 504 times (three weeks, hourly) beside ~130 KB of
# code compiled from source: no leak (flat after each collection), but 176k fragments.
HEAP_FOR["test_ticks"] = "224k" if RUNTIME.faithful else "380k"


# What may skip on MicroPython (mptest.skip), and why; any other skip there fails the module.
# The AT engine's own-counter wrap test needs the counter started near the wrap: the last test
# here runs it so.
MAY_SKIP = {"test_at_engine": {"test_a_deadline_past_the_tick_wrap_holds"}}

MODULES = sorted(p.stem for p in (REPO / "firmware" / "tests").glob("test_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_firmware_unit_tests_pass_on_the_unix_port(module: str) -> None:
    # One interpreter per module, as a device boots fresh: each module's imports (compiled
    # from source here, unlike the .mpy the board gets) must fit the heap on their own.
    result = subprocess.run(
        [
            RUNTIME.path,
            "-X",
            f"heapsize={HEAP_FOR.get(module, HEAP)}",
            "firmware/tests/run_mp.py",
            module,
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, (
        f"on {RUNTIME.describe()}:\n" + result.stdout[-4000:] + result.stderr[-2000:]
    )
    passed, failed, skipped = (int(part.split()[0]) for part in summary.split(", "))
    assert failed == 0 and passed >= 1, summary
    skips = [ln for ln in result.stdout.splitlines() if ln.startswith("SKIP ")]
    assert len(skips) == skipped, summary
    unexpected = [ln for ln in skips if ln[5:].split(":")[0] not in _may_skip(module)]
    assert not unexpected, f"on {RUNTIME.describe()}, skipped: {unexpected}"


def _may_skip(module: str) -> set[str]:
    return {f"{module}.{name}" for name in MAY_SKIP.get(module, ())}


@pytest.mark.skipif(not RUNTIME.faithful, reason="only the ESP32-faithful runtime sets its ticks")
def test_deadlines_hold_where_the_runtimes_own_tick_counter_wraps() -> None:
    # Code that reads ticks_ms() itself (the AT engine's deadlines) cannot take a test's clock:
    # the runtime starts its counter 10 s below the 2^30 wrap, and the module's wrap tests
    # wait for it (mptest.ticks_before_wrap), failing if it is already past.
    env = {**os.environ, "ALBATROSS_TICKS_START_MS": str((1 << 30) - 10000)}
    result = subprocess.run(
        [RUNTIME.path, "-X", f"heapsize={HEAP}", "firmware/tests/run_mp.py", "test_at_engine"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # ...and the wrap test ran there rather than skipping.
    assert "SKIP test_at_engine.test_a_deadline_past_the_tick_wrap_holds" not in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith(", 0 skipped"), result.stdout[-2000:]
