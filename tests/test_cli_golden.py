"""Golden transcripts of the technician's command line (tests/golden/cli/*.txt).

Each file is one session at the console as a person sees it: a line saying what it shows,
the keys typed (one Python string literal a line, sent one byte at a time), then the terminal
screen they produce, with the log lines that scroll by left out. This test types every session
into the firmware's Console on CPython (firmware/tests/cli_kit.py: a real Tracker on fake
buses) and compares the screen with the file; hil_tests/test_cli_golden_vboard.py types the
same keys into a virtual board's serial console and compares with the same files, which shows
that the device prints what CPython prints.

The screen is what a terminal makes of the output: "\\r\\x1b[K" clears the line and "\\b"
steps back, so a log line that arrives while a command is typed goes away together with the
prompt and half-typed line drawn again after it; lines are stripped on the right. Both start
from the same config.json (session_config), chosen so that every answer is deterministic.

After an intended change of the console's wording, write the files anew with
    ALBATROSS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_cli_golden.py
and read `git diff tests/golden` before committing them.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
sys.path[:0] = [str(FIRMWARE), str(FIRMWARE / "tests")]

from cli_kit import Rig  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "cli"
SESSIONS = sorted(GOLDEN.glob("*.txt"))
TYPED = "--- typed (Python string literals, sent one byte at a time)\n"
SEEN = "--- seen (the terminal's screen; log lines left out)\n"
LOG_LINE = re.compile(r"[DIWE] [\w.-]+: .*")


@dataclass
class Session:
    path: Path
    head: str  # the file up to the screen
    typed: list[bytes]
    seen: str

    @classmethod
    def read(cls, path: Path) -> Session:
        head, seen = path.read_text().split(SEEN)
        keys = [ast.literal_eval(line) for line in head.split(TYPED)[1].splitlines()]
        typed = [k.encode() if isinstance(k, str) else k for k in keys]
        return cls(path, head + SEEN, typed, seen)

    def config(self) -> dict:
        """config.json on both consoles: the device id names the vboard's log folder, and the
        broker is one that refuses at once, so the uplink only logs."""
        return {
            "device_id": "golden-" + self.path.stem,
            "interval_s": 1.0,
            "broker_host": "127.0.0.1",
            "broker_port": 1,
        }


def screen(raw: str) -> str:
    """What a terminal shows after printing `raw`, without log lines."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    i = 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        c = raw[i]
        i += 1
        if c == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif c == "\r":
            col = 0
        elif c == "\b":
            col = max(col - 1, 0)
        else:
            line[col : col + 1] = [c]
            col += 1
    lines.append("".join(line))
    return "".join(ln.rstrip() + "\n" for ln in lines if not LOG_LINE.fullmatch(ln))


def replay_on_cpython(session: Session) -> str:
    async def go() -> str:
        return "".join([await r.type(keys) for keys in session.typed])

    with Rig(config_text=json.dumps(session.config())) as r:
        return asyncio.run(go())


def test_a_screen_drops_log_lines_and_the_redraw_they_cause() -> None:
    raw = "albatross> conf\r\x1b[KI app: stored seq 3\r\n\r\x1b[Kalbatross> conf"
    raw += "ig gt\b \bet apn\r\n" + 'apn = ""\r\nW uplink: refused\r\nalbatross> '
    assert screen(raw) == 'albatross> config get apn\napn = ""\nalbatross>\n'


@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: p.stem)
def test_the_console_prints_the_golden_transcript(path: Path) -> None:
    session = Session.read(path)
    shown = screen(replay_on_cpython(session))
    if os.environ.get("ALBATROSS_UPDATE_GOLDEN") == "1":
        path.write_text(session.head + shown)
    assert shown == Session.read(path).seen
