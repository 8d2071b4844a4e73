"""`albatross flash` and `albatross fleet flash` end to end on virtual boards: new modules
(erased flash) on their USB ports (rfc2217://, DTR/RTS wired like a DevKitC), flashed with
a full flash image by esptool used as a library, reset into the firmware, which answers
`status` on the console and reports to the broker.

The app partition holds a stand-in image (stock MicroPython builds cannot be downloaded
here); the virtual board's runtime runs in its place, from the littlefs that was written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.helpers import telemetry_of
from host_tools import flash_layout as fl
from host_tools.cli import main as cli_main
from host_tools.flash.flasher import flash_board
from host_tools.flash.fleet import DeviceRow, fleet_flash
from host_tools.flash.payload import Payload, build_payload
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = [
    pytest.mark.hil,
    pytest.mark.filterwarnings(r"ignore:set(Daemon|Name)\(\) is deprecated:DeprecationWarning"),
]

BOARD = "unix_sim"
FLASH_SIZE = 4 * 1024 * 1024
BOOT_S = 60


def _firmware(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC-standin.bin"
    path.write_bytes(fl.standin_firmware())
    return path


def _new_module(vboard: VboardFactory, tmp_path: Path, name: str) -> VirtualBoard:
    """A board straight from the factory: erased flash, the ROM looping on it. Blank flash
    holds no board.json, so the board runs the modem unix_sim's names (a SIM7600)."""
    flash = tmp_path / f"{name}.bin"
    flash.write_bytes(b"\xff" * FLASH_SIZE)
    vb = vboard(image=flash, device_id=name, modem="sim7600")
    vb.wait_console("invalid header: 0xffffffff", 10)
    return vb


def test_flash_provisions_boots_and_reports(
    vboard: VboardFactory,
    mqtt: MqttWatch,
    broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vb = _new_module(vboard, tmp_path, "flash-new-1")
    device = tmp_path / "device.json"
    device.write_text(
        json.dumps({"broker_host": broker.host, "broker_port": broker.port, "interval_s": 1})
    )
    argv = [
        "flash",
        "--port",
        vb.usb_url,
        "--board",
        BOARD,
        "--firmware",
        str(_firmware(tmp_path)),
    ]
    argv += ["--config", str(device), "--boot-timeout", str(BOOT_S), "--json"]
    rc = cli_main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, f"{err}\nlogs: {logs_of(vb)}"
    report = json.loads(out)
    stages = [line.split()[1] for line in err.splitlines()]
    assert stages == [
        *("image", "connect", "mac", "check", "provision"),
        *("write", "verify", "reset", "boot"),
    ], err
    # No --device-id: the firmware's own default, alb-<MAC>, and the board agrees.
    dev = "alb-" + report["mac"].replace(":", "")
    assert report["device_id"] == dev
    assert report["status"]["device_id"] == dev and report["status"]["fw"] == report["app"]
    assert report["written"] == [{"offset": 0, "size": FLASH_SIZE}]
    mqtt.wait_for(telemetry_of(dev), 30, what="first telemetry after flashing", logs=logs_of(vb))
    print(
        f"\nflash of a new virtual board at 921600 baud: {report['seconds']:.1f} s "
        f"(stages {report['stages']})"
    )


@pytest.mark.bench  # it starts its own virtual board: nothing to do on a real bench
def test_a_new_user_runs_albatross_vboard_then_albatross_flash(tmp_path: Path) -> None:
    """The two commands as a user types them, each its own process (console scripts, with
    the venv's bin/ first on sys.path): a new virtual board, then one command flashes,
    provisions and boots it."""
    blank = tmp_path / "module.bin"
    blank.write_bytes(b"\xff" * FLASH_SIZE)
    bin_dir = Path(sys.executable).parent
    vboard_cmd = [str(bin_dir / "albatross"), "vboard", "--image", str(blank), "--quiet"]
    vboard_cmd += ["--modem", "sim7600", "--name", "cli-new-1", "--workdir", str(tmp_path / "vb")]
    board = subprocess.Popen(vboard_cmd, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = board.stderr.readline() if board.stderr else ""
            if not line:
                break
            if line.startswith("vboard: usb "):
                url = line.split()[-1]
        assert url, f"albatross vboard printed no usb line; see {tmp_path / 'vb'}"
        flash_cmd = [str(bin_dir / "albatross"), "flash", "--port", url, "--board", BOARD]
        flash_cmd += ["--firmware", str(_firmware(tmp_path)), "--device-id", "cli-new-1"]
        flash_cmd += ["--boot-timeout", str(BOOT_S)]
        done = subprocess.run(flash_cmd, capture_output=True, text=True, timeout=BOOT_S + 60)
    finally:
        board.terminate()
        board.wait(timeout=30)
    logs = f"{done.stderr[-3000:]}\nlogs: {tmp_path / 'vb'}"
    assert done.returncode == 0, logs
    boot = [line for line in done.stderr.splitlines() if line.startswith("flash: boot")]
    assert boot and "device cli-new-1" in boot[0], logs


def _flash_one(vb: VirtualBoard, payload: Payload, device_id: str) -> float:
    r = flash_board(vb.usb_url, payload, device_id=device_id, boot_timeout=BOOT_S)
    assert r.result == "ok", f"{r.stage}: {r.error}; logs: {logs_of(vb)}"
    return r.seconds


def test_fleet_flash_of_three_boards_against_one_at_a_time(
    vboard: VboardFactory, mqtt: MqttWatch, broker, tmp_path: Path
) -> None:
    config = {"broker_host": broker.host, "broker_port": broker.port, "interval_s": 1}
    payload = build_payload(BOARD, tmp_path / "build", firmware=_firmware(tmp_path), config=config)
    boards = [_new_module(vboard, tmp_path, f"tray-{i}") for i in range(3)]

    t = time.monotonic()
    for i, vb in enumerate(boards):
        _flash_one(vb, payload, f"seq-{i}")
    sequential = time.monotonic() - t

    urls = [vb.usb_url for vb in boards]
    rows = [DeviceRow(i + 2, url, None, f"tray-{i}") for i, url in enumerate(urls)]
    t = time.monotonic()
    reports, rows_out = fleet_flash(urls, rows, payload, tmp_path / "report", boot_timeout=BOOT_S)
    parallel = time.monotonic() - t
    for vb, r in zip(boards, reports, strict=True):
        assert r.result == "ok", f"{r.port} {r.stage}: {r.error}; logs: {logs_of(vb)}"
        assert r.status is not None and r.status["device_id"] == r.device_id
    assert len({r.mac for r in reports}) == 3
    assert (tmp_path / "report" / "fleet-report.csv").read_text().count(",ok,") == 3
    for i, vb in enumerate(boards):
        mqtt.wait_for(telemetry_of(f"tray-{i}"), 30, what="telemetry", logs=logs_of(vb))
    print(
        f"\nfleet flash of 3 virtual boards (921600 baud, to the first status): one at a "
        f"time {sequential:.1f} s, all at once {parallel:.1f} s, "
        f"speed-up {sequential / parallel:.2f}x"
    )
