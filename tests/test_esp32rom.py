"""The ESP32 ROM loader simulator (host_tools/vboard/esp32rom): SLIP, NOR flash, the command
protocol, and the pinned, unmodified esptool flashing it over socket:// with and without its
flasher stub."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import esptool as esptool_pkg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.vboard.esp32rom import (
    Esp32Chip,
    FlashFile,
    RomLoader,
    mac_from_uid,
    serve_tcp,
    slip,
)
from host_tools.vboard.esp32rom import loader as rl
from host_tools.vboard.esp32rom import protocol as wire

pytestmark = pytest.mark.e2e

FLASH_SIZE = 4 * 1024 * 1024
UID = "a1b2c3d4e5f6"
MAC = "24:0a:c4:d4:e5:f6"  # Espressif OUI + the uid's last three bytes


# -- SLIP ------------------------------------------------------------------------------------


@given(
    payloads=st.lists(st.binary(min_size=1, max_size=64), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6),
)
def test_slip_round_trip_in_any_slicing(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(slip.encode(p) for p in payloads)
    dec = slip.Decoder()
    frames = []
    last = 0
    for cut in sorted(c for c in cuts if c <= len(stream)) + [len(stream)]:
        frames += dec.feed(stream[last:cut])
        last = cut
    assert frames == payloads
    assert not any(f.corrupt for f in frames)


def test_slip_escapes_and_noise() -> None:
    assert slip.encode(b"\xc0\xdb\x01") == b"\xc0\xdb\xdc\xdb\xdd\x01\xc0"
    dec = slip.Decoder()
    frames = dec.feed(b"boot log\r\n\xc0\x01\xc0garbage\xc0\x02\xdb\x07\xc0")
    assert frames == [b"\x01", b"\x02\x07"]
    assert [f.corrupt for f in frames] == [False, True]  # 0xDB 0x07 is no escape
    assert dec.noise_bytes == len(b"boot log\r\n") + len(b"garbage")
    (long,) = dec.feed(b"\xc0" + b"\x55" * 70000 + b"\xc0")  # a lost delimiter
    assert long.corrupt and len(long) == slip.MAX_FRAME


# -- flash -----------------------------------------------------------------------------------


def test_flash_file_has_nor_semantics_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    with FlashFile(path, 0x4000) as flash:
        assert path.read_bytes() == b"\xff" * 0x4000  # a new chip is erased
        flash.program(0x1000, b"\xf0\x0f\xaa")
        flash.program(0x1000, b"\x0f\xff\x55")  # programming only clears bits
        assert flash.read(0x1000, 3) == b"\x00\x0f\x00"
        flash.erase(0x1FFE, 4)  # touches sectors 1 and 2: both erased whole
        assert flash.read(0x1000, 0x2000) == b"\xff" * 0x2000
        flash.program(0x3000, b"data")
        assert (flash.bytes_programmed, flash.sectors_erased) == (10, 2)
        assert flash.md5(0x3000, 4) == hashlib.md5(b"data").digest()
        with pytest.raises(ValueError):
            flash.program(0x3FFF, b"ab")
    with FlashFile(path, 0x4000) as again:
        assert again.read(0x3000, 4) == b"data"
    with pytest.raises(ValueError):
        FlashFile(path, 0x8000)  # the file is another chip's size


# -- the protocol, driven directly -----------------------------------------------------------


class Host:
    """Sends command packets to a RomLoader and decodes what it sends back."""

    def __init__(self, loader: RomLoader) -> None:
        self.loader = loader
        self.decoder = slip.Decoder()
        self.frames: list[bytes] = []
        loader.send = lambda data: self.frames.extend(self.decoder.feed(data))

    def raw(self, wire: bytes) -> list[bytes]:
        self.frames.clear()
        self.loader.feed(wire)
        return list(self.frames)

    def command(self, op: int, data: bytes = b"", chk: int = 0) -> list[bytes]:
        return self.raw(slip.encode(struct.pack("<BBHI", 0, op, len(data), chk) + data))

    def reply(self, op: int, data: bytes = b"", chk: int = 0) -> tuple[int, bytes]:
        frames = self.command(op, data, chk)
        assert len(frames) == 1, frames
        direction, rop, size, value = struct.unpack("<BBHI", frames[0][:8])
        assert (direction, rop, size) == (1, op, len(frames[0]) - 8)
        return value, frames[0][8:]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with FlashFile(tmp_path / "flash.bin", FLASH_SIZE) as flash:
        yield Host(RomLoader(flash, Esp32Chip.for_board(UID, FLASH_SIZE)))


def test_rom_answers_sync_eight_times_and_reads_registers(host: Host) -> None:
    frames = host.command(wire.SYNC, wire.SYNC_PAYLOAD)
    assert frames == [bytes.fromhex("010804000707122000000000")] * 8  # as real ESP32s answer
    value, status = host.reply(wire.READ_REG, struct.pack("<I", 0x40001000))
    assert (value, status) == (0x00F01D83, bytes(4))  # ESP32 chip-detect magic, 4 status bytes


def test_garbled_packets_get_an_error_and_the_loader_goes_on(host: Host) -> None:
    read_magic = struct.pack("<BBHI", 0, wire.READ_REG, 4, 0) + struct.pack("<I", 0x40001000)
    bad_size = struct.pack("<BBHI", 0, wire.READ_REG, 9, 0) + struct.pack("<I", 0x40001000)
    for line_bytes in (
        slip.encode(bad_size),  # size field disagrees with the data
        b"\xc0" + read_magic[:5] + b"\xdb\x01" + read_magic[5:] + b"\xc0",  # broken escape
        slip.encode(b"\x00\x0a\x04"),  # shorter than a header
    ):
        (frame,) = host.raw(line_bytes)
        assert frame[1] == wire.READ_REG and frame[8:] == b"\x01\x05\x00\x00"  # invalid message
    value, status = host.reply(wire.READ_REG, struct.pack("<I", 0x40001000))
    assert (value, status) == (0x00F01D83, bytes(4))
    # An unknown command (GET_SECURITY_INFO is ESP32-S2 and later) and a bad checksum.
    assert host.reply(wire.GET_SECURITY_INFO)[1] == b"\x01\x05\x00\x00"
    host.reply(wire.FLASH_BEGIN, struct.pack("<IIII", 0x1000, 1, 0x400, 0x10000))
    block = b"\x12" * 0x400
    header = struct.pack("<IIII", len(block), 0, 0, 0)
    bad = host.reply(wire.FLASH_DATA, header + block, chk=wire.checksum(block) ^ 1)
    assert bad[1] == b"\x01\x07\x00\x00"  # invalid CRC: nothing written
    assert host.loader.flash.read(0x10000, 4) == b"\xff" * 4
    assert host.reply(wire.FLASH_DATA, header + block, chk=wire.checksum(block))[1] == bytes(4)
    assert host.loader.flash.read(0x10000, 0x400) == block
    assert host.loader.counters["errors"] == 5


def test_rom_flash_write_error_when_data_lands_on_unerased_flash(host: Host) -> None:
    flash = host.loader.flash
    flash.program(0x20000, b"\x00" * 16)
    host.reply(wire.FLASH_BEGIN, struct.pack("<IIII", 0, 1, 0x400, 0x20000))  # erases nothing
    block = b"\xa5" * 0x400
    status = host.reply(
        wire.FLASH_DATA, struct.pack("<IIII", len(block), 0, 0, 0) + block, wire.checksum(block)
    )[1]
    assert status == b"\x01\x08\x00\x00"  # the ROM read the block back: flash write error


def test_spi_user_command_reads_the_jedec_id(host: Host) -> None:
    base = 0x3FF42000
    for addr, value in (
        (base + 0x2C, 23),  # MISO_DLEN: 24 bits
        (base + 0x1C, 1 << 31 | 1 << 28),  # USR_COMMAND | USR_MISO
        (base + 0x24, 7 << 28 | 0x9F),  # RDID
        (base + 0x80, 0),
        (base + 0x00, 1 << 18),  # SPI_CMD_USR
    ):
        host.reply(wire.WRITE_REG, struct.pack("<IIII", addr, value, 0xFFFFFFFF, 0))
    assert host.reply(wire.READ_REG, struct.pack("<I", base))[0] & (1 << 18) == 0  # done
    assert host.reply(wire.READ_REG, struct.pack("<I", base + 0x80))[0] == 0x1640C8


OPS = "SYNC READ_REG WRITE_REG SPI_SET_PARAMS SPI_ATTACH FLASH_BEGIN FLASH_DATA FLASH_END"
OPS += " FLASH_DEFL_BEGIN FLASH_DEFL_DATA FLASH_DEFL_END SPI_FLASH_MD5 MEM_BEGIN MEM_DATA MEM_END"
OPS += " READ_FLASH_SLOW GET_SECURITY_INFO ERASE_FLASH ERASE_REGION READ_FLASH RUN_USER_CODE"
COMMANDS = [getattr(wire, op) for op in (OPS + " CHANGE_BAUDRATE").split()] + [0x55]
WORD = st.one_of(st.sampled_from([0, 1, 4, 0x400, 0x1000, 0xFFFFFFFF]), st.integers(0, 2**32 - 1))


@settings(max_examples=300, deadline=None)
@given(
    packets=st.lists(
        st.tuples(
            st.sampled_from(COMMANDS),
            st.one_of(
                st.lists(WORD, max_size=6).map(lambda ws: struct.pack(f"<{len(ws)}I", *ws)),
                st.binary(max_size=40),
            ),
            st.integers(0, 255),
        ),
        max_size=12,
    ),
    stub=st.booleans(),
)
def test_any_command_sequence_gets_answers_not_exceptions(
    packets: list[tuple[int, bytes, int]], stub: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp, FlashFile(Path(tmp) / "f.bin", 0x10000) as flash:
        host = Host(RomLoader(flash, Esp32Chip(bytes(6), 0x10000)))
        if stub:
            upload_esptool_stub(host)
        for op, data, chk in packets:
            frames = host.command(op, data, chk)
            if host.loader.mode == rl.APP:
                break
            if op != wire.RUN_USER_CODE:
                assert frames and frames[0][:2] == bytes((1, op))


def upload_esptool_stub(host: Host, version: str = "2") -> None:
    """What esptool's run_stub() sends: text and data segments, then MEM_END(entry)."""
    stub_json = Path(esptool_pkg.__file__).parent / "targets/stub_flasher" / version / "esp32.json"
    stub = json.loads(stub_json.read_text())
    for key in ("text", "data"):
        seg = base64.b64decode(stub[key])
        host.reply(wire.MEM_BEGIN, struct.pack("<IIII", len(seg), 1, 0x1800, stub[key + "_start"]))
        body = struct.pack("<IIII", len(seg), 0, 0, 0) + seg
        assert host.reply(wire.MEM_DATA, body, wire.checksum(seg))[1] == bytes(4)
    frames = host.command(wire.MEM_END, struct.pack("<II", 0, stub["entry"]))
    assert frames[1:] == [b"OHAI"]  # the stub's greeting follows MEM_END's reply


