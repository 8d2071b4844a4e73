"""A virtual board boots from a full flash image as an ESP32 does: what `albatross build-image`
writes boots and reports; blank or damaged flash gives the ROM's and the bootloader's
messages and never reaches MicroPython, until good flash is there and the board is reset.

The app in the image is a stand-in made with esptool's image classes (stock MicroPython
builds cannot be downloaded here); the virtual board's runtime runs in its place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.conftest import logs_of
from hil_tests.helpers import build_full_flash
from host_tools import flash_layout as fl

pytestmark = pytest.mark.hil


def test_build_image_full_flash_boots_and_reports(vboard, mqtt, broker, tmp_path: Path) -> None:
    flash = build_full_flash(
        tmp_path,
        {"broker_host": broker.host, "broker_port": broker.port, "device_id": "flash-1"},
    )
    vb = vboard(image=flash, device_id="flash-1")
    out = vb.wait_console("I app: stored seq", 60)
    assert "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)" in out, logs_of(vb)
    assert out.index("entry 0x") < out.index("I app: stored seq"), logs_of(vb)
    assert vb.supervisor is not None and vb.supervisor.status()["boot_error"] is None
    # What the firmware writes goes into the vfs partition: the rest of the flash is as built.
    data = flash.read_bytes()
    assert len(data) == 4 * 1024 * 1024
    assert fl.split_firmware(data[0x1000:0x200000]).app == fl.standin_app()


def test_damaged_flash_does_not_boot_until_reflashed(vboard, tmp_path: Path) -> None:
    flash = build_full_flash(tmp_path, {"device_id": "flash-2"})
    good = flash.read_bytes()
    damaged = bytearray(good)
    damaged[0x8000 + 20] ^= 0x01  # one bit of the partition table
    flash.write_bytes(damaged)
    # The board starts on broken flash, so it cannot put its board.json (which modem is
    # fitted) onto it: run the modem the built image names, unix_sim's SIM7600.
    vb = vboard(image=flash, device_id="flash-2", modem="sim7600")
    out = vb.wait_console("boot: load partition table error!", 20, count=2)
    assert "rst:0x3 (SW_RESET)" in out, logs_of(vb)
    assert "MicroPython" not in out and "I app:" not in out, logs_of(vb)
    assert vb.supervisor is not None
    assert vb.supervisor.status()["boots"] == 0
    assert bytes(damaged) == flash.read_bytes()  # nothing was written to broken flash
    # Flash the good image back (as esptool would) and press reset: it boots.
    flash.write_bytes(good)
    vb.supervisor.reset("hard")
    vb.wait_console("I app: stored seq", 60)
