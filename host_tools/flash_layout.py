"""The ESP32's flash as MicroPython v1.28 lays it out: bootloader, partition table, app, vfs.

Where each number comes from (the MicroPython source, `../shared/vendor/micropython-1.28.0`):

- `ports/esp32/boards/sdkconfig.base` picks `partitions-4MiBplus.csv` for ESP32_GENERIC (and
  its SPIRAM variant) and a 4 MB flash; `ports/esp32/makeimg.py` puts the bootloader at 0x1000
  and the partition table at 0x8000 (ESP-IDF's defaults for the ESP32), and the app at the
  first app partition. The stock `ESP32_GENERIC-*.bin` a user downloads is makeimg.py's output:
  those three joined, written at 0x1000 (`boards/ESP32_GENERIC/board.json` flash_offset).
- `ports/esp32/main.c` (boardctrl_startup): when the table has no "vfs" or "ffat" partition,
  MicroPython registers a "vfs" data partition (subtype fat) from the end of the last partition
  to the end of the flash chip. On 4 MB that is 0x200000..0x400000, where it mounts littlefs2.

The binary partition table is written exactly as ESP-IDF's gen_esp32part.py writes it: 32-byte
entries `<2sBBLL16sL` (magic AA 50, type, subtype, offset, size, label, flags), then an MD5
entry (EB EB, 14 x FF, the MD5 of the entries before it), padded with FF to 0xC00 bytes.

App and bootloader images are checked with esptool's own image code (esptool.bin_image), as
the ESP32 ROM and ESP-IDF's bootloader check them: magic 0xE9, segment count, the checksum
byte and, when the header's hash flag is set, the appended SHA-256.

Stand-in images: the real MicroPython bootloader and app cannot be downloaded here, so
`standin_bootloader()` and `standin_app()` make *valid* images of the same shape with
esptool's image classes (the segments hold filler, not code). The virtual board's
MicroPython runtime is what actually runs in place of the app; the flash image only decides,
as a chip would, whether it boots at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path

BOOTLOADER_OFFSET = 0x1000  # ESP32 (later chips: 0x0); makeimg.py OFFSET_BOOTLOADER_DEFAULT
PARTITION_TABLE_OFFSET = 0x8000  # makeimg.py OFFSET_PARTITIONS_DEFAULT
PARTITION_TABLE_SECTOR = 0x1000
MAX_PARTITION_LENGTH = 0xC00  # gen_esp32part.py: 3 KB of entries, the rest for a signature
ENTRY_FORMAT = "<2sBBLL16sL"
ENTRY_SIZE = 32
PARTITION_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
MD5_PARTITION_BEGIN = MD5_MAGIC + b"\xff" * 14

APP_TYPE, DATA_TYPE = 0x00, 0x01
TYPES = {"app": APP_TYPE, "data": DATA_TYPE}
# gen_esp32part.py SUBTYPES (esp_partition_subtype_t)
SUBTYPES = {
    APP_TYPE: {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    DATA_TYPE: {
        "ota": 0x00,
        "phy": 0x01,
        "nvs": 0x02,
        "coredump": 0x03,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": 0x06,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
    },
}
ALIGNMENT = {APP_TYPE: 0x10000, DATA_TYPE: 0x1000}

# ports/esp32/partitions-4MiBplus.csv of MicroPython v1.28.0 (tests compare it to the file).
MICROPYTHON_4MIBPLUS_CSV = """\
# Name,   Type, SubType, Offset,  Size, Flags
nvs,      data, nvs,     0x9000,  0x6000,
phy_init, data, phy,     0xf000,  0x1000,
factory,  app,  factory, 0x10000, 0x1F0000,
"""

ESP_IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
# esp_app_desc_t (ESP-IDF esp_app_desc.h), 256 bytes at the start of the app's first (DROM)
# segment; the same layout esptool's image-info reads.
APP_DESC_FORMAT = "<II8s32s32s16s16s32s32sHHB3s72s"
ESP32_DROM = 0x3F400020  # flash-mapped rodata: where an app's first segment lives
ESP32_IRAM = 0x40080400
ESP32_DRAM = 0x3FFF0030  # where ESP-IDF's bootloader loads its data
FLASH_MODE_DIO = 2
FLASH_4MB_40M = 0x20  # header byte 3: size 4 MB (2 << 4), frequency 40 MHz (0)


class LayoutError(Exception):
    """A partition table or image that an ESP32 would refuse; the text says why."""


@dataclass(frozen=True)
class Partition:
    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "subtype": self.subtype,
            "offset": self.offset,
            "size": self.size,
        }


def parse_csv(text: str) -> list[Partition]:
    """Partitions of an ESP-IDF partition CSV (name, type, subtype, offset, size, flags);
    an empty offset follows the previous partition, aligned as gen_esp32part.py aligns it."""
    out: list[Partition] = []
    last_end = PARTITION_TABLE_OFFSET + PARTITION_TABLE_SECTOR
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line + ",,,,").split(",")]
        name, ptype_text, subtype_text, offset_text, size_text, flags_text = fields[:6]
        try:
            ptype = TYPES[ptype_text] if ptype_text in TYPES else int(ptype_text, 0)
            subs = SUBTYPES.get(ptype, {})
            subtype = subs[subtype_text] if subtype_text in subs else int(subtype_text, 0)
            size = _int(size_text)
            offset = _int(offset_text) if offset_text else None
        except (KeyError, ValueError):
            raise LayoutError(f"partition CSV line {line_no}: cannot read {line!r}") from None
        if offset is None:
            align = ALIGNMENT.get(ptype, 0x1000)
            offset = -(-last_end // align) * align
        flags = 1 if "encrypted" in flags_text.split(":") else 0
        out.append(Partition(name, ptype, subtype, offset, size, flags))
        last_end = offset + size
    return out


def _int(text: str) -> int:
    t = text.strip().upper()
    for suffix, mult in (("K", 1024), ("M", 1024 * 1024)):
        if t.endswith(suffix):
            return int(t[:-1], 0) * mult
    return int(t, 0)


def table_to_binary(partitions: list[Partition]) -> bytes:
    """The 0xC00 bytes gen_esp32part.py writes for these partitions (MD5 entry included)."""
    body = b"".join(
        struct.pack(
            ENTRY_FORMAT,
            PARTITION_MAGIC,
            p.type,
            p.subtype,
            p.offset,
            p.size,
            p.name.encode(),  # struct pads the 16-byte label with NULs
            p.flags,
        )
        for p in partitions
    )
    body += MD5_PARTITION_BEGIN + hashlib.md5(body).digest()
    if len(body) >= MAX_PARTITION_LENGTH:
        raise LayoutError(f"partition table of {len(body)} bytes is longer than the maximum")
    return body + b"\xff" * (MAX_PARTITION_LENGTH - len(body))


def table_from_binary(data: bytes, *, flash_size: int | None = None) -> list[Partition]:
    """Read a binary partition table as ESP-IDF's bootloader verifies it
    (flash_partitions.c esp_partition_table_verify). Raises LayoutError with the bootloader's
    own message (tag flash_parts)."""
    out: list[Partition] = []
    md5_found = False
    for n in range(MAX_PARTITION_LENGTH // ENTRY_SIZE):
        entry = bytes(data[n * ENTRY_SIZE : (n + 1) * ENTRY_SIZE])
        if len(entry) < ENTRY_SIZE:
            break
        magic = entry[:2]
        if magic == PARTITION_MAGIC:
            _, ptype, subtype, offset, size, label, flags = struct.unpack(ENTRY_FORMAT, entry)
            if flash_size is not None and (offset > flash_size or offset + size > flash_size):
                raise LayoutError(
                    f"partition {n} invalid - offset 0x{offset:x} size 0x{size:x} exceeds "
                    f"flash chip size 0x{flash_size:x}"
                )
            name = label.split(b"\x00", 1)[0].decode(errors="replace")
            out.append(Partition(name, ptype, subtype, offset, size, flags))
        elif magic == MD5_MAGIC:
            if md5_found:
                raise LayoutError("Only one MD5 checksum is allowed")
            if entry[16:] != hashlib.md5(bytes(data[: n * ENTRY_SIZE])).digest():
                raise LayoutError("Incorrect MD5 checksum")
            md5_found = True
        elif entry[:4] == b"\xff\xff\xff\xff":  # magic 0xFFFF, type and subtype "end"
            return out
        else:
            value = int.from_bytes(magic, "little")
            raise LayoutError(f"partition {n} invalid magic number 0x{value:x}")
    raise LayoutError("partition table has no terminating entry, not valid")


def vfs_partition(partitions: list[Partition], flash_size: int) -> Partition | None:
    """MicroPython's filesystem partition: the table's "vfs" (or "ffat"), else the one main.c
    registers from the end of the last partition to the end of the flash chip."""
    for p in partitions:
        if p.type == DATA_TYPE and p.name in ("vfs", "ffat"):
            return p
    end = max((p.end for p in partitions), default=0)
    if end <= 0 or flash_size <= end:
        return None
    return Partition("vfs", DATA_TYPE, SUBTYPES[DATA_TYPE]["fat"], end, flash_size - end)


def factory_app(partitions: list[Partition]) -> Partition | None:
    for p in partitions:
        if p.type == APP_TYPE and p.subtype == SUBTYPES[APP_TYPE]["factory"]:
            return p
    return None


@dataclass(frozen=True)
class FlashLayout:
    """Where everything lives on one board's flash."""

    flash_size: int
    partitions: tuple[Partition, ...]
    bootloader_offset: int = BOOTLOADER_OFFSET
    table_offset: int = PARTITION_TABLE_OFFSET

    @property
    def vfs(self) -> Partition:
        found = vfs_partition(list(self.partitions), self.flash_size)
        if found is None:
            raise LayoutError(f"no room for a vfs partition on {self.flash_size} bytes of flash")
        return found

    @property
    def app(self) -> Partition:
        found = factory_app(list(self.partitions))
        if found is None:
            raise LayoutError("the partition table has no factory app partition")
        return found

    def table_binary(self) -> bytes:
        return table_to_binary(list(self.partitions))

    def to_json(self) -> dict:
        return {
            "flash_size": self.flash_size,
            "bootloader": self.bootloader_offset,
            "partition_table": self.table_offset,
            "partitions": [p.to_json() for p in self.partitions],
            "vfs": self.vfs.to_json(),
        }


