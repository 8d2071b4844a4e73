"""The virtual board's USB port (rfc2217://) behaves like an ESP32 dev board's: the unmodified
esptool resets it into download mode with its default DTR/RTS sequence, flashes it and
hard-resets it into the firmware; mpremote opens it without resetting the board; a pulse on
RTS alone reboots the firmware; a power cut while esptool writes fails esptool cleanly and a
second flash recovers the board.

Each esptool command costs about 0.2 s over rfc2217: pyserial's client renegotiates the
line (and waits 50 ms for each answer) whenever esptool changes its read timeout, which never
crosses the wire. The identification tests run the esptool CLI as it is; the flashing tests
run the same esptool with that pyserial client keeping timeouts local (FAST_ESPTOOL, what
`albatross flash` does in host_tools/flash/ports.py), so that two full writes fit in a test
well under a minute. DTR/RTS still go over the wire as before.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.helpers import MPREMOTE, build_full_flash, telemetry_of
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.esp32rom import mac_from_uid
from host_tools.vboard.runner import VirtualBoard

pytestmark = [
    pytest.mark.hil,
    pytest.mark.filterwarnings("ignore:set(Daemon|Name):DeprecationWarning"),  # pyserial 3.5
]

FLASH_SIZE = 4 * 1024 * 1024
DOWNLOAD_LINE = "rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
FLASH_BOOT_LINE = "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)"
FAST_ESPTOOL = """
import sys
from serial import rfc2217

def _set_timeout(self, timeout):
    self._timeout = timeout

rfc2217.Serial.timeout = property(lambda self: self._timeout, _set_timeout)
import esptool
sys.argv[0] = "esptool"
esptool._main()
"""


def _blank_flash(path: Path) -> Path:
    path.write_bytes(b"\xff" * FLASH_SIZE)  # a new module's flash: erased
    return path


def _esptool_cmd(vb: VirtualBoard, *args: str, fast: bool = False) -> list[str]:
    run = ["-c", FAST_ESPTOOL] if fast else ["-m", "esptool"]
    return [sys.executable, *run, "--chip", "esp32", "--port", vb.usb_url, *args]


def esptool(
    vb: VirtualBoard, *args: str, check: bool = True, fast: bool = False
) -> subprocess.CompletedProcess:
    """The unmodified esptool on the board's USB port, default --before/--after."""
    cmd = _esptool_cmd(vb, *args, fast=fast)
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=90, env=dict(os.environ, NO_COLOR="1")
    )
    if check:
        assert result.returncode == 0, (
            f"esptool {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
            f"\nlogs: {logs_of(vb)}"
        )
    return result


def _status(vb: VirtualBoard) -> dict:
    assert vb.supervisor is not None
    return vb.supervisor.status()


@pytest.mark.parametrize("command", ["chip-id", "flash-id", "read-mac"])
def test_esptool_resets_into_download_mode_and_back(
    vboard: VboardFactory, tmp_path: Path, command: str
) -> None:
    flash = build_full_flash(tmp_path, {"device_id": f"usb-{command}"})
    vb = vboard(image=flash, device_id=f"usb-{command}")
    vb.wait_console("I app: stored seq", 30)
    out = esptool(vb, command).stdout
    assert "Chip type:          ESP32-D0WD-V3 (revision v3.0)" in out, out
    assert "Hard resetting via RTS pin" in out, out
    mac = mac_from_uid(vb.supervisor.uid).hex(":")  # type: ignore[union-attr]
    assert f"MAC:                {mac}" in out, out
    if command == "flash-id":
        assert "Detected flash size: 4MB" in out, out
    # The ROM's download banner, then --after hard-reset boots the firmware again.
    console = vb.wait_console("reset cause power_on", 30, count=2)
    tail = console[console.index(DOWNLOAD_LINE) :]
    assert "waiting for download" in tail, logs_of(vb)
    assert tail.index(FLASH_BOOT_LINE) < tail.index("reset cause power_on"), logs_of(vb)
    assert _status(vb)["chip"] == "running"


def test_esptool_write_flash_then_hard_reset_boots_and_reports(
    vboard: VboardFactory, mqtt: MqttWatch, broker, tmp_path: Path
) -> None:
    """A new module (erased flash) is flashed with a build-image full flash over USB, and
    reports to the broker after esptool's hard reset."""
    dev = "usb-flash-1"
    built = build_full_flash(tmp_path, {"broker_host": broker.host, "broker_port": broker.port,
                              "device_id": dev, "interval_s": 1})  # fmt: skip
    # Blank flash holds no board.json: run the modem the built image names (SIM7600).
    vb = vboard(image=_blank_flash(tmp_path / "module.bin"), device_id=dev, modem="sim7600")
    vb.wait_console("invalid header: 0xffffffff", 10)  # blank flash: the ROM's loop
    out = esptool(vb, "--baud", "460800", "write-flash", "0x0", str(built), fast=True).stdout
    assert "Hash of data verified." in out, out
    # Bootloader, partition table and app as built (the firmware writes only in its vfs).
    assert (tmp_path / "module.bin").read_bytes()[:0x200000] == built.read_bytes()[:0x200000]
    vb.wait_console("I app: stored seq", 30)
    mqtt.wait_for(telemetry_of(dev), 30, what="telemetry after flashing", logs=logs_of(vb))
    # machine.unique_id() is the MAC esptool read, as on an ESP32.
    mac = re.search(r"MAC:\s+([0-9a-f:]{17})", out)
    assert mac, out
    uid = _mpremote(vb, "import machine; print(machine.unique_id().hex(':'))")
    assert uid == mac.group(1), logs_of(vb)


