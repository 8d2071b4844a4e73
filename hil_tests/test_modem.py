"""Telemetry through the simulated cellular modem, for every dialect, and recovery from what
field modems do. After each fault the tracker recovers by itself, and every reading taken
during the fault is delivered afterwards (from RAM for now)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.helpers import online_status_of, telemetry_of
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = [pytest.mark.hil, pytest.mark.bench]
DIALECTS = ["sim7600", "a7670", "bg96"]
FIRST_S = 60  # power-on, boot, registration and PDP (fast timings), then MQTT
# How long the device may take to get going again once a fault ends, by design: the ladder
# climbs one rung per STEP_TRIES failures with backoff capped at 60 s, so a fault that needs
# a power cycle costs a few backoff periods. Generous for a loaded CI machine.
RECOVERY_S = 120
FAULT_S = 4  # how long each fault stays on


def _start(vboard: VboardFactory, mqtt: MqttWatch, dialect: str) -> tuple[VirtualBoard, dict]:
    vb = vboard(modem=dialect)
    dev = vb.device_id  # type: ignore[attr-defined]
    status = mqtt.wait_for(
        online_status_of(dev), FIRST_S, what="birth through the modem", logs=logs_of(vb)
    )
    mqtt.wait_for(telemetry_of(dev), FIRST_S, what="first telemetry", logs=logs_of(vb))
    return vb, status.json


def _assert_no_reading_lost(mqtt: MqttWatch, dev: str, vb: VirtualBoard, upto_seq: int) -> None:
    """Every seq from the first report to upto_seq reached the broker (duplicates allowed)."""
    deadline = time.monotonic() + RECOVERY_S
    while True:
        seqs = {r["seq"] for r in mqtt.telemetry(dev)}
        first = min(seqs)
        missing = sorted(set(range(first, upto_seq + 1)) - seqs)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"readings {missing[:20]} never arrived; logs: {logs_of(vb)}")
        time.sleep(0.5)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_telemetry_through_each_modem(
    vboard: VboardFactory, mqtt: MqttWatch, dialect: str
) -> None:
    vb, status = _start(vboard, mqtt, dialect)
    link = status["link"]
    family = {"a7670": "a76xx"}.get(dialect, dialect)  # the driver covers the A76xx line
    assert link["kind"] == "modem" and link["family"] == family
    assert link["registration"] in ("home", "roaming") and link["pdp_active"]
    assert vb.modem_sim is not None
    assert link["info"]["imei"] == vb.modem_sim.imei
    # The AT transcript of the session is kept with the logs, both directions.
    transcript = (vb.workdir / f"at-{dialect}.jsonl").read_text()
    assert '"dir": "rx"' in transcript and '"dir": "tx"' in transcript


FAULTS = [
    # (bench fault, params, whether it must be switched off for recovery)
    ("modem_peer_close", {}, False),
    ("modem_pdp_drop", {}, False),
    ("modem_deregister", {}, True),
    ("modem_hang", {}, False),  # only a power cycle helps: the ladder must get there
    ("modem_slow", {"delay_ms": 300}, True),
    ("modem_garbage", {"rate": 0.3}, True),
    ("modem_urc_storm", {"interval_ms": 100}, True),
    ("modem_no_sim", {}, True),
]


@pytest.mark.slow
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fault,params,switch_off", FAULTS, ids=[f[0] for f in FAULTS])
def test_recovers_from_fault_without_losing_readings(
    vboard: VboardFactory,
    mqtt: MqttWatch,
    dialect: str,
    fault: str,
    params: dict,
    switch_off: bool,
) -> None:
    vb, _ = _start(vboard, mqtt, dialect)
    dev = vb.device_id  # type: ignore[attr-defined]
    assert vb.bench is not None
    vb.bench.fault(fault, True, **params)
    time.sleep(FAULT_S)
    if switch_off:
        vb.bench.fault(fault, False)
    t_off = time.monotonic()
    # A reading taken after the fault ended shows the device is reporting again...
    mark = mqtt.mark()
    fresh = mqtt.wait_for(
        telemetry_of(dev),
        RECOVERY_S,
        after=mark,
        what=f"telemetry after {fault}",
        logs=logs_of(vb),
    )
    later = mqtt.wait_for(
        lambda m: telemetry_of(dev)(m) and m.last["seq"] > fresh.last["seq"],
        RECOVERY_S,
        after=mark,
        what="a second report after recovery",
        logs=logs_of(vb),
    )
    # ...and nothing measured during the fault was lost.
    _assert_no_reading_lost(mqtt, dev, vb, later.last["seq"])
    recovered_in = later.at - t_off
    assert recovered_in < RECOVERY_S
    if fault == "modem_hang":
        status = mqtt.wait_for(
            online_status_of(dev),
            RECOVERY_S,
            after=mark,
            what="status after hang",
            logs=logs_of(vb),
        )
        assert status.json["link"]["ladder"]["power_cycle"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
def test_denied_registration_is_reported_and_retried(
    vboard: VboardFactory, mqtt: MqttWatch, dialect: str
) -> None:
    vb, _ = _start(vboard, mqtt, dialect)
    dev = vb.device_id  # type: ignore[attr-defined]
    assert vb.bench is not None
    vb.bench.fault("modem_registration", True, state="denied")
    vb.bench.fault("modem_deregister", True)
    time.sleep(FAULT_S)
    vb.bench.fault("modem_deregister", False)
    time.sleep(FAULT_S)  # denied: the device retries with backoff meanwhile
    vb.bench.fault("modem_registration", False)
    mark = mqtt.mark()
    status = mqtt.wait_for(
        lambda m: online_status_of(dev)(m) and "enied" in str(m.json["link"]["last_error"]),
        RECOVERY_S,
        after=0,
        what="status naming the denied registration",
        logs=logs_of(vb),
    )
    assert status.json["link"]["ladder"]
    mqtt.wait_for(
        telemetry_of(dev),
        RECOVERY_S,
        after=mark,
        what="telemetry after registration",
        logs=logs_of(vb),
    )


def test_mpremote_works_while_the_modem_is_busy(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    vb, _ = _start(vboard, mqtt, "sim7600")
    dev = vb.device_id  # type: ignore[attr-defined]
    mpremote = str(Path(sys.executable).with_name("mpremote"))
    out = subprocess.run(
        [mpremote, "connect", vb.console_path, "exec", "print('alive', 6 * 7)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "alive 42", out.stderr
    before = max(r["seq"] for r in mqtt.telemetry(dev))
    subprocess.run(
        [mpremote, "connect", vb.console_path, "reset"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    mark = mqtt.mark()
    after = mqtt.wait_for(
        telemetry_of(dev),
        FIRST_S,
        after=mark,
        what="telemetry after mpremote reset",
        logs=logs_of(vb),
    )
    assert after.last["seq"] > before
