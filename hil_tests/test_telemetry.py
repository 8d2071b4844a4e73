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
    return lambda m: m.topic == topic and m.json["temperature"] is not None


@pytest.mark.bench
def test_reported_values_follow_the_sensor(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    vb = vboard(temperature=21.5, humidity=40.0)
    dev = vb.device_id
    msg = mqtt.wait_for(_telemetry(dev), REPORT_S, what="first telemetry", logs=logs_of(vb))
    body = msg.json
    assert abs(body["temperature"] - 21.5) <= 0.1
    assert abs(body["humidity"] - 40.0) <= 0.1
    assert body["device_id"] == dev and isinstance(body["seq"], int) and body["ts"] > 1.6e9
    assert 3.0 < body["battery"] < 4.3

    mark = mqtt.mark()
    vb.bench.set_temperature(-18.0)
    cold = mqtt.wait_for(
        lambda m: _telemetry(dev)(m) and abs(m.json["temperature"] + 18) <= 0.1,
        REPORT_S,
        what="telemetry at -18 °C",
        after=mark,
        logs=logs_of(vb),
    )
    # The very next report after the change already follows it (one sample may have been
    # taken before the change reached the bench).
    between = [m for m in mqtt.messages[mark:] if _telemetry(dev)(m) and m.at < cold.at]
    assert len(between) <= 1
    assert cold.json["seq"] > body["seq"]


@pytest.mark.bench
def test_crc_fault_is_not_a_reading_and_is_counted(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    vb = vboard(temperature=5.0, humidity=50.0)
    dev = vb.device_id
    mqtt.wait_for(_telemetry(dev), REPORT_S, what="first telemetry", logs=logs_of(vb))
    mark = mqtt.mark()
    vb.bench.fault("i2c_crc", True)
    topic = f"albatross/{dev}/telemetry"
    bad = mqtt.wait_for(
        lambda m: m.topic == topic and m.json.get("sensor_error") == "crc",
        REPORT_S,
        what="telemetry flagged with a CRC error",
        after=mark,
        logs=logs_of(vb),
    )
    assert bad.json["temperature"] is None and bad.json["humidity"] is None
    # No message while the fault was on carried a number that could be mistaken for a reading
    for m in mqtt.messages[mark:]:
        if m.topic == topic and m.at >= bad.at:
            assert m.json["temperature"] is None
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
    assert abs(good.json["temperature"] - 5.0) <= 0.1


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
    seqs = [r["seq"] for r in mqtt.telemetry(dev)]
    assert seqs[0] == first.json["seq"]
    assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False)), seqs


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
