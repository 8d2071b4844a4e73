"""What several HIL tests ask of a board: its messages on the broker, mpremote on its
console, and a full flash image to boot from."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from host_tools import flash_layout as fl
from host_tools.cli import main as cli_main
from host_tools.mqtt_watch import Message
from host_tools.vboard.runner import VirtualBoard

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def telemetry_of(dev: str) -> Callable[[Message], bool]:
    topic = f"albatross/{dev}/telemetry"
    return lambda m: m.topic == topic


def online_status_of(
    dev: str, pred: Callable[[dict], bool] = lambda body: True
) -> Callable[[Message], bool]:
    """The board's retained status while it is online (not its last will), meeting `pred`."""
    topic = f"albatross/{dev}/status"
    return lambda m: m.topic == topic and m.json.get("state") == "online" and pred(m.json)


def mpremote(vb: VirtualBoard, *args: str) -> str:
    """Run the unmodified mpremote against the board's console; its stdout."""
    result = subprocess.run(
        [MPREMOTE, "connect", vb.console_path, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"mpremote {' '.join(args)} failed: {result.stderr[-2000:]}; see {vb.workdir}/console.log"
    )
    return result.stdout


def build_full_flash(tmp_path: Path, config: dict) -> Path:
    """A full flash image as `albatross build-image --firmware` writes it (the stand-in
    MicroPython build of host_tools/flash_layout.py, the app and `config`)."""
    firmware = tmp_path / "ESP32_GENERIC-standin.bin"
    firmware.write_bytes(fl.standin_firmware())
    device = tmp_path / "device.json"
    device.write_text(json.dumps(config))
    out = tmp_path / "build"
    argv = ["build-image", "--board", "unix_sim", "--config", str(device)]
    assert cli_main([*argv, "--firmware", str(firmware), "-o", str(out)]) == 0
    return out / "flash.bin"
