"""The technician's console on a virtual board (docs/console.md), used as a person uses it:
through the console pty, one key at a time, while the tracker keeps reporting.

Typing and editing under a scrolling log, config changes that apply at once or at the next
boot and survive a reboot and a power cut, secrets that are never shown or published,
mpremote working unmodified beside the command line, line noise that can neither stop the
tracker nor change its config (while a clean Ctrl-C still gives the REPL), and AT commands
passed to the modem.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
from pathlib import Path

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.console_kit import BACKSPACE, PROMPT, REPL_PROMPT, UP, Console
from hil_tests.helpers import mpremote, online_status_of, telemetry_of
from host_tools import image as img
from host_tools.mqtt_watch import Message, MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = pytest.mark.hil
BOOT_S = 30  # boot and MQTT over the host's TCP
MODEM_S = 60  # power-on, registration and PDP through the simulated modem (fast timings)
KEY_S = 0.25  # between keys: a person typing; 14 keys span several 1 s log lines


def _up(vb: VirtualBoard, mqtt: MqttWatch) -> Console:
    """The board reporting, and a console open on it with the command line awake."""
    mqtt.wait_for(telemetry_of(vb.device_id), BOOT_S, what="first telemetry", logs=logs_of(vb))
    con = Console(vb)
    try:
        con.wake()
    except BaseException:
        con.close()
        raise
    return con


def _booted(con: Console, cause: str, after: int) -> None:
    """The app started again after `after` (the reset cause it reports) and took a reading."""
    pos = con.wait_for(f", reset cause {cause}", BOOT_S, after=after)
    con.wait_for("I app: stored seq", BOOT_S, after=pos)


def _reading_period(mqtt: MqttWatch, dev: str, after: int, gaps: int, vb: VirtualBoard) -> float:
    """Seconds between readings as the broker receives them: the median over `gaps`
    consecutive telemetry messages (per reading, should one message carry several)."""
    msgs: list[Message] = []
    mark = after
    for _ in range(gaps + 1):
        m = mqtt.wait_for(
            telemetry_of(dev),
            BOOT_S,
            what=f"telemetry #{len(msgs) + 1}",
            after=mark,
            logs=logs_of(vb),
        )
        msgs.append(m)
        mark = mqtt.messages.index(m) + 1
    per_reading = [
        (b.at - a.at) / (b.last["seq"] - a.last["seq"])
        for a, b in zip(msgs, msgs[1:], strict=False)
        if b.last["seq"] > a.last["seq"]
    ]
    assert per_reading, f"no new readings in {[m.last['seq'] for m in msgs]}"
    return statistics.median(per_reading)


def _no_gaps(mqtt: MqttWatch, dev: str, first: int, upto: int, vb: VirtualBoard) -> None:
    deadline = time.monotonic() + BOOT_S
    while True:
        seqs = {r["seq"] for r in mqtt.telemetry(dev)}
        missing = sorted(set(range(first, upto + 1)) - seqs)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"readings {missing[:20]} never arrived; logs: {logs_of(vb)}")
        time.sleep(0.2)


# ---- 1. typing as a person does ------------------------------------------------------------


def test_a_person_fixes_a_typo_and_recalls_a_command_while_the_log_scrolls(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard()  # a reading, and its log line, every second
    dev = vb.device_id
    with _up(vb, mqtt) as con:
        typing = con.mark()
        con.type("stauts", KEY_S)
        con.wait_screen(PROMPT + "stauts")
        con.type(BACKSPACE * 4, KEY_S)
        con.wait_screen(PROMPT + "st")
        con.type("atus", KEY_S)
        con.wait_screen(PROMPT + "status")
        typed = con.raw(typing)
        lines = con.command("")  # Enter
        assert con.last_echo == "status"
        assert lines[0].startswith("firmware  albatross ") and f"device {dev}" in lines[0]
        assert lines[1].startswith("uptime    ") and "reset cause power_on" in lines[1]
        assert not [line for line in lines if line.startswith("error:")], lines

        # Log lines came while the line was typed: each one cleared the line, printed itself
        # whole, and drew the prompt and the line as it was again.
        redraws = _redraws(typed)
        assert len(redraws) >= 2, f"typing took {14 * KEY_S} s, yet saw {redraws}"
        states = {"stauts"[:n] for n in range(7)} | {"status"[:n] for n in range(7)}
        for log_line, partial in redraws:
            assert log_line.startswith("I app: stored seq "), log_line
            assert partial in states, (partial, typed)
        assert any(partial for _, partial in redraws), redraws

        # Up brings back the last command, ready to run again.
        con.type(UP, KEY_S)
        con.wait_screen(PROMPT + "status")
        again = con.command("")
        assert con.last_echo == "status" and again[0].startswith("firmware  albatross ")

        # And a typo left in gets the suggestion.
        assert con.command("stauts", delay=0.05) == [
            'error: unknown command "stauts" (try: status)'
        ]


def _redraws(data: bytes) -> list[tuple[str, str]]:
    """(log line, the typed line drawn again after it) for each log line printed while a line
    was being typed: "\\r ESC[K" log line "\\r\\n" "\\r ESC[K" prompt line."""
    out = []
    erase = b"\r\x1b[K"
    parts = data.split(erase)
    for i in range(1, len(parts) - 1):
        log_line, _, rest = parts[i].partition(b"\r\n")
        if rest or not _ or not parts[i + 1].startswith(PROMPT.encode()):
            continue
        drawn = re.match(rb"[ -~]*", parts[i + 1]).group()  # up to the next key's echo
        out.append((log_line.decode(), drawn[len(PROMPT) :].decode()))
    return out


# ---- 2. config: applied at once, or at the next boot; kept over reboot and power cut -------


@pytest.mark.bench
@pytest.mark.slow
def test_config_set_applies_and_survives_a_reboot_and_a_power_cut(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard()  # interval_s 1
    dev = vb.device_id
    with _up(vb, mqtt) as con:
        before = _reading_period(mqtt, dev, mqtt.mark(), 3, vb)

        assert con.command("config set interval_s 2") == ["ok: interval_s = 2.0 (applied now)"]
        changed = mqtt.mark()
        assert con.command("config set apn iot.example") == [
            'ok: apn = "iot.example" (takes effect at the next reboot)'
        ]
        shown = con.command("config show")
        assert 'apn = "iot.example"  (after reboot)' in shown, shown
        assert "interval_s = 2.0" in shown, shown
        status = con.command("status")
        assert "config    changed, waiting for a reboot: apn" in status, status
        # interval_s applied at once: readings now come twice as far apart as measured before
        # (1 s -> 2 s), whatever this machine's load makes of the absolute times.
        after = _reading_period(mqtt, dev, changed, 3, vb)
        assert 1.6 < after / before < 2.6, (before, after)

        mark = con.mark()
        con.type("reboot\r", 0.02)
        con.wait_for("rebooting", 5, after=mark)
        _booted(con, "hard", mark)
        _assert_kept(con)
        rebooted = mqtt.mark()

        mark = con.mark()
        assert vb.supervisor is not None
        vb.supervisor.power_cut(0.2)
        _booted(con, "power_on", mark)
        _assert_kept(con)
        assert vb.supervisor.status()["resets"] == {"power_on": 2, "hard": 1}
        # Still every 2 s after both boots.
        again = _reading_period(mqtt, dev, rebooted, 3, vb)
        assert 1.6 < again / before < 2.6, (before, again)


def _assert_kept(con: Console) -> None:
    con.wake()
    assert con.command("config get interval_s") == ["interval_s = 2.0"]
    assert con.command("config get apn") == ['apn = "iot.example"']
    assert con.command("config get apn --json") == ['{"apn": "iot.example"}']
    shown = con.command("config show")
    assert not [line for line in shown if "(after reboot)" in line], shown


# ---- 3. secrets ----------------------------------------------------------------------------

TYPED_SECRET = "Qz7vK9pXw3mR"  # `config set mqtt_password VALUE`
ASKED_SECRET = "tr0ub4dor &3 Lq8"  # answered at the hidden prompt (spaces and all)
ASKED = "mqtt_password (not shown): "


@pytest.mark.slow
def test_a_password_set_on_the_console_is_never_shown_logged_or_published(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard()
    dev = vb.device_id
    with _up(vb, mqtt) as con:
        # A user name too: MQTT sends no password without one (MQTT 3.1.1 3.1.2.9).
        assert con.command("config set mqtt_user field-tech") == [
            'ok: mqtt_user = "field-tech" (takes effect at the next connection to the broker)'
        ]
        # Slowly, so log lines draw the line again in the middle of the secret.
        lines = con.command(f"config set mqtt_password {TYPED_SECRET}", delay=0.2)
        assert lines == [
            'ok: mqtt_password = "***" (takes effect at the next connection to the broker)'
        ]
        assert con.last_echo == "config set mqtt_password " + "*" * len(TYPED_SECRET)
        redrawn = PROMPT.encode() + b"config set mqtt_password *"
        assert b"\r\x1b[K" + redrawn in con.last_raw, con.last_raw  # masked when redrawn
        assert con.command("config set mqtt_password", until=ASKED) == []
        lines = con.command(ASKED_SECRET, prompt=ASKED, delay=0.2)
        assert lines == [
            'ok: mqtt_password = "***" (takes effect at the next connection to the broker)'
        ]
        assert con.last_echo == "*" * len(ASKED_SECRET)
        assert b"\r\x1b[K" + ASKED.encode() + b"*" in con.last_raw, con.last_raw
        # An Enter by mistake at the question keeps the secret as it is.
        assert con.command("config set mqtt_password", until=ASKED) == []
        assert con.command("", prompt=ASKED) == [
            "cancelled: nothing changed (config unset mqtt_password clears it)"
        ]
        # Up recalls the commands, but no line that held a secret.
        for recalled in ("config set mqtt_password", "config set mqtt_user field-tech"):
            con.type(UP, 0.1)
            con.wait_screen(PROMPT + recalled)
        con.type(UP, 0.1)  # nothing older
        con.wait_screen(PROMPT + "config set mqtt_user field-tech")
        con.type("\x15", 0.1)  # Ctrl-U: the recalled line away
        con.wait_screen(PROMPT)
        answers = {"log 50 before the reboot": "\n".join(con.command("log 50"))}
        assert "changed: mqtt_password" in answers["log 50 before the reboot"]

        mark = mqtt.mark()
        at = con.mark()
        con.type("reboot\r", 0.02)
        _booted(con, "hard", at)
        # It is in use: the board connected with it and reports again.
        mqtt.wait_for(online_status_of(dev), BOOT_S, what="status after the reboot", after=mark)
        mqtt.wait_for(telemetry_of(dev), BOOT_S, what="telemetry after the reboot", after=mark)
        con.wake()
        for cmd in ("log 50", "config show", "config show --json", "status --json",
                    "config get mqtt_password", "status"):  # fmt: skip
            answers[cmd] = "\n".join(con.command(cmd))
        assert 'mqtt_password = "***"' in answers["config show"]
        assert json.loads(answers["config show --json"])["mqtt_password"] == "***"
        assert answers["config get mqtt_password"] == 'mqtt_password = "***"'
        assert "I app: stored seq" in answers["log 50"]
        console = vb.console_text()
        published = [m for m in mqtt.messages if m.topic.startswith(f"albatross/{dev}/")]
    vb.stop()
    stored = img.read_file(vb.image, "config.json")  # the value did reach the flash
    assert json.loads(stored)["mqtt_password"] == ASKED_SECRET

    for secret in (TYPED_SECRET, ASKED_SECRET):
        pieces = {secret[i : i + 5] for i in range(len(secret) - 4)}
        for where, text in [("console.log", console), *answers.items()]:
            leaked = [p for p in pieces if p in text]
            assert not leaked, f"{secret!r} shows in {where}: {leaked}; {logs_of(vb)}"
        for msg in published:
            leaked = [p for p in pieces if p.encode() in msg.payload]
            assert not leaked, f"{secret!r} published on {msg.topic}: {msg.payload!r}"


# ---- 4. mpremote beside the command line ---------------------------------------------------


def test_mpremote_works_unmodified_while_the_command_line_runs(
    vboard: VboardFactory, mqtt: MqttWatch, tmp_path: Path
) -> None:
    vb = vboard()
    dev = vb.device_id
    with _up(vb, mqtt) as con:
        assert con.command("status")[0].startswith("firmware  albatross ")
    # The command line is awake, its prompt showing: mpremote's Ctrl-C still reaches the REPL.
    assert mpremote(vb, "exec", "print(1+1)").strip() == "2"
    payload = bytes(range(256)) * 8 + b"\r\n\x03\x04 end"
    (tmp_path / "up.bin").write_bytes(payload)
    mpremote(vb, "fs", "cp", str(tmp_path / "up.bin"), ":hil_console.bin")
    mpremote(vb, "fs", "cp", ":hil_console.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == payload
    mpremote(vb, "soft-reset")
    assert mpremote(vb, "exec", "import os; print(os.stat('hil_console.bin')[6])").strip() == str(
        len(payload)
    )

    # Reset: the app and its command line come back.
    seq = max(r["seq"] for r in mqtt.telemetry(dev))
    mark = mqtt.mark()
    mpremote(vb, "reset")
    mqtt.wait_for(
        lambda msg: telemetry_of(dev)(msg) and msg.last["seq"] > seq,
        BOOT_S,
        what="telemetry after mpremote reset",
        after=mark,
        logs=logs_of(vb),
    )
    assert vb.console_text().count(", reset cause hard") == 1
    with Console(vb) as con:
        con.wake()
        lines = con.command("status")
        assert lines[0].startswith("firmware  albatross ") and "reset cause hard" in lines[1]


# ---- 5. line noise -------------------------------------------------------------------------

NOISE_SEED = 8
NOISE_BURSTS = 8
NOISE_BURST_BYTES = 512
NOISE_GAP_S = 0.3  # between bursts: well inside the console's 2 s noise hold


def _noise() -> list[bytes]:
    """What a terminal at the wrong baud rate sends: random bytes, Ctrl-C (0x03) among them,
    starting with a byte that is not text (a Ctrl-C from a quiet line is a real one)."""
    rng = random.Random(NOISE_SEED)
    data = bytearray(rng.randbytes(NOISE_BURSTS * NOISE_BURST_BYTES))
    data[0] = rng.randrange(0x80, 0x100)
    assert data.count(3) >= 5
    n = NOISE_BURST_BYTES
    return [bytes(data[i : i + n]) for i in range(0, len(data), n)]


@pytest.mark.bench
def test_line_noise_neither_stops_the_tracker_nor_changes_its_config_but_ctrl_c_does_stop(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard()
    dev = vb.device_id
    assert vb.supervisor is not None
    with _up(vb, mqtt) as con:
        config_before = json.loads(con.command("config show --json")[0])
        first = max(r["seq"] for r in mqtt.telemetry(dev))
        noise_at = con.mark()
        for burst in _noise():
            con.write(burst)
            time.sleep(NOISE_GAP_S)
        last = max(r["seq"] for r in mqtt.telemetry(dev))
        # The tracker went on reporting through the noise and after it, every reading.
        mqtt.wait_for(
            lambda m: telemetry_of(dev)(m) and m.last["seq"] >= last + 3,
            BOOT_S,
            what="telemetry after the noise",
            logs=logs_of(vb),
        )
        _no_gaps(mqtt, dev, first, last + 3, vb)
        assert vb.supervisor.status()["resets"] == {"power_on": 1}
        assert REPL_PROMPT not in con.text(noise_at)
        # The console answers, the config is as it was, and the noise was seen as noise.
        con.wake()
        con.type("\x15", 0.05)  # Ctrl-U: whatever the noise left on the line
        lines = con.command("status")
        assert lines[0].startswith("firmware  albatross "), lines
        assert json.loads(con.command("config show --json")[0]) == config_before
        console = vb.console_text()
        assert "not text (is the terminal at 115200 baud?); line discarded" in console

        # The opposite case: a clean Ctrl-C after 3 s of quiet leaves the app for the REPL.
        time.sleep(3)
        mark = con.mark()
        con.write(b"\x03")
        con.wait_for(REPL_PROMPT, 5, after=mark)
        at = con.mark()
        con.type("6 * 7\r", 0.02)
        con.wait_for("42", 5, after=at)
        assert vb.supervisor.status()["resets"] == {"power_on": 1}


# ---- 6. AT commands to the modem -----------------------------------------------------------


def _modem_at(con: Console, cmd: str, timeout: float) -> list[str]:
    """`modem at CMD`, again while the modem is busy sending (refused by design)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = con.command(f"modem at {cmd}", 15)
        busy = lines and "refused: the modem is busy" in lines[-1]
        if not busy or time.monotonic() > deadline:
            return lines
        time.sleep(0.3)


