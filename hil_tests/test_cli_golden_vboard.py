"""The golden console transcripts (tests/golden/cli) typed into a virtual board's serial
console, one character at a time, while its app runs and logs a reading a second: the device
shows what the firmware's Console shows on CPython (tests/test_cli_golden.py compares the
same files there). The board starts from the same config.json as the CPython session."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import serial

from hil_tests.conftest import VboardFactory, logs_of
from tests.test_cli_golden import SESSIONS, Session, screen

KEY_GAP_S = 0.002  # between two typed characters (a fast typist or a pasted line)
ANSWER_S = 10.0  # for the last answer to be on the screen


def drain(port: serial.Serial, timeout: float = 10.0) -> None:
    """Read what the board printed before we type: up to a line's end and a quiet 0.2 s."""
    deadline = time.monotonic() + timeout
    last, quiet_since = b"\n", time.monotonic()
    while time.monotonic() < deadline:
        data = port.read(4096)
        if data:
            last, quiet_since = data[-1:], time.monotonic()
        elif last == b"\n" and time.monotonic() - quiet_since > 0.2:
            return
    raise AssertionError("the console never paused at a line's end")


@pytest.mark.hil
@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: p.stem)
def test_the_device_prints_the_golden_transcript(vboard: VboardFactory, path: Path) -> None:
    session = Session.read(path)
    config = session.config()
    vb = vboard(device_id=config["device_id"], interval=config["interval_s"], config=config)
    vb.wait_console("stored seq 0", 30)  # the app runs, and its command line with it
    raw = bytearray()
    with serial.serial_for_url(vb.console_path, baudrate=115200, timeout=0.05) as port:
        drain(port)
        for keys in session.typed:
            for b in keys:
                port.write(bytes([b]))
                time.sleep(KEY_GAP_S)
                raw += port.read(port.in_waiting)
        deadline = time.monotonic() + ANSWER_S
        while screen(raw.decode(errors="replace")) != session.seen:
            if time.monotonic() > deadline:
                break
            raw += port.read(4096)
    shown = screen(raw.decode(errors="replace"))
    assert shown == session.seen, f"{path.name}: the device differs; see {logs_of(vb)}"
