"""The bench's two AF_UNIX servers: the firmware-facing binary wire and the JSON-lines control.

`Bench` (bench.py) owns one of each; `BenchClient` (bench_client.py) speaks the control side.

Binary protocol on bench.sock (version 1; all integers big-endian)
------------------------------------------------------------------
request  = op u8, length u16, payload[length]
response = status u8, length u16, payload[length]
One response per request, in order, on any number of concurrent connections (a firmware
reboot simply reconnects). status 0 is success; anything else is an errno with the ESP32's
(newlib's) numbering, so simhal can raise exactly what machine.I2C raises on the chip:
  19 ENODEV     the addressed device did not ACK (absent, busy, faulted, bad command)
  116 ETIMEDOUT the bus is stuck (SDA held low) -- note Linux's own ETIMEDOUT is 110
  22 EINVAL     malformed payload          95 EOPNOTSUPP  unknown op
  5 EIO         the bench failed internally (a bug; see the supervisor's log)
Ops (ranges reserved so more peripherals fit without breaking old clients:
0x00-0x0F link, 0x10-0x1F I2C, 0x20-0x2F ADC, 0x30-0x3F GPIO; UART-like peripherals such
as the modem and GNSS use ptys, not this socket):
  0x01 HELLO      ()                                   -> version u8, b"albatross-bench"
  0x10 I2C_WRITE  bus u8, addr u8, flags u8, data...   -> ()
  0x11 I2C_READ   bus u8, addr u8, flags u8, n u16     -> data[n]
  0x12 I2C_SCAN   bus u8                               -> addr u8 per ACKing device
  0x20 ADC_READ   channel name (UTF-8, e.g. "battery") -> microvolts u32, read_u16 u16
I2C flags: bit 0 = STOP after the transfer (machine.I2C's stop=True); no other bits yet.

Control protocol on control.sock: one JSON object per line each way.
  {"cmd": "set", "temperature": 21.5, "humidity": 40, "battery": 3.7}   (any subset)
  {"cmd": "fault", "name": "i2c_crc", "on": true, "count": 3}
  {"cmd": "faults"} | {"cmd": "snapshot"} | {"cmd": "log", "last": 20} | {"cmd": "help"}
  -> {"ok": true, ...} or {"ok": false, "error": "..."}. `Bench.add_control()` adds commands.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from host_tools.vboard.bench import Bench

logger = logging.getLogger("host_tools.vboard.bench")  # one logger for the whole bench

PROTOCOL_VERSION = 1
BENCH_SOCKET = "bench.sock"
CONTROL_SOCKET = "control.sock"

OP_HELLO = 0x01
OP_I2C_WRITE = 0x10
OP_I2C_READ = 0x11
OP_I2C_SCAN = 0x12
OP_ADC_READ = 0x20
OP_PIN_WRITE = 0x30  # level u8, pin name (UTF-8)  -> ()
OP_PIN_READ = 0x31  # pin name (UTF-8)            -> level u8

OK = 0
EIO = 5
ENODEV = 19
EINVAL = 22
EOPNOTSUPP = 95
ETIMEDOUT = 116  # ESP32 / newlib value (what the firmware sees on the chip)

FLAG_STOP = 0x01
MAX_I2C_READ = 4096  # far above any sensor reply; bounds what a buggy client can ask for
_HEADER = struct.Struct(">BH")

MAX_CONTROL_LINE = 64 * 1024


class BenchError(Exception):
    """An expected failure: bad value, unknown fault or command, bench not reachable."""


class WireServer:
    """bench.sock: decodes the firmware's binary requests into calls on the bench's API."""

    def __init__(self, bench: Bench, path: Path, lock: threading.RLock) -> None:
        self._bench = bench
        self._lock = lock  # the bench's: `stats` is read with the rest of its snapshot
        self.stats = {"connections": 0, "clients": 0, "requests": 0, "errors": 0}
        self._server = _UnixServer(path, self._serve, "bench-wire")

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def handle_frame(self, op: int, payload: bytes) -> tuple[int, bytes]:
        """One binary request -> (status, payload). Never raises."""
        try:
            return self._dispatch(op, payload)
        except BenchError:
            return ENODEV, b""
        except (ValueError, struct.error, UnicodeDecodeError):
            return EINVAL, b""
        except Exception:
            logger.exception("bench: op 0x%02x failed", op)
            return EIO, b""

    def _dispatch(self, op: int, p: bytes) -> tuple[int, bytes]:
        bench = self._bench
        if op == OP_I2C_WRITE:
            if len(p) < 3:
                return EINVAL, b""
            return bench.i2c_write(p[1], p[3:], bus=p[0], stop=bool(p[2] & FLAG_STOP)), b""
        if op == OP_I2C_READ:
            if len(p) != 5:
                return EINVAL, b""
            n = (p[3] << 8) | p[4]
            if n > MAX_I2C_READ:
                return EINVAL, b""
            return bench.i2c_read(p[1], n, bus=p[0], stop=bool(p[2] & FLAG_STOP))
        if op == OP_I2C_SCAN:
            if len(p) != 1:
                return EINVAL, b""
            return OK, bytes(bench.i2c_scan(bus=p[0]))
        if op == OP_ADC_READ:
            uv, u16 = bench.adc_read(p.decode())
            return OK, struct.pack(">IH", uv, u16)
        if op == OP_PIN_WRITE:
            if len(p) < 2:
                return EINVAL, b""
            return bench.pin_write(p[1:].decode(), 1 if p[0] else 0), b""
        if op == OP_PIN_READ:
            status, level = bench.pin_read(p.decode())
            return status, bytes((level,)) if status == OK else b""
        if op == OP_HELLO:
            return OK, bytes((PROTOCOL_VERSION,)) + b"albatross-bench"
        return EOPNOTSUPP, b""

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.stats["connections"] += 1
            self.stats["clients"] += 1
        try:
            while True:
                header = _recv_exact(conn, _HEADER.size)
                if header is None:
                    return
                op, length = _HEADER.unpack(header)
                payload = _recv_exact(conn, length) if length else b""
                if payload is None:
                    return  # the client went away mid-request (e.g. the board reset)
                status, body = self.handle_frame(op, payload)
                with self._lock:
                    self.stats["requests"] += 1
                    self.stats["errors"] += status not in (OK, ENODEV, ETIMEDOUT)
                conn.sendall(_HEADER.pack(status, len(body)) + body)
        except OSError:
            return  # connection reset by a dying firmware process: not the bench's problem
        finally:
            with self._lock:
                self.stats["clients"] -= 1


class ControlServer:
    """control.sock: one JSON request per line, answered from a table of named commands."""

    def __init__(self, path: Path, lock: threading.RLock) -> None:
        self._lock = lock
        self._commands: dict[str, Callable[..., Any]] = {}
        self._server = _UnixServer(path, self._serve, "bench-control")

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def commands(self) -> list[str]:
        return sorted(self._commands)

    def add(self, name: str, handler: Callable[..., Any], *, replace: bool = False) -> None:
        """See `Bench.add_control`."""
        with self._lock:
            if name in self._commands and not replace:
                raise BenchError(f"control command {name!r} already exists")
            self._commands[name] = handler

    def handle_request(self, request: object) -> dict[str, Any]:
        """One control request (a decoded JSON object) -> the reply object."""
        if not isinstance(request, dict):
            return _error('request must be a JSON object like {"cmd": "snapshot"}')
        args = dict(request)
        cmd = args.pop("cmd", None)
        if not isinstance(cmd, str):
            return _error('missing "cmd" (a string)')
        handler = self._commands.get(cmd)
        if handler is None:
            return _error(f"unknown command {cmd!r} (known: {', '.join(self.commands)})")
        try:
            result = handler(**args)
        except (BenchError, ValueError) as e:
            return _error(str(e))
        except TypeError as e:
            return _error(f"bad arguments for {cmd!r}: {e}")
        except Exception as e:
            logger.exception("bench: control command %r failed", cmd)
            return _error(f"internal error in {cmd!r}: {type(e).__name__}: {e}")
        if result is None:
            result = {}
        elif not isinstance(result, dict):
            result = {"result": result}
        return {"ok": True, **result}

    def handle_line(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            reply = _error(f"bad JSON: {e}")
        else:
            reply = self.handle_request(request)
        try:
            text = json.dumps(reply, default=str)
        except (TypeError, ValueError) as e:
            text = json.dumps(_error(f"reply not JSON-serialisable: {e}"))
        return text.encode() + b"\n"

    def _serve(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        try:
            while True:
                line = rfile.readline(MAX_CONTROL_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_CONTROL_LINE:
                    msg = f"request longer than {MAX_CONTROL_LINE} bytes"
                    conn.sendall(json.dumps(_error(msg)).encode() + b"\n")
                    return  # cannot find the next line boundary reliably: hang up
                if line.strip():
                    conn.sendall(self.handle_line(line))
        except OSError:
            return
        finally:
            rfile.close()


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class _UnixServer:
    """AF_UNIX stream listener: one thread accepts, one thread per connection.

    stop() wakes the accept loop through a socketpair (portable, no polling), then shuts
    down open connections so their threads see EOF and end.
    """

    def __init__(self, path: Path, handle: Callable[[socket.socket], None], name: str) -> None:
        self.path = path
        self._handle = handle
        self._name = name
        self._sock: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._sock is not None:
            raise BenchError(f"{self.path} is already being served")
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
        except OSError as e:
            sock.close()
            raise BenchError(
                f"cannot listen on {self.path}: {e} (AF_UNIX paths must stay under ~100 "
                "bytes: use a shorter workdir)"
            ) from None
        sock.listen(8)
        self._sock = sock
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._accept_loop, name=self._name, daemon=True)
        self._thread.start()

    def _clear_stale(self) -> None:
        if not os.path.lexists(self.path):
            return
        if not self.path.is_socket():
            raise BenchError(f"{self.path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # left behind by a bench that died
            return
        finally:
            probe.close()
        raise BenchError(f"another bench is already serving {self.path}")

    def _accept_loop(self) -> None:
        assert self._sock is not None and self._wake is not None
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake[0], selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake[0]:
                        return
                    try:
                        conn, _ = self._sock.accept()
                    except OSError:
                        continue
                    t = threading.Thread(
                        target=self._run, args=(conn,), name=f"{self._name}-conn", daemon=True
                    )
                    with self._lock:
                        self._conns[conn] = t
                    t.start()
        finally:
            sel.close()

    def _run(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except Exception:
            logger.exception("bench: %s connection handler failed", self._name)
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            conn.close()

    def stop(self) -> None:
        if self._sock is None:
            return
        assert self._wake is not None and self._thread is not None
        self._wake[1].send(b"x")
        self._thread.join(timeout=5)
        self._sock.close()
        for s in self._wake:
            s.close()
        self._sock = self._wake = None
        with self._lock:
            conns = list(self._conns.items())
        for conn, _ in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, t in conns:
            t.join(timeout=5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
