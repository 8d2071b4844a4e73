"""What any board must do, virtual or real: the same file runs on `--target vboard` (a fresh
virtual board per test) and on `--target serial --bench bench.yaml` (a real ESP32 + modem
board, reached only through its console and the broker), see docs/hil.md.

It boots and reports readings that make sense, says it is online with its link, answers the
technician's console (and refuses a bad value), answers remote config and commands over
MQTT, and a reboot or a power cycle loses no reading and reuses no sequence number.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from hil_tests.plugin.boards import Board
from host_tools import remote

pytestmark = pytest.mark.hil
REMOTE_S = 60.0  # a remote request's answer: a cellular round trip or two
EPOCH_2024 = 1704067200  # a clock set from the network is past this


def _plausible(record: dict, board: Board) -> list[str]:
    """What is wrong with a telemetry record (nothing: [])."""
    wrong = []
    if record.get("device_id") != board.device_id:
        wrong.append(f"device_id {record.get('device_id')!r}")
    if not isinstance(record.get("seq"), int) or record["seq"] < 0:
        wrong.append(f"seq {record.get('seq')!r}")
    ts = record.get("ts")
    if not isinstance(ts, int) or not EPOCH_2024 < ts < time.time() + 86400:
        wrong.append(f"ts {ts!r} (not a time since 2024 and before tomorrow)")
    temperature, humidity = record.get("temperature"), record.get("humidity")
    if temperature is None or humidity is None:
        if record.get("sensor_error") not in ("crc", "bus"):
            wrong.append("no temperature/humidity and no sensor_error saying why")
    else:
        if not -40 <= temperature <= 85:  # the SHT4x's range
            wrong.append(f"temperature {temperature!r}")
        if not 0 <= humidity <= 100:
            wrong.append(f"humidity {humidity!r}")
    battery = record.get("battery")
    if battery is not None and not 2.5 <= battery <= 5.0:
        wrong.append(f"battery {battery!r} V")
    return wrong


@pytest.mark.board(interval=2)
def test_the_board_boots_and_reports_readings_that_make_sense(board: Board) -> None:
    msg = board.wait_telemetry(what="a reading")
    body = msg.json
    assert body.get("device_id") == board.device_id, body
    records = [r for r in msg.records if r.get("device_id") == board.device_id]
    assert records, f"no record of {board.device_id} in {body}; {board.where()}"
    wrong = {r.get("seq"): _plausible(r, board) for r in records}
    assert not any(wrong.values()), f"{wrong}; {board.where()}"
    # And readings keep coming, each with a new number.
    last = max(r["seq"] for r in board.readings())
    board.wait_telemetry(lambda r: r["seq"] > last, after=board.mark(), what="the next reading")


def test_status_says_online_with_its_link(board: Board) -> None:
    status = board.status()
    assert status["state"] == "online"
    assert isinstance(status["uptime_s"], int) and status["uptime_s"] >= 0, status
    assert status.get("fw") and status.get("board"), status
    link = status.get("link")
    assert isinstance(link, dict), status
    if board.modem:
        assert link.get("kind") == "modem" and link.get("family") == board.modem, link
        assert link.get("registration") in ("home", "roaming"), link
        assert link.get("pdp_active") is True, link
        assert re.fullmatch(r"\d{15}", str(link.get("info", {}).get("imei"))), link
    else:
        assert link.get("kind") == "tcp", link
    # The console says the same.
    lines = board.cli("status")
    assert lines[0].startswith("firmware  albatross ") and f"device {board.device_id}" in lines[0]
    uplink = next(line for line in lines if line.startswith("uplink "))
    assert uplink.startswith("uplink    connected"), lines
    if board.modem:
        network = next(line for line in lines if line.startswith("network "))
        assert "data up" in network, lines


@pytest.mark.board(interval=1)
def test_the_console_sets_and_gets_config_and_refuses_a_bad_value(board: Board) -> None:
    assert board.cli("config get interval_s") == ["interval_s = 1.0"]
    batch = board.cli_json("config get batch_size --json")["batch_size"]
    assert board.cli("config set interval_s 3") == ["ok: interval_s = 3.0 (applied now)"]
    assert board.cli("config get interval_s") == ["interval_s = 3.0"]
    assert board.cli_json("config get interval_s --json") == {"interval_s": 3.0}
    # Refused: one error line, and nothing changed (not even the good pair beside it).
    assert board.cli("config set interval_s 0") == [
        'error: interval_s must be a number in 0.02..86400.0, got "0"'
    ]
    other = 7 if batch != 7 else 8
    assert board.cli(f"config set batch_size {other} interval_s fast") == [
        'error: interval_s must be a number in 0.02..86400.0, got "fast"'
    ]
    assert board.cli_json("config get batch_size --json") == {"batch_size": batch}
    assert board.cli_json("config get interval_s --json") == {"interval_s": 3.0}
    # Applied now: readings are taken 3 s apart from here on, by the board's own clock
    # (`first` may still be from before the change; the ones after it are not). Three gaps
    # take 9 s, 3 at the old interval: at least 6 whatever a stall or rounding makes of it.
    mark = board.mark()
    first = board.wait_telemetry(after=mark, what="a reading after the change").last["seq"]
    board.wait_telemetry(lambda r: r["seq"] >= first + 4, after=mark, what="four more readings")
    ts = {r["seq"]: r["ts"] for r in board.readings()}
    assert ts[first + 4] - ts[first + 1] >= 6, ts


def test_remote_config_over_mqtt_is_answered_and_a_bad_value_refused(board: Board) -> None:
    try:
        result = remote.set_config(
            board.broker_url, board.device_id, {"status_interval_s": "600"}, timeout=REMOTE_S
        )
        assert result.ok, result.to_json()
        assert result.changed == {"status_interval_s": "applied now"}, result.to_json()
        assert result.config["status_interval_s"] == 600
        # The console agrees: it is stored on the board.
        assert board.cli("config get status_interval_s") == ["status_interval_s = 600"]
        # The host refuses a bad value before publishing; sent raw, the device refuses it,
        # names the key and applies nothing of the request.
        with pytest.raises(remote.RemoteError, match="status_interval_s"):
            remote.set_config(board.broker_url, board.device_id, {"status_interval_s": "1"})
        bad = _raw_config_request(board, {"batch_size": 7, "status_interval_s": 1})
        assert bad["ok"] is False and list(bad["errors"]) == ["status_interval_s"], bad
        assert bad["config"]["status_interval_s"] == 600, bad
        assert board.cli("config get status_interval_s") == ["status_interval_s = 600"]
        assert board.cli_json("config show --json")["batch_size"] != 7
    finally:
        _publish(board, "config/set", b"", retain=True)  # leave no request on the broker


def _publish(board: Board, leaf: str, payload: bytes, *, retain: bool) -> None:
    import paho.mqtt.client as paho

    from host_tools.broker import connect_url

    host, port = connect_url(board.broker_url)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(board.topic(leaf), payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def _raw_config_request(board: Board, values: dict) -> dict:
    """A config/set request published as is (no host-side check); the device's answer."""
    request_id = remote.new_request_id("config")
    mark = board.mark()
    body = json.dumps({"id": request_id, "set": values}).encode()
    _publish(board, "config/set", body, retain=True)
    answer = board.mqtt.wait_for(
        lambda m: m.topic == board.topic("config/reported") and m.json["id"] == request_id,
        REMOTE_S,
        what="the answer to a raw config request",
        after=mark,
        logs=board.where(),
    )
    return answer.json


