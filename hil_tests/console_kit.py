"""A person at a serial terminal on a board's technician console (docs/console.md).

`Console` holds the console pty open and records everything the board prints from then on
(a reader thread, so nothing is lost while a test waits on MQTT). It types as a person does,
one key at a time, and reads command answers the way a terminal shows them: log lines that
scrolled by and the redraws of the typed line are rendered away, so `command()` returns only
what the command printed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import serial

from hil_tests.plugin.vboards import logs_of
from host_tools.console import protocol
from host_tools.vboard.runner import VirtualBoard

PROMPT = protocol.PROMPT
REPL_PROMPT = protocol.REPL_PROMPT
UP = "\x1b[A"
BACKSPACE = "\x7f"  # what a terminal sends for the Backspace key


def render(segment: bytes) -> str:
    """What one screen line shows after these bytes, as a terminal draws it (the host
    tools' own rendering: CR, erase, Backspace and overwrite)."""
    return protocol.render(segment.decode("latin-1"))[1]


class Console:
    """The console of a virtual board (`Console(vb)`) or of any board at a serial URL
    (`Console("/dev/ttyUSB0", name="desk-1", record=path)`: what it prints is also appended
    to `record`, the console log a real board does not keep itself)."""

    def __init__(
        self,
        board: VirtualBoard | str,
        *,
        name: str | None = None,
        record: Path | None = None,
        logs: Callable[[], str] | None = None,
    ) -> None:
        if isinstance(board, VirtualBoard):
            self.vb: VirtualBoard | None = board
            url = board.console_path
            self.name = name or board.name
            self._logs = logs or (lambda: logs_of(board))
        else:
            self.vb = None
            url = board
            self.name = name or board
            self._logs = logs or (lambda: str(record) if record else "(no console log kept)")
        self.url = url
        # Exclusive: a second reader (mpremote, a terminal) would take half of every reply.
        self.port = serial.serial_for_url(url, baudrate=115200, timeout=0.05, exclusive=True)
        self._record = record.open("ab") if record else None
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, name="console-kit", daemon=True)
        self._thread.start()
        self.last_echo = ""  # the typed line as the last command() saw it shown
        self.last_raw = b""  # the bytes of the last command(), from its line to its prompt

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data = self.port.read(4096)
            except (serial.SerialException, OSError):
                return
            if data:
                if self._record is not None:
                    self._record.write(data)
                    self._record.flush()
                with self._cond:
                    self._buf += data
                    self._cond.notify_all()

    def close(self) -> None:
        """Let go of the pty (mpremote cannot share it: both would read the board's bytes)."""
        self._closing.set()
        self._thread.join(timeout=2)
        self.port.close()
        if self._record is not None:
            self._record.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the board printed ------------------------------------------------------

    def mark(self) -> int:
        """A position in what the board printed since the console was opened."""
        with self._cond:
            return len(self._buf)

    def raw(self, start: int = 0, end: int | None = None) -> bytes:
        with self._cond:
            return bytes(self._buf[start:end])

    def text(self, start: int = 0) -> str:
        return self.raw(start).decode(errors="replace")

    def screen_line(self) -> str:
        """What the terminal's last (unfinished) line shows now."""
        data = self.raw()
        return render(data[data.rfind(b"\n") + 1 :])

    def failure(self, what: str, start: int = 0) -> AssertionError:
        tail = self.raw(start)[-1500:]
        return AssertionError(
            f"{what}; {self.name}'s console showed (last 1500 bytes):\n{tail!r}\n"
            f"logs: {self._logs()}"
        )

    def wait_for(self, text: str, timeout: float = 10.0, *, after: int = 0, count: int = 1) -> int:
        """Wait until `text` has been printed `count` times after position `after`; the
        position just past the last of them."""
        pos = self._await(text, timeout, after, count)
        if pos is None:
            raise self.failure(f"{text!r} x{count} not printed within {timeout} s", after)
        return pos

    def _await(self, text: str, timeout: float, after: int, count: int = 1) -> int | None:
        needle = text.encode()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found, pos = 0, after
                while found < count:
                    i = self._buf.find(needle, pos)
                    if i < 0:
                        break
                    found, pos = found + 1, i + len(needle)
                if found >= count:
                    return pos
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    def wait_screen(self, shown: str, timeout: float = 5.0) -> None:
        """Wait until the terminal's current line shows exactly `shown`."""
        deadline = time.monotonic() + timeout
        while self.screen_line() != shown:
            if time.monotonic() > deadline:
                raise self.failure(f"the line shows {self.screen_line()!r}, not {shown!r}")
            time.sleep(0.02)

    # ---- typing ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def type(self, text: str, delay: float = 0.05) -> None:
        """Key by key, `delay` seconds apart, as a person types (escape sequences such as
        UP go as one key)."""
        keys = re.findall(r"\x1b\[[A-D]|.", text, re.S)
        for key in keys:
            self.write(key.encode("latin-1"))
            time.sleep(delay)

    def wake(self, timeout: float = 15.0) -> None:
        """Enter until the prompt answers (a board still booting reads nothing yet)."""
        deadline = time.monotonic() + timeout
        while True:
            start = self.mark()
            self.write(b"\r")
            if self._await(PROMPT, 1.0, start) is not None:
                return
            if time.monotonic() > deadline:
                raise self.failure(f"no {PROMPT!r} within {timeout} s of pressing Enter")

    def command(
        self,
        line: str,
        timeout: float = 15.0,
        *,
        prompt: str = PROMPT,
        until: str = PROMPT,
        delay: float = 0.01,
    ) -> list[str]:
        """Type `line` and Enter at `prompt`; the lines the command printed, up to the next
        `until` (the prompt, or a question), without the echo and without log lines."""
        data = self.raw()
        start = data.rfind(b"\n") + 1  # the screen line the typing starts on
        self.type(line + "\r", delay)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._reply(start, line, prompt, until)
            if reply is not None:
                return reply
            if time.monotonic() > deadline:
                raise self.failure(f"no answer to {line!r} ending in {until!r}", start)
            with self._cond:
                self._cond.wait(0.1)

    def _reply(self, start: int, line: str, prompt: str, until: str) -> list[str] | None:
        data = self.raw(start)
        segments = data.split(b"\r\n")
        shown = [render(s) for s in segments[:-1]]
        # The echo is the prompt line that shows what was typed: an empty prompt before it
        # (the device still answering the Enter that woke it) is not the echo.
        echo = next(
            (
                i
                for i, s in enumerate(shown)
                if s.startswith(prompt) and protocol.is_echo(s[len(prompt) :], line)
            ),
            None,
        )
        if echo is None:
            return None
        mark = until.encode()
        end = next(
            (k for k in range(echo + 1, len(segments)) if segments[k].startswith(mark)), None
        )
        if end is None:
            return None
        self.last_echo = shown[echo][len(prompt) :]
        self.last_raw = b"\r\n".join(segments[: end + 1])
        return [s for s in shown[echo + 1 : end] if not protocol.is_log(s)]
