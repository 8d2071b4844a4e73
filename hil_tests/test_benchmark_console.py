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
    # Measured against the REPL on the same board: the ratios are of the medians just taken.
    echo, repl_echo = r["keystroke_to_echo"]["median_ms"], r["repl_keystroke_to_echo"]["median_ms"]
    assert r["echo_over_repl"] == pytest.approx(echo / repl_echo), r
    # The summary `make bench` prints carries these figures, not a placeholder.
    text = benchmark_console.summary({"latency": r, "ram": []})
    status_line = next(ln for ln in text.splitlines() if "status -> answer" in ln)
    assert f"{r['status_answer']['median_ms']:6.1f} ms median" in status_line, text
    assert f"({r['echo_over_repl']:.1f}x the REPL's" in text, text
