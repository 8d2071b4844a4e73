"""The virtual board's USB port: a USB-to-UART bridge served as RFC 2217, with the
two-transistor auto-reset circuit of ESP32 dev boards between its DTR/RTS and the chip.

What a host opens as `rfc2217://127.0.0.1:PORT` is the bridge (a CP2102 on a DevKitC): baud
rate, DTR and RTS come over the Telnet COM-PORT option (pyserial's PortManager speaks it),
console bytes both ways are paced at the line's rate (esp32rom.transport.LinePacer).

The auto-reset circuit (NodeMCU and DevKitC schematics; esptool's docs, "Automatic
bootloader"): two NPN transistors cross-wired so that

    DTR asserted  RTS asserted    EN     IO0
    no            no              high   high     (port closed, or both released)
    yes           yes             high   high     (what a serial terminal sets on open)
    no            yes             LOW    high     chip held in reset
    yes           no              high   LOW      boot strap: download mode at reset

EN and IO0 are never low together; esptool's classic reset gets the chip into download mode
by releasing EN (DTR and RTS both asserted for a moment) and pulling IO0 low right after,
before the capacitor on EN has let it rise: the chip samples IO0 only when EN is high
(Supervisor.set_pins). A terminal that asserts both lines on open (pyserial, mpremote) does
not reset the board, whatever order they arrive in from "both released".

The chip side is duck-typed (Supervisor): set_pins(en, io0), uart_rx(data), and it calls
UsbPort.chip_tx(data, baud) for what its UART transmits. One host at a time, as a serial
port is exclusive: a second connection is left unanswered, so pyserial's open() fails with
a SerialException after its 3 s negotiation timeout ("Remote does not seem to support
RFC2217"), and is closed when that host gives up.
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from serial import rfc2217

from host_tools.vboard.esp32rom.transport import BITS_PER_BYTE, LinePacer

DEFAULT_BAUD = 115200


def auto_reset_pins(dtr: bool, rts: bool) -> tuple[bool, bool]:
    """(EN high, IO0 high) for DTR and RTS as pyserial sets them (True: asserted, which
    drives the bridge's pin low)."""
    return not (rts and not dtr), not (dtr and not rts)


class Chip(Protocol):
    def set_pins(self, en: bool, io0: bool) -> None: ...

    def uart_rx(self, data: bytes) -> None: ...


class BridgeUart:
    """The bridge's side of the line as pyserial's PortManager drives it: a serial-like
    object whose DTR/RTS go through the auto-reset circuit to the chip's EN and IO0, and
    whose baud rate is the rate both directions are paced at. Unwired modem inputs (CTS,
    DSR, RI, CD) read inactive, as on a DevKitC."""

    cts = dsr = ri = cd = False

    def __init__(self, chip: Chip, purge_rx: Callable[[], None] = lambda: None) -> None:
        self.chip = chip
        self._purge_rx = purge_rx
        self._dtr = self._rts = False
        self.baudrate = DEFAULT_BAUD
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = self.rtscts = False
        self.break_condition = False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self.set_lines(bool(value), self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self.set_lines(self._dtr, bool(value))

    def set_lines(self, dtr: bool, rts: bool) -> None:
        """Both lines at once (a port closing drops both together)."""
        self._dtr, self._rts = dtr, rts
        self.chip.set_pins(*auto_reset_pins(dtr, rts))

    def reset_input_buffer(self) -> None:
        self._purge_rx()  # what the chip sent that has not reached the host yet

    def reset_output_buffer(self) -> None:
        pass  # host bytes go to the chip as they arrive: nothing waits in the bridge


class _Connection:
    """PortManager's `connection`: a thread-safe write to the host's socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the host went away; the reader notices


class UsbPort:
    """The USB port of one virtual board on 127.0.0.1:`port` (0: any free port).
    `paced`: False sends bytes as fast as they come (unit tests of the protocol)."""

    def __init__(
        self, chip: Chip, port: int = 0, *, host: str = "127.0.0.1", paced: bool = True
    ) -> None:
        self.chip = chip
        self.paced = paced
        self.uart = BridgeUart(chip, self._purge_tx)
        self.rx = LinePacer()  # host -> chip
        self.tx = LinePacer()  # chip -> host
        self.connections = 0
        self.refused = 0
        self._conn: _Connection | None = None
        self._manager: rfc2217.PortManager | None = None
        self._outbox: queue.Queue[tuple[bytes, int] | None] = queue.Queue()
        self._sock = socket.create_server((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._sock, selectors.EVENT_READ, "listen")
        self._reader = threading.Thread(target=self._serve, name="vboard-usb", daemon=True)
        self._writer = threading.Thread(target=self._write, name="vboard-usb-tx", daemon=True)
        self._reader.start()
        self._writer.start()

    @property
    def url(self) -> str:
        return f"rfc2217://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def chip_tx(self, data: bytes, baud: int) -> None:
        """What the chip's UART0 sends, at `baud`: to the host if one has the port open
        (a bridge with its port closed drops it)."""
        if self._conn is not None and data:
            self._outbox.put((data, baud))

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        self._reader.join(timeout=5)
        self._writer.join(timeout=5)
        self._sock.close()
        self._sel.close()

    def __enter__(self) -> UsbPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- threads -----
    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.2):
                if key.data == "listen":
                    self._accept()
                elif key.data == "busy":
                    self._turn_away(key.fileobj)  # type: ignore[arg-type]
                else:
                    self._from_host(key.fileobj)  # type: ignore[arg-type]
        if self._conn is not None:
            self._hang_up(self._conn.sock)
        for key in list(self._sel.get_map().values()):
            if key.data == "busy":
                key.fileobj.close()  # type: ignore[union-attr]

    def _accept(self) -> None:
        try:
            sock, _ = self._sock.accept()
        except OSError:
            return
        if self._conn is not None:
            self.refused += 1  # the port is open elsewhere (a serial port is exclusive)
            self._sel.register(sock, selectors.EVENT_READ, "busy")
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        conn = _Connection(sock)
        self._manager = rfc2217.PortManager(self.uart, conn)
        self._conn = conn
        self._sel.register(sock, selectors.EVENT_READ, "host")

    def _turn_away(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(sock)
            sock.close()

    def _from_host(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._hang_up(sock)
            return
        assert self._manager is not None
        payload = b"".join(self._manager.filter(data))
        if payload:
            if self.paced:
                self.rx.wait(len(payload), self.uart.baudrate)
            self.chip.uart_rx(payload)

    def _hang_up(self, sock: socket.socket) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        self._conn = self._manager = None
        self._purge_tx()
        # The host closed the port: the bridge releases DTR and RTS together (EN and IO0
        # high); a host that died holding EN low lets the chip boot.
        self.uart.set_lines(False, False)

    def _purge_tx(self) -> None:
        try:
            while True:
                item = self._outbox.get_nowait()
                if item is None:
                    self._outbox.put(None)
                    return
        except queue.Empty:
            pass

    def _write(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            data, baud = item
            step = max(64, baud // BITS_PER_BYTE // 100)  # about 10 ms of line time
            for i in range(0, len(data), step):
                chunk = data[i : i + step]
                if self.paced:
                    self.tx.wait(len(chunk), baud)
                conn, manager = self._conn, self._manager
                if conn is None or manager is None:
                    break
                conn.write(b"".join(manager.escape(chunk)))