def micropython_layout(flash_size: int = 4 * 1024 * 1024) -> FlashLayout:
    """MicroPython v1.28's ESP32_GENERIC layout (partitions-4MiBplus.csv) on this flash size."""
    return FlashLayout(flash_size, tuple(parse_csv(MICROPYTHON_4MIBPLUS_CSV)))


def board_layout(board_info: dict) -> FlashLayout | None:
    """The layout of a board from its board.json `flash` block (None: the board states no
    flash size, e.g. a bare littlefs image is all it has)."""
    size = (board_info.get("flash") or {}).get("size")
    return micropython_layout(int(size)) if size else None


# ----- app and bootloader images -----


@dataclass(frozen=True)
class AppDesc:
    project_name: str
    version: str
    idf_ver: str
    date: str
    time: str


@dataclass(frozen=True)
class ImageInfo:
    entry: int
    segments: list[tuple[int, int]]  # (load address, length)
    length: int  # bytes the image takes in flash, digest included
    app_desc: AppDesc | None


def pack_app_desc(*, project_name: str, version: str, idf_ver: str = "v5.5.1") -> bytes:
    """An esp_app_desc_t (256 bytes) as ESP-IDF puts it at the start of the app's DROM."""
    return struct.pack(
        APP_DESC_FORMAT,
        APP_DESC_MAGIC,
        0,  # secure_version
        b"",
        version.encode()[:31],
        project_name.encode()[:31],
        b"00:00:00",
        b"Jan  1 2026",
        idf_ver.encode()[:31],
        b"\x00" * 32,  # app_elf_sha256: no ELF behind a stand-in
        0,
        99,  # max_efuse_blk_rev_full, ESP-IDF v5's default for the ESP32 (v0.99)
        0,
        b"",
        b"",
    )


