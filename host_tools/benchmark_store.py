"""Store-and-forward figures for `make bench`: backlog drain rate against the modem UART's
line rate (115200 baud, 10 bits a byte = 11,520 B/s: the physical limit of the link), flash
programs and erases per record, records per MQTT message and payload bytes per record, and
the power-cut campaign's tallies."""

from __future__ import annotations

import time
from pathlib import Path

from host_tools.broker import Broker
from host_tools.delivery_check import DeliveryCheck
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.campaign import run_campaign, stored_seqs
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard

LINE_RATE = 115200 / 10  # bytes per second on an 8N1 UART


def _stored(vb: VirtualBoard) -> int:
    return max(stored_seqs(vb))


def drain(broker: Broker, work: Path, backlog: int) -> dict:
    name = "drain"
    config = {
        "broker_host": broker.host,
        "broker_port": broker.port,
        "device_id": name,
        "interval_s": 0.02,
        "batch_size": 50,
        "status_interval_s": 3600,
    }
    watch = MqttWatch(broker.url, f"albatross/{name}/telemetry")
    vb = VirtualBoard(
        name=name,
        workdir=work / name,
        config=config,
        modem="sim7600",
        modem_timings=Timings.fast(),
    )
    vb.start()
    try:
        watch.wait_for(lambda m: True, 120, what="first telemetry")
        assert vb.bench is not None and vb.supervisor is not None and vb.modem_sim is not None
        flash0 = vb.supervisor.status()["flash"]
        first = _stored(vb)
        vb.bench.fault("modem_deregister", True)
        while _stored(vb) < first + backlog:
            time.sleep(0.5)
        flash1 = vb.supervisor.status()["flash"]
        appended = _stored(vb) - first
        # Stop sampling's share of the link from muddying the drain: measure the backlog only.
        vb.bench.fault("modem_deregister", False)
        upto = _stored(vb)
        uart0 = vb.modem_sim.snapshot()["bytes_rx"]
        t0 = time.monotonic()
        mark = watch.mark()
        while True:
            checker = DeliveryCheck()
            for m in watch.messages:
                checker.feed(m.topic, m.payload)
            if checker.seqs(name) >= set(range(first, upto + 1)):
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError("backlog not delivered in 600 s")
            time.sleep(0.2)
        seconds = time.monotonic() - t0
        uart = vb.modem_sim.snapshot()["bytes_rx"] - uart0
    finally:
        vb.stop()
        watch.close()
    drained = upto - first + 1
    msgs = watch.messages[mark:]
    per_msg = [len(m.records) for m in msgs]
    payload = sum(len(m.payload) for m in msgs)
    return {
        "backlog_records": drained,
        "drain_s": round(seconds, 2),
        "records_per_s": round(drained / seconds, 1),
        "uart_bytes_per_s": round(uart / seconds),
        "fraction_of_line_rate": round(uart / seconds / LINE_RATE, 3),
        "records_per_message": round(sum(per_msg) / len(per_msg), 1) if per_msg else 0,
        "payload_bytes_per_record": round(payload / max(sum(per_msg), 1), 1),
        "programs_per_record": round((flash1["programs"] - flash0["programs"]) / appended, 2),
        "erases_per_record": round((flash1["erases"] - flash0["erases"]) / appended, 3),
    }


def run(broker: Broker, work: Path, *, quick: bool) -> dict:
    print("bench: store drain", flush=True)
    result = {"drain": drain(broker, work, 500 if quick else 3000)}
    print("bench: power-cut campaign", flush=True)
    campaign = run_campaign(
        broker,
        work / "campaign",
        points=20 if quick else 320,
        targeted=0 if quick else 60,
        scenario_s=4.0 if quick else 6.0,
        log=lambda s: print(s, flush=True),
    )
    result["campaign"] = campaign.summary()
    return result


def summary(r: dict) -> str:
    d, c = r["drain"], r["campaign"]
    return "\n".join(
        [
            f"backlog drain: {d['backlog_records']} records in {d['drain_s']} s = "
            f"{d['records_per_s']} records/s, {d['uart_bytes_per_s']} B/s on the UART = "
            f"{d['fraction_of_line_rate']:.0%} of 115200 baud's line rate",
            f"per record: {d['programs_per_record']} flash programs, {d['erases_per_record']} "
            f"erases; {d['records_per_message']} records per MQTT message, "
            f"{d['payload_bytes_per_record']} payload bytes per record",
            f"power-cut campaign (torn writes): {c['cut_points']} cut points over "
            f"{c['flash_ops_in_scenario']} flash operations, {c['cuts']} cuts "
            f"({c['cuts_at_risk']} with {c['readings_at_risk']} readings at risk), "
            f"{c['readings_stored_before_cuts']} readings stored before cuts, "
            f"{c['lost']} lost, {c['seq_conflicts']} seq conflicts, "
            f"{c['renumbered']} renumbered, {c['duplicates']} duplicates removed by dedupe, "
            f"{c['failed_boots']} failed boots, {c['damaged_configs']} damaged configs",
        ]
    )
