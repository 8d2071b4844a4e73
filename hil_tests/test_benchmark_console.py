"""`make bench`'s console figures are measured the way the bench measures them: a short run of
the latency part on a virtual board, so the bench cannot rot between benchmark runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_tools import benchmark_console
from host_tools.broker import Broker


@pytest.mark.hil
@pytest.mark.slow
def test_console_latency_is_measured_against_the_repl(broker: Broker, tmp_path: Path) -> None:
    r = benchmark_console.latency(broker, tmp_path, "esp32", 5)
    for key in ("keystroke_to_echo", "config_get_answer", "status_answer",
                "repl_keystroke_to_echo", "repl_print_answer"):  # fmt: skip
        assert r[key]["n"] >= 5 and r[key]["median_ms"] > 0, (key, r[key])
    assert "status" in benchmark_console.summary({"latency": r, "ram": []})
