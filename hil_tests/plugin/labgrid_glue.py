"""`--target labgrid`: the boards of a labgrid environment (labgrid's own `--lg-env` or
`LG_ENV`), each target one board. labgrid says where the board's serial port is
(RawSerialPort, USBSerialPort, or an exporter's NetworkSerialPort) and how to switch its power
(any driver with labgrid's PowerProtocol: ExternalPowerDriver, NetworkPowerDriver, ...); the
target's `albatross` option says the rest, with bench.yaml's keys:

    targets:
      desk-1:
        resources:
          RawSerialPort: {port: /dev/ttyUSB0, speed: 115200}
        drivers:
          ExternalPowerDriver: {cmd_on: "relay 1 on", cmd_off: "relay 1 off", delay: 2.0}
        options:
          albatross: {board: esp32_generic_sim7600, modem: sim7600, sim: {apn: iot.example}}
    options:
      albatross_broker: mqtt://broker.example.net:1883
      albatross_boot_timeout_s: 180

The suite opens the port itself (the console kit, as on the serial target) rather than through
labgrid's SerialDriver, so the same code talks to the board on every target.
labgrid is optional: `make labgrid` puts it in its own venv (.venv/labgrid), because it brings
pyserial-labgrid, which replaces pyserial's files (docs/hil.md).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import pytest

from hil_tests.plugin import benchfile
from hil_tests.plugin.boards import BoardError, PowerSwitch

ENV_KEY = pytest.StashKey[object]()  # our labgrid Environment
TARGET_OPTION = "albatross"
NOT_INSTALLED = (
    "--target labgrid: labgrid is not installed in this Python; `make labgrid` makes "
    ".venv/labgrid (run .venv/labgrid/bin/python -m pytest ...; see docs/hil.md)"
)


def env_path(config: pytest.Config) -> str | None:
    return getattr(config.option, "lg_env", None) or os.environ.get("LG_ENV")


def bench_of(config: pytest.Config) -> benchfile.Bench:
    """The bench a labgrid environment describes (BenchError naming the file and key)."""
    if importlib.util.find_spec("labgrid") is None:
        raise pytest.UsageError(NOT_INSTALLED)
    path = env_path(config)
    if not path:
        raise pytest.UsageError("--target labgrid needs --lg-env env.yaml (labgrid's option)")
    from labgrid import Environment

    try:
        env = Environment(config_file=str(path))
    except Exception as e:  # labgrid's InvalidConfigError, YAML errors, a missing file
        raise benchfile.BenchError(f"{path}: {e}") from None
    config.stash[ENV_KEY] = env
    data = env.config.data
    options = data.get("options") or {}
    targets = data.get("targets") or {}
    if not targets:
        raise benchfile.BenchError(f"{path}: targets: no targets (one per board)")
    broker = options.get("albatross_broker")
    if broker is not None:
        benchfile._broker(broker, Path(path), "options.albatross_broker")
    boot = benchfile._number(
        options.get("albatross_boot_timeout_s", benchfile.DEFAULT_BOOT_TIMEOUT_S),
        Path(path),
        "options.albatross_boot_timeout_s",
    )
    boards = []
    for name, target in targets.items():
        where = f"targets.{name}.options.{TARGET_OPTION}"
        own = (target or {}).get("options", {}).get(TARGET_OPTION)
        if own is None:
            raise benchfile.BenchError(
                f"{path}: {where}: missing (the board folder, modem, ... as in bench.yaml)"
            )
        item = benchfile._mapping(own, Path(path), where, benchfile.BOARD_KEYS - {"name"})
        for key in ("port", "power"):
            if key in item:
                raise benchfile.BenchError(f"{path}: {where}.{key}: labgrid gives the {key}")
        item = {**item, "name": name, "port": f"labgrid:{name}"}
        boards.append(benchfile._board(item, Path(path), where, broker, labgrid=True))
    return benchfile.Bench(path=Path(path), boards=boards, boot_timeout_s=boot)


def attach(
    config: pytest.Config, spec: benchfile.BoardSpec
) -> tuple[benchfile.BoardSpec, PowerSwitch | None]:
    """The board's serial port (as a URL) and power switch, from its labgrid target."""
    from labgrid.exceptions import NoDriverFoundError, NoResourceFoundError
    from labgrid.resource import NetworkSerialPort, RawSerialPort, USBSerialPort

    env = config.stash[ENV_KEY]
    target = env.get_target(spec.name)  # type: ignore[attr-defined]
    url = None
    for cls in (RawSerialPort, USBSerialPort, NetworkSerialPort):
        try:
            resource = target.get_resource(cls, wait_avail=False)
        except NoResourceFoundError:
            continue
        target.await_resources([resource], timeout=30)
        if isinstance(resource, NetworkSerialPort):
            scheme = "socket" if resource.protocol == "raw" else "rfc2217"
            url = f"{scheme}://{resource.host}:{resource.port}"
        else:
            url = resource.port
        break
    if not url:
        raise BoardError(
            f"labgrid target {spec.name} has no RawSerialPort, USBSerialPort or "
            "NetworkSerialPort resource"
        )
    try:
        driver = target.get_driver("PowerProtocol")
    except NoDriverFoundError:
        driver = None
    power = None
    if driver is not None:
        power = PowerSwitch(
            f"labgrid {type(driver).__name__}",
            off=driver.off,
            on=driver.on,
            off_s=float(getattr(driver, "delay", 1.0)),
        )
    return replace(spec, port=url), power
