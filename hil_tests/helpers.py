"""What several HIL tests ask of a board: its messages on the broker and mpremote on its
console."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
