"""The firmware's unit tests also pass on the MicroPython Unix port, within a device-sized
heap: what runs on CPython in pytest must run where the firmware really runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
# The virtual board's default heap: the unit tests must fit in what the firmware gets.
HEAP = "192k"


def test_firmware_unit_tests_pass_on_the_unix_port() -> None:
    result = subprocess.run(
        [MICROPYTHON, "-X", f"heapsize={HEAP}", "firmware/tests/run_mp.py"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed, failed = (int(part.split()[0]) for part in summary.split(", "))
    assert failed == 0 and passed >= 50, summary
