"""Alarm and downlink figures for `make bench`, each beside its baseline from the same run.

- Alarm latency: from the bench taking the fridge past its limit, less the rule's minimum
  duration, to the alarm at the broker; on an idle link (baseline) and while a 1,000-reading
  telemetry backlog drains through the simulated SIM7600.
- Downlink round trips: `config/set` -> `config/reported` (validate, store atomically,
  answer with the whole config) against a `ping` -> `cmd/ack` (the same path doing nothing).
- RAM of the alarm rules, statistics and downlink on the production build (app frozen, the
  PSRAM-less heap) and their size on flash as .mpy.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from host_tools import image as img
from host_tools import remote
from host_tools.broker import Broker
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard import runtime as rt
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
DELAY_S = 1  # the rule's minimum duration
FRIDGE = {"alarm_temp": "high", "alarm_temp_high_c": 8.0, "alarm_temp_delay_s": DELAY_S}


def _board(broker: Broker, work: Path, name: str, **config: object) -> VirtualBoard:
    cfg = {"broker_host": broker.host, "broker_port": broker.port, "device_id": name}
    cfg.update(FRIDGE)
    cfg.update(config)
    return VirtualBoard(
        name=name, workdir=work / name, config=cfg, modem="sim7600",
        modem_timings=Timings.fast(), temperature=5.0,
    ).start()  # fmt: skip


def _stored(vb: VirtualBoard) -> int:
    return len(re.findall(r"stored seq \d+", vb.console_text()))


def _excursion(vb: VirtualBoard, watch: MqttWatch, dev: str) -> float:
    """One warm-up: seconds from the crossing + minimum duration to the raised alarm at the
    broker; then back to cold until it clears."""
    topic = f"albatross/{dev}/alarm"
    mark = watch.mark()
    crossed = time.monotonic()
    vb.bench.set_temperature(9.5)
    msg = watch.wait_for(
        lambda m: m.topic == topic and any(r["state"] == "raised" for r in m.records),
        60, what="alarm raised", after=mark,
    )  # fmt: skip
    latency = msg.at - crossed - DELAY_S
    vb.bench.set_temperature(5.0)
    watch.wait_for(
        lambda m: m.topic == topic and any(r["state"] == "cleared" for r in m.records),
        60, what="alarm cleared", after=mark,
    )  # fmt: skip
    return latency


def alarm_latency(broker: Broker, work: Path, runs: int) -> dict:
    watch = MqttWatch(broker.url)
    idle, loaded, behind = [], [], []
    try:
        vb = _board(broker, work, "alarm-idle", interval_s=0.5)
        dev = "alarm-idle"
        watch.wait_for(lambda m: m.topic == f"albatross/{dev}/telemetry", 60, what="telemetry")
        for _ in range(runs):
            idle.append(_excursion(vb, watch, dev))
        vb.stop()
        dev = "alarm-backlog"
        topic_t = f"albatross/{dev}/telemetry"
        vb = _board(broker, work, dev, interval_s=0.05, batch_size=2)
        watch.wait_for(lambda m: m.topic == topic_t, 60, what="telemetry")
        for _ in range(runs):
            vb.bench.fault("modem_deregister", True)
            start = _stored(vb)
            while _stored(vb) - start < 1000:
                time.sleep(0.2)
            mark = watch.mark()
            vb.bench.fault("modem_deregister", False)
            watch.wait_for(lambda m: m.topic == topic_t, 120, what="backlog", after=mark)
            before = watch.mark()
            loaded.append(_excursion(vb, watch, dev))
            # Backlog readings (older than the warm-up) that reached the broker after it.
            alarm_at = next(
                m.at for m in watch.messages[before:] if m.topic == f"albatross/{dev}/alarm"
            )
            behind.append(
                sum(
                    len(m.records)
                    for m in watch.messages[before:]
                    if m.topic == topic_t and m.at > alarm_at
                )
            )
        vb.stop()
    finally:
        watch.close()
    return {
        "idle_s": _summary(idle),
        "with_1000_backlog_s": _summary(loaded),
        "backlog_readings_delivered_after_the_alarm": behind,
        "backlog_over_idle": statistics.median(loaded) / statistics.median(idle),
    }


def downlink(broker: Broker, work: Path, runs: int) -> dict:
    dev = "downlink"
    vb = _board(broker, work, dev, interval_s=1)
    watch = MqttWatch(broker.url)
    try:
        watch.wait_for(lambda m: m.topic == f"albatross/{dev}/telemetry", 60, what="telemetry")
        config_rt, ping_rt = [], []
        for n in range(runs):
            res = remote.set_config(broker.url, dev, {"status_interval_s": 600 + n}, timeout=60)
            assert res.ok, res
            config_rt.append(res.elapsed_s)
            ack = remote.send_command(broker.url, dev, "ping", timeout=60)
            assert ack.ok, ack
            ping_rt.append(ack.elapsed_s)
    finally:
        watch.close()
        vb.stop()
    return {"config_set_to_reported_s": _summary(config_rt), "ping_to_ack_s": _summary(ping_rt)}


def _summary(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "runs": [round(v, 3) for v in values],
    }


_RAM_PROBE = """
import gc
def m():
    gc.collect(); return gc.mem_alloc()