def unpack_app_desc(segment: bytes) -> AppDesc | None:
    if len(segment) < struct.calcsize(APP_DESC_FORMAT):
        return None
    fields = struct.unpack_from(APP_DESC_FORMAT, segment)
    if fields[0] != APP_DESC_MAGIC:
        return None

    def text(b: bytes) -> str:
        return b.split(b"\x00", 1)[0].decode(errors="replace")

    return AppDesc(
        project_name=text(fields[4]),
        version=text(fields[3]),
        idf_ver=text(fields[7]),
        date=text(fields[6]),
        time=text(fields[5]),
    )


def check_image(data: bytes, offset: int) -> ImageInfo:
    """Check an ESP32 image (app or bootloader) as ESP-IDF's esp_image_format.c does, with
    esptool's parser. Raises LayoutError with ESP-IDF's message (tag esp_image)."""
    from esptool.bin_image import ESP32FirmwareImage, LoadFirmwareImage
    from esptool.util import FatalError

    head = bytes(data[:24])
    if not head or head[0] != ESP_IMAGE_MAGIC:
        raise LayoutError(f"image at 0x{offset:x} has invalid magic byte (nothing flashed here?)")
    if head[1] > 16:
        raise LayoutError(f"image at 0x{offset:x} segment count {head[1]} exceeds max 16")
    try:
        image = LoadFirmwareImage("esp32", bytes(data))
    except (FatalError, RuntimeError, struct.error, ValueError) as e:
        raise LayoutError(f"image at 0x{offset:x} is not valid: {e}") from None
    assert isinstance(image, ESP32FirmwareImage)
    calculated = image.calculate_checksum()
    if calculated != image.checksum:
        raise LayoutError(
            f"Checksum failed. Calculated 0x{calculated:x} read 0x{image.checksum:x}"
        )
    if image.append_digest and image.stored_digest != image.calc_digest:
        raise LayoutError("Image hash failed - image is corrupt")
    length = image.data_length or 0
    if image.append_digest:
        length += 32
    desc = unpack_app_desc(image.segments[0].data) if image.segments else None
    return ImageInfo(
        entry=image.entrypoint,
        segments=[(s.addr, len(s.data)) for s in image.segments],
        length=length,
        app_desc=desc,
    )