def test_stub_read_flash_keeps_to_the_ack_window(host: Host) -> None:
    upload_esptool_stub(host)
    flash = host.loader.flash
    data = bytes(range(256)) * 48  # 3 packets of 0x1000
    flash.program(0x1000, data)
    frames = host.command(wire.READ_FLASH, struct.pack("<IIII", 0x1000, len(data), 0x1000, 2))
    assert frames[0][8:] == b"\x00\x00"  # the stub's 2 status bytes
    assert frames[1:] == [data[:0x1000], data[0x1000:0x2000]]  # two unacked packets, no more
    assert host.raw(slip.encode(struct.pack("<I", 0x1000))) == [data[0x2000:]]
    assert host.raw(slip.encode(struct.pack("<I", 0x2000))) == []
    assert host.raw(slip.encode(struct.pack("<I", 0x3000))) == [hashlib.md5(data).digest()]
    assert host.reply(wire.READ_REG, struct.pack("<I", 0x40001000)) == (0x00F01D83, b"\x00\x00")


def test_ram_code_that_is_not_the_stub_runs_and_the_loader_falls_silent(tmp_path: Path) -> None:
    left: list[str] = []
    with FlashFile(tmp_path / "flash.bin", FLASH_SIZE) as flash:
        loader = RomLoader(flash, Esp32Chip.for_board(UID, FLASH_SIZE), on_leave=left.append)
        host = Host(loader)
        code = b"\x36\x41\x00" * 4
        host.reply(wire.MEM_BEGIN, struct.pack("<IIII", len(code), 1, 0x1800, 0x40080000))
        body = struct.pack("<IIII", len(code), 0, 0, 0) + code
        host.reply(wire.MEM_DATA, body, wire.checksum(code))
        assert len(host.command(wire.MEM_END, struct.pack("<II", 0, 0x40080000))) == 1
        assert left == ["run_ram"] and loader.mode == rl.APP
        assert host.command(wire.SYNC, wire.SYNC_PAYLOAD) == []
        loader.reset()
        assert len(host.command(wire.SYNC, wire.SYNC_PAYLOAD)) == 8


