"""Modem figures for `make bench`: what one report costs on the modem link in steady state
(AT commands, UART bytes each way, modem awake time), the firmware's own share of the time
from power-on to the first PUBACK (total minus the delays the simulated network imposed,
compared with the host-TCP board), and how long recovery takes per fault."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from host_tools.broker import Broker
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard

DIALECTS = ("sim7600", "a7670", "bg96")
RECOVERY_FAULTS = (
    ("modem_peer_close", {}, False),
    ("modem_pdp_drop", {}, False),
    ("modem_deregister", {}, True),
    ("modem_hang", {}, False),
)


def _board(
    broker: Broker,
    work: Path,
    name: str,
    modem: str,
    interval: int = 2,
    timings: Timings | None = None,
) -> VirtualBoard:
    config = {
        "broker_host": broker.host,
        "broker_port": broker.port,
        "device_id": name,
        "interval_s": interval,
        "status_interval_s": 3600,
    }
    return VirtualBoard(
        name=name, workdir=work / name, config=config, modem=modem, modem_timings=timings
    )


def first_puback(broker: Broker, work: Path, modem: str, runs: int) -> dict:
    """vboard start -> first telemetry at the broker, and the same minus simulated waits."""
    totals, overheads = [], []
    for n in range(runs):
        name = f"fp-{modem}-{n}"
        watch = MqttWatch(broker.url, f"albatross/{name}/telemetry")
        vb = _board(broker, work, name, modem, timings=Timings())
        t0 = time.monotonic()
        vb.start()
        try:
            msg = watch.wait_for(lambda m: True, 180, what="first telemetry")
            total = msg.at - t0
            imposed = vb.modem_sim.imposed_delays()["total"] if vb.modem_sim else 0.0
        finally:
            vb.stop()
            watch.close()
        totals.append(total)
        overheads.append(total - imposed)
    return {
        "total_s": statistics.median(totals),
        "firmware_s": statistics.median(overheads),
        "runs_total_s": totals,
        "runs_firmware_s": overheads,
    }


def per_report(broker: Broker, work: Path, modem: str, reports: int) -> dict:
    """Steady state: counters over `reports` telemetry messages, divided by their number."""
    name = f"steady-{modem}"
    watch = MqttWatch(broker.url, f"albatross/{name}/telemetry")
    vb = _board(broker, work, name, modem, interval=1, timings=Timings.fast())
    vb.start()
    try:
        watch.wait_for(lambda m: True, 120, what="first telemetry")
        time.sleep(1.5)  # let the session settle: status, first batch
        sim = vb.modem_sim
        assert sim is not None
        a = sim.snapshot()
        mark = watch.mark()
        watch.wait_for(lambda m: True, 120, after=mark + reports - 1, what="reports")
        b = sim.snapshot()
        n = len(watch.messages) - mark
    finally:
        vb.stop()
        watch.close()
    commands = sum(b["commands"].values()) - sum(a["commands"].values())
    by_name = {
        k: v - a["commands"].get(k, 0)
        for k, v in b["commands"].items()
        if v - a["commands"].get(k, 0)
    }
    return {
        "reports": n,
        "at_commands": commands / n,
        "at_by_command": {k: v / n for k, v in sorted(by_name.items())},
        "uart_bytes_mcu_to_modem": (b["bytes_rx"] - a["bytes_rx"]) / n,
        "uart_bytes_modem_to_mcu": (b["bytes_tx"] - a["bytes_tx"]) / n,
        "awake_s": (b["awake_s"] - a["awake_s"]) / n,
    }


def recovery(broker: Broker, work: Path, modem: str) -> dict:
    """Seconds from a fault's end (or start, for one-shot faults) to the next report."""
    out = {}
    name = f"rec-{modem}"
    watch = MqttWatch(broker.url, f"albatross/{name}/telemetry")
    vb = _board(broker, work, name, modem, interval=1, timings=Timings.fast())
    vb.start()
    try:
        watch.wait_for(lambda m: True, 120, what="first telemetry")
        for fault, params, switch_off in RECOVERY_FAULTS:
            assert vb.bench is not None
            vb.bench.fault(fault, True, **params)
            if switch_off:
                time.sleep(2)
                vb.bench.fault(fault, False)
            t0 = time.monotonic()
            time.sleep(0.5)  # let the fault bite before looking for the next report
            mark = watch.mark()
            msg = watch.wait_for(lambda m: True, 300, after=mark, what=f"report after {fault}")
            out[fault] = round(msg.at - t0, 2)
            if fault == "modem_hang":
                vb.bench.fault(fault, False)
    finally:
        vb.stop()
        watch.close()
    return out


def run(broker: Broker, work: Path, *, quick: bool) -> dict:
    runs = 1 if quick else 3
    results: dict = {"tcp_first_publish": first_puback(broker, work, "none", runs)}
    for modem in DIALECTS:
        print(f"bench: modem {modem}", flush=True)
        results[modem] = {
            "first_puback": first_puback(broker, work, modem, runs),
            "per_report": per_report(broker, work, modem, 5 if quick else 20),
            "recovery_s": recovery(broker, work, modem),
        }
    return results


def summary(r: dict) -> str:
    lines = [f"host TCP: start -> first telemetry {r['tcp_first_publish']['total_s']:.2f} s"]
    for modem in DIALECTS:
        m = r[modem]
        fp, pr = m["first_puback"], m["per_report"]
        share = fp["firmware_s"] / r["tcp_first_publish"]["total_s"]
        lines.append(
            f"{modem}: start -> first PUBACK {fp['total_s']:.2f} s, firmware share "
            f"{fp['firmware_s']:.2f} s ({share:.1f}x host TCP); per report "
            f"{pr['at_commands']:.1f} AT commands, "
            f"{pr['uart_bytes_mcu_to_modem']:.0f} B to / {pr['uart_bytes_modem_to_mcu']:.0f} B "
            f"from modem, awake {pr['awake_s']:.2f} s; recovery "
            + ", ".join(f"{k[6:]} {v:.1f} s" for k, v in m["recovery_s"].items())
        )
    return "\n".join(lines)
