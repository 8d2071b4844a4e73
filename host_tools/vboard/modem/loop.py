"""The simulator's one thread: the UART pty with byte pacing, timers, host sockets.

Everything the modem does runs on this thread under `Loop.lock`; the public API in sim.py
takes the same lock, so there is one writer at a time and no state is shared unguarded.

UART model: the firmware opens the pty's slave side (set raw, like a USB-serial adapter's
tty after `stty raw`). Bytes the modem sends leave at the configured baud rate with 10 bits
per byte (start, 8 data, stop): byte k of a burst is released no earlier than
start + (k + 1) * 10 / baud, so 115200 baud gives at most 11 520 bytes per second. Bytes
from the MCU are handed to the modem as they arrive (the firmware's UART paces its side).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import selectors
import sys
import termios
import threading
import time
import traceback
import tty
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .sockets import HostLink
from .transcript import Transcript

# termios speed constant -> baud, for the rates a modem UART uses.
_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
    if hasattr(termios, f"B{rate}")
}
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
TICK_S = 0.002  # pacing granularity: bytes are written in slices of about this length
RETRY_S = 0.005  # retry a write the pty refused (its buffer is full: nobody reads)


class Loop:
    def __init__(self, baud: int, transcript_path: Path) -> None:
        if baud <= 0:
            raise ValueError(f"baud must be positive, not {baud}")
        self.lock = threading.RLock()
        self.byte_s = BITS_PER_BYTE / baud
        self.transcript_path = transcript_path
        self.on_rx: Callable[[bytes], None] = lambda data: None
        self.on_link: Callable[[HostLink], None] = lambda link: None
        self.errors: list[str] = []
        self.bytes_rx = 0
        self.bytes_tx = 0
        self.uart_path = ""
        self.t0 = time.monotonic()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._posted: deque[Callable[[], None]] = deque()
        self._tx = bytearray()
        self._tx_clock = 0.0
        self._rx_clock = 0.0  # when the last byte from the MCU has fully arrived on the line
        self._tx_retry_at = 0.0
        self._thread: threading.Thread | None = None
        self._ident = 0
        self._stopping = False
        self._master = self._slave = self._wake_r = self._wake_w = -1
        self._sel: selectors.BaseSelector | None = None
        self._transcript: Transcript | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        self.t0 = time.monotonic()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        # We keep the slave open ourselves, so the master never sees EIO when the firmware
        # closes and re-opens the port (as a USB adapter stays enumerated).
        self.uart_path = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._master, selectors.EVENT_READ, "pty")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._transcript = Transcript(self.transcript_path, self.t0)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="modem-sim", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self.lock:
            self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
        if self._transcript is not None:
            self._transcript.close()
            self._transcript = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def line_baud(self) -> int | None:
        """The speed the MCU side set on the pty (termios), None if unknown.

        The modem keeps pacing at its own rate; a different setting here is what would
        garble a real link, so snapshot() reports it for the bench to flag.
        """
        if self._slave < 0:
            return None
        try:
            speed = termios.tcgetattr(self._slave)[5]
        except termios.error:
            return None
        return _SPEEDS.get(speed)

    # -- the Host interface used by core.Modem ----------------------------------------------

    def now(self) -> float:
        return time.monotonic()

    def uart_write(self, data: bytes) -> None:
        if not data:
            return
        if not self._tx:
            self._tx_clock = max(self._tx_clock, time.monotonic())
        self._tx += data
        self._kick()

    def uart_flush(self) -> None:
        self._tx.clear()

    def uart_drained_at(self) -> float:
        start = max(self._tx_clock, time.monotonic()) if not self._tx else self._tx_clock
        return start + len(self._tx) * self.byte_s

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))
        self._kick()

    def post(self, fn: Callable[[], None]) -> None:
        """Run fn on the loop thread (thread-safe; used by connect threads)."""
        self._posted.append(fn)
        self.wake()

    def watch_link(self, link: HostLink) -> None:
        if self._sel is not None and link.sock is not None:
            self._sel.register(link.sock, selectors.EVENT_READ, link)

    def unwatch_link(self, link: HostLink) -> None:
        if self._sel is not None and link.sock is not None:
            try:
                self._sel.unregister(link.sock)
            except (KeyError, ValueError):
                pass

    # -- internals -------------------------------------------------------------------------

    def _kick(self) -> None:
        if threading.get_ident() != self._ident:
            self.wake()

    def wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a simulator bug must not kill the thread silently
            text = traceback.format_exc()
            self.errors.append(text)
            print(f"modem simulator: internal error\n{text}", file=sys.stderr)

    def _run(self) -> None:
        self._ident = threading.get_ident()
        assert self._sel is not None
        while True:
            with self.lock:
                if self._stopping:
                    return
                self._run_due()
                timeout = self._timeout(time.monotonic())
            events = self._sel.select(timeout)
            with self.lock:
                if self._stopping:
                    return
                for key, _mask in events:
                    if key.data == "pty":
                        self._guard(self._read_pty)
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        link = key.data
                        self._guard(lambda lk=link: self.on_link(lk))

    def _run_due(self) -> None:
        while self._posted:
            self._guard(self._posted.popleft())
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _when, _seq, fn = heapq.heappop(self._timers)
            self._guard(fn)
            while self._posted:
                self._guard(self._posted.popleft())
        self._guard(lambda: self._pump_tx(time.monotonic()))

    def _timeout(self, now: float) -> float | None:
        wake_at = []
        if self._timers:
            wake_at.append(self._timers[0][0])
        if self._tx:
            wake_at.append(max(self._tx_clock + max(self.byte_s, TICK_S), self._tx_retry_at))
        if self._posted:
            return 0.0
        if not wake_at:
            return None
        return max(0.0, min(wake_at) - now)

    def _pump_tx(self, now: float) -> None:
        if not self._tx or now < self._tx_retry_at:
            return
        due = int((now - self._tx_clock) / self.byte_s + 1e-9)
        if due <= 0:
            return
        chunk = bytes(self._tx[:due])
        try:
            written = os.write(self._master, chunk)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            written = 0
        if written:
            del self._tx[:written]
            self._tx_clock += written * self.byte_s
            self.bytes_tx += written
            if self._transcript is not None:
                self._transcript.record("rx", chunk[:written], now)  # the MCU receives
        if written < len(chunk):
            # The pty is full: the line stalls; later bytes are paced from when it moves.
            self._tx_clock = max(self._tx_clock, now)
            self._tx_retry_at = now + RETRY_S

    def _read_pty(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        if not data:
            return
        now = time.monotonic()
        self.bytes_rx += len(data)
        if self._transcript is not None:
            self._transcript.record("tx", data, now)  # the MCU sent
        # The MCU's bytes cross the wire at the baud rate too: the modem sees each chunk only
        # once its last byte has arrived, after the bytes before it (a pty delivers at once).
        self._rx_clock = max(self._rx_clock, now) + len(data) * self.byte_s
        # Always through the timer heap (ordered by time, then insertion), so chunks are
        # handed over in the order they arrived.
        self.call_later(self._rx_clock - now, lambda: self.on_rx(data))

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass
