"""Alarms, remote configuration and commands end to end, on virtual boards and a real broker:
a fridge that warms up raises an alarm that overtakes its telemetry backlog; a power cut in the
middle of an excursion neither loses nor repeats it; an operator changes the interval and
reboots the tracker over MQTT; hostile downlink traffic changes nothing."""

from __future__ import annotations

import json
import re
import time

import paho.mqtt.client as paho
import pytest

from hil_tests.conftest import VboardFactory, logs_of
from host_tools import remote
from host_tools.broker import Broker, connect_url
from host_tools.delivery_check import DeliveryCheck
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = [pytest.mark.hil, pytest.mark.bench]
WAIT_S = 90  # generous for shared CI machines
FRIDGE = {"alarm_temp": "high", "alarm_temp_high_c": 8.0, "alarm_temp_hysteresis_c": 0.5}


def _alarms(mqtt: MqttWatch, dev: str) -> list[dict]:
    """Every alarm record received, deduped by (lane) seq: what a consumer keeps."""
    seen: dict[int, dict] = {}
    for m in list(mqtt.messages):
        if m.topic == f"albatross/{dev}/alarm":
            for r in m.records:
                seen.setdefault(r["seq"], r)
    return [seen[s] for s in sorted(seen)]


def _wait_alarm(mqtt: MqttWatch, vb: VirtualBoard, state: str, after: int = 0):
    dev = vb.device_id  # type: ignore[attr-defined]
    return mqtt.wait_for(
        lambda m: (
            m.topic == f"albatross/{dev}/alarm" and any(r["state"] == state for r in m.records)
        ),
        WAIT_S,
        what=f"an alarm {state}",
        after=after,
        logs=logs_of(vb),
    )


def _stored(vb: VirtualBoard) -> int:
    """Readings the board has stored (its console says each one)."""
    return len(re.findall(r"stored seq \d+", vb.console_text()))


