"""RAM figures of `make bench` (issue 7): does the firmware fit an ESP32 without PSRAM?

For each runtime (the ESP32-faithful 32-bit build with the app as .mpy from littlefs, the same
with the app frozen in, and the 64-bit PyPI build for comparison) the standard scenario (the
tracker through a simulated SIM7600, 1 s interval) runs at a sweep of heaps side by side; a heap
passes when the board reported all along with one boot and no MemoryError on its console.
A coarse sweep brackets the smallest passing heap, a fine one pins it. Also: the live heap
high-water mark the firmware reports, bytes allocated and collections per reading in steady
state (the faithful runtime counts them in `_vstats`, wrapped around the GC at link time), and
the app's size on flash.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from host_tools import image as img
from host_tools.broker import Broker
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard import runtime as rt
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard

BOARD = "unix_sim"
PSRAM_LESS = "esp32_generic_sim7600"
INTERVAL_S = 1
# The bench's own main.py: the app, plus a task printing the GC counters every 10 s.
PROBE_MAIN = b"""import asyncio, _vstats, tracker.app as app
async def _probe():
    while True:
        await asyncio.sleep(10)
        print("VSTATS %d %d %d" % _vstats.gc_stats())
_run = app.Tracker.run
async def _with_probe(self, *args, **kw):
    asyncio.create_task(_probe())
    await _run(self, *args, **kw)
