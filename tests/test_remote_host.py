"""Remote configuration and commands from the host, alarms in the monitor: a real broker
(host_tools/broker.py), a fake tracker speaking the device's side of the wire format
(tests/mqtt_fake_device.py, applying values with the firmware's own Settings), and the real
`albatross` command run as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from host_tools import remote
from host_tools.broker import Broker, connect_url, start_broker
from host_tools.delivery_check import DeliveryCheck
from host_tools.monitor import format_lines
from host_tools.mqtt_watch import MqttWatch
from tests.mqtt_fake_device import FakeDevice

WAIT_S = 30.0  # a failure deadline, not a performance limit
ALBATROSS = str(Path(sys.executable).with_name("albatross"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with start_broker(log_dir=tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def device_id() -> str:
    return f"dev-{uuid.uuid4().hex[:8]}"  # retained messages of one test never meet another's


@pytest.fixture
def device(broker: Broker, device_id: str) -> Iterator[FakeDevice]:
    fake = FakeDevice(broker.url, device_id).start()
    yield fake
    fake.stop()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[paho.Client]:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(*connect_url(broker.url))
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def albatross(*args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [ALBATROSS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def wait_until(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.05)


def requests_published(broker: Broker, device_id: str, run) -> list[str]:
    """Run `run()` with a watcher on the device's topics; the request topics (`cmd`,
    `config/set`) published meanwhile. A marker published afterwards bounds the wait."""
    watch = MqttWatch(broker.url, f"albatross/{device_id}/#")
    try:
        run()
        marker = f"albatross/{device_id}/marker"
        client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        client.connect(*connect_url(broker.url))
        client.loop_start()
        client.publish(marker, b"end", qos=1).wait_for_publish(WAIT_S)
        client.disconnect()
        client.loop_stop()
        watch.wait_for(lambda m: m.topic == marker, WAIT_S, what="marker")
        requests = (f"albatross/{device_id}/cmd", f"albatross/{device_id}/config/set")
        return [m.topic for m in watch.messages if m.topic in requests]
    finally:
        watch.close()


# --- config set over the broker -------------------------------------------------------------


def test_set_config_applies_checked_values_and_returns_the_answer(broker, device) -> None:
    result = remote.set_config(
        broker.url, device.device_id, {"interval_s": "300", "apn": "iot.example"}
    )
    assert result.ok and result.errors == {}
    assert set(result.changed) == {"interval_s", "apn"}
    assert result.config["interval_s"] == 300.0 and result.config["apn"] == "iot.example"
    assert result.pending_reboot == ["apn"]
    assert device.config["interval_s"] == 300.0
    # Sent typed as the schema stores it, not as the text typed.
    assert device.requests[-1]["set"] == {"interval_s": 300.0, "apn": "iot.example"}

    again = remote.set_config(broker.url, device.device_id, {"interval_s": 300})
    assert again.ok and again.changed == {} and again.request_id != result.request_id


def test_cli_config_set_prints_each_key_and_its_effect(broker, device) -> None:
    device.settings.change({"log_level": "warning"})
    out = albatross(
        "config", "set", "--broker", broker.url, "--device", device.device_id,
        "interval_s=120", "--unset", "log_level", "gnss=off",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "ok: interval_s = 120.0 (applied now)",
        'ok: gnss = "off" (applied now)',
        'ok: log_level reset to default "info" (applied now)',
    ]
    assert "waiting up to 30 s" in out.stderr and "is online" in out.stderr
    assert (device.config["interval_s"], device.config["log_level"]) == (120.0, "info")


def test_cli_config_set_json_is_the_device_answer(broker, device) -> None:
    out = albatross(
        "config", "set", "--broker", broker.url, "--device", device.device_id,
        "watchdog_s=60", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["ok"] is True and answer["device"] == device.device_id
    assert answer["changed"] == {"watchdog_s": "takes effect at the next reboot"}
    assert answer["pending_reboot"] == ["watchdog_s"] and answer["config"]["watchdog_s"] == 60
    assert answer["id"] in device.answered


def test_a_value_the_device_refuses_exits_2_naming_the_key_and_changes_nothing(
    broker, device
) -> None:
    # Valid on its own (the host passes it), refused together with the device's empty user.
    out = albatross(
        "config", "set", "--broker", broker.url, "--device", device.device_id,
        "mqtt_password=s3cret", "interval_s=90",
    )  # fmt: skip
    assert out.returncode == 2
    [line] = out.stderr.splitlines()[-1:]
    assert line.startswith("albatross: ") and "mqtt_password" in line and "nothing" in line
    assert "mqtt_password: needs mqtt_user" in line and out.stdout == ""
    assert device.config["interval_s"] == 60.0 and device.config["mqtt_password"] == ""

    as_json = albatross(
        "config", "set", "--broker", broker.url, "--device", device.device_id,
        "mqtt_password=s3cret", "--json",
    )  # fmt: skip
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["errors"].keys() == {"mqtt_password"}


def test_a_secret_without_a_value_is_asked_for_and_never_shown(broker, device) -> None:
    device.settings.change({"mqtt_user": "fleet"})
    out = subprocess.run(
        [ALBATROSS, "config", "set", "--broker", broker.url, "--device", device.device_id,
         "mqtt_password"],
        input="s3cret-value\n", capture_output=True, text=True, timeout=WAIT_S,
        start_new_session=True,  # no controlling tty: getpass reads stdin
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        'ok: mqtt_password = "***" (takes effect at the next connection to the broker)'
    ]
    assert "s3cret" not in out.stdout + out.stderr
    assert device.config.to_dict(secrets=True)["mqtt_password"] == "s3cret-value"


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["interval_s=0"], "interval_s must be a number in 0.02..86400.0"),
        (["intervl_s=30"], 'unknown key "intervl_s" (try: interval_s)'),
        (["interval_s"], "expected KEY=VALUE"),
        (["apn=x", "--unset", "apn"], "apn is both set and unset"),
    ],
)
def test_the_host_refuses_a_bad_request_before_publishing_anything(
    broker, device_id, words, said
) -> None:
    results = []

    def run() -> None:
        results.append(
            albatross("config", "set", "--broker", broker.url, "--device", device_id, *words)
        )

    topics = requests_published(broker, device_id, run)
    [out] = results
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"albatross: {out.stderr.split(': ', 1)[1].strip()}"]
    assert said in out.stderr
    assert topics == []


def test_no_answer_from_an_offline_device_says_the_request_waits_for_it(broker, device_id) -> None:
    FakeDevice(broker.url, device_id).start().stop()  # its retained status: offline
    out = albatross(
        "config", "set", "--broker", broker.url, "--device", device_id,
        "interval_s=77", "--timeout", "1", "--json",
    )  # fmt: skip
    assert out.returncode == 1
    [line] = out.stderr.splitlines()[-1:]
    assert f"no answer from {device_id} within 1 s: it is offline" in line
    assert "stays retained" in line and "applied when the device reconnects" in line
    pending = json.loads(out.stdout)
    assert pending["answered"] is False and pending["status"]["state"] == "offline"

    # The device comes back: it gets the retained request and applies it, once.
    later = FakeDevice(broker.url, device_id).start()
    try:
        wait_until(lambda: pending["id"] in later.answered, "answer to the retained request")
        assert later.config["interval_s"] == 77.0
        shown = albatross(
            "config", "get", "--broker", broker.url, "--device", device_id, "interval_s"
        )
        assert (shown.returncode, shown.stdout) == (0, "77.0\n")
        whole = albatross("config", "show", "--broker", broker.url, "--device", device_id)
        assert "interval_s = 77.0" in whole.stdout.splitlines()
        assert 'mqtt_password = ""' in whole.stdout.splitlines()
    finally:
        later.stop()


def test_set_config_waits_for_a_device_that_connects_during_the_wait(broker, device_id) -> None:
    results: list[remote.ConfigResult] = []
    sent = threading.Event()

    def operator() -> None:
        results.append(
            remote.set_config(
                broker.url,
                device_id,
                {"report_min_s": 20},
                timeout=WAIT_S,
                on_sent=lambda *_: sent.set(),
            )
        )

    thread = threading.Thread(target=operator)
    thread.start()
    assert sent.wait(WAIT_S)
    late = FakeDevice(broker.url, device_id).start()
    try:
        thread.join(WAIT_S)
        [result] = results
        assert result.ok and result.config["report_min_s"] == 20
    finally:
        late.stop()


def test_no_answer_from_a_device_never_seen_says_so(broker, device_id) -> None:
    with pytest.raises(remote.NoAnswer) as caught:
        remote.set_config(broker.url, device_id, {"interval_s": 5}, timeout=0.5)
    assert caught.value.status is None
    assert f"has never connected to {broker.url}" in str(caught.value)
    assert "stays retained" in str(caught.value)
    out = albatross("config", "get", "--broker", broker.url, "--device", device_id, "apn")
    assert out.returncode == 2 and "no config reported" in out.stderr


def test_serial_and_broker_options_do_not_mix() -> None:
    both = albatross("config", "show", "--port", "/dev/null", "--broker", "mqtt://x:1")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    stray = albatross("config", "show", "--port", "/dev/null", "--device", "d")
    assert stray.returncode == 2 and "go with --broker" in stray.stderr
    alone = albatross("config", "show", "--broker", "mqtt://127.0.0.1:1")
    assert alone.returncode == 2 and "needs --device" in alone.stderr


# --- commands -----------------------------------------------------------------------------


def test_cli_cmd_prints_the_ack(broker, device) -> None:
    out = albatross("cmd", "--broker", broker.url, "--device", device.device_id, "ping")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{device.device_id}: ping ok (")
    assert "  pong: true" in out.stdout.splitlines()

    out = albatross(
        "cmd", "--broker", broker.url, "--device", device.device_id, "trip-start",
        "name=vaccines-42", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ack = json.loads(out.stdout)
    assert (ack["ok"], ack["cmd"], ack["result"]) == (True, "trip-start", {"trip": "vaccines-42"})
    assert device.commands[-1]["args"] == {"name": "vaccines-42"}


def test_a_command_the_device_fails_exits_2_with_its_reason(broker, device) -> None:
    out = albatross("cmd", "--broker", broker.url, "--device", device.device_id, "trip-stop")
    assert out.returncode == 2
    # A progress line ("sent as ..., waiting"), then the failure in one line.
    assert out.stderr.splitlines()[-1] == (
        f"albatross: {device.device_id}: trip-stop failed: no trip running"
    )
    assert out.stdout == ""


def test_an_unknown_command_gets_the_device_error_ack(broker, device) -> None:
    # The library sends any name (a newer firmware may know it); the device says no.
    ack = remote.send_command(broker.url, device.device_id, "dance", {"steps": 3})
    assert (ack.ok, ack.cmd) == (False, "dance")
    assert ack.error.startswith('unknown command "dance"; known: reboot, ')
    # The CLI knows the firmware's commands and refuses a typo before publishing.
    results = []
    topics = requests_published(
        broker,
        device.device_id,
        lambda: results.append(
            albatross("cmd", "--broker", broker.url, "--device", device.device_id, "rebot")
        ),
    )
    assert results[0].returncode == 2
    assert "unknown command 'rebot' (did you mean reboot?)" in results[0].stderr
    assert topics == []


def test_a_command_to_an_offline_device_times_out_saying_retry(broker, device_id) -> None:
    FakeDevice(broker.url, device_id).start().stop()
    out = albatross(
        "cmd", "--broker", broker.url, "--device", device_id, "reboot", "--timeout", "0.5"
    )
    assert out.returncode == 1
    [line] = out.stderr.splitlines()[-1:]
    assert f"no ack for reboot from {device_id} within 0.5 s: it is offline" in line
    assert "commands are not queued: retry when it is online" in line
    # Not retained: the device that comes back does not reboot out of the blue.
    back = FakeDevice(broker.url, device_id).start()
    try:
        remote.send_command(broker.url, device_id, "ping")  # a round trip: cmd is delivered
        assert [c["cmd"] for c in back.commands] == ["ping"]
    finally:
        back.stop()


def test_the_cli_knows_the_firmware_commands_and_what_the_device_reads() -> None:
    assert set(remote.COMMANDS) == set(remote.firmware_downlink().COMMANDS)
    with pytest.raises(remote.RemoteError, match="the device reads at most 2048"):
        remote.command_request("ping", {"pad": "x" * 2048})


def test_ctrl_c_while_waiting_ends_in_one_line(broker, device_id) -> None:
    proc = subprocess.Popen(
        [ALBATROSS, "cmd", "--broker", broker.url, "--device", device_id, "ping"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from an interactive shell: a test run started in the background (CI, `make test &`)
        # has SIGINT ignored, which children inherit, and Python then installs no
        # KeyboardInterrupt handler at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert "waiting up to 30 s" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert err == "albatross: interrupted before the ack came\n" and out == ""


def test_a_command_to_a_device_never_seen_says_so(broker, device_id) -> None:
    with pytest.raises(remote.NoAnswer, match="has never connected"):
        remote.send_command(broker.url, device_id, "ping", timeout=0.3)


# --- alarms in the monitor --------------------------------------------------------------------

NOW = int(time.time())


def alarm(seq: int, state: str = "raised", **extra: object) -> dict:
    rec = {
        "device_id": "dev-a",
        "seq": seq,
        "ts": NOW,
        "alarm": "temp_high",
        "state": state,
        "since": NOW - 60,
        "value": 8.9,
        "peak": 8.9,
        "limit": 8.0,
        "duration_s": 60,
    }
    rec.update(extra)
    return rec


def alarms(*records: dict, device: str = "dev-a") -> bytes:
    return json.dumps({"device_id": device, "records": list(records)}).encode()


def readings(seqs, device: str = "dev-a") -> bytes:
    records = [{"seq": s, "ts": NOW + s, "temperature": 4.0, "humidity": 50.0} for s in seqs]
    return json.dumps({"device_id": device, "records": records}).encode()


def test_monitor_shows_alarms_distinctly() -> None:
    since = time.strftime("%H:%M:%S", time.localtime(NOW - 60))
    cleared_at = time.strftime("%H:%M:%S", time.localtime(NOW))
    raised, cleared, low_battery, fence = format_lines(
        "albatross/dev-a/alarm",
        alarms(
            alarm(3),
            alarm(4, "cleared", peak=9.4, value=7.5, cleared_at=NOW, duration_s=1200),
            alarm(5, alarm="battery_low", value=3.31, peak=3.28, limit=3.4),
            alarm(6, alarm="geofence", fence="depot", value="exit", limit=None),
        ),
    )
    assert f"ALARM raised temp_high 8.9 °C (limit 8.0) since {since}  #3" in raised
    assert (
        f"ALARM cleared temp_high peak 9.4 °C (limit 8.0) since {since}, cleared {cleared_at} "
        "after 20 min  #4"
    ) in cleared
    assert "ALARM raised battery_low 3.31 V (limit 3.40)" in low_battery
    assert "peak 3.28 V" in low_battery
    assert "ALARM raised geofence depot exit since" in fence
    [junk] = format_lines("albatross/dev-a/alarm", b'{"records": [7]}')
    assert "not an alarm record" in junk


def test_monitor_shows_requests_and_answers_with_secrets_masked() -> None:
    def line(leaf: str, body: dict) -> str:
        [text] = format_lines(f"albatross/dev-a/{leaf}", json.dumps(body).encode())
        return text.split("dev-a", 1)[1].strip()

    request = {"id": "cfg-1", "set": {"mqtt_password": "hunter2", "interval_s": 30.0}}
    assert line("config/set", request) == "config/set cfg-1: mqtt_password=***, interval_s=30.0"
    assert line("config/reported", {"id": "cfg-1", "ok": True, "changed": {"apn": "x"}}) == (
        "config/reported cfg-1: applied, changed apn"
    )
    refused = {"id": "cfg-2", "ok": False, "errors": {"interval_s": "must be a number"}}
    assert "cfg-2: REFUSED interval_s: must be a number" in line("config/reported", refused)
    assert line("cmd", {"id": "c1", "cmd": "ping", "args": {}}) == "cmd        c1: ping {}"
    assert line("cmd/ack", {"id": "c1", "cmd": "ping", "ok": True, "result": {"pong": 1}}) == (
        'cmd/ack    c1: ping ok {"pong": 1}'
    )
    assert "c2: None FAILED: unknown" in line(
        "cmd/ack", {"id": "c2", "cmd": None, "ok": False, "error": "unknown"}
    )


def test_check_dedupes_and_finds_gaps_per_lane() -> None:
    tally = DeliveryCheck(first_seq=0)
    tally.feed("albatross/dev-a/telemetry", readings(range(0, 5)))
    tally.feed("albatross/dev-a/alarm", alarms(alarm(0), alarm(1, "cleared")))
    tally.feed("albatross/dev-a/alarm", alarms(alarm(1, "cleared"), alarm(2)))  # re-sent
    # Alarm seq 0..2 and reading seq 0..4 share numbers but not a lane: no duplicates across.
    assert tally.seqs("dev-a") == {0, 1, 2, 3, 4}
    assert tally.seqs("dev-a", "alarm") == {0, 1, 2}
    report = tally.report()
    assert report["lanes"]["alarm"]["dev-a"]["duplicates"] == 1
    assert report["devices"]["dev-a"]["duplicates"] == 0
    assert tally.ok and tally.format_report().splitlines()[-1] == "OK: no gaps"

    tally.feed("albatross/dev-a/alarm", alarms(alarm(5)))  # 3 and 4 lost
    assert tally.report()["lanes"]["alarm"]["dev-a"]["gaps"] == [(3, 4)]
    assert tally.report()["devices"]["dev-a"]["gaps"] == []
    text = tally.format_report().splitlines()
    assert text[0].startswith("dev-a        seq 0..4  received 5")  # telemetry as before
    assert text[1].startswith("dev-a        alarm lane: seq 0..5  received 4  duplicates 1")
    assert "MISSING 2: 3-4" in text[1]
    assert text[-1] == "FAIL: alarms missing" and not tally.ok


def run_monitor(broker: Broker, publisher: paho.Client, messages, *args: str):
    """`albatross monitor --check ...` until it has subscribed; publish; wait for its end."""
    proc = subprocess.Popen(
        [ALBATROSS, "monitor", "--broker", broker.url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = proc.stderr.readline()
        assert "checking telemetry and alarms" in ready, ready + proc.stderr.read()
        for topic, payload in messages:
            publisher.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_monitor_check_reports_both_lanes(broker, publisher) -> None:
    dev = f"dev-{uuid.uuid4().hex[:6]}"
    tel, alm = f"albatross/{dev}/telemetry", f"albatross/{dev}/alarm"
    stream = [
        (tel, readings(range(0, 6), dev)),
        (alm, alarms(alarm(0, device_id=dev), device=dev)),
        (tel, readings(range(4, 10), dev)),  # 4, 5 again
        (alm, alarms(alarm(0, device_id=dev), alarm(1, "cleared", device_id=dev), device=dev)),
        (alm, alarms(alarm(4, device_id=dev), device=dev)),  # 2, 3 never arrive
    ]
    out = run_monitor(
        broker, publisher, stream, "--check", "--idle", "1", "--first-seq", "0", "--json"
    )
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    telemetry, alarm_lane = report["lanes"]["telemetry"][dev], report["lanes"]["alarm"][dev]
    assert (telemetry["received"], telemetry["duplicates"], telemetry["gaps"]) == (10, 2, [])
    assert report["devices"][dev] == telemetry
    assert (alarm_lane["received"], alarm_lane["duplicates"]) == (3, 1)
    assert alarm_lane["gaps"] == [[2, 3]] and alarm_lane["missing"] == 2

    human = run_monitor(broker, publisher, stream[:4], "--check", "--idle", "1")
    assert human.returncode == 0, human.stdout + human.stderr
    assert human.stdout.splitlines() == [
        f"{dev:<12} seq 0..9  received 10  duplicates 2  gaps 0  out-of-order 0  malformed 0",
        f"{dev:<12} alarm lane: seq 0..1  received 2  duplicates 1  gaps 0  out-of-order 0  "
        "malformed 0",
        "OK: no gaps",
    ]