def test_change_baudrate_answers_at_the_old_rate_then_switches(host: Host) -> None:
    events: list[tuple[str, int]] = []
    loader = host.loader
    loader.send = lambda data: events.append(("reply", loader.baud))
    loader.on_baud = lambda baud: events.append(("baud", baud))
    loader.feed(
        slip.encode(
            struct.pack("<BBHI", 0, wire.CHANGE_BAUDRATE, 8, 0) + struct.pack("<II", 921600, 0)
        )
    )
    assert events == [("reply", 115200), ("baud", 921600)]
    assert loader.chip.read_reg(0x3FF40014) & 0xFFFFF == 43  # UART_CLKDIV: 40 MHz / 921600
    loader.reset()
    assert events[-1] == ("baud", 115200)


def test_mac_from_uid() -> None:
    assert mac_from_uid(UID).hex(":") == MAC
    assert mac_from_uid("000000aabbcc") != mac_from_uid("000000aabbcd")


# -- the real esptool ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FlashFile]]:
    path = tmp_path_factory.mktemp("esp32rom") / "flash.bin"
    with FlashFile(path, FLASH_SIZE) as flash:
        loader = RomLoader(flash, Esp32Chip.for_board(UID, FLASH_SIZE))
        with serve_tcp(loader) as server:
            yield server.url, flash


