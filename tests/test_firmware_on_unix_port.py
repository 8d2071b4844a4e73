"""The firmware's unit tests also pass on the MicroPython Unix port, within a device-sized
heap: what runs on CPython in pytest must run where the firmware really runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
# The virtual board's default heap: the unit tests must fit in what the firmware gets.
HEAP = "192k"


MODULES = sorted(p.stem for p in (REPO / "firmware" / "tests").glob("test_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_firmware_unit_tests_pass_on_the_unix_port(module: str) -> None:
    # One interpreter per module, as a device boots fresh: each module's imports (compiled
    # from source here, unlike the .mpy the board gets) must fit the heap on their own.
    result = subprocess.run(
        [MICROPYTHON, "-X", f"heapsize={HEAP}", "firmware/tests/run_mp.py", module],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed, failed = (int(part.split()[0]) for part in summary.split(", "))
    assert failed == 0 and passed >= 1, summary
