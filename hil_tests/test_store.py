"""Store-and-forward end to end: no reading is lost across outages, power cuts and flash
damage; what cannot be kept (a full store, a corrupted record) is counted and reported."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import pytest
from littlefs import LittleFS

from hil_tests.conftest import VboardFactory, logs_of
from host_tools import image as img
from host_tools.broker import Broker
from host_tools.delivery_check import DeliveryCheck
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.campaign import run_campaign, stored_seqs
from host_tools.vboard.runner import VirtualBoard

pytestmark = [pytest.mark.hil, pytest.mark.bench]
WAIT_S = 120


def _check(mqtt: MqttWatch, dev: str) -> DeliveryCheck:
    checker = DeliveryCheck(first_seq=0)
    for m in list(mqtt.messages):
        if m.topic == f"albatross/{dev}/telemetry":
            checker.feed(m.topic, m.payload)
    return checker


def _status(mqtt: MqttWatch, dev: str, pred, what: str, vb: VirtualBoard, after: int = 0):
    topic = f"albatross/{dev}/status"
    return mqtt.wait_for(
        lambda m: m.topic == topic and m.json.get("state") == "online" and pred(m.json),
        WAIT_S,
        what=what,
        after=after,
        logs=logs_of(vb),
    )


def _wait_delivered(mqtt: MqttWatch, dev: str, upto: int, vb: VirtualBoard) -> DeliveryCheck:
    deadline = time.monotonic() + WAIT_S
    while True:
        checker = _check(mqtt, dev)
        if checker.seqs(dev) >= set(range(upto + 1)):
            return checker
        if time.monotonic() > deadline:
            missing = sorted(set(range(upto + 1)) - checker.seqs(dev))
            raise AssertionError(
                f"{len(missing)} readings never arrived (first {missing[:10]});"
                f" logs: {logs_of(vb)}"
            )
        time.sleep(0.5)


def _stored_upto(vb: VirtualBoard) -> int:
    return max(stored_seqs(vb))


def _delivered_upto(mqtt: MqttWatch, dev: str) -> int:
    """The highest sequence number the broker's subscriber has seen from the board (-1: none)."""
    return max((r["seq"] for r in mqtt.telemetry(dev)), default=-1)


def _outage(mqtt: MqttWatch, dev: str, vb: VirtualBoard, readings: int, timeout: float) -> int:
    """Deregister the modem until the board stored `readings` more readings; the outage had
    an effect: most of them are still undelivered when it ends. The highest seq delivered
    then."""
    assert vb.bench is not None
    start = _stored_upto(vb)
    vb.bench.fault("modem_deregister", True)
    deadline = time.monotonic() + timeout
    while _stored_upto(vb) < start + readings:
        assert time.monotonic() < deadline, f"the tracker stopped sampling; logs: {logs_of(vb)}"
        time.sleep(0.2)
    delivered = _delivered_upto(mqtt, dev)
    vb.bench.fault("modem_deregister", False)
    # Evidence of the outage: at most the readings in flight when it began got through.
    assert delivered < start + readings // 2, (
        f"readings {start}..{_stored_upto(vb)} were stored in the outage, and readings up to"
        f" {delivered} delivered during it: the modem stayed registered; logs: {logs_of(vb)}"
    )
    return delivered


