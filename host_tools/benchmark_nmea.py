"""NMEA parser figures: sentences per second and RAM on the ESP32-faithful MicroPython (32-bit,
single-precision, the heap an ESP32 without PSRAM gives: 111,936 B), for a corpus log.

Measured in one run, side by side:
- the parser (firmware/tracker/location/nmea.py): the bytes a fresh Nmea holds, the bytes it
  holds after the log (state must not grow), the bytes allocated per sentence (gc disabled,
  gc.mem_alloc() before/after 40 sentences), and sentences/s;
- a baseline: only stripping the line, checking its checksum and splitting its fields, the way
  a naive parser starts (bytes allocated per sentence and sentences/s);
- CPython's speed for the same parser, for scale;
- the heap the module's code takes, compiled from source (a board loads .mpy: about 15% less;
  frozen into the firmware, next to nothing).
`run() -> dict`; `python -m host_tools.benchmark_nmea` prints it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools.image import FIRMWARE_DIR
from host_tools.vboard import runtime as rt

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "gpsd-nmea"
LOG = "ublox-neo-m9n-nmea.log"  # GGA RMC GSA GSV GLL VTG TXT from four constellations
HEAP = 111936  # boards/esp32_generic_sim7600: an ESP32 without PSRAM
SENTENCES = 400  # held in RAM as bytes during the run: about 25 KB of the heap

_DEVICE_SCRIPT = r"""
import gc, sys, time, json
sys.path.insert(0, sys.argv[1])
gc.collect()
before_import = gc.mem_alloc()
from tracker.location.nmea import Nmea
gc.collect()
module_bytes = gc.mem_alloc() - before_import

lines = []
with open(sys.argv[2], "rb") as f:
    for line in f:
        if line.startswith(b"$") and len(lines) < int(sys.argv[3]):
            lines.append(line)
passes = int(sys.argv[4])


def baseline(line):
    s = line.strip()
    star = s.find(b"*")
    if star < 0:
        return None
    x = 0
    for c in s[1:star]:
        x ^= c
    if int(s[star + 1:star + 3], 16) != x:
        return None
    return s[1:star].split(b",")


def allocated_per_sentence(fn):
    # gc off: mem_alloc() then only grows; 40 sentences keep the naive split within the heap
    some = lines[:40]
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for line in some:
        fn(line)
    b = gc.mem_alloc()
    gc.enable()
    gc.collect()
    return (b - a) / len(some)


def per_second(fn):
    gc.collect()
    t = time.ticks_us()
    for _ in range(passes):
        for line in lines:
            fn(line)
    us = time.ticks_diff(time.ticks_us(), t)
    return len(lines) * passes * 1000000 / us


gc.collect()
a = gc.mem_alloc()
p = Nmea()
gc.collect()
held_new = gc.mem_alloc() - a
out = {
    "module_bytes_from_source": module_bytes,
    "sentences": len(lines),
    "parser_bytes_held_new": held_new,
    "parser_bytes_allocated_per_sentence": allocated_per_sentence(p.feed),
    "parser_sentences_per_s": per_second(p.feed),
    "baseline_bytes_allocated_per_sentence": allocated_per_sentence(baseline),
    "baseline_sentences_per_s": per_second(baseline),
}
gc.collect()
out["parser_bytes_held_after"] = gc.mem_alloc() - a
out["heap_free_at_end"] = gc.mem_free()
print(json.dumps(out))
"""


def _cpython_per_second(lines: list[bytes], passes: int) -> float:
    if str(FIRMWARE_DIR) not in sys.path:
        sys.path.insert(0, str(FIRMWARE_DIR))
    from tracker.location.nmea import Nmea

    p = Nmea()
    t = time.perf_counter()
    for _ in range(passes):
        for line in lines:
            p.feed(line)
    return len(lines) * passes / (time.perf_counter() - t)


def run(log: str = LOG, *, sentences: int = SENTENCES, passes: int = 5) -> dict:
    """Figures for the first `sentences` sentences of a corpus log, `passes` times over."""
    path = CORPUS / log
    if not path.is_file():
        raise ValueError(f"benchmark_nmea: no corpus log {path}")
    runtime = rt.resolve()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_DEVICE_SCRIPT)
        script = f.name
    try:
        result = subprocess.run(
            [
                runtime.path,
                "-X",
                f"heapsize={HEAP}",
                script,
                str(FIRMWARE_DIR),
                str(path),
                str(sentences),
                str(passes),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        Path(script).unlink()
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-2000:]
        raise RuntimeError(f"benchmark_nmea on {runtime.describe()}: {output}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    lines = [raw for raw in path.read_bytes().split(b"\n") if raw.startswith(b"$")][:sentences]
    figures["cpython_sentences_per_s"] = _cpython_per_second(lines, passes)
    figures["log"] = log
    figures["runtime"] = runtime.describe()
    figures["heap"] = HEAP
    return figures


def summary(r: dict) -> str:
    return (
        f"NMEA parser on {r['runtime']}, heap {r['heap']} B, {r['sentences']} sentences of "
        f"{r['log']}: {r['parser_sentences_per_s']:.0f} sentences/s "
        f"(baseline split+checksum {r['baseline_sentences_per_s']:.0f}/s; CPython "
        f"{r['cpython_sentences_per_s']:.0f}/s); holds {r['parser_bytes_held_new']} B new, "
        f"{r['parser_bytes_held_after']} B after; allocates "
        f"{r['parser_bytes_allocated_per_sentence']:.1f} B/sentence (baseline "
        f"{r['baseline_bytes_allocated_per_sentence']:.1f}); module code "
        f"{r['module_bytes_from_source']} B from source"
    )


if __name__ == "__main__":
    figures = run()
    print(json.dumps(figures, indent=1, sort_keys=True))
    print(summary(figures))
