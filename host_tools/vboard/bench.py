"""The simulated bench around a virtual board: I2C bus with an SHT4x, battery on an ADC pin,
fault injection, and the two sockets through which the firmware and the tests reach it.

The supervisor creates a `Bench`, calls `start()`, and passes the firmware
`ALBATROSS_BENCH=<bench.socket_path>`; `boards/unix_sim/simhal.py` talks to that socket.
Tests and `albatross bench` drive the bench through `control.sock` (`BenchClient`).

Files in the workdir:
  bench.sock    firmware-facing binary protocol (bench_server.py describes it)
  control.sock  JSON lines for tests and tools (bench_server.py describes it)
  i2c.log       every I2C transaction, one line each, with wall-clock timestamps

This module is the bench's model and Python API; the socket servers are in bench_server.py
and the control client in bench_client.py (both re-exported here).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from host_tools.vboard.bench_client import BenchClient
from host_tools.vboard.bench_server import (
    BENCH_SOCKET,
    CONTROL_SOCKET,
    EINVAL,
    EIO,
    ENODEV,
    EOPNOTSUPP,
    ETIMEDOUT,
    FLAG_STOP,
    MAX_CONTROL_LINE,
    MAX_I2C_READ,
    OK,
    OP_ADC_READ,
    OP_HELLO,
    OP_I2C_READ,
    OP_I2C_SCAN,
    OP_I2C_WRITE,
    OP_PIN_READ,
    OP_PIN_WRITE,
    PROTOCOL_VERSION,
    BenchError,
    ControlServer,
    WireServer,
)
from host_tools.vboard.sht4x_sim import DEFAULT_ADDRESS, Sht4xSim

# Callers import everything bench-related from here, as before the servers and the client
# moved out: their names, and the wire protocol's, are re-exported.
__all__ = [
    "BENCH_SOCKET",
    "CONTROL_SOCKET",
    "EINVAL",
    "EIO",
    "ENODEV",
    "EOPNOTSUPP",
    "ETIMEDOUT",
    "FLAG_STOP",
    "I2C_LOG",
    "MAX_CONTROL_LINE",
    "MAX_I2C_READ",
    "OK",
    "OP_ADC_READ",
    "OP_HELLO",
    "OP_I2C_READ",
    "OP_I2C_SCAN",
    "OP_I2C_WRITE",
    "OP_PIN_READ",
    "OP_PIN_WRITE",
    "PROTOCOL_VERSION",
    "Bench",
    "BenchClient",
    "BenchError",
    "I2cBus",
    "I2cDevice",
]

logger = logging.getLogger(__name__)

I2C_LOG = "i2c.log"

# ESP32 ADC with 11 dB attenuation: readings saturate near 3.1 V (ESP-IDF ADC docs; the
# linear range is narrower, ~0.15-2.45 V). Modelled as linear 0..3.1 V, clamped there.
ADC_FULL_SCALE_V = 3.1
DEFAULT_BATTERY_V = 3.9
DEFAULT_DIVIDER = 2.0  # 100k/100k, as on LilyGO boards

# What the SHT4x's 16-bit words can express (datasheet formulas) and what a battery input
# can plausibly see (a LiPo is 3.0-4.2 V; USB-powered boards read ~5 V).
TEMPERATURE_RANGE = (-45.0, 130.0)
HUMIDITY_RANGE = (0.0, 100.0)
BATTERY_RANGE = (0.0, 10.0)


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


def _prefixed(prefix: str, error: Exception) -> str:
    text = str(error)
    return text if text.startswith(prefix) else f"{prefix}: {text}"


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
        self._control = ControlServer(self.control_path, self._lock)
        builtin_controls: dict[str, Callable[..., Any]] = {
            "set": lambda **values: {"state": self.set(**values)},
            "fault": self._ctl_fault,
            "faults": lambda: {"faults": self.faults()},
            "snapshot": self.snapshot,
            "log": lambda last=50: {"transactions": self.transactions(last)},
            "help": self._ctl_help,
        }
        for name, handler in builtin_controls.items():
            self._control.add(name, handler)
        self._transactions: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._log_file: Any = None
        self._wire = WireServer(self, self.socket_path, self._lock)

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
            try:
                spec.apply(on, **params)
            except BenchError as e:
                raise BenchError(_prefixed(f"fault {name}", e)) from None
            except (ValueError, TypeError) as e:  # a parameter of the wrong type or range
                raise BenchError(f"fault {name}: {e}") from None
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

    # -- Python API: GPIO ---------------------------------------------------------------

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

    # -- the sockets (bench_server.py) ----------------------------------------------------

    @property
    def wire_stats(self) -> dict[str, int]:
        return self._wire.stats

    def handle_frame(self, op: int, payload: bytes) -> tuple[int, bytes]:
        """One binary request -> (status, payload). Never raises."""
        return self._wire.handle_frame(op, payload)

    def add_control(
        self, name: str, handler: Callable[..., Any], *, replace: bool = False
    ) -> None:
        """Add a control command: `handler(**args)` gets the request minus "cmd" and returns
        a dict merged into the reply (or None). BenchError/ValueError -> {"ok": false}."""
        self._control.add(name, handler, replace=replace)

    def handle_request(self, request: object) -> dict[str, Any]:
        """One control request (a decoded JSON object) -> the reply object."""
        return self._control.handle_request(request)

    def handle_line(self, line: bytes) -> bytes:
        return self._control.handle_line(line)

    def _ctl_fault(self, name: object = None, on: object = True, **params: object) -> dict:
        if not isinstance(name, str):
            raise BenchError(f'fault needs a "name" (known: {", ".join(sorted(self._faults))})')
        self.fault(name, on, **params)  # type: ignore[arg-type]
        return {"faults": self.faults()}

    def _ctl_help(self) -> dict[str, Any]:
        return {
            "commands": self._control.commands,
            "settings": {"temperature": "degC", "humidity": "%RH", "battery": "V"},
            "faults": {
                name: {"params": list(s.params), "doc": s.doc}
                for name, s in sorted(self._faults.items())
            },
        }