@pytest.mark.slow
def test_long_outage_is_delivered_in_full_and_in_order(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(
        modem="sim7600", interval=0.02, config={"batch_size": 50, "status_interval_s": 3600}
    )
    dev = vb.device_id  # type: ignore[attr-defined]
    mqtt.wait_for(
        lambda m: m.topic.endswith("/telemetry"), WAIT_S, what="first telemetry", logs=logs_of(vb)
    )
    _outage(mqtt, dev, vb, 5000, 600)  # at least 5,000 readings buffered on flash
    upto = _stored_upto(vb)
    checker = _wait_delivered(mqtt, dev, upto, vb)
    report = checker.report()["devices"][dev]
    assert report["gaps"] == [] and not report.get("conflicts")
    # In order: after dedupe, the backlog arrived oldest first.
    firsts = []
    seen: set[int] = set()
    for r in mqtt.telemetry(dev):
        if r["seq"] not in seen:
            seen.add(r["seq"])
            firsts.append(r["seq"])
    assert firsts == sorted(firsts)


def test_full_store_drops_the_oldest_and_says_how_many(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    capacity, batch = 100, 50
    vb = vboard(
        modem="sim7600",
        interval=0.05,
        config={"store_capacity": capacity, "batch_size": batch, "status_interval_s": 10},
    )
    dev = vb.device_id  # type: ignore[attr-defined]
    mqtt.wait_for(
        lambda m: m.topic.endswith("/telemetry"), WAIT_S, what="first telemetry", logs=logs_of(vb)
    )
    delivered = _outage(mqtt, dev, vb, 2 * capacity + 40, WAIT_S)  # into a store that keeps 100
    upto = _stored_upto(vb)
    # The newest readings are the ones kept: the last one stored in the outage arrives.
    deadline = time.monotonic() + WAIT_S
    while upto not in _check(mqtt, dev).seqs(dev):
        assert time.monotonic() < deadline, f"newest reading {upto} not delivered"
        time.sleep(0.5)
    gaps = _check(mqtt, dev).report()["devices"][dev]["gaps"]
    missing = sum(hi - lo + 1 for lo, hi in gaps if hi <= upto)
    # The status after that counts every reading dropped up to the newest one.
    status = _status(
        mqtt,
        dev,
        lambda s: s["store"]["dropped"] > 0,
        "status reporting dropped readings",
        vb,
        after=mqtt.mark(),
    )
    dropped = status.json["store"]["dropped"]
    # Undelivered when the outage ended, beyond what the store keeps: those had to go. From
    # what was measured (the board's rate on a loaded machine is not the nominal 20/s).
    undelivered = upto - delivered
    assert undelivered - capacity - batch <= dropped <= undelivered, (dropped, undelivered)
    # The dropped ones are the readings missing at the broker, except those dropped while
    # their batch was in flight (sent, not yet acknowledged): they arrive all the same, at
    # most what the store holds.
    assert dropped - capacity <= missing <= dropped, (missing, dropped, gaps)


def test_flipped_bit_is_detected_reported_and_the_rest_delivered(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(modem="sim7600", interval=0.1, config={"batch_size": 50})
    dev = vb.device_id  # type: ignore[attr-defined]
    mqtt.wait_for(
        lambda m: m.topic.endswith("/telemetry"), WAIT_S, what="first telemetry", logs=logs_of(vb)
    )
    assert vb.bench is not None and vb.supervisor is not None
    vb.bench.fault("modem_deregister", True)  # let readings pile up unsent
    start = _stored_upto(vb)
    deadline = time.monotonic() + WAIT_S
    while _stored_upto(vb) < start + 30:
        assert time.monotonic() < deadline, f"the tracker stopped sampling; logs: {logs_of(vb)}"
        time.sleep(0.2)
    vb.supervisor.power_off()
    deadline = time.monotonic() + 10
    while vb.supervisor.status()["powered"]:
        assert time.monotonic() < deadline, "the board did not power off"
        time.sleep(0.05)
    upto = _stored_upto(vb)
    # Evidence: the damaged record was still to be sent (nothing since the outage began).
    flipped = _flip_bit_in_a_pending_record(
        vb.image, after_seq=max(start, _delivered_upto(mqtt, dev))
    )
    vb.bench.fault("modem_deregister", False)
    mark = mqtt.mark()
    vb.supervisor.power_on()
    status = _status(
        mqtt,
        dev,
        lambda s: s["store"]["corrupt_records"] >= 1,
        "status reporting the corrupt record",
        vb,
        after=mark,
    )
    assert status.json["store"]["corrupt_records"] == 1
    deadline = time.monotonic() + WAIT_S
    while True:
        got = _check(mqtt, dev).seqs(dev)
        missing = set(range(upto + 1)) - got
        if missing <= {flipped}:
            break
        assert time.monotonic() < deadline, f"lost more than the damaged record: {missing}"
        time.sleep(0.5)
    assert flipped not in got, f"the damaged record {flipped} was sent as if whole"


def _flip_bit_in_a_pending_record(image: Path, after_seq: int) -> int:
    """Flip one bit inside the payload of a record numbered after `after_seq` (not delivered
    yet), the middle one of those in their segment, as flash bit rot would; returns that
    record's sequence number."""
    data = bytearray(image.read_bytes())
    fs = LittleFS(
        block_size=img.BLOCK_SIZE,
        block_count=len(data) // img.BLOCK_SIZE,
        mount=False,
        read_size=32,
        prog_size=32,
        lookahead_size=32,
        name_max=255,
    )
    fs.context.buffer = data
    fs.mount()
    segs = sorted(n for n in fs.listdir("data") if n.endswith(".log"))
    # The segment holding most pending records. Records: magic 0xA1, len u16, seq u32
    # (little-endian), crc u32, payload (firmware/tracker/store/layout.py).
    pending: list[int] = []
    for name in segs:
        with fs.open("data/" + name, "rb") as f:
            data = bytearray(f.read())
        offsets = []
        i = 0
        while i + 11 <= len(data) and data[i] == 0xA1:
            if int.from_bytes(data[i + 3 : i + 7], "little") > after_seq:
                offsets.append(i)
            i += 11 + int.from_bytes(data[i + 1 : i + 3], "little")
        if len(offsets) > len(pending):
            path, seg, pending = "data/" + name, data, offsets
    assert len(pending) >= 3, f"not enough records after seq {after_seq} in one segment"
    at = pending[len(pending) // 2]  # not the first or last: the damage is inside the log
    seq = int.from_bytes(seg[at + 3 : at + 7], "little")
    seg[at + 11 + 5] ^= 0x10  # inside the JSON payload
    with fs.open(path, "wb") as f:
        f.write(seg)
    image.write_bytes(fs.context.buffer)
    return seq


@pytest.mark.slow
def test_power_cut_campaign_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    """A reduced sweep of torn flash writes (`albatross campaign power-cut` runs the full one,
    300+ cut points): after every cut the board boots, stores and delivers a new reading,
    and every reading stored before the cut arrives with its own content."""
    result = run_campaign(broker, tmp_path / "campaign", points=10, targeted=2, scenario_s=4.0)
    summary = result.summary()
    cuts = [r for r in result.results if r.cut_happened]
    # Every cut point fell inside the scenario and tore its operation (not skipped it whole).
    assert summary["cut_points"] >= 10 and summary["cuts"] == summary["cut_points"], summary
    assert all(0 < r.bytes_torn < r.length for r in cuts), [asdict(r) for r in cuts]
    # The cuts put something at stake: readings stored and not yet at the broker.
    assert summary["cuts_at_risk"] >= 1 and summary["readings_at_risk"] >= 1, summary
    assert summary["lost"] == 0, summary["bad_cuts"]
    assert summary["seq_conflicts"] == 0 and summary["renumbered"] == 0, summary["bad_cuts"]
    assert summary["failed_boots"] == 0 and summary["cuts_without_new_reading"] == 0, summary
    assert summary["damaged_configs"] == 0, summary["bad_cuts"]