def test_cmd_ping_is_acknowledged(board: Board) -> None:
    ack = remote.send_command(board.broker_url, board.device_id, "ping", timeout=REMOTE_S)
    assert ack.ok, ack.to_json()
    unknown = remote.send_command(board.broker_url, board.device_id, "fly", timeout=REMOTE_S)
    assert not unknown.ok and unknown.error, unknown.to_json()


def _no_reading_lost(board: Board, first: int, upto: int) -> None:
    """Every seq in first..upto arrived, and no seq names two different readings."""
    deadline = time.monotonic() + board.boot_timeout_s
    while True:
        seen: dict[int, dict] = {}
        conflicts = []
        for r in board.readings():
            old = seen.setdefault(r["seq"], r)
            if old != r:
                conflicts.append((old, r))
        assert not conflicts, f"one seq, two readings: {conflicts[:3]}; {board.where()}"
        missing = sorted(set(range(first, upto + 1)) - set(seen))
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"readings {missing[:20]} never arrived; {board.where()}")
        time.sleep(0.5)


@pytest.mark.board(interval=60)
def test_a_shorter_interval_set_late_in_a_long_one_applies_without_a_watchdog_reset(
    board: Board,
) -> None:
    # The sampler's watchdog allowance follows interval_s (2 intervals + 10 s). Lowered 20 s
    # into a 60 s interval, it must count from the change, not from the last reading, or the
    # board resets itself as hung ("sampling made no progress").
    board.wait_telemetry(after=board.mark(), what="a reading")
    last = max(r["seq"] for r in board.readings())
    time.sleep(20)  # past the new allowance since that reading (12 s for interval_s 1)
    before = board.cli_json("status --json")
    assert board.cli("config set interval_s 1") == ["ok: interval_s = 1.0 (applied now)"]
    board.wait_telemetry(lambda r: r["seq"] >= last + 6, after=0, what="readings at 1 s")
    after = board.cli_json("status --json")
    # The feeder's verdict comes first (the WDT resets the chip a watchdog_s later): none.
    assert after["last_crash"] == before["last_crash"], after["last_crash"]
    assert after["log"]["errors"] == before["log"]["errors"], (before["log"], after["log"])
    assert after["uptime_s"] >= before["uptime_s"] + 5, (before, after)  # no reset between


@pytest.mark.board(interval=1)
def test_a_reboot_over_the_console_keeps_seq_increasing_and_loses_no_reading(
    board: Board,
) -> None:
    board.wait_telemetry(after=board.mark(), what="a reading before the reboot")
    first = min(r["seq"] for r in board.readings())
    before = max(r["seq"] for r in board.readings())
    birth = board.reboot()
    assert birth["reset_cause"] == "hard", birth
    mark = board.mark()
    after = board.wait_telemetry(
        lambda r: r["seq"] > before + 2, after=mark, what="readings after the reboot"
    ).last["seq"]
    _no_reading_lost(board, first, after)
    status = board.cli("status")
    assert "reset cause hard" in status[1], status


@pytest.mark.power
@pytest.mark.board(interval=1)
def test_a_power_cycle_loses_no_reading_and_keeps_the_config(board: Board) -> None:
    assert board.cli("config set status_interval_s 700") == [
        "ok: status_interval_s = 700 (applied now)"
    ]
    board.wait_telemetry(after=board.mark(), what="a reading before the power cut")
    first = min(r["seq"] for r in board.readings())
    before = max(r["seq"] for r in board.readings())
    assert board.power is not None
    birth = board.power_cycle()
    assert birth["reset_cause"] in ("power_on", "brownout"), birth
    after = board.wait_telemetry(
        lambda r: r["seq"] > before + 2, after=board.mark(), what="readings after power-on"
    ).last["seq"]
    _no_reading_lost(board, first, after)
    assert board.cli("config get status_interval_s") == ["status_interval_s = 700"]
