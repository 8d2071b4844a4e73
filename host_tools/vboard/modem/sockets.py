"""Modem sockets bridged to real TCP connections on the host.

When the firmware opens a socket (AT+CIPOPEN / AT+QIOPEN), the simulator opens a real TCP
connection from the host to the host and port the firmware named (resolving the name on the
host), so MQTT reaches a real broker. Bytes the peer sends wait in the modem's receive buffer
until the firmware reads them (AT+CIPRXGET=2 / AT+QIRD), as with the real modems' buffer
access mode. Peer close and errors become the dialect's URCs (see simcom.py, quectel.py).

The connect runs on a short-lived thread (name resolution and connect block); everything else
runs on the simulator's loop thread, which owns the socket once connected.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

# Outcomes of a connect attempt, mapped to each dialect's error numbers.
CONNECTED = "ok"
DNS_FAILED = "dns"
REFUSED = "refused"
TIMED_OUT = "timeout"
FAILED = "error"

RECV_CHUNK = 4096


class HostLink:
    """One modem socket and, once connected, its TCP connection on the host."""

    def __init__(self, link_id: int, host: str, port: int, proto: str = "TCP") -> None:
        self.link_id = link_id
        self.host = host
        self.port = port
        self.proto = proto
        self.access_mode = 0  # Quectel: 0 buffer (QIRD), 1 direct push
        self.state = "connecting"  # -> "open" -> "peer_closed" | "closed"
        self.sock: socket.socket | None = None
        self.rx = bytearray()  # received, not yet read by the firmware
        self.rx_total = 0
        self.read_total = 0
        self.tx_total = 0
        self.local_port = 0

    # -- connect (runs on a worker thread, reports through `done`) -----------------------

    def connect_async(
        self, timeout_s: float, done: Callable[[HostLink, str, socket.socket | None], None]
    ) -> None:
        def run() -> None:
            outcome, sock = _connect(self.host, self.port, timeout_s)
            done(self, outcome, sock)

        threading.Thread(target=run, name=f"modem-connect-{self.link_id}", daemon=True).start()

    def attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.local_port = sock.getsockname()[1]
        self.state = "open"

    # -- data (loop thread) ------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Hand bytes to the host's TCP stack. False if the connection is gone."""
        if self.sock is None or self.state != "open":
            return False
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(5.0)  # a local peer that stops reading is a test bug
            self.sock.sendall(data)
        except OSError:
            return False
        finally:
            if self.sock is not None:
                self.sock.setblocking(False)
        self.tx_total += len(data)
        return True

    def pump(self) -> bool:
        """Read what the peer sent into the buffer. False when the peer closed or failed."""
        if self.sock is None:
            return False
        try:
            chunk = self.sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not chunk:
            return False
        self.rx += chunk
        self.rx_total += len(chunk)
        return True

    def take(self, max_len: int) -> bytes:
        data = bytes(self.rx[:max_len])
        del self.rx[:max_len]
        self.read_total += len(data)
        return data

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        if self.state != "peer_closed":
            self.state = "closed"


def _connect(host: str, port: int, timeout_s: float) -> tuple[str, socket.socket | None]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return DNS_FAILED, None
    outcome = FAILED
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout_s)
        try:
            sock.connect(addr)
        except ConnectionRefusedError:
            outcome = REFUSED
        except TimeoutError:
            outcome = TIMED_OUT
        except OSError:
            outcome = FAILED
        else:
            return CONNECTED, sock
        sock.close()
    return outcome, None
