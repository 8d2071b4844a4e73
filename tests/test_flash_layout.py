"""The ESP32 flash layout of MicroPython v1.28: partition table bytes, app image checks, the
ROM's and bootloader's verdict on a flash image, and `albatross build-image`.

The app and bootloader images here are stand-ins made with esptool's image classes (the real
MicroPython build cannot be downloaded here); the checks on them are esptool's and ESP-IDF's.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import pytest

from host_tools import flash_layout as fl
from host_tools import image as img
from host_tools.cli import main as cli_main
from host_tools.vboard import esp32boot

VENDOR = Path(__file__).resolve().parents[2] / "shared/vendor/micropython-1.28.0/ports/esp32"
MiB = 1024 * 1024


def _entry(ptype: int, subtype: int, offset: int, size: int, label: bytes) -> bytes:
    """One 32-byte entry as ESP-IDF's esp_partition_info_t lays it out, written out by hand:
    magic AA 50, type, subtype, offset LE32, size LE32, label[16] NUL-padded, flags LE32."""
    return (
        b"\xaa\x50"
        + bytes([ptype, subtype])
        + offset.to_bytes(4, "little")
        + size.to_bytes(4, "little")
        + label
        + b"\x00" * (16 - len(label))
        + b"\x00\x00\x00\x00"
    )


def expected_4mibplus_table() -> bytes:
    """What gen_esp32part.py writes for partitions-4MiBplus.csv, from the format alone."""
    entries = (
        _entry(0x01, 0x02, 0x9000, 0x6000, b"nvs")  # data, nvs
        + _entry(0x01, 0x01, 0xF000, 0x1000, b"phy_init")  # data, phy
        + _entry(0x00, 0x00, 0x10000, 0x1F0000, b"factory")  # app, factory
    )
    md5 = b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(entries).digest()
    body = entries + md5
    return body + b"\xff" * (0xC00 - len(body))


def full_flash(tmp_path: Path, *, vfs: bytes = b"") -> Path:
    """A 4 MiB flash as MicroPython's makeimg.py firmware written at 0x1000 leaves it."""
    flash = bytearray(b"\xff" * (4 * MiB))
    fw = fl.standin_firmware()
    flash[0x1000 : 0x1000 + len(fw)] = fw
    flash[0x200000 : 0x200000 + len(vfs)] = vfs
    path = tmp_path / "flash.bin"
    path.write_bytes(flash)
    return path


# ----- partition table -----


def test_embedded_csv_is_micropythons() -> None:
    if not (VENDOR / "partitions-4MiBplus.csv").exists():
        pytest.skip(f"no MicroPython source at {VENDOR}")
    vendored = fl.parse_csv((VENDOR / "partitions-4MiBplus.csv").read_text())
    assert vendored == fl.parse_csv(fl.MICROPYTHON_4MIBPLUS_CSV)
    # ESP32_GENERIC takes its table and flash size from sdkconfig.base.
    base = (VENDOR / "boards/sdkconfig.base").read_text()
    assert 'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="partitions-4MiBplus.csv"' in base
    assert "CONFIG_ESPTOOLPY_FLASHSIZE_4MB=y" in base


def test_partition_table_is_byte_exact_as_gen_esp32part_writes_it() -> None:
    table = fl.micropython_layout().table_binary()
    assert len(table) == 0xC00
    assert table == expected_4mibplus_table()


def test_partition_table_round_trip() -> None:
    layout = fl.micropython_layout()
    assert fl.table_from_binary(layout.table_binary()) == list(layout.partitions)
    ota = fl.parse_csv(
        "nvs, data, nvs, 0x9000, 0x5000,\notadata, data, ota, 0xe000, 0x2000,\n"
        "ota_0, app, ota_0, 0x10000, 0x180000,\nota_1, app, ota_1, , 0x180000,\n"
    )
    assert ota[3].offset == 0x190000  # no offset: after the previous one, 64 KiB aligned
    assert fl.table_from_binary(fl.table_to_binary(ota)) == ota


def test_partition_table_damage_is_refused_with_the_bootloaders_words() -> None:
    table = bytearray(fl.micropython_layout().table_binary())
    flipped = bytearray(table)
    flipped[0x14] ^= 0x01  # a byte of nvs's label
    with pytest.raises(fl.LayoutError, match="Incorrect MD5 checksum"):
        fl.table_from_binary(flipped)
    bad_magic = bytearray(table)
    bad_magic[32] = 0x00
    with pytest.raises(fl.LayoutError, match=r"partition 1 invalid magic number 0x5000"):
        fl.table_from_binary(bad_magic)
    with pytest.raises(fl.LayoutError, match="invalid magic number 0xffff"):
        fl.table_from_binary(b"\xff\xff\x00\x00" + b"\xff" * 28)
    too_big = fl.table_to_binary([fl.Partition("big", 0, 0, 0x10000, 0x800000)])
    with pytest.raises(fl.LayoutError, match="exceeds flash chip size 0x400000"):
        fl.table_from_binary(too_big, flash_size=4 * MiB)


def test_vfs_is_the_rest_of_the_flash_as_main_c_registers_it() -> None:
    vfs = fl.micropython_layout(4 * MiB).vfs
    assert (vfs.name, vfs.type, vfs.subtype) == ("vfs", 0x01, 0x81)  # data, fat
    assert (vfs.offset, vfs.size) == (0x200000, 0x200000)
    assert fl.micropython_layout(8 * MiB).vfs.size == 6 * MiB
    for board in ("unix_sim", "esp32_generic_sim7600", "lilygo_t_sim7600"):
        info = img.board_info(board)
        layout = fl.board_layout(info)
        assert layout is not None and layout.vfs.size == info["flash"]["vfs_size"]


# ----- app image -----


def test_standin_app_is_a_valid_image_esptool_reads() -> None:
    from esptool.bin_image import LoadFirmwareImage

    app = fl.standin_app(project_name="micropython", version="v1.28.0")
    assert app[0] == 0xE9 and app[1] == 3  # magic, segment count
    assert app[23] == 1  # the hash-appended flag of the extended header
    info = fl.check_image(app, 0x10000)
    assert info.app_desc is not None
    assert (info.app_desc.project_name, info.app_desc.version) == ("micropython", "v1.28.0")
    image = LoadFirmwareImage("esp32", app)
    assert image.checksum == image.calculate_checksum()
    assert image.stored_digest == hashlib.sha256(app[:-32]).digest()
    magic, *_ = struct.unpack_from("<I", image.segments[0].data)
    assert magic == 0xABCD5432  # esp_app_desc_t first in the first segment
    assert info.length == len(app)


@pytest.mark.parametrize("where", ["segment", "checksum", "digest", "entry"])
def test_a_flipped_byte_in_the_app_is_caught(where: str) -> None:
    app = bytearray(fl.standin_app())
    at = {"segment": 0x100, "checksum": len(app) - 33, "digest": len(app) - 1, "entry": 5}
    app[at[where]] ^= 0x01
    # The checksum byte covers the segments' data; the SHA-256 covers everything before it.
    expected = "Checksum failed" if where in ("segment", "checksum") else "Image hash failed"
    with pytest.raises(fl.LayoutError, match=expected):
        fl.check_image(app, 0x10000)


def test_nothing_flashed_is_an_invalid_magic_byte() -> None:
    with pytest.raises(fl.LayoutError, match=r"image at 0x10000 has invalid magic byte"):
        fl.check_image(b"\xff" * 64, 0x10000)


def test_firmware_is_split_as_makeimg_joined_it() -> None:
    fw = fl.split_firmware(fl.standin_firmware())
    assert fw.partitions == list(fl.micropython_layout().partitions)
    assert fw.app == fl.standin_app()
    assert fw.bootloader == fl.standin_bootloader()
    with pytest.raises(fl.LayoutError, match="bare app image"):
        fl.split_firmware(fl.standin_app() + b"\xff" * 0x8000, source="app.bin")


# ----- what the chip does with a flash image -----


def test_blank_flash_gives_the_roms_invalid_header_and_no_boot(tmp_path: Path) -> None:
    blank = tmp_path / "blank.bin"
    blank.write_bytes(b"\xff" * (4 * MiB))
    out = esp32boot.boot(blank, 4 * MiB)
    text = out.console.decode()
    assert out.vfs is None
    assert text.startswith("ets Jul 29 2019 12:21:46\r\n\r\n")
    assert "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n" in text
    assert text.count("invalid header: 0xffffffff\r\n") == 8
    assert out.next_reset == esp32boot.RTCWDT_RTC_RESET


def test_damaged_partition_table_does_not_boot(tmp_path: Path) -> None:
    path = full_flash(tmp_path)
    data = bytearray(path.read_bytes())
    data[0x8000 + 40] ^= 0xFF  # phy_init's offset
    path.write_bytes(data)
    out = esp32boot.boot(path, 4 * MiB)
    text = out.console.decode()
    assert out.vfs is None
    assert "entry 0x" in text  # the ROM loaded the bootloader, which then refuses
    assert "flash_parts: Incorrect MD5 checksum" in text
    assert "boot: Failed to verify partition table" in text
    assert "boot: load partition table error!" in text
    assert out.next_reset == esp32boot.SW_RESET


def test_damaged_or_missing_app_does_not_boot(tmp_path: Path) -> None:
    path = full_flash(tmp_path)
    data = bytearray(path.read_bytes())
    data[0x10000 + 0x200] ^= 0x01
    path.write_bytes(data)
    text = esp32boot.boot(path, 4 * MiB).console.decode()
    assert "esp_image: Checksum failed" in text
    assert "boot: Factory app partition is not bootable" in text
    data[0x10000:0x20000] = b"\xff" * 0x10000
    path.write_bytes(data)
    text = esp32boot.boot(path, 4 * MiB).console.decode()
    assert "image at 0x10000 has invalid magic byte (nothing flashed here?)" in text
    assert "No bootable app partitions in the partition table" in text


