"""Carrying a RomLoader's bytes to a host at the speed of its UART.

LinePacer holds bytes for the time a UART needs to shift them out: 10 bit times per byte at
8N1 (start, 8 data, stop), so at most baud/10 bytes/s in each direction. TcpSerialServer
serves one loader as `socket://127.0.0.1:PORT`, which esptool opens with pyserial's
serial_for_url; pacing both directions at the loader's current baud rate makes esptool's
transfer times those of a real line. (Over a plain socket esptool cannot set the baud rate
nor toggle DTR/RTS; the rfc2217 server of the virtual board can, and reuses LinePacer.)"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable

from host_tools.vboard.esp32rom.loader import RomLoader

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


class LinePacer:
    """The time one direction of a serial line is busy. `delay(n, baud)` books n bytes and
    returns how long to wait before they have all arrived."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.free_at = 0.0
        self.bytes = 0

    def delay(self, nbytes: int, baud: int) -> float:
        now = self.clock()
        self.free_at = max(self.free_at, now) + nbytes * BITS_PER_BYTE / baud
        self.bytes += nbytes
        return self.free_at - now

    def wait(self, nbytes: int, baud: int) -> None:
        d = self.delay(nbytes, baud)
        if d > 0:
            time.sleep(d)


class TcpSerialServer:
    """One loader behind a TCP port, one host connection at a time. Each new connection is
    a manual reset into download mode (esptool's own note for socket ports: "reset the chip
    manually"), unless reset_on_connect is False. Use as a context manager or close()."""

    def __init__(
        self,
        loader: RomLoader,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        paced: bool = True,
        reset_on_connect: bool = True,
    ) -> None:
        self.loader = loader
        self.paced = paced
        self.reset_on_connect = reset_on_connect
        self.rx = LinePacer()
        self.tx = LinePacer()
        self.connections = 0
        self._lock = threading.Lock()  # feed() and reset() never run at the same time
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="esp32rom-tcp", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def reset(self) -> None:
        """Reset the chip now (a power cut or the EN button), between two feed()s."""
        with self._lock:
            self.loader.reset()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> TcpSerialServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        outbox: queue.Queue[tuple[bytes, int] | None] = queue.Queue()
        loader = self.loader

        def send(data: bytes) -> None:
            outbox.put((data, loader.baud))  # the rate the UART sends these bytes at

        with self._lock:
            self.connections += 1
            if self.reset_on_connect:
                loader.reset()
            loader.send = send
        writer = threading.Thread(target=self._write, args=(conn, outbox), daemon=True)
        writer.start()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                if self.paced:
                    self.rx.wait(len(data), loader.baud)
                with self._lock:
                    loader.feed(data)
        finally:
            with self._lock:
                loader.send = lambda data: None  # nobody listening: the bytes are lost
            outbox.put(None)
            writer.join(timeout=5)

    def _write(self, conn: socket.socket, outbox: queue.Queue[tuple[bytes, int] | None]) -> None:
        while True:
            item = outbox.get()
            if item is None:
                return
            data, baud = item
            step = max(64, baud // BITS_PER_BYTE // 100)  # about 10 ms of line time a chunk
            for i in range(0, len(data), step):
                chunk = data[i : i + step]
                if self.paced:
                    self.tx.wait(len(chunk), baud)
                try:
                    conn.sendall(chunk)
                except OSError:
                    return


def serve_tcp(
    loader: RomLoader, port: int = 0, *, paced: bool = True, reset_on_connect: bool = True
) -> TcpSerialServer:
    """Serve `loader` on 127.0.0.1:`port` (0: any free port); the server's url is what
    esptool's --port takes."""
    return TcpSerialServer(loader, port, paced=paced, reset_on_connect=reset_on_connect)