def _mpremote(vb: VirtualBoard, code: str, *, resume: bool = False) -> str:
    """mpremote exec over the board's USB port; the last line it printed. resume: without
    mpremote's soft reset before the code."""
    result = subprocess.run(
        [MPREMOTE, "connect", vb.usb_url, *(["resume"] if resume else []), "exec", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{result.stderr[-2000:]}; logs: {logs_of(vb)}"
    return result.stdout.strip().splitlines()[-1]


def test_mpremote_over_usb_does_not_reset_a_running_board(vboard: VboardFactory) -> None:
    vb = vboard()
    vb.wait_console("I app: stored seq", 30)
    before = _status(vb)
    # Opening the port (DTR and RTS asserted) and closing it do not reset the board.
    code = "import machine; print(machine.reset_cause())"
    assert _mpremote(vb, code, resume=True) == "1", logs_of(vb)  # still the power-on boot
    after = _status(vb)
    assert after["pid"] == before["pid"] and after["resets"] == before["resets"], logs_of(vb)
    # A plain exec soft-resets first, as on any MicroPython board, and that is all.
    assert _mpremote(vb, code) == "5", logs_of(vb)
    assert _status(vb)["resets"] == {**before["resets"], "soft": 1}, logs_of(vb)


def test_rts_pulse_alone_reboots_the_firmware_and_en_low_holds_it(
    vboard: VboardFactory, tmp_path: Path
) -> None:
    vb = vboard(image=build_full_flash(tmp_path, {"device_id": "usb-rts"}), device_id="usb-rts")
    vb.wait_console("I app: stored seq", 30)
    port = serial.serial_for_url(vb.usb_url, baudrate=115200, timeout=0.5)
    try:
        port.dtr = False
        port.rts = True  # EN low: the chip is held in reset
        deadline = time.monotonic() + 10
        while _status(vb)["chip"] != "held in reset":
            assert time.monotonic() < deadline, f"{_status(vb)}; logs: {logs_of(vb)}"
            time.sleep(0.05)
        assert _status(vb)["pid"] is None, _status(vb)  # the firmware is not running
        held_at = len(vb.console_text())
        time.sleep(1.5)
        assert vb.console_text()[held_at:] == "", logs_of(vb)  # nothing while in reset
        port.reset_input_buffer()
        port.rts = False  # EN high with IO0 high: a normal boot
        seen = b""
        deadline = time.monotonic() + 20
        while b"reset cause power_on" not in seen and time.monotonic() < deadline:
            seen += port.read(4096)
    finally:
        port.dtr = port.rts = False
        port.close()
    text = seen.decode(errors="replace")
    assert "reset cause power_on" in text, f"{text[-1500:]}; logs: {logs_of(vb)}"
    assert FLASH_BOOT_LINE in text and "waiting for download" not in text, text[-1500:]
    assert _status(vb)["resets"].get("power_on") == 2, logs_of(vb)


def test_download_mode_on_a_bare_littlefs_board_says_it_needs_a_full_flash_image(
    vboard: VboardFactory,
) -> None:
    vb = vboard()  # the legacy mode: a bare littlefs image, no ROM nor partition table
    vb.wait_console("I app: stored seq", 30)
    result = esptool(vb, "--connect-attempts", "1", "chip-id", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    out = vb.wait_console("download mode needs a full flash image", 10)
    assert "waiting for download" in out, logs_of(vb)
    # The port can still reset it into the firmware.
    with serial.serial_for_url(vb.usb_url) as port:
        port.dtr = False
        port.rts = True
        time.sleep(0.2)
        port.rts = False
    vb.wait_console("reset cause power_on", 30, count=2)


def test_power_cut_during_write_flash_then_reflash_boots(
    vboard: VboardFactory, tmp_path: Path
) -> None:
    """The board's report at the broker after flashing is
    test_esptool_write_flash_then_hard_reset_boots_and_reports's."""
    dev = "usb-cut-1"
    built = build_full_flash(tmp_path, {"device_id": dev, "interval_s": 1})
    vb = vboard(image=_blank_flash(tmp_path / "module.bin"), device_id=dev, modem="sim7600")
    cmd = _esptool_cmd(vb, "--baud", "460800", "write-flash", "0x0", str(built), fast=True)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
    )
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            download = _status(vb)["download"]
            if download and download["bytes_programmed"] > 0:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"esptool never started writing; logs: {logs_of(vb)}")
        time.sleep(0.3)  # inside the write, which takes ~2 s
        vb.supervisor.power_cut(0.3)  # type: ignore[union-attr]
        written = _status(vb)["download"]["bytes_programmed"]
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Evidence: the power was cut (the board's event log), and esptool saw it.
    events = (vb.workdir / "vboard.log").read_text()
    assert "power cut" in events, f"no power cut; logs: {logs_of(vb)}"
    assert proc.returncode != 0, out
    assert "A fatal error occurred" in out and "Traceback" not in out, out
    assert 0 < written < FLASH_SIZE and "Wrote " not in out, out  # the flash is torn
    # Flashing again from scratch succeeds, and the board boots.
    booted = f"as {dev}, reset cause power_on"
    boots_before = vb.console_text().count(booted)  # the torn flash may have booted too
    again = esptool(vb, "--baud", "460800", "write-flash", "0x0", str(built), fast=True).stdout
    assert "Hash of data verified." in again, again
    assert "Wrote 4194304 bytes" in again, again
    out = vb.wait_console(booted, 30, count=boots_before + 1)
    assert out.rindex("waiting for download") < out.rindex(FLASH_BOOT_LINE), logs_of(vb)
