"""The consumer side of store-and-forward: every reading counted once, every missing one named.

Pure tests feed DeliveryCheck payloads as a broker would deliver them; the end-to-end tests
publish to a real broker with paho and run `albatross monitor` as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.broker import Broker, connect_url, start_broker
from host_tools.delivery_check import DeliveryCheck, compact_ranges
from host_tools.monitor import format_lines

TOPIC = "albatross/dev-a/telemetry"
WAIT_S = 30.0  # a failure deadline, not a performance limit


def reading(seq: int, **extra: object) -> dict:
    rec = {
        "seq": seq,
        "ts": 1_700_000_000 + seq,
        "temperature": 4.0 + seq / 100,
        "humidity": 55.0,
        "battery": 3.9,
    }
    rec.update(extra)
    return rec


def single(seq: int, device: str = "dev-a", **extra: object) -> bytes:
    return json.dumps({"device_id": device, **reading(seq, **extra)}).encode()


def batch(seqs, device: str = "dev-a") -> bytes:
    return json.dumps({"device_id": device, "records": [reading(s) for s in seqs]}).encode()


def device_report(tally: DeliveryCheck, device: str = "dev-a") -> dict:
    return tally.report()["devices"][device]


# --- both payload forms --------------------------------------------------------------------


def test_single_record_and_batch_forms_both_count() -> None:
    tally = DeliveryCheck()
    assert [r["seq"] for r in tally.feed(TOPIC, single(0))] == [0]
    fresh = tally.feed(TOPIC, batch([1, 2, 3]))
    assert [r["seq"] for r in fresh] == [1, 2, 3]
    # Records in a batch carry no device_id; what feed hands back names the device.
    assert {r["device_id"] for r in fresh} == {"dev-a"}
    assert fresh[0]["temperature"] == pytest.approx(4.01)
    r = device_report(tally)
    assert (r["received"], r["first_seq"], r["last_seq"], r["gaps"]) == (4, 0, 3, [])
    assert r["messages"] == 2
    assert tally.ok


def test_devices_are_tallied_apart_by_topic() -> None:
    tally = DeliveryCheck()
    tally.feed("albatross/dev-a/telemetry", batch([0, 1, 2]))
    tally.feed("albatross/dev-b/telemetry", batch([0, 2], device="dev-b"))
    assert device_report(tally, "dev-a")["gaps"] == []
    assert device_report(tally, "dev-b")["gaps"] == [(1, 1)]


# --- dedupe, gaps, order -------------------------------------------------------------------


def test_duplicates_are_counted_once_and_not_handed_back() -> None:
    tally = DeliveryCheck()
    tally.feed(TOPIC, batch([0, 1, 2, 3]))
    # A batch re-sent after a reconnect, overlapping what already arrived.
    fresh = tally.feed(TOPIC, batch([2, 3, 4, 5]))
    assert [r["seq"] for r in fresh] == [4, 5]
    assert tally.feed(TOPIC, single(5)) == []  # same reading, sent alone this time
    r = device_report(tally)
    assert (r["received"], r["duplicates"], r["conflicts"]) == (6, 3, [])
    assert tally.ok


def test_gaps_are_compact_ranges_of_missing_seqs() -> None:
    tally = DeliveryCheck()
    tally.feed(TOPIC, batch(range(0, 12)))
    tally.feed(TOPIC, batch(range(16, 40)))
    tally.feed(TOPIC, batch([41, 42]))
    r = device_report(tally)
    assert r["gaps"] == [(12, 15), (40, 40)]
    assert r["missing"] == 5
    assert not tally.ok
    text = tally.format_report()
    assert "MISSING 5: 12-15, 40" in text
    assert text.splitlines()[-1].startswith("FAIL")


def test_a_missing_head_is_a_gap_only_when_the_first_seq_is_known() -> None:
    unknown = DeliveryCheck()
    unknown.feed(TOPIC, batch([3, 4]))
    assert device_report(unknown)["gaps"] == []

    known = DeliveryCheck(first_seq=0)
    known.feed(TOPIC, batch([3, 4]))
    assert device_report(known)["gaps"] == [(0, 2)]

    per_device = DeliveryCheck(first_seq={"dev-b": 2})
    per_device.feed(TOPIC, batch([3, 4]))
    per_device.feed("albatross/dev-b/telemetry", batch([3, 4], device="dev-b"))
    assert device_report(per_device, "dev-a")["gaps"] == []
    assert device_report(per_device, "dev-b")["gaps"] == [(2, 2)]


def test_late_arrivals_fill_gaps_and_count_as_out_of_order() -> None:
    tally = DeliveryCheck()
    tally.feed(TOPIC, batch([0, 1, 5, 6]))
    assert device_report(tally)["gaps"] == [(2, 4)]
    tally.feed(TOPIC, batch([2, 3, 4]))
    tally.feed(TOPIC, batch([1]))  # a duplicate is not also out of order
    r = device_report(tally)
    assert (r["gaps"], r["out_of_order"], r["duplicates"]) == ([], 3, 1)
    assert tally.ok


def test_one_seq_carrying_two_different_readings_fails_the_check() -> None:
    tally = DeliveryCheck()
    tally.feed(TOPIC, batch([0, 1, 2]))
    tally.feed(TOPIC, single(1, temperature=-18.0))  # seq reused: dedupe drops a reading
    r = device_report(tally)
    assert r["gaps"] == [] and r["duplicates"] == 1
    assert r["conflicts"] == [(1, 1)]
    assert not tally.ok
    assert "SEQ REUSED for different readings: 1" in tally.format_report()


def test_nothing_received_is_not_a_pass() -> None:
    tally = DeliveryCheck()
    assert not tally.ok
    tally.feed(TOPIC, b"garbage")
    assert not tally.ok
    assert "no telemetry records received" in tally.format_report()


# --- malformed input -------------------------------------------------------------------------

MALFORMED = [
    (b"not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"\xa2\x63seq\x01", "CBOR"),
    (b"[1, 2]", "not an object"),
    (b"42", "not an object"),
    (b'{"device_id": "dev-a"}', "neither a record"),
    (b'{"device_id": "dev-a", "records": {"seq": 1}}', "not a list"),
    (b'{"device_id": "dev-a", "seq": "7"}', "seq must be"),
    (b'{"device_id": "dev-a", "seq": -1}', "seq must be"),
    (b'{"device_id": "dev-a", "seq": 7.0}', "seq must be"),
    (b'{"device_id": "dev-a", "seq": true}', "seq must be"),
    (b'{"device_id": "dev-z", "seq": 7}', "topic says 'dev-a'"),
    (b'{"device_id": 5, "seq": 7}', "not a string"),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_malformed_messages_are_counted_with_a_reason_and_the_stream_goes_on(
    payload: bytes, reason: str
) -> None:
    tally = DeliveryCheck()
    tally.feed(TOPIC, batch([0, 1]))
    assert tally.feed(TOPIC, payload) == []
    tally.feed(TOPIC, batch([2, 3]))
    r = device_report(tally)
    assert r["malformed"] == 1
    assert reason in r["malformed_reasons"][0]
    assert (r["received"], r["gaps"]) == (4, [])
    assert f"malformed: {TOPIC}" in tally.format_report()


def test_bad_records_in_a_batch_are_rejected_one_by_one() -> None:
    tally = DeliveryCheck()
    payload = json.dumps(
        {
            "device_id": "dev-a",
            "records": [
                reading(0),
                "junk",
                {"ts": 1},
                reading(1),
                {"device_id": "dev-z", "seq": 2},
                reading(2, device_id="dev-a"),
            ],
        }
    ).encode()
    assert [r["seq"] for r in tally.feed(TOPIC, payload)] == [0, 1, 2]
    r = device_report(tally)
    assert (r["received"], r["malformed"]) == (3, 3)
    assert [reason.split(":")[0] for reason in r["malformed_reasons"]] == [
        f"{TOPIC} record 1",
        f"{TOPIC} record 2",
        f"{TOPIC} record 4",
    ]


def test_a_message_with_no_device_anywhere_is_reported_under_unknown() -> None:
    tally = DeliveryCheck()
    tally.feed("telemetry", json.dumps(reading(0)).encode())
    assert tally.report()["devices"]["?"]["malformed"] == 1


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=60),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["seq", "records", "device_id", "ts"]), inner, max_size=4
                )
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_no_payload_crashes_the_check_or_hides_later_records(payload: bytes) -> None:
    tally = DeliveryCheck()
    tally.feed(TOPIC, payload)
    tally.feed(TOPIC, batch([1_000_000]))
    json.dumps(tally.report())  # the report is always serialisable
    tally.format_report()
    assert 1_000_000 in tally.devices["dev-a"].seen


# --- the property the whole issue is about ----------------------------------------------------


@st.composite
def lossy_streams(draw):
    """A seq range with some removed, the rest delivered in any order with duplicates, cut
    into single-record and batch messages."""
    first = draw(st.integers(0, 10_000))
    count = draw(st.integers(1, 150))
    seqs = list(range(first, first + count))
    # The newest is kept: a missing tail cannot be told from one not yet sent.
    removed = draw(st.sets(st.sampled_from(seqs[:-1]), max_size=count - 1)) if count > 1 else set()
    kept = [s for s in seqs if s not in removed]
    repeats = draw(st.lists(st.sampled_from(kept), max_size=40))
    order = draw(st.permutations(kept + repeats))
    messages, i = [], 0
    while i < len(order):
        size = draw(st.integers(1, 12))
        chunk = order[i : i + size]
        messages.append(single(chunk[0]) if size == 1 else batch(chunk))
        i += size
    return first, removed, kept, len(repeats), messages


@settings(max_examples=150, deadline=None)
@given(lossy_streams())
def test_reported_gaps_are_exactly_the_removed_seqs(stream) -> None:
    first, removed, kept, repeats, messages = stream
    tally = DeliveryCheck(first_seq=first)
    handed_back = [r["seq"] for m in messages for r in tally.feed(TOPIC, m)]
    r = device_report(tally)
    assert r["gaps"] == compact_ranges(removed)
    assert sorted(handed_back) == kept  # each reading exactly once
    assert (r["received"], r["duplicates"], r["missing"]) == (len(kept), repeats, len(removed))
    assert (r["first_seq"], r["last_seq"]) == (min(kept), max(kept))
    assert tally.ok == (not removed)


# --- plain monitor lines ---------------------------------------------------------------------


def test_plain_monitor_shows_one_line_per_record_of_a_batch() -> None:
    lines = format_lines(TOPIC, batch([7, 8, 9]))
    assert len(lines) == 3
    assert "#7" in lines[0] and "T=4.07 °C" in lines[0] and "[1/3]" in lines[0]
    assert "#9" in lines[2] and "[3/3]" in lines[2]
    [line] = format_lines(TOPIC, single(7, sensor_error="crc"))
    assert "#7" in line and "sensor error: crc" in line


def test_plain_monitor_shows_the_position_or_why_there_is_none() -> None:
    [line] = format_lines(TOPIC, single(7, lat=48.873645, lon=2.295524, speed=11.88, fix_age_s=1))
    assert "at 48.873645,2.295524 11.9 m/s (1 s old)" in line
    [line] = format_lines(TOPIC, single(8, gnss="timeout"))
    assert "gnss: timeout" in line and " at " not in line


# --- end to end: a real broker and the CLI ------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with start_broker(log_dir=tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def publisher(broker: Broker) -> Iterator[paho.Client]:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}"
    )
    client.connect(*connect_url(broker.url))
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def run_monitor(
    broker: Broker, publisher: paho.Client, messages: list[tuple[str, bytes]], *args: str
) -> subprocess.CompletedProcess:
    """Run `albatross monitor` until it has subscribed, publish, and wait for it to stop."""
    albatross = str(Path(sys.executable).with_name("albatross"))
    probe = f"albatross/probe-{uuid.uuid4().hex[:8]}/status"
    if "--check" not in args:
        # The plain monitor announces nothing, but shows retained status when it subscribes.
        publisher.publish(probe, b'{"state": "probe"}', qos=1, retain=True).wait_for_publish(
            WAIT_S
        )
    proc = subprocess.Popen(
        [albatross, "monitor", "--broker", broker.url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Anything published before it has subscribed would never reach it.
        if "--check" in args:
            ready = proc.stderr.readline()
            assert "checking telemetry" in ready, ready + proc.stderr.read()
        else:
            ready = proc.stdout.readline()
            assert "probe" in ready, ready + proc.stderr.read()
            publisher.publish(probe, b"", qos=1, retain=True).wait_for_publish(WAIT_S)
        for topic, payload in messages:
            publisher.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_monitor_check_reports_duplicates_and_a_gap_and_exits_1(broker, publisher) -> None:
    a, b = "albatross/dev-a/telemetry", "albatross/dev-b/telemetry"
    stream = [
        (a, batch(range(0, 5))),
        (b, batch(range(100, 110), device="dev-b")),
        (a, batch(range(5, 10))),
        (a, batch(range(5, 10))),  # the same batch again: its PUBACK was lost
        (a, batch([10, 11, 15, 16])),  # 12-14 never arrive
        (a, b"\x00 not telemetry"),
        (a, batch(range(17, 20))),
        (a, single(11)),  # an old one again, alone
    ]
    result = run_monitor(
        broker, publisher, stream, "--check", "--idle", "1", "--json", "--first-seq", "0"
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    dev_a = report["devices"]["dev-a"]
    assert dev_a["gaps"] == [[12, 14]]
    assert (dev_a["received"], dev_a["duplicates"], dev_a["missing"]) == (17, 6, 3)
    assert (dev_a["first_seq"], dev_a["last_seq"], dev_a["malformed"]) == (0, 19, 1)
    assert dev_a["messages"] == 6  # the malformed one is not counted as telemetry
    dev_b = report["devices"]["dev-b"]
    # --first-seq 0 applies to every device: dev-b's 0-99 are missing.
    assert dev_b["gaps"] == [[0, 99]] and dev_b["received"] == 10


def test_monitor_check_exits_0_for_a_complete_stream_and_prints_a_human_report(
    broker, publisher
) -> None:
    a = "albatross/dev-c/telemetry"
    stream = [(a, batch(range(0, 8), device="dev-c")), (a, batch(range(4, 12), device="dev-c"))]
    result = run_monitor(broker, publisher, stream, "--check", "--idle", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    [device_line, verdict] = result.stdout.splitlines()
    assert device_line.startswith("dev-c")
    assert "seq 0..11" in device_line and "received 12" in device_line
    assert "duplicates 4" in device_line and "gaps 0" in device_line
    assert verdict == "OK: no gaps"


def test_monitor_check_with_no_telemetry_exits_1(broker, publisher) -> None:
    result = run_monitor(broker, publisher, [], "--check", "--idle", "0.2")
    assert result.returncode == 1
    assert "no telemetry records received" in result.stdout


def test_plain_monitor_prints_a_line_per_record_of_a_batch(broker, publisher) -> None:
    stream = [("albatross/dev-d/telemetry", batch([3, 4], device="dev-d"))]
    result = run_monitor(broker, publisher, stream, "--idle", "1")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "dev-d" in line]
    assert len(lines) == 2
    assert "#3" in lines[0] and "#4" in lines[1]