def esptool(
    url: str,
    *args: str,
    stub: bool = True,
    baud: int = 921600,
    ok: bool = True,
    chip: str = "esp32",
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "esptool", "--chip", chip, "--port", url]
    cmd += ["--before", "no-reset", "--after", "no-reset", "--baud", str(baud)]
    cmd += ([] if stub else ["--no-stub"]) + list(args)
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    out = proc.stdout + proc.stderr
    if ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[2:])} exited {proc.returncode}:\n{out}")
    proc.stdout = out
    return proc


STUB = pytest.mark.parametrize("stub", [True, False], ids=["stub", "no-stub"])


def image(seed: int, size: int) -> bytes:
    """Half random, half repeated text: compressible, but not trivially."""
    rnd = random.Random(seed)
    data = bytes(rnd.getrandbits(8) for _ in range(size // 2))
    data += (b"albatross %d " % seed) * (size // 2 // 12 + 1)
    return b"\x00" + data[1:size]  # not 0xE9: esptool would take it for an app image


@STUB
def test_chip_id_and_read_mac(board: tuple[str, FlashFile], stub: bool) -> None:
    url, _ = board
    out = esptool(url, "chip-id", stub=stub).stdout
    assert "ESP32-D0WD-V3 (revision v3.0)" in out
    assert "Wi-Fi, BT, Dual Core + LP Core, 240MHz" in out
    assert "Crystal frequency:  40MHz" in out
    assert "ESP32 has no chip ID. Reading MAC address instead." in out
    assert ("Stub flasher running." in out) == stub
    mac = esptool(url, "read-mac", stub=stub).stdout
    assert re.findall(r"MAC:\s+(\S+)", mac) == [MAC, MAC]  # chip info, then the command


@STUB
def test_flash_id(board: tuple[str, FlashFile], stub: bool) -> None:
    out = esptool(board[0], "flash-id", stub=stub, chip="auto").stdout
    assert "Detecting chip type... ESP32" in out  # by the magic word at 0x40001000
    assert "Manufacturer: c8" in out
    assert "Device: 4016" in out
    assert "Detected flash size: 4MB" in out


@STUB
@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "no-compress"])
def test_write_flash(
    board: tuple[str, FlashFile], tmp_path: Path, stub: bool, compress: bool
) -> None:
    url, flash = board
    addr = 0x100000 + 0x10000 * (2 * stub + compress)
    data = image(addr, 0x2A00)  # not a whole sector: the tail of the last one is erased too
    src = tmp_path / "app.bin"
    src.write_bytes(data)
    flash.program(addr + 0x2A00, b"\x00" * 0x100)  # old data in the last sector
    # --compress: without the stub esptool's default is not to compress.
    args = ["write-flash", "--compress" if compress else "--no-compress", hex(addr), str(src)]
    out = esptool(url, *args, stub=stub).stdout
    assert bool(re.search(r"Wrote 10752 bytes \(\d+ compressed\)", out)) == compress
    assert "Hash of data verified." in out
    assert flash.read(addr, len(data)) == data
    assert flash.read(addr + len(data), 0x3000 - len(data)) == b"\xff" * (0x3000 - len(data))


@STUB
def test_verify_read_and_a_flipped_byte(
    board: tuple[str, FlashFile], tmp_path: Path, stub: bool
) -> None:
    url, flash = board
    addr = 0x180000 + 0x10000 * stub
    data = image(addr, 0x2000)
    src = tmp_path / "app.bin"
    src.write_bytes(data)
    flash.erase(addr, len(data))
    flash.program(addr, data)
    out = esptool(url, "verify-flash", hex(addr), str(src), stub=stub).stdout
    assert "Verification successful (digest matched)." in out
    back = tmp_path / "back.bin"
    esptool(url, "read-flash", hex(addr), hex(len(data)), str(back), stub=stub)
    assert back.read_bytes() == data

    # One bit flips in the flash image file: verify-flash must find exactly that byte.
    where = addr + 0x1234
    with open(flash.path, "r+b") as f:
        f.seek(where)
        f.write(bytes([data[0x1234] ^ 0x10]))
    bad = esptool(url, "verify-flash", "--diff", hex(addr), str(src), stub=stub, ok=False)
    assert bad.returncode != 0
    assert "Verification failed: 1 differences" in bad.stdout
    assert f"{where:#010x} {data[0x1234] ^ 0x10:02x} {data[0x1234]:02x}" in bad.stdout


def test_espefuse_reads_the_efuses_and_checks_the_mac_crc(board: tuple[str, FlashFile]) -> None:
    cmd = [sys.executable, "-m", "espefuse", "--chip", "esp32", "--port", board[0]]
    cmd += ["--before", "no-reset", "summary"]
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env).stdout
    assert f"= {MAC} (CRC 0x44 OK)" in out  # the same CRC-8 the ROM checks at boot
    assert re.search(r"WAFER_VERSION_MAJOR .*= 3 ", out)
    assert re.search(r"PKG_VERSION .*= 1 ", out)  # ESP32-D0WD


