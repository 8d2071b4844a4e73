"""Location figures for `make bench`, each next to a baseline from the same run.

- Accuracy and time to first fix through each GNSS source (SIM7600, A7670 and BG96 modem
  GNSS, a standalone NMEA receiver on a UART), with the simulator's real-receiver timings
  (cold start 30 s): the firmware's TTFF against the simulator's own, the reported positions
  against the route (host_tools/gnss_accuracy.py).
- Motion-aware reporting over one window: the same tracker config on an asset driving the
  Paris route and on one parked from the start: readings, readings per km, GNSS on-time, and
  the same per hour. The live heap of both against a board without GNSS (the RAM GNSS adds).
- The NMEA parser's throughput and RAM on the ESP32-faithful runtime (benchmark_nmea.py),
  when present.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
from pathlib import Path

from host_tools.broker import Broker
from host_tools.gnss_accuracy import Clocks, accuracy
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard import runtime as rt
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard, parse_heap

SOURCES = (("sim7600", "modem"), ("a7670", "modem"), ("bg96", "modem"), ("none", "uart"))
# A tracker configured for assets: a report every 10 minutes, more when it moves.
MOTION_CONFIG = {
    "interval_s": 600,
    "report_min_s": 10,
    "move_distance_m": 200,
    "move_heading_deg": 45,
    "stationary_after_s": 60,
    "parked_check_s": 120,
    "gnss_fix_timeout_s": 60,
    "status_interval_s": 10,
}


def _board(
    broker: Broker, work: Path, name: str, modem: str, gnss: str, config: dict, **kw: object
) -> VirtualBoard:
    cfg = {"broker_host": broker.host, "broker_port": broker.port, "device_id": name, **config}
    if modem != "none":
        kw["modem_timings"] = Timings.fast()
    return VirtualBoard(name=name, workdir=work / name, config=cfg, modem=modem, gnss=gnss, **kw)


def _psram_less() -> dict:
    """The production build on the PSRAM-less board: the app frozen, 111,936 B of heap, so
    the live heap figures are a real ESP32-WROOM's (not .mpy bytecode on a big heap)."""
    try:
        runtime = rt.resolve("esp32-frozen", board="unix_sim")
    except rt.RuntimeUnavailable:
        return {}
    return {"runtime": runtime, "heap": parse_heap("esp32_generic_sim7600")}


def _last_status(watch: MqttWatch, dev: str) -> dict:
    topic = f"albatross/{dev}/status"
    found = [m.json for m in watch.messages if m.topic == topic]
    online = [j for j in found if j.get("state") == "online"]
    return online[-1] if online else {}


def _sim(vb: VirtualBoard):
    return vb.gnss_uart.sim if vb.gnss_uart else vb.modem_gnss


def run(broker: Broker, work: Path, *, quick: bool = False) -> dict:
    window = 180.0 if quick else 600.0
    acc_s = 60.0 if quick else 90.0
    watch = MqttWatch(broker.url)
    clocks = Clocks()
    boards: dict[str, VirtualBoard] = {}
    try:
        for modem, gnss in SOURCES:
            name = f"acc-{modem if gnss == 'modem' else 'uart'}"
            boards[name] = _board(broker, work, name, modem, gnss,
                                  {"interval_s": 5, "status_interval_s": 10})  # fmt: skip
        small = _psram_less()
        for name, gnss in (("moving", "uart"), ("parked", "uart"), ("nognss", "none")):
            boards[name] = _board(broker, work, name, "none", gnss, MOTION_CONFIG, **small)
        for vb in boards.values():
            vb.start()
        boards["parked"].motion.park()
        start = time.monotonic()
        periods = {"moving": _OnPeriods(boards["moving"]), "parked": _OnPeriods(boards["parked"])}
        _watch_until(start + acc_s, periods)
        sources = {}
        for name in [n for n in boards if n.startswith("acc-")]:
            vb = boards.pop(name)
            status = _last_status(watch, name).get("gnss") or {}
            sim = _sim(vb).snapshot()
            vb.stop()
            recs = watch.telemetry(name)
            try:
                acc = accuracy(recs, vb.motion, clocks).as_dict()
            except ValueError:
                acc = None
            sources[name[4:]] = {
                "ttff_firmware_s": status.get("ttff_s"),
                "ttff_simulator_s": sim.get("ttff_s"),
                "accuracy": acc,
                "readings": len(recs),
            }
        _watch_until(start + window, periods)
        motion = {}
        for name in ("moving", "parked", "nognss"):
            vb = boards[name]
            status = _last_status(watch, name)
            out = {
                "readings": len(watch.telemetry(name)),
                "heap_used_max": (status.get("heap") or {}).get("used_max"),
            }
            if vb.motion is not None and vb.gnss_uart is not None:
                truth = vb.motion.snapshot()
                km = vb.motion.route.length_m / 1000 if name == "moving" else 0.0
                if name == "moving" and truth["route_time_s"] < vb.motion.route.duration_s:
                    km = _travelled_m(vb) / 1000
                on_s = vb.gnss_uart.sim.on_time_s()
                out.update(
                    km=round(km, 2),
                    readings_per_km=round(out["readings"] / km, 1) if km else None,
                    gnss_on_s=round(on_s, 1),
                    gnss_on_share=round(on_s / window, 3),
                    gnss_on_s_per_hour=round(on_s * 3600 / window),
                    readings_per_hour=round(out["readings"] * 3600 / window),
                    gnss_on_periods_s=[round(p, 1) for p in periods[name].closed()],
                    firmware=(status.get("gnss") or {}),
                )
            motion[name] = out
        for vb in boards.values():
            vb.stop()
        boards.clear()
    finally:
        for vb in boards.values():
            with contextlib.suppress(Exception):
                vb.stop()
        watch.close()
    # A parked asset's steady state: the first on-period is the search and the minutes before
    # it parked; each later one is a movement check (warm start).
    checks = motion["parked"]["gnss_on_periods_s"][1:]
    per_check = sum(checks) / len(checks) if checks else None
    motion["parked"]["steady_gnss_on_s_per_check"] = round(per_check, 2) if checks else None
    motion["parked"]["steady_gnss_on_s_per_hour"] = (
        round(per_check * 3600 / MOTION_CONFIG["parked_check_s"], 1) if checks else None
    )
    base = motion["nognss"]["heap_used_max"]
    moving_heap = motion["moving"]["heap_used_max"]
    result = {
        "window_s": window,
        "sources": sources,
        "motion": motion,
        "motion_config": MOTION_CONFIG,
        "gnss_heap_cost_bytes": moving_heap - base if moving_heap and base else None,
        "heap_runtime": "esp32-frozen at 111,936 B" if small else "default",
        "parser": _parser_figures(),
    }
    (work / "gnss-bench.json").write_text(json.dumps(result, indent=2))
    return result


