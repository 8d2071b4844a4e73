"""The HIL console kit reads a command's reply as a terminal shows it, whatever the board
printed around it. Bytes as a board printed them (the serial CI stage, 2026-12-06)."""

from __future__ import annotations

from hil_tests.console_kit import Console
from host_tools.console.protocol import PROMPT

# A reading's log line redrew the prompt just before the Enter that woke the console was
# answered: the screen line the command starts on is that empty prompt, and the device's
# answer to the Enter (a new prompt) comes before the echo of the command.
WOKEN_LATE = (
    b"\r\x1b[Kalbatross> \r\x1b[KI app: stored seq 32 T=21.0 RH=45.0 bat=3.9\r\n"
    b"\r\x1b[Kalbatross> \r\n"
    b"albatross> status --json\r\n"
    b'{"uptime_s": 91}\r\n'
    b"albatross> "
)


def _console(data: bytes) -> Console:
    con = Console("loop://", name="recorded")
    con._buf += data
    return con


def test_an_empty_prompt_before_the_echo_is_not_taken_for_the_echo() -> None:
    with _console(WOKEN_LATE) as con:
        start = WOKEN_LATE.index(b"\r\n") + 2  # the redrawn prompt: where typing began
        assert con._reply(start, "status --json", PROMPT, PROMPT) == ['{"uptime_s": 91}']
        assert con.last_echo == "status --json"


def test_a_log_line_inside_the_typing_and_a_secret_echoed_as_stars() -> None:
    data = (
        b"albatross> config set mqtt_pa\r\x1b[KI app: stored seq 7\r\n"
        b"\r\x1b[Kalbatross> config set mqtt_password ******\r\n"
        b'ok: mqtt_password = "***" (takes effect at the next connection to the broker)\r\n'
        b"I config: changed: mqtt_password\r\n"
        b"albatross> "
    )
    with _console(data) as con:
        assert con._reply(0, "config set mqtt_password s3cret", PROMPT, PROMPT) == [
            'ok: mqtt_password = "***" (takes effect at the next connection to the broker)'
        ]


def test_no_reply_until_the_echo_and_the_next_prompt_have_come() -> None:
    with _console(b"\r\x1b[Kalbatross> \r\nalbatross> status --json\r\n{") as con:
        assert con._reply(0, "status --json", PROMPT, PROMPT) is None
