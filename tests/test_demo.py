"""`make demo` shows telemetry arriving live, one readable line per message, and stops
cleanly after DEMO_S seconds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil  # end to end: broker, vboard, simulated modem (~30 s)


def test_demo_shows_live_telemetry_and_stops_by_itself() -> None:
    albatross = str(Path(sys.executable).with_name("albatross"))
    # Through the simulated SIM7600 with its real timings: ~11 s boot, then registration,
    # PDP and the socket before the first report.
    result = subprocess.run(
        [albatross, "demo", "--seconds", "30", "--interval", "1"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    telemetry = [ln for ln in lines if re.search(r"demo-tracker\s+telemetry\s+#\d+\s+T=", ln)]
    assert len(telemetry) >= 3, result.stdout
    assert "T=4.00 °C" in telemetry[0] and "RH=55.0 %" in telemetry[0]
    seqs = [int(re.search(r"#(\d+)", ln).group(1)) for ln in telemetry]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert any("status     online" in ln for ln in lines)
    assert lines[-1] == "demo: stopped"
    assert "Traceback" not in result.stdout + result.stderr
    assert "demo: modem sim7600" in result.stdout
