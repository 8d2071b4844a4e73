"""The simulated bench around a virtual board: I2C bus with an SHT4x, battery on an ADC pin,
fault injection, and the two sockets through which the firmware and the tests reach it.

The supervisor creates a `Bench`, calls `start()`, and passes the firmware
`ALBATROSS_BENCH=<bench.socket_path>`; `boards/unix_sim/simhal.py` talks to that socket.
Tests and `albatross bench` drive the bench through `control.sock` (`BenchClient`).

Files in the workdir:
  bench.sock    firmware-facing binary protocol (below)
  control.sock  JSON lines for tests and tools (below)
  i2c.log       every I2C transaction, one line each, with wall-clock timestamps

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
  -> {"ok": true, ...} or {"ok": false, "error": "..."}. `add_control()` adds commands.
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from host_tools.vboard.sht4x_sim import DEFAULT_ADDRESS, Sht4xSim

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
BENCH_SOCKET = "bench.sock"
CONTROL_SOCKET = "control.sock"
I2C_LOG = "i2c.log"

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

# ESP32 ADC with 11 dB attenuation: readings saturate near 3.1 V (ESP-IDF ADC docs; the
# linear range is narrower, ~0.15-2.45 V). Modelled as linear 0..3.1 V, clamped there.
ADC_FULL_SCALE_V = 3.1
DEFAULT_BATTERY_V = 3.9
DEFAULT_DIVIDER = 2.0  # 100k/100k, as on LilyGO boards

MAX_CONTROL_LINE = 64 * 1024

# What the SHT4x's 16-bit words can express (datasheet formulas) and what a battery input
# can plausibly see (a LiPo is 3.0-4.2 V; USB-powered boards read ~5 V).
TEMPERATURE_RANGE = (-45.0, 130.0)
HUMIDITY_RANGE = (0.0, 100.0)
BATTERY_RANGE = (0.0, 10.0)


class BenchError(Exception):
    """An expected failure: bad value, unknown fault or command, bench not reachable."""


class I2cDevice(Protocol):
    """What the bus needs from a simulated I2C device (see Sht4xSim)."""

    address: int

    @property
    def holds_bus_low(self) -> bool: ...

    def write(self, data: bytes) -> bool: ...

    def read(self, n: int) -> bytes | None: ...

    def power_cycle(self) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...


@dataclass
class _Fault:
    apply: Callable[..., None]  # apply(on: bool, **params)
    state: Callable[[], dict[str, Any]]
    params: tuple[str, ...]
    doc: str


class I2cBus:
    """One I2C bus: devices by 7-bit address, and the bus-level stuck fault."""

    def __init__(self, bus_id: int) -> None:
        self.bus_id = bus_id
        self.devices: dict[int, I2cDevice] = {}
        self.stuck = False  # SDA held low by something on the bus (short, crashed device)
        self.counters = {"writes": 0, "reads": 0, "scans": 0, "nacks": 0, "timeouts": 0}

    def attach(self, device: I2cDevice) -> None:
        if not 0 <= device.address <= 0x7F:
            raise BenchError(f"I2C address {device.address} is not 7-bit")
        if device.address in self.devices:
            raise BenchError(f"I2C address 0x{device.address:02x} already taken")
        self.devices[device.address] = device

    def is_stuck(self) -> bool:
        return self.stuck or any(d.holds_bus_low for d in self.devices.values())

    def write(self, addr: int, data: bytes) -> int:
        self.counters["writes"] += 1
        if self.is_stuck():
            self.counters["timeouts"] += 1
            return ETIMEDOUT
        dev = self.devices.get(addr)
        if dev is None or not dev.write(data):
            self.counters["nacks"] += 1
            return ENODEV
        return OK

    def read(self, addr: int, n: int) -> tuple[int, bytes]:
        self.counters["reads"] += 1
        if self.is_stuck():
            self.counters["timeouts"] += 1
            return ETIMEDOUT, b""
        dev = self.devices.get(addr)
        data = dev.read(n) if dev is not None else None
        if data is None:
            self.counters["nacks"] += 1
            return ENODEV, b""
        return OK, data

    def scan(self) -> list[int]:
        # machine.I2C.scan() probes each address with an empty write and lists the ACKs;
        # per-address errors (a stuck bus times out every probe) just leave it out.
        self.counters["scans"] += 1
        if self.is_stuck():
            return []
        return [a for a, d in sorted(self.devices.items()) if d.write(b"")]


def _check_number(name: str, value: object, lo: float, hi: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BenchError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        unit = f" {unit}" if unit else ""
        raise BenchError(f"{name} must be between {lo:g} and {hi:g}{unit}, got {value!r}")
    return v


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BenchError(f"{name} must be an integer {lo}..{hi}, got {value!r}")
    return value


class Bench:
    """The simulated hardware around one virtual board. Thread-safe."""

    def __init__(
        self,
        workdir: Path,
        *,
        board_info: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_size: int = 512,
    ) -> None:
        self.workdir = Path(workdir)
        self.board_info = dict(board_info or {})
        self.clock = clock
        self._lock = threading.RLock()
        self.battery_v = DEFAULT_BATTERY_V
        self.battery_divider = _check_number(
            "board.json battery_divider",
            self.board_info.get("battery_divider", DEFAULT_DIVIDER),
            1.0,
            100.0,
            "",
        )
        self.buses: dict[int, I2cBus] = {0: I2cBus(0)}
        self.sht4x = Sht4xSim(address=self._sht4x_address(), clock=clock)
        self.buses[0].attach(self.sht4x)
        self._adc: dict[str, Callable[[], float]] = {
            "battery": lambda: self.battery_v / self.battery_divider
        }
        self.adc_reads = 0
        # GPIO lines to simulated parts: name -> (on_write(level) or None, read() or None)
        self._pins: dict[str, tuple[Callable[[int], None] | None, Callable[[], int] | None]] = {}
        self.pin_levels: dict[str, int] = {}
        self._faults: dict[str, _Fault] = {}
        self._add_builtin_faults()
        self._controls: dict[str, Callable[..., Any]] = {
            "set": lambda **values: {"state": self.set(**values)},
            "fault": self._ctl_fault,
            "faults": lambda: {"faults": self.faults()},
            "snapshot": self.snapshot,
            "log": lambda last=50: {"transactions": self.transactions(last)},
            "help": self._ctl_help,
        }
        self._transactions: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._log_file: Any = None
        self.wire_stats = {"connections": 0, "clients": 0, "requests": 0, "errors": 0}
        self._wire = _UnixServer(self.socket_path, self._serve_wire, "bench-wire")
        self._control = _UnixServer(self.control_path, self._serve_control, "bench-control")

    def _sht4x_address(self) -> int:
        info = self.board_info
        if "sht4x_addr" in info:
            return _check_int("board.json sht4x_addr", info["sht4x_addr"], 0, 0x7F)
        for sensor in info.get("sensors", ()):
            if isinstance(sensor, dict) and sensor.get("part") == "sht4x":
                return _check_int("board.json sensor address", sensor.get("address"), 0, 0x7F)
        return DEFAULT_ADDRESS

    # -- paths and lifecycle --------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        """The firmware-facing socket (pass it as ALBATROSS_BENCH)."""
        return self.workdir / BENCH_SOCKET

    @property
    def control_path(self) -> Path:
        return self.workdir / CONTROL_SOCKET

    @property
    def log_path(self) -> Path:
        return self.workdir / I2C_LOG

    def start(self) -> Bench:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._wire.start()
        try:
            self._control.start()
        except BaseException:
            self._wire.stop()
            raise
        return self

    def stop(self) -> None:
        self._control.stop()
        self._wire.stop()
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> Bench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- Python API: state ----------------------------------------------------------------

    def set_temperature(self, celsius: float) -> None:
        v = _check_number("temperature", celsius, *TEMPERATURE_RANGE, "degC")
        with self._lock:
            self.sht4x.temperature_c = v

    def set_humidity(self, pct: float) -> None:
        v = _check_number("humidity", pct, *HUMIDITY_RANGE, "%RH")
        with self._lock:
            self.sht4x.humidity_pct = v

    def set_battery(self, volts: float) -> None:
        v = _check_number("battery", volts, *BATTERY_RANGE, "V")
        with self._lock:
            self.battery_v = v

    def set(self, **values: object) -> dict[str, float]:
        """Set any of temperature (degC), humidity (%RH), battery (V); all or nothing."""
        setters = {
            "temperature": self.set_temperature,
            "humidity": self.set_humidity,
            "battery": self.set_battery,
        }
        if not values:
            raise BenchError(f"set what? known: {', '.join(sorted(setters))}")
        for key in values:
            if key not in setters:
                known = ", ".join(sorted(setters))
                raise BenchError(f"unknown setting {key!r} (known: {known})")
        ranges = {"temperature": TEMPERATURE_RANGE, "humidity": HUMIDITY_RANGE}
        units = {"temperature": "degC", "humidity": "%RH", "battery": "V"}
        for key, value in values.items():  # validate everything before changing anything
            _check_number(key, value, *ranges.get(key, BATTERY_RANGE), units[key])
        with self._lock:
            for key, value in values.items():
                setters[key](value)  # type: ignore[arg-type]
            return self.state()

    def state(self) -> dict[str, float]:
        with self._lock:
            return {
                "temperature": self.sht4x.temperature_c,
                "humidity": self.sht4x.humidity_pct,
                "battery": self.battery_v,
            }

    def power_cycle(self) -> None:
        """The board lost power: devices forget conversions in progress. Faults stay."""
        with self._lock:
            for bus in self.buses.values():
                for dev in bus.devices.values():
                    dev.power_cycle()

    # -- Python API: faults ---------------------------------------------------------------

    def add_fault(
        self,
        name: str,
        apply: Callable[..., None],
        state: Callable[[], dict[str, Any]],
        *,
        params: tuple[str, ...] = (),
        doc: str = "",
    ) -> None:
        """Register a fault: `apply(on, **params)` switches it, `state()` reports it."""
        with self._lock:
            if name in self._faults:
                raise BenchError(f"fault {name!r} already exists")
            self._faults[name] = _Fault(apply, state, params, doc)

    def fault(self, name: str, on: bool = True, **params: object) -> None:
        """Switch a fault on or off, e.g. fault("i2c_crc", count=3), fault("i2c_stuck", False)."""
        spec = self._faults.get(name)
        if spec is None:
            raise BenchError(f"unknown fault {name!r} (known: {', '.join(sorted(self._faults))})")
        if not isinstance(on, bool):
            raise BenchError(f"fault {name}: 'on' must be true or false, got {on!r}")
        for key in params:
            if key not in spec.params:
                known = ", ".join(spec.params) or "none"
                raise BenchError(f"fault {name}: unknown parameter {key!r} (known: {known})")
        with self._lock:
            spec.apply(on, **params)
            self._log_event(f"fault {name} {'on' if on else 'off'} {params or ''}".rstrip())

    def faults(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: spec.state() for name, spec in sorted(self._faults.items())}

    def _device(self, addr: object) -> I2cDevice:
        a = _check_int("addr", addr, 0, 0x7F)
        dev = self.buses[0].devices.get(a)
        if dev is None:
            raise BenchError(f"no I2C device at 0x{a:02x} (have: {self._addresses()})")
        return dev

    def _addresses(self) -> str:
        return ", ".join(f"0x{a:02x}" for a in sorted(self.buses[0].devices)) or "none"

    def _add_builtin_faults(self) -> None:
        def nack(on: bool, addr: object = DEFAULT_ADDRESS) -> None:
            dev = self._device(addr)
            if not hasattr(dev, "nack"):
                raise BenchError(f"device at 0x{dev.address:02x} cannot be made to NACK")
            dev.nack = on  # type: ignore[attr-defined]

        def nack_state() -> dict[str, Any]:
            addrs = [a for a, d in self.buses[0].devices.items() if getattr(d, "nack", False)]
            return {"on": bool(addrs), "addrs": sorted(addrs)}

        def crc(on: bool, count: object = None, addr: object = DEFAULT_ADDRESS) -> None:
            n = None if count is None else _check_int("count", count, 1, 1_000_000)
            dev = self._device(addr)
            if not hasattr(dev, "set_crc_fault"):
                raise BenchError(f"device at 0x{dev.address:02x} has no CRC to corrupt")
            dev.set_crc_fault(on, n)  # type: ignore[attr-defined]

        def crc_state() -> dict[str, Any]:
            out: dict[str, Any] = {"on": False}
            for a, d in sorted(self.buses[0].devices.items()):
                st = getattr(d, "crc_fault", {"on": False})
                if st["on"]:
                    out = {**st, "addr": a}
            return out

        def stuck(on: bool) -> None:
            self.buses[0].stuck = on

        self.add_fault(
            "i2c_nack",
            nack,
            nack_state,
            params=("addr",),
            doc="the device at addr (default 0x44) stops answering: ENODEV",
        )
        self.add_fault(
            "i2c_crc",
            crc,
            crc_state,
            params=("count", "addr"),
            doc="corrupt the CRCs of the next `count` replies, or all replies while on",
        )
        self.add_fault(
            "i2c_stuck",
            stuck,
            lambda: {"on": self.buses[0].stuck},
            doc="SDA held low: every transaction on the bus times out (ETIMEDOUT)",
        )

    # -- Python API: the wire (what the firmware's transactions do) -----------------------

    def i2c_write(self, addr: int, data: bytes, *, bus: int = 0, stop: bool = True) -> int:
        """One write transaction; returns OK, ENODEV or ETIMEDOUT."""
        with self._lock:
            b = self.buses.get(bus)
            status = b.write(addr, bytes(data)) if b is not None else ENODEV
            self._log_i2c(bus, "write", addr, bytes(data), status, stop)
            return status

    def i2c_read(self, addr: int, n: int, *, bus: int = 0, stop: bool = True) -> tuple[int, bytes]:
        """One read transaction; returns (status, data)."""
        with self._lock:
            b = self.buses.get(bus)
            status, data = b.read(addr, n) if b is not None else (ENODEV, b"")
            self._log_i2c(bus, f"read{n}", addr, data, status, stop)
            return status, data

    def i2c_scan(self, *, bus: int = 0) -> list[int]:
        with self._lock:
            b = self.buses.get(bus)
            found = b.scan() if b is not None else []
            self._log_i2c(bus, "scan", None, bytes(found), OK, True)
            return found

    def add_adc(self, name: str, volts_at_pin: Callable[[], float]) -> None:
        """Add an ADC channel the firmware can read by name."""
        with self._lock:
            self._adc[name] = volts_at_pin

    def adc_read(self, channel: str) -> tuple[int, int]:
        """(microvolts at the pin, read_u16 value) as the ESP32 ADC at 11 dB would read it."""
        with self._lock:
            source = self._adc.get(channel)
            if source is None:
                known = ", ".join(sorted(self._adc))
                raise BenchError(f"no ADC channel {channel!r} (known: {known})")
            self.adc_reads += 1
            volts = min(max(source(), 0.0), ADC_FULL_SCALE_V)
            return round(volts * 1e6), round(volts / ADC_FULL_SCALE_V * 65535)

    # -- transaction log ------------------------------------------------------------------

    def transactions(self, last: int | None = None) -> list[dict[str, Any]]:
        """The most recent I2C transactions, oldest first (for failure reports)."""
        with self._lock:
            items = list(self._transactions)
        if last is not None:
            last = _check_int("last", last, 0, len(items) + 1_000_000)
            items = items[-last:] if last else []
        return items

    def _log_i2c(
        self, bus: int, op: str, addr: int | None, data: bytes, status: int, stop: bool
    ) -> None:
        result = {OK: "ack", ENODEV: "nack", ETIMEDOUT: "timeout"}.get(status, f"err{status}")
        entry = {
            "t": self.clock(),
            "bus": bus,
            "op": op,
            "addr": addr,
            "data": data.hex(),
            "result": result,
        }
        if not stop:
            entry["stop"] = False
        self._transactions.append(entry)
        where = "--" if addr is None else f"0x{addr:02x}"
        rs = "" if stop else " (no stop)"
        self._write_log(f"bus{bus} {op:<6} {where} [{data.hex(' ')}] {result}{rs}")

    def _log_event(self, text: str) -> None:
        self._write_log(f"# {text}")

    def _write_log(self, line: str) -> None:
        try:
            if self._log_file is None:
                self.workdir.mkdir(parents=True, exist_ok=True)
                self._log_file = open(self.log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            stamp = datetime.now().isoformat(timespec="milliseconds")
            self._log_file.write(f"{stamp} {line}\n")
        except OSError as e:  # a full disk must not break the simulated hardware
            logger.warning("bench: cannot write %s: %s", self.log_path, e)

    # -- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            uv, u16 = self.adc_read("battery")
            self.adc_reads -= 1  # a look by the operator is not a firmware read
            return {
                "temperature_c": self.sht4x.temperature_c,
                "humidity_pct": self.sht4x.humidity_pct,
                "battery_v": self.battery_v,
                "battery_divider": self.battery_divider,
                "adc": {"battery": {"uv": uv, "u16": u16}, "reads": self.adc_reads},
                "faults": self.faults(),
                "i2c": {
                    f"bus{i}": {
                        **b.counters,
                        "stuck": b.is_stuck(),
                        "devices": [f"0x{a:02x}" for a in sorted(b.devices)],
                    }
                    for i, b in self.buses.items()
                },
                "sht4x": self.sht4x.snapshot(),
                "wire": dict(self.wire_stats),
                "socket": str(self.socket_path),
            }

    # -- firmware-facing binary server ----------------------------------------------------

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

    def add_pin(
        self,
        name: str,
        on_write: Callable[[int], None] | None = None,
        read: Callable[[], int] | None = None,
    ) -> None:
        """Wire an MCU GPIO (by name, e.g. "modem_pwrkey") to a simulated part."""
        with self._lock:
            self._pins[name] = (on_write, read)

    def pin_write(self, name: str, level: int) -> int:
        with self._lock:
            if name not in self._pins:
                return ENODEV
            on_write, _ = self._pins[name]
            self.pin_levels[name] = level
        if on_write is not None:
            on_write(level)
        return OK

    def pin_read(self, name: str) -> tuple[int, int]:
        with self._lock:
            if name not in self._pins:
                return ENODEV, 0
            _, read = self._pins[name]
            level = self.pin_levels.get(name, 0)
        return OK, (read() if read is not None else level)

    def _dispatch(self, op: int, p: bytes) -> tuple[int, bytes]:
        if op == OP_I2C_WRITE:
            if len(p) < 3:
                return EINVAL, b""
            return self.i2c_write(p[1], p[3:], bus=p[0], stop=bool(p[2] & FLAG_STOP)), b""
        if op == OP_I2C_READ:
            if len(p) != 5:
                return EINVAL, b""
            n = (p[3] << 8) | p[4]
            if n > MAX_I2C_READ:
                return EINVAL, b""
            return self.i2c_read(p[1], n, bus=p[0], stop=bool(p[2] & FLAG_STOP))
        if op == OP_I2C_SCAN:
            if len(p) != 1:
                return EINVAL, b""
            return OK, bytes(self.i2c_scan(bus=p[0]))
        if op == OP_ADC_READ:
            uv, u16 = self.adc_read(p.decode())
            return OK, struct.pack(">IH", uv, u16)
        if op == OP_PIN_WRITE:
            if len(p) < 2:
                return EINVAL, b""
            return self.pin_write(p[1:].decode(), 1 if p[0] else 0), b""
        if op == OP_PIN_READ:
            status, level = self.pin_read(p.decode())
            return status, bytes((level,)) if status == OK else b""
        if op == OP_HELLO:
            return OK, bytes((PROTOCOL_VERSION,)) + b"albatross-bench"
        return EOPNOTSUPP, b""

    def _serve_wire(self, conn: socket.socket) -> None:
        with self._lock:
            self.wire_stats["connections"] += 1
            self.wire_stats["clients"] += 1
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
                    self.wire_stats["requests"] += 1
                    self.wire_stats["errors"] += status not in (OK, ENODEV, ETIMEDOUT)
                conn.sendall(_HEADER.pack(status, len(body)) + body)
        except OSError:
            return  # connection reset by a dying firmware process: not the bench's problem
        finally:
            with self._lock:
                self.wire_stats["clients"] -= 1

    # -- control server (JSON lines) ------------------------------------------------------

    def add_control(
        self, name: str, handler: Callable[..., Any], *, replace: bool = False
    ) -> None:
        """Add a control command: `handler(**args)` gets the request minus "cmd" and returns
        a dict merged into the reply (or None). BenchError/ValueError -> {"ok": false}."""
        with self._lock:
            if name in self._controls and not replace:
                raise BenchError(f"control command {name!r} already exists")
            self._controls[name] = handler

    def handle_request(self, request: object) -> dict[str, Any]:
        """One control request (a decoded JSON object) -> the reply object."""
        if not isinstance(request, dict):
            return _error('request must be a JSON object like {"cmd": "snapshot"}')
        args = dict(request)
        cmd = args.pop("cmd", None)
        if not isinstance(cmd, str):
            return _error('missing "cmd" (a string)')
        handler = self._controls.get(cmd)
        if handler is None:
            return _error(f"unknown command {cmd!r} (known: {', '.join(sorted(self._controls))})")
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

    def _ctl_fault(self, name: object = None, on: object = True, **params: object) -> dict:
        if not isinstance(name, str):
            raise BenchError(f'fault needs a "name" (known: {", ".join(sorted(self._faults))})')
        self.fault(name, on, **params)  # type: ignore[arg-type]
        return {"faults": self.faults()}

    def _ctl_help(self) -> dict[str, Any]:
        return {
            "commands": sorted(self._controls),
            "settings": {"temperature": "degC", "humidity": "%RH", "battery": "V"},
            "faults": {
                name: {"params": list(s.params), "doc": s.doc}
                for name, s in sorted(self._faults.items())
            },
        }

    def _serve_control(self, conn: socket.socket) -> None:
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


class BenchClient:
    """Talks to a running bench's control socket (from tests, `albatross bench`, scripts)."""

    def __init__(self, target: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        """`target`: the vboard's workdir, or the control socket's path."""
        p = Path(target)
        if p.is_dir() or not (p.is_socket() or p.suffix == ".sock"):
            p = p / CONTROL_SOCKET
        self.path = p
        self.timeout = timeout

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command; return the reply without "ok". Raises BenchError."""
        request = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(request)
                with s.makefile("rb") as f:
                    line = f.readline(MAX_CONTROL_LINE * 16)
        except (FileNotFoundError, ConnectionRefusedError):
            raise BenchError(f"no bench at {self.path}: is the virtual board running?") from None
        except TimeoutError:
            msg = f"bench at {self.path} did not answer in {self.timeout:g} s"
            raise BenchError(msg) from None
        except OSError as e:
            raise BenchError(f"bench at {self.path}: {e}") from None
        if not line:
            raise BenchError(f"bench at {self.path} closed the connection without a reply")
        try:
            reply = json.loads(line)
        except ValueError:
            raise BenchError(f"bench at {self.path} sent a bad reply: {line[:200]!r}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else None
            raise BenchError(error or f"bench refused {cmd!r}")
        reply.pop("ok")
        return reply

    def set(self, **values: float) -> dict[str, Any]:
        return self.call("set", **values)

    def fault(self, name: str, on: bool = True, **params: Any) -> dict[str, Any]:
        return self.call("fault", name=name, on=on, **params)

    def faults(self) -> dict[str, Any]:
        return self.call("faults")["faults"]

    def snapshot(self) -> dict[str, Any]:
        return self.call("snapshot")

    def transactions(self, last: int = 50) -> list[dict[str, Any]]:
        return self.call("log", last=last)["transactions"]