def _wait_boots(vb: VirtualBoard, boots: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while vb.supervisor.status()["boots"] < boots:
        assert time.monotonic() < deadline, f"no boot #{boots}; logs: {logs_of(vb)}"
        time.sleep(0.1)


def _last_stored_seq(vb: VirtualBoard) -> int:
    """The newest reading the board has stored (its console says each one)."""
    return max(int(n) for n in re.findall(r"stored seq (\d+)", vb.console_text()))


def _interval_s(mqtt: MqttWatch, dev: str, after_seq: int, readings: int, vb: VirtualBoard):
    """The interval between the board's readings numbered after `after_seq`, from their own
    timestamps (whole seconds) over `readings` of them: what the board did, however loaded
    the host."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = sorted(
            {r["seq"]: r["ts"] for r in mqtt.telemetry(dev) if r["seq"] > after_seq}.items()
        )
        if len(got) > readings:
            break
        assert time.monotonic() < deadline, f"{len(got)} readings after seq {after_seq}"
        time.sleep(0.2)
    (seq0, ts0), (seq1, ts1) = got[0], got[readings]
    return (ts1 - ts0) / (seq1 - seq0)


@pytest.mark.slow
def test_a_warming_fridge_alarm_overtakes_a_1000_reading_backlog(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(
        modem="sim7600",
        temperature=5.0,
        interval=0.05,
        config={**FRIDGE, "alarm_temp_delay_s": 1, "batch_size": 10, "status_interval_s": 60},
    )
    dev = vb.device_id  # type: ignore[attr-defined]
    topic_t, topic_a = f"albatross/{dev}/telemetry", f"albatross/{dev}/alarm"
    mqtt.wait_for(lambda m: m.topic == topic_t, WAIT_S, what="telemetry", logs=logs_of(vb))
    # An outage while readings pile up: a backlog of 1,000 or more...
    vb.bench.fault("modem_deregister", True)
    start = _stored(vb)
    deadline = time.monotonic() + 180
    while _stored(vb) - start < 1000:
        assert time.monotonic() < deadline, f"backlog too slow; logs: {logs_of(vb)}"
        time.sleep(0.5)
    # ...and the fridge warms up during it: the alarm waits in its own lane.
    vb.bench.set_temperature(9.5)
    vb.wait_console("temp_high raised", WAIT_S)
    backlog = _stored(vb) - start
    # Evidence of the outage: the broker has none of the backlog (the readings in flight when
    # it began at most) and not the alarm.
    delivered = len({r["seq"] for r in mqtt.telemetry(dev)})
    assert delivered <= _stored(vb) - backlog + 50, (delivered, _stored(vb), backlog)
    assert not _alarms(mqtt, dev), _alarms(mqtt, dev)
    mark = mqtt.mark()
    vb.bench.fault("modem_deregister", False)
    raised = _wait_alarm(mqtt, vb, "raised", after=mark)
    mqtt.wait_for(
        lambda m: m.topic == topic_t and m.last["temperature"] > 9,
        WAIT_S * 2,
        what="the backlog drained up to the warm readings",
        after=mark,
        logs=logs_of(vb),
    )
    # The alarm came first: no telemetry between the reconnection and the alarm.
    first = [m.topic for m in mqtt.messages[mark:] if m.topic in (topic_t, topic_a)]
    assert first[0] == topic_a, first[:5]
    drained = [r for m in mqtt.messages[mark:] if m.topic == topic_t for r in m.records]
    assert len(drained) >= 1000, len(drained)  # the backlog really was behind it
    rec = next(r for r in raised.records if r["state"] == "raised")
    assert rec["alarm"] == "temp_high" and rec["limit"] == 8.0 and rec["peak"] >= 9.4
    print(f"alarm ahead of a backlog of {backlog} readings ({len(drained)} delivered after it)")


def test_a_power_cut_mid_excursion_neither_loses_nor_repeats_the_alarm(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(
        modem="none", temperature=5.0, interval=0.5, config={**FRIDGE, "alarm_temp_delay_s": 6}
    )
    dev = vb.device_id  # type: ignore[attr-defined]
    topic_t = f"albatross/{dev}/telemetry"
    mqtt.wait_for(lambda m: m.topic == topic_t, WAIT_S, what="telemetry", logs=logs_of(vb))
    vb.bench.set_temperature(9.5)
    warmed = time.time()
    # The board took the warm reading: the excursion is pending...
    vb.wait_console("T=9.5", WAIT_S)
    time.sleep(max(0.0, warmed + 3 - time.time()))  # ...half-way to its minimum duration...
    assert "temp_high raised" not in vb.console_text(), logs_of(vb)
    vb.supervisor.power_cut(0.5)  # ...when the power goes
    _wait_boots(vb, 2)  # the cut happened
    raised = _wait_alarm(mqtt, vb, "raised")
    rec = next(r for r in raised.records if r["state"] == "raised")
    # The minimum duration counted from the real start, not from the reboot.
    assert abs(rec["since"] - warmed) <= 2, (rec, warmed)
    vb.supervisor.power_cut(0.5)  # and again while raised
    _wait_boots(vb, 3)
    mark = mqtt.mark()
    mqtt.wait_for(lambda m: m.topic == topic_t, WAIT_S, what="telemetry after the cut",
                  after=mark, logs=logs_of(vb))  # fmt: skip
    time.sleep(3)
    vb.bench.set_temperature(5.0)
    _wait_alarm(mqtt, vb, "cleared")
    time.sleep(2)
    events = [(r["alarm"], r["state"]) for r in _alarms(mqtt, dev)]
    assert events == [("temp_high", "raised"), ("temp_high", "cleared")], events
    assert vb.supervisor.status()["boots"] == 3, logs_of(vb)  # no other reboot
    # Nothing lost in either lane: sequence numbers without gaps.
    check = DeliveryCheck(first_seq=0)
    for m in list(mqtt.messages):
        if m.topic in (topic_t, f"albatross/{dev}/alarm"):
            check.feed(m.topic, m.payload)
    assert check.ok, check.format_report()


def test_an_operator_changes_the_interval_and_reboots_it_over_mqtt(
    vboard: VboardFactory, mqtt: MqttWatch, broker: Broker
) -> None:
    vb = vboard(modem="none", interval=1)
    dev = vb.device_id  # type: ignore[attr-defined]
    topic_t = f"albatross/{dev}/telemetry"
    mqtt.wait_for(lambda m: m.topic == topic_t, WAIT_S, what="telemetry", logs=logs_of(vb))
    slow = _interval_s(mqtt, dev, -1, 5, vb)
    assert 0.6 <= slow <= 2, slow  # 1 s, by the board's own clock
    result = remote.set_config(broker.url, dev, {"interval_s": 0.25}, timeout=WAIT_S)
    assert result.ok and result.changed == {"interval_s": "applied now"}, result
    assert result.config["interval_s"] == 0.25 and result.config["mqtt_password"] in ("", "***")
    # Readings stamped after the answer came: a whole-second timestamp spans 16 readings
    # in 4 s, 4x the rate (a reading every 0.25 s), by the board's own clock.
    fast = _interval_s(mqtt, dev, _last_stored_seq(vb) + 1, 24, vb)
    assert fast <= 0.35, (slow, fast)
    print(f"remote config: config/set -> config/reported in {result.elapsed_s * 1000:.0f} ms")
    boots = vb.supervisor.status()["boots"]
    ack = remote.send_command(broker.url, dev, "reboot", timeout=WAIT_S)
    assert ack.ok, ack
    deadline = time.monotonic() + WAIT_S
    while vb.supervisor.status()["boots"] == boots:
        assert time.monotonic() < deadline, f"no reboot after the ack; logs: {logs_of(vb)}"
        time.sleep(0.2)
    birth = mqtt.wait_for(
        lambda m: (
            m.topic == f"albatross/{dev}/status"
            and m.json.get("state") == "online"
            and m.json.get("reset_cause") not in (None, "power_on")
        ),
        WAIT_S,
        what="the birth after the remote reboot",
        logs=logs_of(vb),
    )
    assert birth.json["reset_cause"] in ("soft", "hard"), birth.json
    # The interval survived the reboot (it was stored before the answer).
    assert _interval_s(mqtt, dev, _last_stored_seq(vb) + 1, 24, vb) <= 0.35


def test_a_request_sent_while_the_tracker_is_off_is_applied_when_it_connects(
    vboard: VboardFactory, mqtt: MqttWatch, broker: Broker
) -> None:
    dev = "hil-offline-config"
    request = {"id": "while-off-1", "set": {"status_interval_s": 123}}
    _publish(broker, f"albatross/{dev}/config/set", json.dumps(request).encode(), retain=True)
    vb = vboard(modem="none", device_id=dev)
    answer = mqtt.wait_for(
        lambda m: (
            m.topic == f"albatross/{dev}/config/reported" and m.json.get("id") == "while-off-1"
        ),
        WAIT_S,
        what="the answer to the retained request",
        logs=logs_of(vb),
    ).json
    assert answer["ok"] and answer["config"]["status_interval_s"] == 123, answer
    # Reconnects see the retained request again and do not answer it twice (the device notes
    # the id on flash once the answer's PUBACK is back: a moment after we see the answer).
    time.sleep(2)
    vb.supervisor.reset("soft")
    mqtt.wait_for(
        lambda m: m.topic == f"albatross/{dev}/status" and m.json.get("reset_cause") == "soft",
        WAIT_S,
        what="the birth after the reset",
        logs=logs_of(vb),
    )
    time.sleep(2)
    answers = [
        m for m in mqtt.messages
        if m.topic == f"albatross/{dev}/config/reported" and m.json.get("id") == "while-off-1"
    ]  # fmt: skip
    assert len(answers) == 1, [m.payload for m in answers]


def _publish(broker: Broker, topic: str, payload: bytes, retain: bool = False) -> None:
    _publish_all(broker, [(topic, payload)], retain)


def _publish_all(broker: Broker, items: list, retain: bool = False) -> None:
    """Publish (topic, payload) items from one client, back to back, in order."""
    host, port = connect_url(broker.url)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"hil-op-{time.monotonic_ns()}")
    c.connect(host, port)
    c.loop_start()
    try:
        for topic, payload in items:
            c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def test_hostile_downlink_traffic_is_refused_and_changes_nothing(
    vboard: VboardFactory, mqtt: MqttWatch, broker: Broker
) -> None:
    dev = "hil-hostile"
    cs, cmd = f"albatross/{dev}/config/set", f"albatross/{dev}/cmd"
    # Waiting before it connects: an old firmware's retained request (other field names) and
    # a retained command (a retained "reboot" would reboot it at every connect).
    _publish(broker, cs, json.dumps({"interval": 5, "device": dev}).encode(), retain=True)
    _publish(broker, cmd, json.dumps({"id": "c2", "cmd": "reboot"}).encode(), retain=True)
    try:
        _hostile(vboard, mqtt, broker, dev, cs, cmd)
    finally:  # the retained messages must not meet later tests on this broker
        _publish(broker, cs, b"", retain=True)
        _publish(broker, cmd, b"", retain=True)


def _hostile(vboard, mqtt, broker, dev, cs, cmd) -> None:
    vb = vboard(modem="none", interval=1, device_id=dev, config={"status_interval_s": 10})
    topic_t = f"albatross/{dev}/telemetry"
    mqtt.wait_for(lambda m: m.topic == topic_t, WAIT_S, what="telemetry", logs=logs_of(vb))
    reported, acked_t = f"albatross/{dev}/config/reported", f"albatross/{dev}/cmd/ack"
    replies = (reported, acked_t)
    # The two retained messages are handled at connect: both refused, neither run.
    for topic in replies:
        mqtt.wait_for(lambda m, t=topic: m.topic == t, WAIT_S, what=topic, logs=logs_of(vb))
    # Six bad requests, each sent once the one before was answered: the device queues 4
    # messages and takes 16 at once, then one per 2 s (docs/remote.md), so these all fit.
    answered = [
        (cmd, json.dumps({"id": "c1", "cmd": "format-flash"}).encode()),
        (cs, b"{not json"),
        (cs, json.dumps({"id": "u1", "set": {"no_such_key": 1}}).encode()),
        (cs, json.dumps({"id": "t1", "set": {"interval_s": "fast"}}).encode()),
        (cs, json.dumps({"id": "r1", "set": {"interval_s": -5, "batch_size": 5}}).encode()),
        (cs, json.dumps({"id": "o1", "set": {"batch_size": 5}, "x": "a" * 100_000}).encode()),
    ]
    # Then everything at once: more garbage and a flood of valid requests, most dropped.
    more = [
        (cs, b"[1, 2, 3]"),
        (cs, b'{"id": "' + b"\xff\xfe" * 10 + b'"}'),
        (cmd, b"\x00" * 64),
    ]
    more += [  # a flood of valid requests
        (cs, json.dumps({"id": f"f{n}", "set": {"log_level": "info"}}).encode()) for n in range(30)
    ]
    mark = mqtt.mark()
    for topic, payload in answered:
        after = mqtt.mark()
        _publish(broker, topic, payload)
        mqtt.wait_for(lambda m: m.topic in replies, WAIT_S, what=f"the answer to {payload[:40]!r}",
                      after=after, logs=logs_of(vb))  # fmt: skip
    _publish_all(broker, more)
    answers = [m.json for m in mqtt.messages if m.topic == reported]
    acks = [m.json for m in mqtt.messages if m.topic == acked_t]
    by_id = {a["id"]: a for a in answers}
    assert "no_such_key" in by_id["u1"]["errors"] and "interval_s" in by_id["t1"]["errors"]
    assert "interval_s" in by_id["r1"]["errors"], by_id
    unnamed = [json.dumps(a["errors"]) for a in answers if a["id"] is None]
    assert any("2048" in e or "too big" in e or "large" in e for e in unnamed), unnamed
    assert by_id["r1"]["config"]["batch_size"] != 5  # all or nothing: batch_size untouched
    assert any(a["id"] is None and not a["ok"] for a in answers), answers  # not JSON; old fw
    assert any(a["id"] == "c1" and not a["ok"] and "format-flash" in a["error"] for a in acks)
    assert any(not a["ok"] and a.get("id") == "c2" for a in acks), acks  # retained: refused
    # Still the same tracker: no reboot, the interval unchanged, readings flowing.
    assert vb.supervisor.status()["boots"] == 1, logs_of(vb)
    last = max(r["seq"] for r in mqtt.telemetry(dev))
    mqtt.wait_for(
        lambda m: m.topic == topic_t and m.last["seq"] > last + 2,
        WAIT_S,
        what="telemetry after the hostile batch",
        logs=logs_of(vb),
    )
    status = mqtt.wait_for(
        lambda m: (
            m.topic == f"albatross/{dev}/status"
            and "downlink" in m.json
            and m.json["downlink"]["dropped"] >= 1
        ),
        WAIT_S,
        what="a status counting the refused and dropped requests",
        after=mark,
        logs=logs_of(vb),
    ).json
    dl = status["downlink"]
    assert dl["refused"] >= 6 and dl["dropped"] >= 1, dl
    assert dl["received"] + dl["dropped"] >= len(answered + more), dl
    assert remote.get_config(broker.url, dev).config["interval_s"] == 1.0
