"""The RAM bench's judgement: which heap counts as the smallest, and per-reading figures."""

from __future__ import annotations

from host_tools.benchmark_ram import _smallest_passing, parse_probe


def _t(kib: int, ok: bool) -> dict:
    return {"heap": kib * 1024, "healthy": ok}


def test_smallest_heap_is_the_lowest_with_every_larger_one_passing() -> None:
    trials = [_t(80, False), _t(96, True), _t(112, True), _t(88, False)]
    assert _smallest_passing(trials) == 96 * 1024
    # One failure above a pass (a MemoryError that came late) moves the answer up.
    flaky = [_t(296, True), _t(300, True), _t(304, False), _t(308, True), _t(312, True)]
    assert _smallest_passing(flaky) == 308 * 1024
    assert _smallest_passing([_t(64, False), _t(128, False)]) is None


def test_per_reading_figures_count_from_the_first_sample_after_the_warm_up() -> None:
    lines = []
    seq = 0
    for tick in range(8):  # a VSTATS line every 10 s, five readings in between
        for _ in range(5):
            lines.append(f"I app: stored seq {seq} T=4.0")
            seq += 1
        lines.append(f"VSTATS {tick} {tick * 10000} {tick * 300}")
    got = parse_probe("\n".join(lines), warmup_s=20)
    # From the third sample (after 20 s) to the last: 5 intervals of 5 readings.
    assert got["readings"] == 25
    assert got["bytes_per_reading"] == 2000
    assert got["allocations_per_reading"] == 60
    assert got["collections_per_reading"] == 0.2
    assert parse_probe("VSTATS 1 2 3", warmup_s=20)["error"] == "too few samples"
