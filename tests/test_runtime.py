"""The virtual board's ESP32-faithful MicroPython: what makes it an ESP32 stand-in, and how the
host picks a runtime and a heap."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from host_tools import image as img
from host_tools.vboard import runtime as rt
from host_tools.vboard.runner import parse_heap
from host_tools.vboard.runtime import build
from host_tools.vboard.supervisor import VboardError

FAITHFUL = rt.bin_dir() / rt.RUNTIME_NAME
needs_faithful = pytest.mark.skipif(
    not FAITHFUL.exists(), reason="the 32-bit runtime is not built here (make setup)"
)


def _mp(code: str, **env: str) -> str:
    result = subprocess.run(
        [str(FAITHFUL), "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, **env),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@needs_faithful
def test_faithful_runtime_has_an_esp32s_ints_and_floats() -> None:
    # 31-bit small ints on a 32-bit build; single-precision floats as ports/esp32.
    out = _mp("import sys; print(sys.maxsize, 0.1 + 0.2 == 0.3, repr(1 / 3))").split()
    assert out[0] == str(2**31 - 1)
    # In single precision 0.1 + 0.2 rounds to exactly 0.3; in double it does not.
    assert out[1] == "True"
    assert len(out[2]) <= 11  # ~7 significant digits, not 17


@needs_faithful
def test_ticks_start_where_asked_and_wrap_at_2_to_the_30() -> None:
    code = (
        "import time\n"
        "a = time.ticks_ms()\n"
        "time.sleep_ms(1200)\n"
        "b = time.ticks_ms()\n"
        "print(a, b, time.ticks_diff(b, a))"
    )
    a, b, diff = map(int, _mp(code, ALBATROSS_TICKS_START_MS=str(2**30 - 500)).split())
    assert 2**30 - 500 <= a < 2**30
    assert b < a  # the counter wrapped, as an ESP32's does after 12.4 days
    assert 1150 <= diff <= 5000


@needs_faithful
def test_clock_starts_at_the_date_asked() -> None:
    out = _mp(
        "import time; print(time.time(), time.gmtime()[:3])", ALBATROSS_CLOCK_START="946684800"
    )
    seconds, date = out.split(" ", 1)
    assert 946684800 <= int(seconds) < 946684800 + 10
    assert date == "(2000, 1, 1)"


@needs_faithful
def test_gc_counters_count_allocations_and_collections() -> None:
    code = (
        "import _vstats, gc\n"
        "c0, b0, n0 = _vstats.gc_stats()\n"
        "x = [bytearray(1000) for i in range(10)]\n"
        "gc.collect()\n"
        "c1, b1, n1 = _vstats.gc_stats()\n"
        "print(c1 - c0, b1 - b0, n1 - n0)"
    )
    collections, allocated, allocations = map(int, _mp(code).split())
    assert collections == 1
    assert allocated >= 10_000 and allocations >= 10


def test_a_source_tree_of_another_version_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "py").mkdir()
    (tmp_path / "ports" / "unix").mkdir(parents=True)
    (tmp_path / "py" / "mpconfig.h").write_text(
        "#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR 27\n"
        "#define MICROPY_VERSION_MICRO 0\n"
    )
    monkeypatch.setenv("ALBATROSS_MICROPYTHON_SRC", str(tmp_path))
    with pytest.raises(build.RuntimeBuildError, match="1.27.0, not the pinned 1.28.0"):
        build.find_source()


def test_missing_faithful_runtime_falls_back_to_64_bit_with_a_notice(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "micropython").write_text("")
    monkeypatch.setattr(rt, "bin_dir", lambda: tmp_path)
    monkeypatch.delenv("ALBATROSS_RUNTIME", raising=False)
    rt._noticed.clear()
    chosen = rt.resolve()
    assert chosen.name == "unix64" and not chosen.faithful
    assert "using the 64-bit PyPI micropython" in capsys.readouterr().err


def test_unknown_runtime_is_one_clear_error() -> None:
    with pytest.raises(rt.RuntimeUnavailable, match="choose esp32, esp32-frozen, unix64"):
        rt.resolve("esp8266")


def test_default_heap_is_the_boards_module_heap() -> None:
    faithful = rt.Runtime("esp32", "x")
    wide = rt.Runtime("unix64", "x")
    generic = img.board_info("esp32_generic_sim7600")
    assert rt.default_heap(generic, faithful) == 111936
    assert rt.default_heap(generic, wide) == rt.UNIX64_HEAP
    assert parse_heap("esp32_generic_sim7600") == 111936
    assert parse_heap("96k") == 96 * 1024
    with pytest.raises(VboardError, match="or a board"):
        parse_heap("lots")
