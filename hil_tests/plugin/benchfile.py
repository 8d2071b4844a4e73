"""bench.yaml: the real boards on a bench, as the HIL suite's serial target needs them.

    broker: mqtt://broker.example.net:1883    # where the boards report (each may override)
    boot_timeout_s: 180                        # power-on or reboot -> birth on the broker
    boards:
      - name: desk-1                           # names the board in reports and logs
        port: /dev/ttyUSB0                     # any pyserial URL (rfc2217://, socket://, a pty)
        board: esp32_generic_sim7600           # its folder under boards/
        modem: sim7600                         # sim7600 | a7670 | bg96 | none
        device_id: hil-desk-1                  # default: hil-<name>
        sim: {apn: iot.example}                # the SIM's APN ("" or no sim: the network's)
        power: none                            # none | {on: CMD, off: CMD, off_s: 1}
        config: {interval_s: 5}                # more keys set through the console

Every mistake is one line naming the file and the key (`BenchError`), so an operator sees at
once what to fix; values are checked with the firmware's own schema where the firmware has a
say (config keys, the device id, the APN).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from host_tools import image as img
from host_tools.broker import connect_url
from host_tools.vboard.modem.sim import DIALECTS

MODEMS = (*DIALECTS, "none")
DEFAULT_BOOT_TIMEOUT_S = 180.0  # a cellular board: modem power-on, registration, PDP, MQTT
TOP_KEYS = {"broker", "boot_timeout_s", "boards"}
BOARD_KEYS = {"name", "port", "board", "modem", "device_id", "sim", "power", "broker", "config"}
SIM_KEYS = {"apn"}
POWER_KEYS = {"on", "off", "off_s"}


class BenchError(Exception):
    """A bench description that cannot be used; str() is one line naming file and key."""


@dataclass(frozen=True)
class PowerSpec:
    """How the bench switches a board's supply: shell commands (a relay, a USB hub's port
    power, a lab supply's CLI) or labgrid's power driver. kind "none": no switch."""

    kind: str = "none"  # none | command | labgrid (--target labgrid: the target's driver)
    on: str = ""
    off: str = ""
    off_s: float = 1.0  # how long the supply stays off in a power cycle


@dataclass(frozen=True)
class BoardSpec:
    name: str
    port: str
    board: str
    modem: str | None  # None: no modem (the board's own TCP)
    device_id: str
    broker: str
    apn: str | None = None
    power: PowerSpec = field(default_factory=PowerSpec)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Bench:
    path: Path
    boards: list[BoardSpec]
    boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S

    def board(self, name: str) -> BoardSpec:
        for spec in self.boards:
            if spec.name == name:
                return spec
        names = ", ".join(s.name for s in self.boards)
        raise BenchError(f"{self.path}: no board named {name!r} (boards: {names})")


def load(path: Path | str) -> Bench:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise BenchError(f"{path}: cannot read the bench file ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "not YAML"
        raise BenchError(f"{path}:{where}: {problem}") from None
    return parse(data, path)


def parse(data: object, path: Path) -> Bench:
    """The bench in `data` (a bench.yaml's YAML); BenchError naming `path` and the key."""
    top = _mapping(data, path, "the file", TOP_KEYS)
    broker = top.get("broker")
    if broker is not None:
        _broker(broker, path, "broker")
    boot = _number(top.get("boot_timeout_s", DEFAULT_BOOT_TIMEOUT_S), path, "boot_timeout_s")
    boards = top.get("boards")
    if not isinstance(boards, list) or not boards:
        raise _error(path, "boards", "a list of one or more boards", boards)
    specs = [_board(item, path, f"boards[{i}]", broker) for i, item in enumerate(boards)]
    for key in ("name", "port", "device_id"):
        seen: dict[str, int] = {}
        for i, spec in enumerate(specs):
            value = getattr(spec, key)
            if value and value in seen:
                raise BenchError(
                    f"{path}: boards[{i}].{key}: {value!r} is already boards[{seen[value]}]'s"
                )
            seen[value] = i
    return Bench(path=path, boards=specs, boot_timeout_s=boot)


def _board(
    data: object, path: Path, where: str, broker: str | None, *, labgrid: bool = False
) -> BoardSpec:
    """One board; `labgrid`: its port and power switch come from a labgrid target."""
    item = _mapping(data, path, where, BOARD_KEYS)
    name = _string(item.get("name"), path, f"{where}.name")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise BenchError(f"{path}: {where}.name: letters, digits, - and _ only, got {name!r}")
    power = PowerSpec(kind="labgrid") if labgrid else _power(item.get("power"), path, where)
    port = item.get("port")
    if port is None:
        raise BenchError(f"{path}: {where}.port: missing (the board's serial port or URL)")
    port = "" if port is None else _string(port, path, f"{where}.port")
    board = _string(item.get("board"), path, f"{where}.board")
    if not (img.BOARDS_DIR / board / "board.json").is_file():
        known = ", ".join(sorted(p.parent.name for p in img.BOARDS_DIR.glob("*/board.json")))
        raise BenchError(f"{path}: {where}.board: no board folder {board!r} (known: {known})")
    modem = item.get("modem", "none")
    if modem not in MODEMS:
        raise _error(path, f"{where}.modem", f"one of {', '.join(MODEMS)}", modem)
    device_id = _string(item.get("device_id", f"hil-{name}"), path, f"{where}.device_id")
    board_broker = item.get("broker", broker)
    if board_broker is None:
        raise BenchError(
            f"{path}: {where}.broker: missing (give `broker: mqtt://HOST:PORT` at the top "
            "or for this board)"
        )
    _broker(board_broker, path, f"{where}.broker")
    apn = None
    sim = item.get("sim")
    if sim is not None:
        sim = _mapping(sim, path, f"{where}.sim", SIM_KEYS)
        if "apn" in sim:
            apn = _string(sim["apn"], path, f"{where}.sim.apn", empty=True)
    config = item.get("config", {})
    config = dict(_mapping(config, path, f"{where}.config", None))
    reserved = {"device_id", "broker_host", "broker_port", "apn"} & set(config)
    if reserved:
        key = sorted(reserved)[0]
        use = {"device_id": "device_id", "apn": "sim.apn"}.get(key, "broker")
        raise BenchError(f"{path}: {where}.config.{key}: set it with {where}.{use}")
    checks = [("device_id", device_id, f"{where}.device_id")]
    if apn is not None:
        checks.append(("apn", apn, f"{where}.sim.apn"))
    checks += [(key, value, f"{where}.config.{key}") for key, value in config.items()]
    for key, value, at in checks:
        _check_value(key, value, path, at)
    return BoardSpec(
        name=name,
        port=port,
        board=board,
        modem=None if modem == "none" else modem,
        device_id=device_id,
        broker=board_broker,
        apn=apn,
        power=power,
        config=config,
    )


def _power(value: object, path: Path, board: str) -> PowerSpec:
    where = f"{board}.power"
    if value in (None, "none"):
        return PowerSpec()
    if isinstance(value, str):
        raise _error(path, where, "none or {on: CMD, off: CMD} (labgrid: --target labgrid)", value)
    if isinstance(value, dict):  # YAML 1.1 reads a bare `on:` / `off:` key as true / false
        value = {({True: "on", False: "off"}.get(k, k) if isinstance(k, bool) else k): v
                 for k, v in value.items()}  # fmt: skip
    item = _mapping(value, path, where, POWER_KEYS)
    commands = {}
    for key in ("on", "off"):
        text = _string(item.get(key), path, f"{where}.{key}")
        try:
            shlex.split(text)
        except ValueError as e:
            raise BenchError(f"{path}: {where}.{key}: not a shell command line ({e})") from None
        commands[key] = text
    off_s = _number(item.get("off_s", 1.0), path, f"{where}.off_s")
    return PowerSpec(kind="command", on=commands["on"], off=commands["off"], off_s=off_s)


def _check_value(key: str, value: object, path: Path, where: str) -> None:
    from host_tools.console import values as schema

    try:
        schema.check(key, value if isinstance(value, str) else _text(value))
    except Exception as e:  # CliError: the firmware's own words
        raise BenchError(f"{path}: {where}: {e}") from None


def _text(value: object) -> str:
    from host_tools.console.protocol import device_text

    return device_text(value)


def _broker(value: object, path: Path, where: str) -> None:
    text = _string(value, path, where)
    try:
        connect_url(text)
    except ValueError as e:
        raise BenchError(f"{path}: {where}: {e}") from None


def _mapping(value: object, path: Path, where: str, keys: set[str] | None) -> dict:
    if not isinstance(value, dict):
        raise _error(path, where, "a mapping (key: value)", value)
    for key in value:
        if not isinstance(key, str):
            raise BenchError(f"{path}: {where}: keys are names, got {key!r}")
        if keys is not None and key not in keys:
            known = ", ".join(sorted(keys))
            prefix = "" if where == "the file" else f"{where}."
            raise BenchError(f"{path}: {prefix}{key}: unknown key (known: {known})")
    return value


def _string(value: object, path: Path, where: str, *, empty: bool = False) -> str:
    if value is None:
        raise BenchError(f"{path}: {where}: missing")
    if not isinstance(value, str) or (not value and not empty):
        raise _error(path, where, "a non-empty string" if not empty else "a string", value)
    return value


def _number(value: object, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _error(path, where, "a number of seconds > 0", value)
    return float(value)


def _error(path: Path, where: str, expected: str, got: object) -> BenchError:
    return BenchError(f"{path}: {where}: expected {expected}, got {got!r}")
