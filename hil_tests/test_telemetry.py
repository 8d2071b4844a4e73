"""The walking skeleton end to end: a virtual tracker reports to a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from host_tools.broker import Broker
from host_tools.mqtt_watch import MqttWatch

pytestmark = pytest.mark.hil
REPORT_S = 30  # generous: shared CI machines are slow; typical is 1-2 s


def _telemetry(device: str):
    topic = f"albatross/{device}/telemetry"
    return lambda m: m.topic == topic and m.last["temperature"] is not None


@pytest.mark.bench
def test_reported_values_follow_the_sensor(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    vb = vboard(temperature=21.5, humidity=40.0)
    dev = vb.device_id
    msg = mqtt.wait_for(_telemetry(dev), REPORT_S, what="first telemetry", logs=logs_of(vb))
    body = msg.last
    assert abs(body["temperature"] - 21.5) <= 0.1
    assert abs(body["humidity"] - 40.0) <= 0.1
    assert body["device_id"] == dev and isinstance(body["seq"], int) and body["ts"] > 1.6e9
    assert 3.0 < body["battery"] < 4.3

    mark = mqtt.mark()
    vb.bench.set_temperature(-18.0)
    cold = mqtt.wait_for(
        lambda m: _telemetry(dev)(m) and abs(m.last["temperature"] + 18) <= 0.1,
        REPORT_S,
        what="telemetry at -18 °C",
        after=mark,
        logs=logs_of(vb),
    )
    # The very next report after the change already follows it (one sample may have been
    # taken before the change reached the bench).
    between = [m for m in mqtt.messages[mark:] if _telemetry(dev)(m) and m.at < cold.at]
    assert len(between) <= 1
    assert cold.last["seq"] > body["seq"]


@pytest.mark.bench
def test_crc_fault_is_not_a_reading_and_is_counted(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    vb = vboard(temperature=5.0, humidity=50.0)
    dev = vb.device_id
    mqtt.wait_for(_telemetry(dev), REPORT_S, what="first telemetry", logs=logs_of(vb))
    mark = mqtt.mark()
    vb.bench.fault("i2c_crc", True)
    topic = f"albatross/{dev}/telemetry"
    bad = mqtt.wait_for(
        lambda m: m.topic == topic and m.last.get("sensor_error") == "crc",
        REPORT_S,
        what="telemetry flagged with a CRC error",
        after=mark,
        logs=logs_of(vb),
    )
    assert bad.last["temperature"] is None and bad.last["humidity"] is None
    # No message while the fault was on carried a number that could be mistaken for a reading
    for m in mqtt.messages[mark:]:
        if m.topic == topic and m.at >= bad.at:
            assert all(r["temperature"] is None for r in m.records)
    status = mqtt.wait_for(
        lambda m: m.topic == f"albatross/{dev}/status" and m.json["sensors"]["crc_errors"] >= 1,
        REPORT_S,
        what="status counting CRC errors",
        after=mark,
        logs=logs_of(vb),
    )
    assert status.json["state"] == "online"
    vb.bench.fault("i2c_crc", False)
    mark = mqtt.mark()
    good = mqtt.wait_for(
        _telemetry(dev),
        REPORT_S,
        what="telemetry after the fault cleared",
        after=mark,
        logs=logs_of(vb),
    )
    assert abs(good.last["temperature"] - 5.0) <= 0.1


def test_sequence_keeps_increasing_across_reboots(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    vb = vboard()
    dev = vb.device_id
    first = mqtt.wait_for(_telemetry(dev), REPORT_S, what="first telemetry", logs=logs_of(vb))
    for kind in ("hard", "soft"):
        mark = mqtt.mark()
        vb.supervisor.reset(kind)
        status = mqtt.wait_for(
            lambda m: m.topic == f"albatross/{dev}/status" and m.json["state"] == "online",
            REPORT_S,
            what=f"birth message after a {kind} reset",
            after=mark,
            logs=logs_of(vb),
        )
        assert status.json["reset_cause"] == kind
        mqtt.wait_for(
            _telemetry(dev), REPORT_S, what="telemetry after reset", after=mark, logs=logs_of(vb)
        )
    readings = mqtt.telemetry(dev)
    assert readings[0]["seq"] == first.records[0]["seq"]
    # Records not yet acknowledged at a reset are sent again (at-least-once on the wire);
    # what matters: a sequence number always means the same reading, and every new reading
    # after a reboot gets a number above all earlier ones.
    by_seq: dict[int, dict] = {}
    new_in_order = []
    for r in readings:
        if r["seq"] in by_seq:
            assert by_seq[r["seq"]] == r, f"seq {r['seq']} reused for another reading"
        else:
            by_seq[r["seq"]] = r
            new_in_order.append(r["seq"])
    assert new_in_order == sorted(new_in_order), new_in_order
    assert new_in_order == list(range(new_in_order[0], new_in_order[-1] + 1))  # no holes


def test_killing_the_vboard_process_publishes_offline(
    broker: Broker, mqtt: MqttWatch, tmp_path: Path
) -> None:
    dev = "hil-killed"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("albatross")),
            "vboard",
            "--quiet",
            "--broker",
            broker.url,
            "--device-id",
            dev,
            "--interval",
            "1",
            "--modem",
            "none",
            "--workdir",
            str(tmp_path / "vb"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        status_topic = f"albatross/{dev}/status"
        mqtt.wait_for(
            lambda m: m.topic == status_topic and m.json["state"] == "online",
            REPORT_S,
            what="birth message",
            logs=str(tmp_path / "vb"),
        )
        mark = mqtt.mark()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        offline = mqtt.wait_for(
            lambda m: m.topic == status_topic,
            60 + REPORT_S,
            what="last will",
            after=mark,
            logs=str(tmp_path / "vb"),
        )
        assert offline.json["state"] == "offline"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_status_birth_message_is_retained(
    vboard: VboardFactory, mqtt: MqttWatch, broker: Broker
) -> None:
    vb = vboard()
    dev = vb.device_id
    mqtt.wait_for(
        lambda m: m.topic == f"albatross/{dev}/status",
        REPORT_S,
        what="birth message",
        logs=logs_of(vb),
    )
    late = MqttWatch(broker.url, f"albatross/{dev}/status")
    try:
        msg = late.wait_for(lambda m: True, 10, what="retained status for a late subscriber")
        assert msg.json["state"] == "online" and msg.json["fw"]
        assert msg.json["reset_cause"] == "power_on"
    finally:
        late.close()