import tracker.config as c, tracker.settings
cfg = c.Config()
a = m()
import tracker.alarms.rules, tracker.alarms.geofence, tracker.alarms.coldchain
import tracker.alarms.keeper
b = m()
from tracker.alarms.rules import AlarmRules
from tracker.alarms.coldchain import Stats, Trip
for k, v in (("alarm_temp", "both"), ("alarm_humidity", "both"), ("alarm_sensor", True),
             ("alarm_battery_low_v", 3.3), ("alarm_geofence", "both"),
             ("geofences", "depot:c:48.8566,2.3522,500;yard:p:48.1,2.1 48.2,2.1 48.2,2.2")):
    cfg.set(k, v)
objs = (AlarmRules(cfg), Stats(cfg), Stats(cfg), Trip(cfg))
d = m()
import tracker.uplink.downlink
e = m()
print("ram", b - a, d - b, e - d)
"""


def ram_and_flash() -> dict:
    """Heap the alarm code and objects take on the frozen build, and .mpy bytes on flash."""
    out: dict = {}
    try:
        runtime = rt.resolve("esp32-frozen", board="unix_sim")
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(_RAM_PROBE)
        res = subprocess.run(
            [runtime.path, "-X", "heapsize=111936", f.name],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        line = next(x for x in res.stdout.splitlines() if x.startswith("ram "))
        modules, objects, downlink_mod = (int(x) for x in line.split()[1:])
        out["heap_frozen"] = {
            "alarm_modules": modules,
            "every_rule_enabled_plus_window_and_trip": objects,
            "downlink_module": downlink_mod,
        }
    except (rt.RuntimeUnavailable, StopIteration, OSError, subprocess.SubprocessError) as e:
        out["heap_frozen"] = f"not measured: {e}"
    sizes = {}
    for rel in ("tracker/alarms/rules.py", "tracker/alarms/geofence.py",
                "tracker/alarms/coldchain.py", "tracker/alarms/keeper.py",
                "tracker/uplink/downlink.py", "tracker/remote_commands.py"):  # fmt: skip
        _, mpy = img.compile_mpy(rel, (FIRMWARE / rel).read_bytes())
        sizes[rel] = len(mpy)
    out["flash_mpy_bytes"] = sizes
    out["flash_mpy_total"] = sum(sizes.values())
    return out


def run(broker: Broker, work: Path, *, quick: bool = False) -> dict:
    runs = 2 if quick else 5
    return {
        "latency": alarm_latency(broker, work, runs),
        "downlink": downlink(broker, work, runs),
        "cost": ram_and_flash(),
    }


def summary(r: dict) -> str:
    lat, dl, cost = r["latency"], r["downlink"], r["cost"]
    return "\n".join(
        [
            f"alarm: latency idle {lat['idle_s']['median']} s, with a 1,000-reading backlog "
            f"{lat['with_1000_backlog_s']['median']} s ({lat['backlog_over_idle']:.2f}x); "
            f"backlog readings delivered after the alarm: "
            f"{lat['backlog_readings_delivered_after_the_alarm']}",
            f"downlink: config/set -> config/reported {dl['config_set_to_reported_s']['median']} s"
            f", ping -> ack {dl['ping_to_ack_s']['median']} s",
            f"alarm cost: heap {cost['heap_frozen']}, flash {cost['flash_mpy_total']} B .mpy",
        ]
    )
