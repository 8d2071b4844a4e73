"""The NMEA parser's RAM figures on the ESP32-faithful runtime stay small (host_tools/
benchmark_nmea.py measures them; `make bench` reports them)."""

from __future__ import annotations

import pytest

from host_tools import benchmark_nmea
from host_tools.vboard import runtime as rt


@pytest.mark.skipif(not rt.resolve().faithful, reason="heap figures need the 32-bit runtime")
def test_parser_holds_and_allocates_little() -> None:
    r = benchmark_nmea.run(sentences=120, passes=1)
    assert r["sentences"] == 120 and r["parser_sentences_per_s"] > 0
    # A parser and its epoch state: under 2 KB of a 110 KB heap, and it does not grow.
    assert r["parser_bytes_held_new"] < 2048
    assert r["parser_bytes_held_after"] < 2048
    # In place parsing: a few boxed floats per sentence, where splitting allocates ~1 KB.
    assert r["parser_bytes_allocated_per_sentence"] < 32
    assert (
        r["baseline_bytes_allocated_per_sentence"] > 10 * r["parser_bytes_allocated_per_sentence"]
    )
