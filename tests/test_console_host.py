"""The host side of the technician command line: quoting, reading replies, provisioning
files (CPython, against the device's own word splitter and a fake console), and
`albatross console|config|provision` against a virtual board's real command line (hil)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from host_tools.cli import main
from host_tools.console import protocol as p
from host_tools.console import values
from host_tools.console.device_config import config_command
from host_tools.console.protocol import CliError
from host_tools.console.provision import provision
from host_tools.console.session import CliSession, open_session
from host_tools.vboard.runner import VirtualBoard
from tests.console_fake import FakeConsole, words

# ---- quoting: what the host types is what the device's split() reads --------------------

printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@given(printable)
def test_a_quoted_value_is_one_word_for_the_device(value: str) -> None:
    assert words.split(p.quote(value)) == [value]


@given(st.lists(st.tuples(st.sampled_from(values.schema_keys()), printable), max_size=20))
def test_config_set_lines_carry_every_pair_in_order_within_480(pairs: list) -> None:
    lines = p.config_set_lines(pairs)
    got = []
    for line in lines:
        assert len(line) <= p.MAX_LINE
        argv = words.split(line)
        assert argv[:2] == ["config", "set"]
        got += list(zip(argv[2::2], argv[3::2], strict=True))
    assert got == pairs


def test_values_are_quoted_only_when_needed() -> None:
    assert p.quote("iot.example") == "iot.example"
    assert p.quote("-5.5") == "-5.5"
    assert p.quote("field team") == '"field team"'
    assert p.quote("") == '""'
    assert p.quote('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'


def test_a_pair_too_long_for_one_line_is_refused_naming_its_key() -> None:
    with pytest.raises(CliError, match="mqtt_user: value too long") as e:
        p.config_set_lines([("mqtt_user", "x" * 480)])
    assert e.value.key == "mqtt_user"


# ---- reading what the console drew ------------------------------------------------------


def test_render_applies_backspace_and_the_redraw_around_a_log_line() -> None:
    typed = "sta" + "\r\x1b[KI app: stored seq 3\r\nalbatross> sta" + "uz\b \b\b \btus\r\n"
    done, cursor = p.render(typed + "fw 0.1\r\nalbatross> ")
    assert done == ["I app: stored seq 3", "albatross> status", "fw 0.1"]
    assert cursor == "albatross> "


def test_reply_lines_drop_the_echo_and_log_lines_but_keep_the_output() -> None:
    done = ["I app: up", "albatross> config show", "interval_s = 60.0", "W mqtt: retry 2"]
    assert p.reply_lines(done, "config show") == ["interval_s = 60.0"]
    assert p.reply_lines(done[:1], "config show") is None  # the echo has not come yet


def test_a_secret_echoed_as_stars_is_still_the_echo() -> None:
    command = "config set mqtt_password s3cret"
    assert p.is_echo("albatross> config set mqtt_password ******", command)
    assert not p.is_echo("albatross> config set mqtt_user s3cret2", command)


def test_ok_lines_are_read_with_their_effect() -> None:
    oks = p.ok_lines(
        [
            "ok: interval_s = 30.0 (applied now)",
            'ok: apn = "iot.example" (takes effect at the next reboot)',
            "ok: batch_size = 20 (unchanged)",
        ]
    )
    assert [(o.key, o.value, o.changed) for o in oks] == [
        ("interval_s", "30.0", True),
        ("apn", '"iot.example"', True),
        ("batch_size", "20", False),
    ]


def test_floats_compare_at_float32_precision() -> None:
    assert p.same_value(0.1, 0.1000000015)  # 0.1 as an ESP32 stores it
    assert not p.same_value(0.1, 0.1001)
    assert not p.same_value(True, 1)


# ---- a session on a fake console --------------------------------------------------------


def test_run_strips_echo_and_log_lines_even_when_logs_interrupt_the_typing() -> None:
    fake = FakeConsole(log_every=3)
    cli = CliSession(fake)
    cli.wake()
    assert cli.run("status") == "fw       0.1.0\nuptime   12 s"
    assert cli.run_json("status")["device_id"] == "fake"


def test_an_error_line_is_a_cli_error_naming_the_key() -> None:
    cli = CliSession(FakeConsole())
    with pytest.raises(CliError, match=r'^interval_s must be a number in .*got "0"$') as e:
        cli.run("config set interval_s 0")
    assert e.value.key == "interval_s"
    with pytest.raises(CliError, match='unknown command "stauts"'):
        cli.run("stauts")


def test_asking_commands_get_yes_and_a_prompt_left_open_is_answered_no() -> None:
    fake = FakeConsole()
    cli = CliSession(fake)
    assert cli.run("factory-reset") == "ok: factory reset"
    assert fake.commands == ["factory-reset --yes"]
    fake.write(b"factory-reset\r")  # as a person would: the device now asks
    with pytest.raises(CliError, match=r"asked for confirmation.*\[y/N\]"):
        cli._reply("factory-reset", timeout=2)
    assert fake.commands[-1] == "factory-reset (answer n)"


def test_wake_clears_a_half_typed_line_and_says_no_to_an_open_question() -> None:
    fake = FakeConsole()
    fake.write(b"\rfactory-reset\rrebo")  # someone asked, left, and typed half a word
    cli = CliSession(fake)
    cli.wake()
    assert cli.run("status").startswith("fw")
    assert fake.commands == ["factory-reset", "factory-reset (answer n)", "status"]


def test_wake_never_answers_a_question_for_a_secret() -> None:
    fake = FakeConsole()
    fake.config.set("mqtt_password", "old")
    fake.write(b"\rconfig set mqtt_password\r")
    with pytest.raises(CliError, match=r"asking for a secret \(mqtt_password \(not shown\):"):
        CliSession(fake).wake()
    assert fake.config["mqtt_password"] == "old"


def test_the_repl_is_reported_as_the_app_not_running() -> None:
    cli = CliSession(FakeConsole(repl=True))
    with pytest.raises(CliError, match="app is not running on fake.*REPL"):
        cli.wake(timeout=2)


def test_a_silent_port_times_out_with_what_it_showed() -> None:
    fake = FakeConsole()
    fake.write = lambda data: len(data)  # type: ignore[method-assign]  # a dead device
    cli = CliSession(fake)
    with pytest.raises(CliError, match=r"no 'albatross>' prompt on fake within 0.3 s"):
        cli.wake(timeout=0.3)
    with pytest.raises(CliError, match=r"no reply to 'status' on fake within 0.3 s"):
        cli.run("status", timeout=0.3)


def test_config_set_prints_the_ok_lines_and_a_bad_value_never_reaches_the_device() -> None:
    fake = FakeConsole()
    cli = CliSession(fake)
    out = config_command(cli, "set", ["interval_s", "30", "mqtt_user", "field team"])
    assert out == 'ok: interval_s = 30.0 (applied now)\nok: mqtt_user = "field team" ' + (
        "(takes effect at the next connection to the broker)"
    )
    assert fake.commands == ['config set interval_s 30 mqtt_user "field team"']
    with pytest.raises(CliError, match="batch_size must be an integer in 1..100"):
        config_command(cli, "set", ["interval_s", "5", "batch_size", "0"])
    assert len(fake.commands) == 1


# ---- provisioning -----------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_provisioning_file_is_checked_with_the_firmware_schema(tmp_path: Path) -> None:
    good = _write(tmp_path, "d.toml", 'interval_s = 30\napn = "iot.example"\nrat = "LTE"\n')
    assert values.load_file(good) == {"interval_s": 30, "apn": "iot.example", "rat": "LTE"}
    assert values.load_file(_write(tmp_path, "d.json", '{"batch_size": 5}')) == {"batch_size": 5}
    cases = {
        "bad.toml": ("interval_s = 0\n", r"interval_s must be a number in 0.02\.\.86400.0"),
        "typo.toml": ("intervl_s = 5\n", r'unknown key "intervl_s" \(try: interval_s\)'),
        "nested.toml": ("[modem]\napn = 'x'\n", "modem is a table; expected a flat"),
        "list.json": ('{"apn": ["x"]}', "apn is a list"),
        "array.json": ("[1]", "expected one JSON object"),
        "broken.toml": ("interval_s = \n", "not valid TOML"),
        "d.yaml": ("interval_s: 5\n", r"\.toml or \.json"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(CliError, match=message):
            values.load_file(_write(tmp_path, name, text))


def test_provision_refuses_a_bad_file_before_opening_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path, "device.toml", "interval_s = 30\nbatch_size = 500\n")
    code = main(["provision", "--file", str(bad), "--port", str(tmp_path / "no-such-port")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"albatross: {bad}: batch_size must be an integer in 1..100, got 500"


def test_provision_sends_only_what_differs_and_verifies_it() -> None:
    fake = FakeConsole()
    cli = CliSession(fake)
    wanted = {"interval_s": 60, "apn": "iot.example", "mqtt_password": "pw", "rat": "lte"}
    fake.config.set("mqtt_user", "ops")  # MQTT sends no password without a user
    report = provision(cli, wanted)
    sets = [c for c in fake.commands if c.startswith("config set")]
    assert sets == ["config set apn iot.example mqtt_password pw rat lte"]
    assert report.changed == ["apn", "mqtt_password", "rat"]
    assert report.at_reboot == ["apn", "rat"]
    rows = {r.key: (r.before, r.after) for r in report.rows}
    assert rows["mqtt_password"] == ("", "***") and rows["interval_s"] == (60.0, 60.0)
    assert report.summary().startswith("provisioned fake: 3 changed (2 at the next reboot), 1 ")
    table = [line.split() for line in report.format().splitlines()]
    assert table[0] == ["key", "before", "after", "changed"]
    assert table[1] == ["interval_s", "60.0", "60.0", "-"]
    assert table[2] == ["apn", '""', '"iot.example"', "yes", "(next", "reboot)"]
    again = provision(cli, wanted)  # the secret goes again: only the device can compare it
    assert again.changed == [] and fake.commands[-2] == "config set mqtt_password pw"


def test_provision_splits_long_changes_into_lines_of_480() -> None:
    fake = FakeConsole()
    wanted = {"mqtt_user": "u" * 128, "mqtt_password": "p" * 128, "broker_host": "h" * 253}
    report = provision(CliSession(fake), wanted)
    sets = [c for c in fake.commands if c.startswith("config set")]
    assert len(sets) == 2 and all(len(c) <= p.MAX_LINE for c in sets)
    assert report.lines_sent == 2 and sorted(report.changed) == sorted(wanted)
    assert report.to_json()["keys"]["broker_host"]["after"] == "h" * 253


def test_a_value_the_device_refuses_is_named_and_the_line_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeConsole()
    cli = CliSession(fake)
    before = fake.config.to_dict()
    monkeypatch.setattr(values, "check", lambda name, value: value)  # an older host schema
    with pytest.raises(CliError, match="refused by the device: watchdog_s must be") as e:
        provision(cli, {"interval_s": 5, "watchdog_s": 1})
    assert e.value.key == "watchdog_s"
    # One line carried both keys (the device refuses a line whole): interval_s, valid and
    # different from the device's, was not applied either.
    assert [c for c in fake.commands if c.startswith("config set")] == [
        "config set interval_s 5 watchdog_s 1"
    ]
    assert before["interval_s"] != 5 and fake.config.to_dict() == before


# ---- `albatross console` through a pty, on the fake and on a virtual board ---------------

ALBATROSS = str(Path(sys.executable).with_name("albatross"))


@contextlib.contextmanager
def _fake_on_a_pty(fake: FakeConsole) -> Iterator[str]:
    """The fake console behind a pty: its path is what a USB-serial adapter's would be."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if select.select([master], [], [], 0.01)[0]:
                fake.write(os.read(master, 1024))
            if fake.in_waiting:
                os.write(master, fake.read(fake.in_waiting))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield os.ttyname(slave)
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)