def test_modem_at_passes_a_command_to_the_modem_and_shows_its_answer(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(modem="sim7600", interval=5)  # an idle modem between readings
    mqtt.wait_for(
        online_status_of(vb.device_id), MODEM_S, what="birth via the modem", logs=logs_of(vb)
    )
    with _up(vb, mqtt) as con:
        lines = _modem_at(con, "AT+CSQ", 20)
        assert len(lines) == 2, lines
        assert re.fullmatch(r"\+CSQ: \d+,\d+", lines[0]) and lines[1] == "OK", lines
    assert "Traceback" not in vb.console_text()


@pytest.mark.bench
def test_modem_at_is_refused_at_once_with_the_reason_while_the_modem_is_off(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(modem="sim7600", interval=5)
    mqtt.wait_for(
        online_status_of(vb.device_id), MODEM_S, what="birth via the modem", logs=logs_of(vb)
    )
    with _up(vb, mqtt) as con:
        assert _modem_at(con, "AT", 20) == ["OK"]
        assert vb.modem_sim is not None
        vb.modem_sim.set_power(False)  # the bench cuts the modem's supply; STATUS goes low
        lines = _modem_at(con, "AT+CSQ", 20)
        # Whatever the answer, it is one line and no traceback.
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert "Traceback" not in vb.console_text()
        assert lines[0].startswith("error: refused: ") and "off" in lines[0], lines