class _OnPeriods:
    """The stretches a board's GNSS receiver was powered, sampled every 0.2 s."""

    def __init__(self, vb: VirtualBoard) -> None:
        self.sim = _sim(vb)
        self.periods: list[float] = []
        self._since: float | None = None

    def sample(self) -> None:
        now = time.monotonic()
        if self.sim.powered and self._since is None:
            self._since = now
        elif not self.sim.powered and self._since is not None:
            self.periods.append(now - self._since)
            self._since = None

    def closed(self) -> list[float]:
        return list(self.periods)


def _watch_until(deadline: float, periods: dict[str, _OnPeriods]) -> None:
    while time.monotonic() < deadline:
        for p in periods.values():
            p.sample()
        time.sleep(0.2)


def _travelled_m(vb: VirtualBoard) -> float:
    """Metres of the route covered so far (the route's points up to the current route time)."""
    from host_tools.vboard.gnss.route import haversine_m

    t = vb.motion.route_time()
    pts = vb.motion.route.points
    total = 0.0
    for a, b in zip(pts, pts[1:], strict=False):
        if b.t <= t:
            total += haversine_m(a.lat, a.lon, b.lat, b.lon)
        elif a.t < t:
            total += haversine_m(a.lat, a.lon, b.lat, b.lon) * (t - a.t) / (b.t - a.t)
    return total


def _parser_figures() -> dict | None:
    try:
        mod = importlib.import_module("host_tools.benchmark_nmea")
    except ImportError:
        return None
    return mod.run()


def summary(r: dict) -> str:
    lines = ["gnss: source      TTFF fw/sim (s)   cross-track median/p95 (m)   vs truth p95 (m)"]
    for name, s in r["sources"].items():
        a = s["accuracy"] or {}
        lines.append(
            f"gnss: {name:9s}   {s['ttff_firmware_s']!s:>6} / {s['ttff_simulator_s']!s:<6}   "
            f"{a.get('cross_median_m', '-')!s:>6} / {a.get('cross_p95_m', '-')!s:<6}"
            f"               {a.get('truth_p95_m', '-')!s}"
        )
    w = r["window_s"]
    for name in ("moving", "parked"):
        m = r["motion"][name]
        lines.append(
            f"gnss: {name:7s} over {w:.0f} s: {m['readings']} readings, {m.get('km')} km, "
            f"{m.get('readings_per_km')} per km, GNSS on {m.get('gnss_on_s')} s "
            f"({(m.get('gnss_on_share') or 0) * 100:.0f} %; {m.get('gnss_on_s_per_hour')} s/h)"
        )
    p = r["motion"]["parked"]
    lines.append(
        f"gnss: parked steady state: {p['steady_gnss_on_s_per_check']} s on per check "
        f"-> {p['steady_gnss_on_s_per_hour']} s/h "
        f"(checks every {MOTION_CONFIG['parked_check_s']} s)"
    )
    lines.append(f"gnss: live heap GNSS adds (moving vs no GNSS): {r['gnss_heap_cost_bytes']} B")
    parser = r.get("parser")
    if parser:
        from host_tools.benchmark_nmea import summary as parser_summary

        lines.append("gnss: " + parser_summary(parser))
    return "\n".join(lines)