class _Screen:
    """What a terminal (the master side of a pty) received, with deadlines."""

    def __init__(self, fd: int, log: str) -> None:
        self.fd = fd
        self.log = log
        self.raw = b""

    def expect(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.raw:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not on the screen: {self.raw[-400:]!r}; see {self.log}"
            if select.select([self.fd], [], [], min(left, 0.1))[0]:
                try:
                    self.raw += os.read(self.fd, 4096)
                except OSError:  # EIO: the program on the pty has exited
                    time.sleep(0.05)
        return self.raw.decode(errors="replace")

    def type(self, keys: bytes) -> None:
        for b in keys:  # one key at a time, as a person types
            os.write(self.fd, bytes([b]))
            time.sleep(0.01)


def _type_status_then_exit(port: str, tmp_path: Path, log: str) -> str:
    """Run `albatross console` on a pty, type `status` with a typo mended by Backspace,
    leave with Ctrl-]; the screen. The terminal settings are as they were afterwards."""
    master, slave = os.openpty()
    saved = termios.tcgetattr(slave)
    session_log = tmp_path / "session.log"
    console = subprocess.Popen(
        [ALBATROSS, "console", "--port", port, "--log", str(session_log)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    screen = _Screen(master, log)
    try:
        screen.expect(f"albatross console on {port}; Ctrl-] exits")
        screen.expect("albatross> ")
        screen.type(b"statsu\x7f\x7fus\r")
        screen.expect("uptime")
        shown = screen.expect("albatross> ", timeout=5)
        screen.type(b"\x1d")
        assert console.wait(timeout=10) == 0
        assert termios.tcgetattr(slave) == saved
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
        os.close(master)
        os.close(slave)
    done, _ = p.render(shown[shown.index("Ctrl-] exits") :])
    assert "albatross> status" in done  # the device's echo, mended by its "\b \b"
    assert b"\b \b" in screen.raw
    assert "uptime" in session_log.read_text(errors="replace")
    return shown


def test_console_relays_keys_and_output_and_ctrl_right_bracket_exits(tmp_path: Path) -> None:
    fake = FakeConsole(log_every=4)
    with _fake_on_a_pty(fake) as port:
        _type_status_then_exit(port, tmp_path, "the fake console")
    assert fake.commands == ["status"]


def test_console_relays_a_pipe_and_stops_at_its_end() -> None:
    fake = FakeConsole()
    with _fake_on_a_pty(fake) as port:
        result = subprocess.run(
            [ALBATROSS, "console", "--port", port],
            input=b"status\r",
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    assert b"uptime   12 s" in result.stdout
    assert fake.commands == ["status"]


def test_a_port_in_use_by_the_console_is_refused_not_shared(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _fake_on_a_pty(FakeConsole()) as port:
        console = subprocess.Popen(
            [ALBATROSS, "console", "--port", port],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert console.stderr is not None and console.stdin is not None
        assert b"Ctrl-] exits" in console.stderr.readline()
        assert main(["config", "show", "--port", port]) == 2
        console.stdin.close()
        assert console.wait(timeout=10) == 0
    assert capsys.readouterr().err == (
        f"albatross: cannot open {port}: another program has it open (albatross console, "
        "mpremote?)\n"
    )


def test_config_set_asks_for_a_secret_given_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt: "s3 cret")
    fake = FakeConsole()
    with _fake_on_a_pty(fake) as port:
        assert main(["config", "set", "mqtt_user", "ops", "mqtt_password", "--port", port]) == 0
    assert fake.config["mqtt_password"] == "s3 cret"
    assert capsys.readouterr().out.splitlines()[-1] == (
        'ok: mqtt_password = "***" (takes effect at the next connection to the broker)'
    )


def test_console_on_a_missing_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [ALBATROSS, "console", "--port", str(tmp_path / "ttyUSB9")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"albatross: cannot open {tmp_path / 'ttyUSB9'}: ")
    assert len(result.stderr.strip().splitlines()) == 1


# ---- against a virtual board's real command line ----------------------------------------


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    """A virtual tracker whose broker never answers: its log scrolls (link retries, a
    reading every 0.5 s) while the tests talk to its command line."""
    config = {"device_id": "console-1", "interval_s": 0.5, "broker_port": 1}
    vb = VirtualBoard(name="console-1", workdir=tmp_path / "vb", modem="none", config=config)
    with vb:
        vb.wait_console("stored seq 0", 20)
        yield vb


def _logs(vb: VirtualBoard) -> str:
    return f"see {vb.workdir / 'console.log'}"


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.hil
def test_config_set_by_the_host_tool_survives_a_reboot(
    board: VirtualBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    port = board.console_path
    assert (
        main(["config", "set", "interval_s", "2.5", "mqtt_user", "field team", "--port", port])
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "ok: interval_s = 2.5 (applied now)",
        'ok: mqtt_user = "field team" (takes effect at the next connection to the broker)',
    ], _logs(board)
    with open_session(port) as cli:
        cli.reboot()
    assert board.console_text().count("reset cause hard") == 1, _logs(board)
    assert main(["config", "get", "mqtt_user", "--port", port, "--json"]) == 0
    assert _json_out(capsys) == {"mqtt_user": "field team"}
    assert main(["config", "show", "--port", port]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert "interval_s = 2.5" in shown and 'mqtt_user = "field team"' in shown, _logs(board)
    # A bad value: refused on the host, in the very words the device uses for it.
    assert main(["config", "set", "interval_s", "0", "--port", port]) == 2
    host_error = capsys.readouterr().err.strip()
    with open_session(port) as cli, pytest.raises(CliError) as device_error:
        cli.run("config set interval_s 0")
    assert host_error == f"albatross: {device_error.value}"
    assert str(device_error.value) == 'interval_s must be a number in 0.02..86400.0, got "0"'


@pytest.mark.hil
def test_provision_applies_a_toml_file_and_reports_what_changed(
    board: VirtualBoard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = board.console_path
    device = _write(
        tmp_path,
        "device.toml",
        'interval_s = 2\napn = "iot.example"\nmqtt_user = "field team"\n'
        'mqtt_password = \'p"w \\\\ x\'\nrat = "lte"\nbatch_size = 20\n',
    )
    assert main(["provision", "--file", str(device), "--port", port, "--json"]) == 0
    report = _json_out(capsys)
    assert report["changed"] == ["interval_s", "apn", "mqtt_user", "mqtt_password", "rat"]
    assert report["at_reboot"] == ["apn", "rat"]
    assert report["unchanged"] == ["batch_size"]
    assert report["keys"]["mqtt_password"] == {"before": "", "after": "***", "changed": True}
    assert report["keys"]["interval_s"] == {"before": 0.5, "after": 2.0, "changed": True}
    # Again: nothing differs; the secret is sent (only the device can compare it) and the
    # device says it was unchanged.
    assert main(["provision", "--file", str(device), "--port", port]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"provisioned {port}: 0 changed, 6 unchanged; read back and verified"
    assert out[1].split() == ["interval_s", "2.0", "2.0", "-"]
    with open_session(port) as cli:
        shown = cli.run("config show").splitlines()
    assert 'apn = "iot.example"  (after reboot)' in shown, _logs(board)


@pytest.mark.hil
def test_provision_sends_long_values_in_lines_the_device_takes(board: VirtualBoard) -> None:
    wanted = {"broker_host": "b" * 253, "mqtt_user": "u " * 64, "mqtt_password": "p" * 128}
    with open_session(board.console_path) as cli:
        report = provision(cli, wanted)
        assert cli.run_json("config get mqtt_user") == {"mqtt_user": "u " * 64}
    assert report.lines_sent == 2 and report.changed == list(wanted), _logs(board)
    assert "line longer than" not in board.console_text()


@pytest.mark.hil
def test_provision_names_a_refused_value_and_changes_nothing(
    board: VirtualBoard,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = board.console_path
    with open_session(port) as cli:
        before = cli.run_json("config show")
    typed_before = board.console_text().count("config set")
    device = _write(tmp_path, "device.toml", 'interval_s = 2\napn = "iot example"\n')
    assert main(["provision", "--file", str(device), "--port", port]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"albatross: {device}: apn may only contain the characters A-Za-z0-9.-, "
        'got "iot example"\n'
    )
    assert board.console_text().count("config set") == typed_before  # never sent
    # The same value past an older host schema: the device refuses it, names the key,
    # and the line it came in changes nothing.
    monkeypatch.setattr(values, "check", lambda name, value: value)
    with open_session(port) as cli:
        with pytest.raises(CliError, match="^refused by the device: apn may only") as e:
            provision(cli, {"interval_s": 2, "apn": "iot example"})
        assert e.value.key == "apn"
        assert cli.run_json("config show") == before, _logs(board)


@pytest.mark.hil
def test_console_on_a_virtual_board(board: VirtualBoard, tmp_path: Path) -> None:
    shown = _type_status_then_exit(board.console_path, tmp_path, _logs(board))
    assert "device console-1" in shown


@contextlib.contextmanager
def _tcp_to_pty(path: str) -> Iterator[str]:
    """A one-connection TCP server relaying to the pty at `path` (a serial server)."""
    server = socket.create_server(("127.0.0.1", 0))
    tty_fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(tty_fd)
    stop = threading.Event()

    def relay() -> None:
        conn, _ = server.accept()
        with conn:
            while not stop.is_set():
                for fd in select.select([conn, tty_fd], [], [], 0.05)[0]:
                    if fd is conn:
                        data = conn.recv(4096)
                        if not data:
                            return
                        os.write(tty_fd, data)
                    else:
                        conn.sendall(os.read(tty_fd, 4096))

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield f"socket://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        os.close(tty_fd)


@pytest.mark.hil
def test_a_socket_url_reaches_the_command_line(
    board: VirtualBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    with _tcp_to_pty(board.console_path) as url:
        assert main(["config", "get", "device_id", "--port", url, "--json"]) == 0
    assert _json_out(capsys) == {"device_id": "console-1"}


@pytest.mark.hil
def test_the_repl_on_the_console_is_one_clear_line(
    board: VirtualBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    with serial.serial_for_url(board.console_path, timeout=5) as port:
        port.write(b"\x03")  # Ctrl-C: the app stops, the REPL shows
        assert port.read_until(b">>> ").endswith(b">>> "), _logs(board)
    assert main(["config", "show", "--port", board.console_path]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"albatross: the tracker app is not running on {board.console_path}: the console "
        "shows the MicroPython REPL (>>>); machine.reset() or a power cycle starts it again\n"
    )


@pytest.mark.hil
def test_a_question_left_open_on_the_device_is_never_answered_by_the_host(
    board: VirtualBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    port = board.console_path
    with serial.serial_for_url(port, timeout=5) as tty_port:
        tty_port.write(b"\rfactory-reset\r")  # someone asked to erase the board, and left
        assert tty_port.read_until(b"[y/N] ").endswith(b"[y/N] "), _logs(board)
    assert main(["config", "get", "device_id", "--port", port]) == 0
    assert capsys.readouterr().out == 'device_id = "console-1"\n'
    console = board.console_text()
    assert "cancelled: nothing changed" in console and console.count("reset cause") == 1
    with serial.serial_for_url(port, timeout=5) as tty_port:
        tty_port.write(b"config set mqtt_user ops\r")  # no MQTT password without a user
        assert b"ok: mqtt_user" in tty_port.read_until(b"albatross> "), _logs(board)
        tty_port.write(b"config set mqtt_password\r")
        assert tty_port.read_until(b"(not shown): ").endswith(b": "), _logs(board)
        assert main(["config", "show", "--port", port]) == 2
        assert "is asking for a secret (mqtt_password (not shown):)" in capsys.readouterr().err
        tty_port.write(b"s3cret\r")  # the technician answers after all
        assert b'ok: mqtt_password = "***"' in tty_port.read_until(b"albatross> ")