def _image(segments: list[tuple[str, int, bytes]], entry: int) -> bytes:
    from esptool.bin_image import ELFSection, ESP32FirmwareImage

    image = ESP32FirmwareImage()
    image.flash_mode = FLASH_MODE_DIO
    image.flash_size_freq = FLASH_4MB_40M
    image.entrypoint = entry
    image.append_digest = True
    image.max_rev_full = 399  # what ESP-IDF v5 writes for the ESP32: any revision up to v3.99
    image.segments = [ELFSection(name.encode(), addr, data, 0) for name, addr, data in segments]
    out = image.save(None)
    assert out is not None
    return out


def standin_bootloader() -> bytes:
    """A valid ESP32 second-stage bootloader image in the shape of ESP-IDF's (RAM segments
    for data, IRAM loader and code; entry in IRAM), made with esptool's ESP32FirmwareImage.
    A stand-in: the real bootloader comes from an ESP-IDF build; its code is filler here."""
    return _image(
        [
            (".dram0.data", ESP32_DRAM, b"\x00" * 0x128),
            (".iram_loader.text", 0x40078000, b"\x00" * 0x3A00),
            (".iram.text", ESP32_IRAM, b"\x00" * 0xD40),
        ],
        entry=0x40080600,
    )


def standin_app(*, project_name: str = "micropython", version: str = "v1.28.0") -> bytes:
    """A valid ESP32 app image whose first (flash-mapped DROM) segment starts with an
    esp_app_desc_t naming the project and version, as an ESP-IDF app's does; made with
    esptool's ESP32FirmwareImage. A stand-in for MicroPython's app (which cannot be
    downloaded here): the virtual board's runtime runs in its place."""
    desc = pack_app_desc(project_name=project_name, version=version)
    return _image(
        [
            (".flash.appdesc", ESP32_DROM, desc + b"\x00" * 0x1000),
            (".dram0.data", 0x3FFBDB60, b"\x00" * 0x400),
            (".iram0.text", ESP32_IRAM, b"\x00" * 0x2000),
        ],
        entry=0x40081000,
    )