def test_wrong_chip_argument(board: tuple[str, FlashFile]) -> None:
    wrong = esptool(board[0], "chip-id", chip="esp32s3", ok=False)
    assert wrong.returncode != 0
    assert "This chip is ESP32, not ESP32-S3. Wrong chip argument?" in wrong.stdout


@STUB
def test_erase_region(board: tuple[str, FlashFile], stub: bool) -> None:
    url, flash = board
    base = 0x200000 + 0x10000 * stub
    flash.program(base, b"\x00" * 0x4000)
    esptool(url, "erase-region", hex(base + 0x1000), "0x2000", stub=stub)
    assert flash.read(base, 0x1000) == bytes(0x1000)
    assert flash.read(base + 0x1000, 0x2000) == b"\xff" * 0x2000
    assert flash.read(base + 0x3000, 0x1000) == bytes(0x1000)


def test_legacy_stub_writes_too(board: tuple[str, FlashFile], tmp_path: Path) -> None:
    url, flash = board
    data = image(1, 0x1800)
    src = tmp_path / "app.bin"
    src.write_bytes(data)
    out = esptool(url, "--stub-version", "1", "write-flash", "0x1C0000", str(src)).stdout
    assert "legacy stub flasher" in out and "Hash of data verified." in out
    assert flash.read(0x1C0000, len(data)) == data


