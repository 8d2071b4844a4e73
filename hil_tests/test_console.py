"""The technician's console (docs/console.md), used as a person uses it: through the serial
console, one key at a time, while the tracker keeps reporting. The tests that take the `board`
fixture run on any target (a virtual board, or a real one on a bench: docs/hil.md); the
others need the simulator's bench.

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
import subprocess
import time
from pathlib import Path

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.console_kit import BACKSPACE, PROMPT, REPL_PROMPT, UP, Console
from hil_tests.helpers import MPREMOTE, online_status_of, telemetry_of
from hil_tests.plugin.boards import Board
from host_tools import image as img
from host_tools.console import protocol
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


def _booted(con: Console, cause: str, after: int, timeout: float = BOOT_S) -> None:
    """The app started again after `after` (the reset cause it reports) and took a reading."""
    pos = con.wait_for(f", reset cause {cause}", timeout, after=after)
    con.wait_for("I app: stored seq", timeout, after=pos)


def _reading_period(
    mqtt: MqttWatch, dev: str, after: int, gaps: int, logs: str, timeout: float = BOOT_S
) -> float:
    """Seconds between readings as the broker receives them: the median over `gaps`
    consecutive telemetry messages (per reading, should one message carry several)."""
    msgs: list[Message] = []
    mark = after
    for _ in range(gaps + 1):
        m = mqtt.wait_for(
            telemetry_of(dev),
            timeout,
            what=f"telemetry #{len(msgs) + 1}",
            after=mark,
            logs=logs,
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


def _no_gaps(
    mqtt: MqttWatch, dev: str, first: int, upto: int, logs: str, timeout: float = BOOT_S
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seqs = {r["seq"] for r in mqtt.telemetry(dev)}
        missing = sorted(set(range(first, upto + 1)) - seqs)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"readings {missing[:20]} never arrived; {logs}")
        time.sleep(0.2)


# ---- 1. typing as a person does ------------------------------------------------------------


@pytest.mark.board(interval=1)  # a reading, and its log line, every second
def test_a_person_fixes_a_typo_and_recalls_a_command_while_the_log_scrolls(
    board: Board,
) -> None:
    dev = board.device_id
    con = board.console
    con.wake()
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
    assert re.match(r"uptime    \d+ s, reset cause (power_on|hard)", lines[1]), lines
    assert not [line for line in lines if line.startswith("error:")], lines

    # Log lines came while the line was typed: each one cleared the line, printed itself
    # whole, and drew the prompt and the line as it was again.
    redraws = _redraws(typed)
    assert len(redraws) >= 2, f"typing took {14 * KEY_S} s, yet saw {redraws}"
    states = {"stauts"[:n] for n in range(7)} | {"status"[:n] for n in range(7)}
    for log_line, partial in redraws:
        assert protocol.LOG_LINE.match(log_line), log_line
        assert partial in states, (partial, typed)
    assert any(log.startswith("I app: stored seq ") for log, _ in redraws), redraws
    assert any(partial for _, partial in redraws), redraws

    # Up brings back the last command, ready to run again.
    con.type(UP, KEY_S)
    con.wait_screen(PROMPT + "status")
    again = con.command("")
    assert con.last_echo == "status" and again[0].startswith("firmware  albatross ")

    # And a typo left in gets the suggestion.
    assert con.command("stauts", delay=0.05) == ['error: unknown command "stauts" (try: status)']


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


@pytest.mark.power
@pytest.mark.slow
@pytest.mark.board(interval=1)
def test_config_set_applies_and_survives_a_reboot_and_a_power_cut(board: Board) -> None:
    dev, mqtt, con = board.device_id, board.mqtt, board.console
    wait = board.boot_timeout_s
    con.wake()
    before = _reading_period(mqtt, dev, mqtt.mark(), 3, board.where(), wait)

    assert con.command("config set interval_s 2") == ["ok: interval_s = 2.0 (applied now)"]
    changed = mqtt.mark()
    # watchdog_s: a key that waits for the reboot and is safe on any board (an APN is not).
    assert con.command("config set watchdog_s 45") == [
        "ok: watchdog_s = 45 (takes effect at the next reboot)"
    ]
    shown = con.command("config show")
    assert "watchdog_s = 45  (after reboot)" in shown, shown
    assert "interval_s = 2.0" in shown, shown
    status = con.command("status")
    assert "config    changed, waiting for a reboot: watchdog_s" in status, status
    # interval_s applied at once: readings now come twice as far apart as measured before
    # (1 s -> 2 s), whatever this machine's load makes of the absolute times.
    after = _reading_period(mqtt, dev, changed, 3, board.where(), wait)
    assert 1.6 < after / before < 2.6, (before, after)

    mark = con.mark()
    births = [board.reboot()["reset_cause"]]
    _booted(board.console, "hard", mark, wait)
    _assert_kept(board.console)
    rebooted = mqtt.mark()

    mark = board.console.mark()
    births.append(board.power_cycle()["reset_cause"])
    _booted(board.console, "power_on", mark, wait)
    _assert_kept(board.console)
    assert births == ["hard", "power_on"], births
    # Still every 2 s after both boots.
    again = _reading_period(mqtt, dev, rebooted, 3, board.where(), wait)
    assert 1.6 < again / before < 2.6, (before, again)


def _assert_kept(con: Console) -> None:
    con.wake()
    assert con.command("config get interval_s") == ["interval_s = 2.0"]
    assert con.command("config get watchdog_s") == ["watchdog_s = 45"]
    assert con.command("config get watchdog_s --json") == ['{"watchdog_s": 45}']
    shown = con.command("config show")
    assert not [line for line in shown if "(after reboot)" in line], shown


# ---- 3. secrets ----------------------------------------------------------------------------

TYPED_SECRET = "Qz7vK9pXw3mR"  # `config set mqtt_password VALUE`
ASKED_SECRET = "tr0ub4dor &3 Lq8"  # answered at the hidden prompt (spaces and all)
ASKED = "mqtt_password (not shown): "


@pytest.mark.slow
@pytest.mark.board(interval=1)  # log lines scroll while the secret is typed
def test_a_password_set_on_the_console_is_never_shown_logged_or_published(board: Board) -> None:
    dev, mqtt, con = board.device_id, board.mqtt, board.console
    con.wake()
    if board.bench is None and board.cli_json("config get mqtt_user --json")["mqtt_user"]:
        pytest.skip(f"{board.name}'s broker takes its own user name; this test sets another")
    console_at = con.mark()
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
    older = con.mark()
    con.type(UP * 8, 0.1)  # the rest of the history (8 lines), whatever earlier tests typed
    con.type("\x15", 0.1)  # Ctrl-U: the recalled line away
    con.wait_screen(PROMPT)
    shown = re.findall(rb"\r\x1b\[K" + PROMPT.encode() + rb"([^\r]*)", con.raw(older))
    assert not [line for line in shown if b"mqtt_password " in line], shown
    if board.bench is not None:  # a fresh board: nothing older than this test's lines
        assert set(shown) <= {b"config set mqtt_user field-tech", b""}, shown
    answers = {"log 50 before the reboot": "\n".join(con.command("log 50"))}
    assert "changed: mqtt_password" in answers["log 50 before the reboot"]

    # It is in use: the board connects with it after a reboot and reports again.
    board.reboot()
    mark = mqtt.mark()
    board.wait_telemetry(after=mark, what="telemetry after the reboot")
    con = board.console
    con.wake()
    for cmd in ("log 50", "config show", "config show --json", "status --json",
                "config get mqtt_password", "status"):  # fmt: skip
        answers[cmd] = "\n".join(con.command(cmd))
    assert 'mqtt_password = "***"' in answers["config show"]
    assert json.loads(answers["config show --json"])["mqtt_password"] == "***"
    assert answers["config get mqtt_password"] == 'mqtt_password = "***"'
    assert "I app: stored seq" in answers["log 50"]
    console = con.text(console_at)
    published = [m for m in mqtt.messages if m.topic.startswith(f"albatross/{dev}/")]
    if board.bench is not None:  # the simulator's flash can be read back: the value is there
        vb = board.bench
        vb.stop()
        stored = img.read_file(vb.image, "config.json")
        assert json.loads(stored)["mqtt_password"] == ASKED_SECRET

    for secret in (TYPED_SECRET, ASKED_SECRET):
        pieces = {secret[i : i + 5] for i in range(len(secret) - 4)}
        for where, text in [("the console", console), *answers.items()]:
            leaked = [p for p in pieces if p in text]
            assert not leaked, f"{secret!r} shows in {where}: {leaked}; {board.where()}"
        for msg in published:
            leaked = [p for p in pieces if p.encode() in msg.payload]
            assert not leaked, f"{secret!r} published on {msg.topic}: {msg.payload!r}"


# ---- 4. mpremote beside the command line ---------------------------------------------------


def _mpremote(url: str, board: Board, *args: str) -> str:
    """The unmodified mpremote on the board's console port; its stdout."""
    result = subprocess.run(
        [MPREMOTE, "connect", url, *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, (
        f"mpremote {' '.join(args)} failed: {result.stderr[-2000:]}; {board.where()}"
    )
    return result.stdout


def test_mpremote_works_unmodified_while_the_command_line_runs(
    board: Board, tmp_path: Path
) -> None:
    start = board.mark()
    board.console.wake()
    assert board.console.command("status")[0].startswith("firmware  albatross ")
    payload = bytes(range(256)) * 8 + b"\r\n\x03\x04 end"
    (tmp_path / "up.bin").write_bytes(payload)
    with board.released() as url:
        # The command line is awake, its prompt showing: mpremote's Ctrl-C still reaches the
        # REPL.
        assert _mpremote(url, board, "exec", "print(1+1)").strip() == "2"
        _mpremote(url, board, "fs", "cp", str(tmp_path / "up.bin"), ":hil_console.bin")
        _mpremote(url, board, "fs", "cp", ":hil_console.bin", str(tmp_path / "down.bin"))
        assert (tmp_path / "down.bin").read_bytes() == payload
        _mpremote(url, board, "soft-reset")
        size = _mpremote(url, board, "exec", "import os; print(os.stat('hil_console.bin')[6])")
        assert size.strip() == str(len(payload))
        _mpremote(url, board, "fs", "rm", ":hil_console.bin")  # the board's flash as it was

        # Reset: the app and its command line come back.
        seq = max(r["seq"] for r in board.readings())
        mark, since = board.mark(), time.monotonic()
        _mpremote(url, board, "reset")
        birth = board.wait_online(after=mark, since=since)
        board.wait_telemetry(lambda r: r["seq"] > seq, after=mark, what="a reading after reset")
    assert birth["reset_cause"] == "hard", birth
    # One boot only: neither mpremote's soft reset nor its opening of the port reset the app.
    births = [
        m
        for m in board.mqtt.messages[start:]
        if m.topic == board.topic("status") and m.json.get("state") == "online"
    ]
    assert len(births) == 1, [m.json.get("reset_cause") for m in births]
    board.console.wake()
    lines = board.console.command("status")
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


def _uptime(con: Console) -> int:
    lines = con.command("status")
    found = re.match(r"uptime    (\d+) s,", lines[1])
    assert found, lines
    return int(found.group(1))


def _births(board: Board, after: int) -> list[dict]:
    topic = board.topic("status")
    return [
        m.json
        for m in board.mqtt.messages[after:]
        if m.topic == topic and m.json.get("state") == "online"
    ]


@pytest.mark.board(interval=1)
def test_line_noise_neither_stops_the_tracker_nor_changes_its_config_but_ctrl_c_does_stop(
    board: Board,
) -> None:
    dev, mqtt, con = board.device_id, board.mqtt, board.console
    con.wake()
    start = mqtt.mark()
    up_before = _uptime(con)
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
        board.boot_timeout_s,
        what="telemetry after the noise",
        logs=board.where(),
    )
    _no_gaps(mqtt, dev, first, last + 3, board.where(), board.boot_timeout_s)
    assert REPL_PROMPT not in con.text(noise_at)
    # The console answers, the config is as it was, and the noise was seen as noise.
    con.wake()
    con.type("\x15", 0.05)  # Ctrl-U: whatever the noise left on the line
    up_after = _uptime(con)
    assert json.loads(con.command("config show --json")[0]) == config_before
    assert "not text (is the terminal at 115200 baud?); line discarded" in con.text(noise_at)
    # No reset: the same boot's uptime went on, and no new birth on the broker.
    assert up_after >= up_before + 3, (up_before, up_after)
    assert _births(board, start) == []

    # The opposite case: a clean Ctrl-C after 3 s of quiet leaves the app for the REPL.
    time.sleep(3)
    mark = con.mark()
    con.write(b"\x03")
    con.wait_for(REPL_PROMPT, 5, after=mark)
    at = con.mark()
    con.type("6 * 7\r", 0.02)
    con.wait_for("42", 5, after=at)
    assert _births(board, start) == []


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


@pytest.mark.board(modem=True, interval=5)  # an idle modem between readings
def test_modem_at_passes_a_command_to_the_modem_and_shows_its_answer(board: Board) -> None:
    con = board.console
    at = con.mark()
    con.wake()
    lines = _modem_at(con, "AT+CSQ", 20)
    assert len(lines) == 2, lines
    assert re.fullmatch(r"\+CSQ: \d+,\d+", lines[0]) and lines[1] == "OK", lines
    assert "Traceback" not in con.text(at)


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