def standin_firmware(**app_desc: str) -> bytes:
    """What MicroPython's makeimg.py builds (bootloader, partition table, app joined, to be
    written at 0x1000), from the stand-in images and the 4MiBplus table: the shape of the
    ESP32_GENERIC-*.bin a user downloads."""
    layout = micropython_layout()
    return join_firmware(standin_bootloader(), layout.table_binary(), standin_app(**app_desc))


def join_firmware(bootloader: bytes, table: bytes, app: bytes) -> bytes:
    """makeimg.py: the three at their offsets, FF between, starting at the bootloader's."""
    layout = micropython_layout()
    out = bytearray(b"\xff" * (layout.app.offset - BOOTLOADER_OFFSET))
    if len(bootloader) > PARTITION_TABLE_OFFSET - BOOTLOADER_OFFSET:
        raise LayoutError("bootloader overflows its space before the partition table")
    out[: len(bootloader)] = bootloader
    start = PARTITION_TABLE_OFFSET - BOOTLOADER_OFFSET
    out[start : start + len(table)] = table
    return bytes(out) + app


@dataclass(frozen=True)
class Firmware:
    """A MicroPython build as makeimg.py joins it, split into its parts."""

    bootloader: bytes
    table: bytes
    partitions: list[Partition]
    app: bytes
    app_info: ImageInfo


def split_firmware(data: bytes, *, source: str = "firmware") -> Firmware:
    """Read a combined MicroPython firmware .bin (written at 0x1000): check the bootloader,
    the partition table and the app; raise LayoutError saying what is wrong."""
    table_at = PARTITION_TABLE_OFFSET - BOOTLOADER_OFFSET
    if len(data) <= table_at or data[table_at : table_at + 2] != PARTITION_MAGIC:
        hint = ""
        if data[:1] == bytes([ESP_IMAGE_MAGIC]):
            hint = (
                " (a bare app image? pass the combined ESP32_GENERIC-*.bin from "
                "micropython.org, which is written at 0x1000)"
            )
        raise LayoutError(f"{source}: no partition table at 0x{PARTITION_TABLE_OFFSET:x}{hint}")
    check = check_image(data, BOOTLOADER_OFFSET)
    boot = bytes(data[: check.length])
    table_bytes = bytes(data[table_at : table_at + MAX_PARTITION_LENGTH])
    try:
        partitions = table_from_binary(table_bytes)
    except LayoutError as e:
        raise LayoutError(f"{source}: partition table: {e}") from None
    app_part = factory_app(partitions)
    if app_part is None:
        raise LayoutError(f"{source}: the partition table has no factory app")
    app_at = app_part.offset - BOOTLOADER_OFFSET
    app_data = bytes(data[app_at:])
    try:
        info = check_image(app_data, app_part.offset)
    except LayoutError as e:
        raise LayoutError(f"{source}: app: {e}") from None
    if info.length > app_part.size:
        raise LayoutError(f"{source}: app of {info.length} bytes overflows its partition")
    return Firmware(boot, table_bytes, partitions, app_data[: info.length], info)


def merge_flash(firmware: Firmware, vfs_image: bytes, flash_size: int) -> bytes:
    """One full-flash image (flash_size bytes, FF where nothing is written): the firmware at
    0x1000 and the littlefs at the vfs partition, merged by esptool's merge-bin."""
    from esptool.cmds import merge_bin

    vfs = vfs_partition(firmware.partitions, flash_size)
    if vfs is None:
        raise LayoutError(f"no room for a vfs partition on {flash_size} bytes of flash")
    if len(vfs_image) > vfs.size:
        raise LayoutError(f"filesystem of {len(vfs_image)} bytes overflows vfs ({vfs.size})")
    app_part = factory_app(firmware.partitions)
    assert app_part is not None
    parts = [
        (BOOTLOADER_OFFSET, firmware.bootloader),
        (PARTITION_TABLE_OFFSET, firmware.table),
        (app_part.offset, firmware.app),
        (vfs.offset, vfs_image),
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        out = merge_bin(parts, "esp32", output=None, pad_to_size=_size_name(flash_size))
    assert out is not None
    if len(out) != flash_size:
        raise LayoutError(f"merged image is {len(out)} bytes, not {flash_size}")
    return out


def _size_name(size: int) -> str:
    return f"{size // (1024 * 1024)}MB"


def read_region(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