def test_good_flash_boots_into_the_vfs_partition(tmp_path: Path) -> None:
    out = esp32boot.boot(full_flash(tmp_path), 4 * MiB)
    assert out.vfs is not None and (out.vfs.offset, out.vfs.size) == (0x200000, 0x200000)
    assert "load:0x3fff0030,len:296\r\n" in out.console.decode()
    assert out.app is not None and out.app.app_desc is not None
    assert out.app.app_desc.version == "v1.28.0"


def test_supervisor_loops_in_the_rom_on_blank_flash(tmp_path: Path) -> None:
    from host_tools.vboard.supervisor import Supervisor

    blank = tmp_path / "blank.bin"
    blank.write_bytes(b"\xff" * (4 * MiB))
    sv = Supervisor(blank, tmp_path / "work", flash_size=4 * MiB)
    sv.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = sv.console_log_path.read_text()
            if "rst:0x10 (RTCWDT_RTC_RESET)" in text:
                break
            time.sleep(0.05)
        status = sv.status()
    finally:
        sv.stop()
    assert "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)" in text
    assert "rst:0x10 (RTCWDT_RTC_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)" in text
    assert text.count("invalid header: 0xffffffff") >= 16
    assert "MicroPython" not in text
    assert status["boots"] == 0 and status["pid"] is None
    assert status["boot_error"] == "invalid header: 0xffffffff at 0x1000"


# ----- albatross build-image -----


def test_build_image_writes_littlefs_manifest_and_a_full_flash(tmp_path: Path) -> None:
    firmware = tmp_path / "ESP32_GENERIC-standin.bin"
    firmware.write_bytes(fl.standin_firmware())
    config = tmp_path / "device.json"
    config.write_text(json.dumps({"device_id": "tray-7", "interval_s": 30}))
    out = tmp_path / "out"
    argv = ["build-image", "--board", "esp32_generic_sim7600", "--config", str(config)]
    assert cli_main([*argv, "--firmware", str(firmware), "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    lfs = (out / "littlefs.img").read_bytes()
    flash = (out / "flash.bin").read_bytes()
    assert manifest["board"] == "esp32_generic_sim7600"
    assert manifest["firmware_version"] == "0.1.0"
    assert manifest["micropython_version"] == "1.28.0"
    assert manifest["littlefs"]["offset"] == 0x200000 and len(lfs) == 0x200000
    assert manifest["firmware"]["app_version"] == "v1.28.0"
    assert manifest["flash_image"]["sha256"] == hashlib.sha256(flash).hexdigest()
    # The pieces sit where an ESP32 looks for them.
    assert len(flash) == 4 * MiB
    assert flash[0x1000] == 0xE9 and flash[0x10000] == 0xE9
    assert flash[0x8000:0x8C00] == expected_4mibplus_table()
    assert flash[0x200000:] == lfs
    files = {f["path"]: f for f in manifest["files"]}
    assert "tracker/app.mpy" in files and "boot.py" in files
    assert json.loads(img.read_file(out / "flash.bin", "config.json")) == {
        "device_id": "tray-7",
        "interval_s": 30,
    }
    app = img.read_file(out / "flash.bin", "tracker/app.mpy")
    assert files["tracker/app.mpy"]["sha256"] == hashlib.sha256(app).hexdigest()
    assert esp32boot.boot(out / "flash.bin", 4 * MiB).vfs is not None


def test_build_image_without_firmware_and_its_errors(tmp_path: Path, capsys) -> None:
    assert cli_main(["build-image", "--board", "unix_sim", "-o", str(tmp_path / "o")]) == 0
    assert not (tmp_path / "o" / "flash.bin").exists()
    assert (tmp_path / "o" / "littlefs.img").stat().st_size == 0x200000
    bare = tmp_path / "micropython.bin"
    bare.write_bytes(fl.standin_app())
    argv = ["build-image", "--board", "unix_sim", "--firmware", str(bare), "-o", str(tmp_path)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("albatross: ") and "no partition table at 0x8000" in err


def test_an_empty_vfs_is_formatted_at_first_boot_as_inisetup_does(tmp_path: Path) -> None:
    from host_tools.vboard.supervisor import Supervisor

    flash = full_flash(tmp_path)  # firmware flashed, nothing at 0x200000 yet
    sv = Supervisor(flash, tmp_path / "work", flash_size=4 * MiB)
    sv.start()
    try:
        deadline = time.monotonic() + 20
        while ">>> " not in sv.console_log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = sv.console_log_path.read_text()
    finally:
        sv.stop()
    assert "entry 0x" in text and "Performing initial setup" in text
    assert img.list_files(flash) == ["boot.py"]
    assert img.read_file(flash, "boot.py").startswith(b"# This file is executed on every boot")
    assert esp32boot.boot(flash, 4 * MiB).vfs is not None  # the firmware is untouched
