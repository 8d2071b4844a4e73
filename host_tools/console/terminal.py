"""`albatross console`: a plain serial terminal for the technician command line.

Bytes go both ways unchanged: the device echoes, edits the line and keeps the history
(Up/Down), so the terminal does none of that. The keyboard is in raw mode so Ctrl-C, Tab
and the arrows reach the device; Ctrl-] leaves. When stdin is not a terminal (a pipe, a
test) it is relayed as is and end of input ends the session once the device is quiet.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import serial

from host_tools.console.protocol import CliError
from host_tools.console.session import open_port

EXIT_KEY = b"\x1d"  # Ctrl-]
_QUIET_S = 0.5  # after end of input: the device has said everything once quiet this long
_LINGER_S = 5.0


class _PortReader(threading.Thread):
    """Copies what the device sends to the screen (and a log file) until stopped."""

    def __init__(self, port: serial.SerialBase, out_fd: int, log: BinaryIO | None) -> None:
        super().__init__(name="console-reader", daemon=True)
        self.port = port
        self.out_fd = out_fd
        self.log = log
        self.error: BaseException | None = None
        self.last_rx = time.monotonic()
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                data = self.port.read(self.port.in_waiting or 1)
                if data:
                    self.last_rx = time.monotonic()
                    os.write(self.out_fd, data)
                    if self.log:
                        self.log.write(data)
                        self.log.flush()
        except (OSError, serial.SerialException) as e:  # unplugged, bridge gone
            self.error = e

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=1.0)


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """stdin in raw mode while inside, restored on every way out; nothing for a non-tty."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_console(
    url: str,
    *,
    baud: int = 115200,
    log_path: Path | None = None,
    in_fd: int | None = None,
    out_fd: int | None = None,
) -> int:
    """Relay between the terminal and the device on `url` until Ctrl-] (exit 0) or end of
    input; CliError when the port cannot be opened or goes away."""
    in_fd = sys.stdin.fileno() if in_fd is None else in_fd
    out_fd = sys.stdout.fileno() if out_fd is None else out_fd
    port = open_port(url, baud)
    with contextlib.ExitStack() as stack:
        stack.callback(port.close)
        log = stack.enter_context(log_path.open("ab")) if log_path else None
        print(f"albatross console on {url}; Ctrl-] exits", file=sys.stderr, flush=True)
        reader = _PortReader(port, out_fd, log)
        reader.start()
        stack.callback(reader.stop)
        with _raw(in_fd):
            port.write(b"\r")  # shows the prompt
            _relay_keys(in_fd, port, reader, url)
            os.write(out_fd, b"\r\n")
    return 0


def _relay_keys(in_fd: int, port: serial.SerialBase, reader: _PortReader, url: str) -> None:
    while True:
        if reader.error is not None:
            raise CliError(f"console on {url} closed: {reader.error}")
        if not select.select([in_fd], [], [], 0.1)[0]:
            continue
        data = os.read(in_fd, 1024)
        if not data:
            _wait_quiet(reader)
            return
        keys, exit_key, _ = data.partition(EXIT_KEY)
        if keys:
            port.write(keys)
        if exit_key:
            return


def _wait_quiet(reader: _PortReader) -> None:
    deadline = time.monotonic() + _LINGER_S
    while time.monotonic() < deadline and time.monotonic() - reader.last_rx < _QUIET_S:
        time.sleep(0.05)
