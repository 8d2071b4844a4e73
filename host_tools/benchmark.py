"""`make bench`: the numbers issue notes quote, each against a baseline measured in the same
run (these machines are shared and noisy, so ratios travel better than seconds).

Figures: vboard start to first telemetry PUBACK'd at the broker (baseline: start to a bare
REPL), the firmware's steady-state live heap high-water mark (baseline: an idle REPL), and the
RAM of the standard scenario on each runtime (benchmark_ram.py: smallest heap, live heap, bytes
and collections per reading, app size on flash), the modem path and the store
(benchmark_modem.py, benchmark_store.py), and the console (benchmark_console.py: keystroke and
command latency while reporting, RAM the command line adds) and location
(benchmark_gnss.py: accuracy and time to first fix per GNSS source, readings and GNSS on-time
of a moving and a parked asset, the NMEA parser's speed and RAM).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from host_tools import (
    benchmark_alarms,
    benchmark_console,
    benchmark_gnss,
    benchmark_modem,
    benchmark_ram,
    benchmark_store,
)
from host_tools import image as img
from host_tools.broker import Broker, start_broker
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard import runtime as rt
from host_tools.vboard.runner import VirtualBoard

RESULTS = Path("bench-results.json")


def _wait_console(vb: VirtualBoard, text: str, timeout: float) -> float:
    """The moment `text` showed on the console (polled every 5 ms)."""
    vb.wait_console(text, timeout, poll=0.005)
    return time.monotonic()


def boot_baseline(work: Path, runs: int) -> list[float]:
    """Seconds from start() to a main.py that only prints: process + flash mount + boot."""
    image = img.build_image(
        work / "baseline.img", board="unix_sim", extra=[("main.py", b'print("baseline: ready")\n')]
    )
    out = []
    for n in range(runs):
        vb = VirtualBoard(name=f"base{n}", workdir=work / f"base{n}", image=image)
        t0 = time.monotonic()
        vb.start()
        try:
            out.append(_wait_console(vb, "baseline: ready", 30) - t0)
        finally:
            vb.stop()
    return out


def idle_heap(work: Path) -> int:
    """Live heap of an idle board (ROM + REPL), after a collection."""
    image = img.build_image(
        work / "idle.img",
        board="unix_sim",
        extra=[("main.py", (b"import gc\ngc.collect()\nprint('idle-heap', gc.mem_alloc())\n"))],
    )
    with VirtualBoard(name="idle", workdir=work / "idle", image=image) as vb:
        text = vb.wait_console("idle-heap", 30)
    return int(text.split("idle-heap")[1].split()[0])


def _tracker(
    broker: Broker, work: Path, name: str, heap: int | None = None, interval: int = 1
) -> VirtualBoard:
    """The tracker on the host-TCP board: the skeleton's figures, free of modem timing."""
    config = {
        "broker_host": broker.host,
        "broker_port": broker.port,
        "device_id": name,
        "interval_s": interval,
        "status_interval_s": 10,
    }
    kw = {"heap": heap} if heap else {}
    return VirtualBoard(name=name, workdir=work / name, config=config, modem="none", **kw)


def first_publish(broker: Broker, work: Path, runs: int) -> list[float]:
    """Seconds from start() to the first telemetry message delivered by the broker (it was
    PUBACK'd to the device before the broker forwarded it at QoS 1)."""
    out = []
    for n in range(runs):
        watch = MqttWatch(broker.url, f"albatross/fp{n}/telemetry")
        vb = _tracker(broker, work, f"fp{n}")
        t0 = time.monotonic()
        vb.start()
        try:
            msg = watch.wait_for(lambda m: True, 60, what="first telemetry")
            out.append(msg.at - t0)
        finally:
            vb.stop()
            watch.close()
    return out


def soak(broker: Broker, work: Path, heap: int | None, seconds: float, interval: int = 2) -> dict:
    """The tracker on the host-TCP board for `seconds` (benchmark_ram.observe judges it)."""
    vb = _tracker(broker, work, f"soak{heap or 0}", heap=heap, interval=interval)
    return benchmark_ram.observe(broker, vb, seconds, interval)


def run(out: Path = RESULTS, *, quick: bool = False) -> dict:
    runs = 2 if quick else 5
    soak_s = 20.0 if quick else 60.0
    with tempfile.TemporaryDirectory(prefix="albatross-bench-") as tmp, start_broker() as broker:
        work = Path(tmp)
        print(f"bench: {broker.kind} broker; {runs} runs each; soak {soak_s:.0f} s", flush=True)
        base = boot_baseline(work, runs)
        fp = first_publish(broker, work, runs)
        idle = idle_heap(work)
        steady = soak(broker, work, None, soak_s)
        ram = benchmark_ram.run(broker, work, quick=quick)
        modem = benchmark_modem.run(broker, work, quick=quick)
        store = benchmark_store.run(broker, work, quick=quick)
        console = benchmark_console.run(broker, work, quick=quick)
        gnss = benchmark_gnss.run(broker, work, quick=quick)
        alarms = benchmark_alarms.run(broker, work, quick=quick)
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "broker": broker.kind,
        "boot_to_repl_s": {"median": statistics.median(base), "runs": base},
        "start_to_first_publish_s": {"median": statistics.median(fp), "runs": fp},
        "first_publish_over_boot": statistics.median(fp) / statistics.median(base),
        "idle_heap_bytes": idle,
        "steady_heap_high_water_bytes": steady["heap_used_max"],
        "steady_heap_over_idle": steady["heap_used_max"] / idle if idle else None,
        "steady_soak": steady,
        "runtime": rt.resolve().describe(),
        "ram": ram,
        "soak_s": soak_s,
        "modem": modem,
        "store": store,
        "console": console,
        "gnss": gnss,
        "alarms": alarms,
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(benchmark_ram.summary(ram))
    print(benchmark_modem.summary(modem))
    print(benchmark_store.summary(store))
    print(benchmark_console.summary(console))
    print(benchmark_gnss.summary(gnss))
    print(benchmark_alarms.summary(alarms))
    print(f"bench: written to {out}")
    return results


def summary(r: dict) -> str:
    return "\n".join(
        [
            f"runtime: {r['runtime']}",
            f"vboard start -> REPL (baseline):   {r['boot_to_repl_s']['median'] * 1000:7.0f} ms",
            "vboard start -> first telemetry:   "
            f"{r['start_to_first_publish_s']['median'] * 1000:7.0f} ms  "
            f"({r['first_publish_over_boot']:.1f}x baseline)",
            f"idle REPL live heap (baseline):    {r['idle_heap_bytes']:7d} B",
            f"tracker steady live heap max:      {r['steady_heap_high_water_bytes']:7d} B  "
            f"({r['steady_heap_over_idle']:.1f}x idle)",
        ]
    )