app.Tracker.run = _with_probe
app.run()
"""


def _board(
    broker: Broker, work: Path, name: str, runtime: str, heap: int, files: tuple = ()
) -> VirtualBoard:
    config = {
        "broker_host": broker.host,
        "broker_port": broker.port,
        "device_id": name,
        "interval_s": INTERVAL_S,
        "status_interval_s": 30,
    }
    vb = VirtualBoard(
        name=name,
        workdir=work / name,
        board=BOARD,
        config=config,
        heap=heap,
        runtime=runtime,
        modem="sim7600",
        modem_timings=Timings.fast(),
    )
    for dev, data in files:
        vb.files.append((dev, data))
    return vb


def observe(broker: Broker, vb: VirtualBoard, seconds: float, interval: float) -> dict:
    """Run a (not yet started) board for `seconds` and judge it: healthy = one boot, no
    MemoryError on the console, and most readings delivered (the first seconds go to
    bring-up); plus its live heap maximum from the status messages."""
    watch = MqttWatch(broker.url, f"albatross/{vb.name}/#")
    vb.start()
    try:
        time.sleep(seconds)
        boots = vb.supervisor.status()["boots"] if vb.supervisor else 0
    finally:
        vb.stop()
        watch.close()
    seqs = set()
    heap_max = 0
    for m in watch.messages:
        if m.topic.endswith("/telemetry"):
            seqs.update(r["seq"] for r in m.json.get("records", []))
        elif m.topic.endswith("/status") and m.json.get("state") == "online":
            heap_max = max(heap_max, m.json.get("heap", {}).get("used_max", 0))
    memory_errors = vb.console_text().count("MemoryError")
    healthy = boots == 1 and memory_errors == 0 and len(seqs) >= seconds / interval * 0.6
    return {
        "heap": vb.heap,
        "seconds": seconds,
        "boots": boots,
        "readings_delivered": len(seqs),
        "memory_errors": memory_errors,
        "heap_used_max": heap_max,
        "healthy": healthy,
    }


def soak(broker: Broker, work: Path, runtime: str, heap: int, seconds: float) -> dict:
    """The standard scenario on `runtime` at `heap` for `seconds`."""
    vb = _board(broker, work, f"ram-{runtime}-{heap // 1024}k", runtime, heap)
    return dict(observe(broker, vb, seconds, INTERVAL_S), runtime=runtime)


def sweep(
    broker: Broker, work: Path, runtime: str, heaps: list[int], seconds: float
) -> list[dict]:
    """Boards at every heap in `heaps`, side by side for `seconds`."""
    with ThreadPoolExecutor(max_workers=len(heaps)) as pool:
        results = list(pool.map(lambda h: soak(broker, work, runtime, h, seconds), heaps))
    for r in results:
        print(
            f"  {runtime:12s} heap {r['heap'] // 1024:4d}k: {'ok   ' if r['healthy'] else 'FAILS'}"
            f" {r['readings_delivered']} readings, {r['boots']} boots, "
            f"{r['memory_errors']} MemoryError",
            flush=True,
        )
    return results


def smallest_heap(
    broker: Broker, work: Path, runtime: str, lo_k: int, hi_k: int, seconds: float
) -> dict:
    """A coarse sweep over [lo_k, hi_k] KiB (6 boards), then a fine one (4 KiB steps) in the
    bracket; the smallest heap that passed with every larger one in the sweep passing too."""
    trials: list[dict] = []
    step = max(4, (hi_k - lo_k) // 5 // 4 * 4)
    coarse = list(range(lo_k, hi_k + 1, step))
    trials += sweep(broker, work, runtime, [k * 1024 for k in coarse], seconds)
    passing = _smallest_passing(trials)
    if passing is None:
        return {"runtime": runtime, "smallest_heap": None, "trials": trials}
    if passing // 1024 > lo_k:
        fine = [k for k in range(passing // 1024 - step + 4, passing // 1024, 4)]
        trials += sweep(broker, work, runtime, [k * 1024 for k in fine], seconds)
    return {"runtime": runtime, "smallest_heap": _smallest_passing(trials), "trials": trials}


def _smallest_passing(trials: list[dict]) -> int | None:
    best = None
    for t in sorted(trials, key=lambda t: t["heap"], reverse=True):
        if not t["healthy"]:
            break
        best = t["heap"]
    return best


def allocation_per_reading(
    broker: Broker, work: Path, runtime: str, heap: int, warmup_s: float, seconds: float
) -> dict:
    """Bytes allocated and GC collections per reading in steady state (faithful runtime)."""
    name = f"alloc-{runtime}"
    vb = _board(broker, work, name, runtime, heap, files=(("main.py", PROBE_MAIN),))
    vb.start()
    try:
        time.sleep(warmup_s + seconds)
    finally:
        vb.stop()
    return dict(parse_probe(vb.console_text(), warmup_s), runtime=runtime, heap=heap)


def parse_probe(text: str, warmup_s: float) -> dict:
    """Per-reading figures from a console with PROBE_MAIN's VSTATS lines (every 10 s) and
    the app's "stored seq N" lines, from the first sample after the warm-up to the last."""
    samples = []  # (collections, bytes, allocations, readings so far)
    readings = 0
    for line in text.splitlines():
        if re.search(r"stored seq \d+", line):
            readings += 1
        m = re.match(r"VSTATS (\d+) (\d+) (\d+)", line.strip())
        if m:
            samples.append((*map(int, m.groups()), readings))
    skip = int(warmup_s // 10)
    if len(samples) < skip + 2:
        return {"error": "too few samples", "samples": len(samples)}
    (c0, b0, a0, r0), (c1, b1, a1, r1) = samples[skip], samples[-1]
    n = max(1, r1 - r0)
    return {
        "readings": r1 - r0,
        "bytes_per_reading": (b1 - b0) / n,
        "allocations_per_reading": (a1 - a0) / n,
        "collections_per_reading": (c1 - c0) / n,
        "note": "collections include the firmware's own gc.collect() every 5 s (heap check)",
    }


def app_size_on_flash() -> dict:
    """The app's .mpy files on littlefs, and what freezing it adds to the runtime binary."""
    mpy = sum(len(data) for dev, data in img.device_files(BOARD, compiled=True))
    plain = Path(rt.bin_dir() / rt.RUNTIME_NAME)
    frozen = rt.frozen_path(BOARD)
    out = {"mpy_files_bytes": mpy}
    if plain.exists() and frozen.exists():
        out["frozen_binary_growth_bytes"] = frozen.stat().st_size - plain.stat().st_size
    return out


def run(broker: Broker, work: Path, *, quick: bool = False) -> dict:
    seconds = 60.0 if quick else 600.0
    print(f"bench: RAM, standard scenario (SIM7600, {INTERVAL_S} s), {seconds:.0f} s soaks")
    target = (img.board_info(PSRAM_LESS).get("ram") or {}).get("micropython_heap")
    results: dict = {"soak_s": seconds, "psram_less_heap": target, "runtimes": {}}
    ranges = {"esp32-frozen": (48, 128), "esp32": (96, 256), "unix64": (128, 384)}
    runtimes = {}
    for name in ranges:
        try:
            runtime = rt.resolve(name, board=BOARD)
        except rt.RuntimeUnavailable as e:
            results["runtimes"][name] = {"error": str(e)}
            continue
        if name == "unix64" or runtime.faithful:  # else: the faithful build is missing
            runtimes[name] = runtime

    def measure(name: str) -> dict:
        lo, hi = ranges[name]
        found = smallest_heap(broker, work, name, lo, hi, seconds)
        if runtimes[name].faithful:
            heap = max(found["smallest_heap"] or hi * 1024, target or 0) + 32 * 1024
            found["allocation"] = allocation_per_reading(broker, work, name, heap, 40.0, 120.0)
        return found

    # The three runtimes side by side: a full run takes two soaks, not six.
    with ThreadPoolExecutor(max_workers=len(runtimes) or 1) as pool:
        for name, found in zip(runtimes, pool.map(measure, runtimes), strict=True):
            results["runtimes"][name] = found
    results["app_size"] = app_size_on_flash()
    return results


def summary(r: dict) -> str:
    lines = [f"RAM (standard scenario, {r['soak_s']:.0f} s soaks; goal: fits "
             f"{r['psram_less_heap']} B, the heap of an ESP32 without PSRAM):"]  # fmt: skip
    for name, found in r["runtimes"].items():
        if "error" in found:
            lines.append(f"  {name:13s} {found['error']}")
            continue
        smallest = found["smallest_heap"]
        live = max((t["heap_used_max"] for t in found["trials"] if t["healthy"]), default=0)
        lines.append(
            f"  {name:13s} smallest heap "
            f"{(str(smallest // 1024) + ' KiB') if smallest else 'none in range':>13s}, "
            f"live heap high-water {live} B"
        )
        alloc = found.get("allocation") or {}
        if "bytes_per_reading" in alloc:
            lines.append(
                f"  {'':13s} per reading: {alloc['bytes_per_reading']:.0f} B allocated in "
                f"{alloc['allocations_per_reading']:.0f} allocations, "
                f"{alloc['collections_per_reading']:.3f} collections"
            )
    size = r.get("app_size", {})
    lines.append(f"  app on flash: {size.get('mpy_files_bytes')} B of .mpy; frozen, the "
                 f"runtime grows by {size.get('frozen_binary_growth_bytes')} B")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    import tempfile

    from host_tools.broker import start_broker

    with tempfile.TemporaryDirectory(prefix="albatross-ram-") as tmp, start_broker() as b:
        res = run(b, Path(tmp), quick="--quick" in sys.argv)
    Path("bench-ram.json").write_text(json.dumps(res, indent=2) + "\n")
    print(summary(res))
