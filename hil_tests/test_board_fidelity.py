"""Board fidelity: the virtual board reports what a real ESP32 board would, the way it would.
A brown-out (which ESP32 MicroPython calls a power-on reset; only the chip's reset-reason
register tells) shows as "brownout" in the status message, and a modem STATUS line wired the
other way than board.json says is caught by the driver's AT cross-check, counted in the status,
and costs no connectivity."""

from __future__ import annotations

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from host_tools.mqtt_watch import Message, MqttWatch

pytestmark = [pytest.mark.hil, pytest.mark.bench]
BOOT_S = 30  # boot and MQTT over the host's TCP
MODEM_S = 60  # power-on, registration and PDP through the simulated modem (fast timings)


def _online(dev: str, **expect: object):
    topic = f"albatross/{dev}/status"

    def match(m: Message) -> bool:
        body = m.json
        return (
            m.topic == topic
            and body["state"] == "online"
            and all(body.get(k) == v for k, v in expect.items())
        )

    return match


def test_brownout_reset_shows_in_the_status_message(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard()
    dev = vb.device_id  # type: ignore[attr-defined]
    logs = logs_of(vb)
    mqtt.wait_for(_online(dev, reset_cause="power_on"), BOOT_S, what="birth", logs=logs)
    assert vb.supervisor is not None
    mark = mqtt.mark()
    vb.supervisor.reset("brownout")
    status = mqtt.wait_for(
        _online(dev), BOOT_S, what="status after the brown-out", after=mark, logs=logs
    )
    # Evidence first: the board really went through a brown-out reset...
    sv = vb.supervisor.status()
    assert sv["last_reset"] == "brownout" and sv["resets"] == {"power_on": 1, "brownout": 1}, sv
    assert sv["boots"] == 2, sv
    # ...and the firmware names it.
    assert status.json["reset_cause"] == "brownout", logs
    # The register is only read after a power-on reset; a real power cut reads 1 again.
    mark = mqtt.mark()
    vb.supervisor.power_cut(0.2)
    status = mqtt.wait_for(
        _online(dev), BOOT_S, what="status after the power cut", after=mark, logs=logs
    )
    sv = vb.supervisor.status()
    assert sv["resets"] == {"power_on": 2, "brownout": 1} and sv["boots"] == 3, sv  # the cut
    assert status.json["reset_cause"] == "power_on", logs


def test_a_miswired_modem_status_line_is_caught_by_at_and_the_link_keeps_working(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(modem="sim7600")
    dev = vb.device_id  # type: ignore[attr-defined]
    logs = logs_of(vb)
    birth = mqtt.wait_for(_online(dev), MODEM_S, what="birth through the modem", logs=logs)
    assert birth.json["link"]["status_pin_mismatch"] == 0  # board.json and the wire agree
    assert vb.bench is not None and vb.supervisor is not None
    # From now on STATUS reads the opposite of board.json's status.active: "off" while the
    # modem runs. The MCU restarts; the modem stays on.
    vb.bench.fault("modem_status_inverted")
    mark = mqtt.mark()
    vb.supervisor.reset("hard")
    status = mqtt.wait_for(
        _online(dev, reset_cause="hard"), MODEM_S, what="status after the reset", after=mark,
        logs=logs,
    )  # fmt: skip
    link = status.json["link"]
    assert link["status_pin_mismatch"] >= 1, logs  # AT answered while STATUS said off
    assert link["pdp_active"] and link["ladder"]["power_cycle"] == 0  # no press, no toggle
    assert vb.modem_sim is not None and vb.modem_sim.state == "on"
    telemetry = f"albatross/{dev}/telemetry"
    mqtt.wait_for(lambda m: m.topic == telemetry, MODEM_S, what="telemetry", after=mark, logs=logs)
    assert "STATUS pin reads off while AT says on" in vb.console_text()
