"""Alarm and downlink figures for `make bench`, each beside its baseline from the same run.

- Alarm latency: from the bench taking the fridge past its limit to the alarm at the broker
  on an idle link; and after an outage that queued 1,000 readings (the fridge warmed during
  it), the alarm's arrival after the link is back against the backlog's (the baseline).
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
    """One warm-up on a live link: seconds from the bench crossing the limit to the raised
    alarm at the broker (the rule's 1 s minimum duration included, which the device counts in
    whole seconds); then back to cold until it clears."""
    topic = f"albatross/{dev}/alarm"
    mark = watch.mark()
    crossed = time.monotonic()
    vb.bench.set_temperature(9.5)
    msg = watch.wait_for(
        lambda m: m.topic == topic and any(r["state"] == "raised" for r in m.records),
        60, what="alarm raised", after=mark,
    )  # fmt: skip
    vb.bench.set_temperature(5.0)
    watch.wait_for(
        lambda m: m.topic == topic and any(r["state"] == "cleared" for r in m.records),
        60, what="alarm cleared", after=mark,
    )  # fmt: skip
    return msg.at - crossed


def _behind_a_backlog(vb: VirtualBoard, watch: MqttWatch, dev: str) -> dict:
    """An outage piles up 1,000 readings and the fridge warms during it; when the link is
    back: how soon the alarm arrives, how long the backlog takes, and how much of the
    backlog reached the broker after the alarm."""
    topic_t, topic_a = f"albatross/{dev}/telemetry", f"albatross/{dev}/alarm"
    vb.bench.fault("modem_deregister", True)
    start = _stored(vb)
    while _stored(vb) - start < 1000:
        time.sleep(0.2)
    mark = watch.mark()
    vb.bench.set_temperature(9.5)
    vb.wait_console("temp_high raised", 60, count=_raised(vb) + 1)
    last_backlog = _stored(vb) - 1  # the newest reading stored during the outage (its seq)
    back = time.monotonic()
    vb.bench.fault("modem_deregister", False)
    alarm = watch.wait_for(
        lambda m: m.topic == topic_a and any(r["state"] == "raised" for r in m.records),
        120, what="alarm raised", after=mark,
    )  # fmt: skip
    drained = watch.wait_for(
        lambda m: m.topic == topic_t and m.records[-1]["seq"] >= last_backlog,
        300, what="the backlog delivered", after=mark,
    )  # fmt: skip
    after = sum(
        1
        for m in watch.messages[mark:]
        if m.topic == topic_t and m.at > alarm.at
        for r in m.records
        if r["seq"] <= last_backlog
    )
    vb.bench.set_temperature(5.0)
    watch.wait_for(
        lambda m: m.topic == topic_a and any(r["state"] == "cleared" for r in m.records),
        60, what="alarm cleared", after=mark,
    )  # fmt: skip
    return {
        "alarm_after_reconnect_s": round(alarm.at - back, 3),
        "backlog_drained_after_s": round(drained.at - back, 3),
        "backlog_readings_after_the_alarm": after,
    }


def _raised(vb: VirtualBoard) -> int:
    return vb.console_text().count("temp_high raised")


def alarm_latency(broker: Broker, work: Path, runs: int) -> dict:
    watch = MqttWatch(broker.url)
    idle, backlog = [], []
    try:
        dev = "alarm-idle"
        vb = _board(broker, work, dev, interval_s=0.5)
        watch.wait_for(lambda m: m.topic == f"albatross/{dev}/telemetry", 60, what="telemetry")
        for _ in range(runs):
            idle.append(_excursion(vb, watch, dev))
        vb.stop()
        dev = "alarm-backlog"
        vb = _board(broker, work, dev, interval_s=0.05, batch_size=2)
        watch.wait_for(lambda m: m.topic == f"albatross/{dev}/telemetry", 60, what="telemetry")
        for _ in range(runs):
            backlog.append(_behind_a_backlog(vb, watch, dev))
        vb.stop()
    finally:
        watch.close()
    return {
        "idle_crossing_to_broker_s": _summary(idle),
        "behind_1000_readings": backlog,
        "alarm_over_backlog_time": statistics.median(
            b["alarm_after_reconnect_s"] / b["backlog_drained_after_s"] for b in backlog
        ),
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
    runs = 2 if quick else 3
    return {
        "latency": alarm_latency(broker, work, runs),
        "downlink": downlink(broker, work, runs),
        "cost": ram_and_flash(),
    }


def summary(r: dict) -> str:
    lat, dl, cost = r["latency"], r["downlink"], r["cost"]
    b = lat["behind_1000_readings"]
    return "\n".join(
        [
            "alarm: crossing -> broker on an idle link "
            f"{lat['idle_crossing_to_broker_s']['median']} s (1 s minimum duration included); "
            "after an outage with 1,000 readings queued, "
            f"the alarm arrives {[x['alarm_after_reconnect_s'] for x in b]} s after the link is "
            f"back, the backlog {[x['backlog_drained_after_s'] for x in b]} s "
            f"({lat['alarm_over_backlog_time']:.3f}x); backlog readings after the alarm: "
            f"{[x['backlog_readings_after_the_alarm'] for x in b]}",
            f"downlink: config/set -> config/reported {dl['config_set_to_reported_s']['median']} s"
            f", ping -> ack {dl['ping_to_ack_s']['median']} s",
            f"alarm cost: heap {cost['heap_frozen']}, flash {cost['flash_mpy_total']} B .mpy",
        ]
    )