def test_power_cut_mid_write_then_reflash(tmp_path: Path) -> None:
    """The chip loses power while esptool writes: the flash is torn (new blocks, then old
    data), esptool fails, and flashing again succeeds."""
    addr = 0x10000
    data = b"\x00" + random.Random(3).randbytes(0x8000 - 1)
    src = tmp_path / "app.bin"
    src.write_bytes(data)
    with FlashFile(tmp_path / "flash.bin", FLASH_SIZE) as flash:
        flash.erase(addr, len(data))
        flash.program(addr, b"\x5a" * len(data))  # the firmware flashed before
        before = flash.bytes_programmed
        loader = RomLoader(flash, Esp32Chip.for_board(UID, FLASH_SIZE))
        with serve_tcp(loader) as server:
            cmd = [sys.executable, "-m", "esptool", "--chip", "esp32", "--port", server.url]
            cmd += ["--before", "no-reset", "--after", "no-reset", "--baud", "115200"]
            cmd += ["write-flash", "--no-compress", hex(addr), str(src)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 20
            while flash.bytes_programmed - before < 0x4000 and time.monotonic() < deadline:
                time.sleep(0.02)  # the first 16 KiB block is in; the second is on the line
            server.reset()  # power cut
            proc.kill()
            proc.wait()
            assert proc.returncode != 0
            assert flash.read(addr, 0x4000) == data[:0x4000]
            assert flash.read(addr + 0x4000, 0x4000) == b"\x5a" * 0x4000
            out = esptool(server.url, "write-flash", hex(addr), str(src)).stdout
            assert "Hash of data verified." in out
            assert flash.read(addr, len(data)) == data


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_next_session_finds_the_stub_still_running_or_the_rom(
    tmp_path: Path, version: str
) -> None:
    """No reset between two esptool runs (--after no-reset): esp-flasher-stub (esptool's
    default, "2") keeps running and answers SYNC with value 0, so esptool skips the upload;
    the legacy stub reboots into the ROM on FLASH_END(0) and is uploaded again."""
    with FlashFile(tmp_path / "flash.bin", FLASH_SIZE) as flash:
        loader = RomLoader(flash, Esp32Chip.for_board(UID, FLASH_SIZE))
        with serve_tcp(loader, reset_on_connect=False) as server:
            args = ("--stub-version", version, "flash-id")
            first = esptool(server.url, *args, baud=115200).stdout
            assert "Uploading stub flasher..." in first
            assert loader.mode == (rl.STUB if version == "2" else rl.ROM)
            second = esptool(server.url, *args, baud=115200).stdout
            running = "Stub flasher is already running. No upload is necessary."
            assert (running in second) == (version == "2")
            assert "Detected flash size: 4MB" in second


def test_erase_flash_needs_the_stub(board: tuple[str, FlashFile]) -> None:
    url, flash = board
    flash.program(0x3FF000, b"\x00" * 16)
    refused = esptool(url, "erase-flash", stub=False, ok=False)
    assert refused.returncode != 0
    assert "ESP32 ROM does not support function erase_flash" in refused.stdout
    assert flash.read(0x3FF000, 16) == bytes(16)
    esptool(url, "erase-flash")
    assert flash.md5(0, FLASH_SIZE) == hashlib.md5(b"\xff" * FLASH_SIZE).digest()


def test_write_flash_is_paced_at_the_line_rate(
    board: tuple[str, FlashFile], tmp_path: Path
) -> None:
    """Flash throughput with the stub, incompressible data, against the line's limit
    (baud/10 bytes/s): never above it, and printed for the record."""
    url, flash = board
    data = random.Random(7).randbytes(0x4000)
    src = tmp_path / "random.bin"
    src.write_bytes(b"\x00" + data[1:])
    for baud in (115200, 921600):
        t = time.monotonic()
        out = esptool(url, "write-flash", "--no-compress", "0x300000", str(src), baud=baud).stdout
        wall = time.monotonic() - t
        kbit = float(re.search(r"\(([\d.]+) kbit/s\)", out).group(1))  # type: ignore[union-attr]
        rate = kbit * 1000 / 8
        limit = baud / 10
        print(
            f"\nwrite-flash {len(data)} B at {baud}: {rate:.0f} B/s of {limit:.0f} B/s "
            f"({rate / limit:.0%}), esptool run {wall:.1f} s"
        )
        assert rate <= limit * 1.02
