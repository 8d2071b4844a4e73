"""The golden console transcripts (tests/golden/cli) typed into a board's serial console, one
character at a time, while its app runs and logs a reading a second: the device shows what
the firmware's Console shows on CPython (tests/test_cli_golden.py compares the same files
there). Any target: a virtual board, or a real one on a bench (docs/hil.md).

The CPython session starts from a config.json chosen for deterministic answers; the board
starts from its own (provisioned) config, so the lines that show the board's identity
(device id, broker) are compared with the board's values, and a session that shows or
resets the whole config needs the board's other keys at the session's values.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hil_tests.console_kit import PROMPT, Console
from hil_tests.plugin.boards import Board
from host_tools.console import protocol
from tests.test_cli_golden import SESSIONS, Session, screen

pytestmark = pytest.mark.hil
KEY_GAP_S = 0.002  # between two typed characters (a fast typist or a pasted line)
ANSWER_S = 10.0  # for the last answer to be on the screen
QUIET_S = 0.2  # the console paused at a line's end this long: nothing half-printed
IDENTITY = ("device_id", "broker_host", "broker_port")
# Sessions that print every key (config show) or put every key back to its default.
WHOLE_CONFIG = {"config-flow", "config-reset"}


def settle(con: Console, timeout: float = 10.0) -> None:
    """Wait until the console paused at a line's end (or at the prompt) for QUIET_S."""
    deadline = time.monotonic() + timeout
    last, since = con.mark(), time.monotonic()
    while time.monotonic() < deadline:
        now = con.mark()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > QUIET_S:
            data = con.raw()
            if data.endswith(b"\n") or con.screen_line() == PROMPT:
                return
        time.sleep(0.02)
    raise AssertionError(f"{con.name}'s console never paused at a line's end")


def expected_screen(session: Session, config: dict) -> str:
    """The session's screen with the golden config's identity lines as this board's."""
    golden = session.config()
    seen = session.seen
    for key in IDENTITY:
        before = f"{key} = {_shown(golden[key])}\n"
        after = f"{key} = {_shown(config[key])}\n"
        seen = seen.replace(before, after)
    return seen


def _shown(value: object) -> str:
    return json.dumps(value)  # as `config show` prints a value


def _differs(session: Session, config: dict) -> list[str]:
    """The keys (besides identity and interval) where the board is not at the session's
    starting config, i.e. the schema's defaults."""
    from host_tools.fwconfig import firmware_config

    defaults = {k.name: k.default for k in firmware_config().SCHEMA}
    golden = {**defaults, **session.config()}
    return [
        k
        for k, v in config.items()
        if k not in IDENTITY
        and k in golden
        and not protocol.same_value(v, golden[k])
        and not (k == "mqtt_password" and v == "***" and golden[k] == "")  # fmt: skip
    ]


@pytest.mark.board(interval=1)
@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: p.stem)
def test_the_device_prints_the_golden_transcript(board: Board, path: Path) -> None:
    session = Session.read(path)
    con = board.console
    con.wake()
    config = board.cli_json("config show --json")
    if path.stem == "config-reset" and board.bench is None:
        pytest.skip("puts every key back to its default, the board's device id and broker too")
    differs = _differs(session, config)
    if path.stem not in WHOLE_CONFIG:  # only the keys the session types matter
        typed_text = b"".join(session.typed).decode(errors="replace")
        differs = [k for k in differs if k in typed_text]
    if differs:
        pytest.skip(f"starts from the golden config; {board.name} differs in {differs}")
    want = expected_screen(session, config)
    settle(con)
    # The console is awake (the prompt is showing): the session's first Enter, which wakes
    # it, is already done; the screen starts with the prompt on the current line.
    typed = list(session.typed)
    assert typed[0] == b"\r", f"{path.name} does not start by waking the console"
    shown_line = con.screen_line().encode()
    start = con.mark()
    for keys in typed[1:]:
        for b in keys:
            con.write(bytes([b]))
            time.sleep(KEY_GAP_S)
    deadline = time.monotonic() + ANSWER_S
    raw = b""
    while time.monotonic() < deadline:
        raw = shown_line + con.raw(start)
        if screen(raw.decode(errors="replace")) == want:
            break
        time.sleep(0.1)
    shown = screen(raw.decode(errors="replace"))
    assert shown == want, f"{path.name}: {board.name} differs; {board.where()}"
