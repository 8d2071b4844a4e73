"""What an ESP32 does with its flash between reset and MicroPython's first line.

The ROM loads the second-stage bootloader from 0x1000; the bootloader verifies the partition
table at 0x8000 and the factory app (header, checksum, SHA-256) and starts it; MicroPython
then mounts its "vfs" partition. The virtual board's supervisor runs this check on the flash
image file before every hard boot (a soft reset does not go through the ROM) and, like the
chip, prints the ROM's and the bootloader's messages on the console: on blank or damaged
flash the board never reaches MicroPython and resets again, forever.

The texts are the chip's own: the ESP32 ECO3 ROM (WROOM-32E: "ets Jul 29 2019 12:21:46",
"invalid header: 0x%08x" eight times then an RTC watchdog reset; "csum err" for a bad
bootloader checksum), and ESP-IDF v5.5's bootloader (flash_partitions.c, esp_image_format.c,
bootloader_utility.c), which MicroPython v1.28 builds with log level WARN, so a good boot
prints nothing of its own. Log colours are left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host_tools import flash_layout as fl

ROM_BANNER = b"ets Jul 29 2019 12:21:46\r\n\r\n"
BOOT_MODE = b"boot:0x13 (SPI_FAST_FLASH_BOOT)"
# ESP32 RTC reset reasons as the ROM names them (rom/rtc.h RESET_REASON).
POWERON_RESET = b"0x1 (POWERON_RESET)"
SW_RESET = b"0x3 (SW_RESET)"
DEEPSLEEP_RESET = b"0x5 (DEEPSLEEP_RESET)"
SW_CPU_RESET = b"0xc (SW_CPU_RESET)"
RTCWDT_BROWN_OUT_RESET = b"0xf (RTCWDT_BROWN_OUT_RESET)"
RTCWDT_RTC_RESET = b"0x10 (RTCWDT_RTC_RESET)"
INVALID_HEADER_TRIES = 8  # then the RTC watchdog resets the chip
# One failed round, ROM start to the next reset (~40 ms per header try on a real chip).
RETRY_S = 0.35


@dataclass(frozen=True)
class BootOutcome:
    """console: what the chip prints before MicroPython; vfs: the partition MicroPython
    mounts (None: the board does not boot); error: one line saying why not; next_reset: the
    reset reason of the next round when it does not boot."""

    console: bytes
    vfs: fl.Partition | None
    error: str | None = None
    next_reset: bytes = RTCWDT_RTC_RESET
    app: fl.ImageInfo | None = None


def is_full_flash(path: Path, flash_size: int | None) -> bool:
    """A full flash image is exactly the board's flash size; anything else is a bare
    littlefs image (the virtual board's older mode, kept as it was)."""
    try:
        return bool(flash_size) and os.path.getsize(path) == flash_size
    except OSError:
        return False


def boot(path: Path, flash_size: int, reset: bytes = POWERON_RESET) -> BootOutcome:
    """Run the ROM and the bootloader over the flash image at `path`."""
    with open(path, "rb") as f:
        flash = f.read()
    out = bytearray(ROM_BANNER + b"rst:" + reset + b"," + BOOT_MODE + b"\r\n")
    boot_at = fl.BOOTLOADER_OFFSET
    word = int.from_bytes(flash[boot_at : boot_at + 4], "little")
    if flash[boot_at] != fl.ESP_IMAGE_MAGIC:
        out += b"invalid header: 0x%08x\r\n" % word * INVALID_HEADER_TRIES
        return BootOutcome(bytes(out), None, f"invalid header: 0x{word:08x} at 0x1000")
    try:
        loader = fl.check_image(flash[boot_at : fl.PARTITION_TABLE_OFFSET], boot_at)
    except fl.LayoutError as e:
        # The ROM's own check of the bootloader: it prints and waits for the RTC watchdog.
        out += b"csum err\r\nets_main.c 371 \r\n"
        return BootOutcome(bytes(out), None, f"bootloader at 0x1000: {e}")
    out += (
        b"configsip: 0, SPIWP:0xee\r\n"
        b"clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n"
        b"mode:DIO, clock div:2\r\n"
    )
    for addr, length in loader.segments:
        out += b"load:0x%08x,len:%d\r\n" % (addr, length)
    out += b"entry 0x%08x\r\n" % loader.entry
    clock = _LogClock()
    table = flash[fl.PARTITION_TABLE_OFFSET : fl.PARTITION_TABLE_OFFSET + fl.MAX_PARTITION_LENGTH]
    try:
        partitions = fl.table_from_binary(table, flash_size=flash_size)
    except fl.LayoutError as e:
        out += clock.e("flash_parts", str(e))
        out += clock.e("boot", "Failed to verify partition table")
        out += clock.e("boot", "load partition table error!")
        return BootOutcome(bytes(out), None, f"partition table: {e}", SW_RESET)
    app_part = fl.factory_app(partitions)
    problem = None
    info = None
    if app_part is None:
        out += clock.e("boot", "No bootable app partitions in the partition table")
        return BootOutcome(bytes(out), None, "no factory app partition", SW_RESET)
    try:
        info = fl.check_image(flash[app_part.offset : app_part.end], app_part.offset)
        if info.length > app_part.size:
            problem = f"Image length {info.length} doesn't fit in partition length {app_part.size}"
    except fl.LayoutError as e:
        problem = str(e)
    if problem:
        out += clock.e("esp_image", problem)
        out += clock.e("boot", "Factory app partition is not bootable")
        out += clock.e("boot", "No bootable app partitions in the partition table")
        return BootOutcome(bytes(out), None, f"factory app: {problem}", SW_RESET)
    vfs = fl.vfs_partition(partitions, flash_size)
    return BootOutcome(bytes(out), vfs, None, app=info)


def rom_reset_reason(cause: str) -> bytes:
    """The ROM's rst: line for a reset of the supervisor's kind."""
    return {
        "power_on": POWERON_RESET,
        "brownout": RTCWDT_BROWN_OUT_RESET,
        "deepsleep": DEEPSLEEP_RESET,
    }.get(cause, SW_CPU_RESET)  # machine.reset(), a panic or the task watchdog: esp_restart


class _LogClock:
    """ESP_LOGE's "E (ms) tag: text" lines, the milliseconds a bootloader has run."""

    def __init__(self) -> None:
        self.ms = 31

    def e(self, tag: str, text: str) -> bytes:
        line = b"E (%d) %s: %s\r\n" % (self.ms, tag.encode(), text.encode())
        self.ms += 6
        return line


# The boot line of a reset with IO0 held low: GPIO_STRAP reads 0x03 (GPIO5 and MTDO high,
# GPIO0 low) and the ROM waits for esptool on UART0. Wording as ESP32 ECO3 chips print it.
DOWNLOAD_BOOT = b"boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
WAITING_FOR_DOWNLOAD = b"waiting for download\r\n"


def download_banner(reset: bytes = POWERON_RESET) -> bytes:
    """What the ROM prints entering serial download mode."""
    return ROM_BANNER + b"rst:" + reset + b"," + DOWNLOAD_BOOT + b"\r\n" + WAITING_FOR_DOWNLOAD


class DownloadMode:
    """The ROM's serial download mode on a board's full flash image: one RomLoader whose
    flash is the image file and whose eFuse MAC is `mac`. `send` gets its replies;
    `on_leave(reason)` is called when esptool asks it to run the firmware."""

    def __init__(
        self,
        image: Path,
        flash_size: int,
        mac: bytes,
        send: Callable[[bytes], None],
        on_leave: Callable[[str], None],
    ) -> None:
        from host_tools.vboard.esp32rom import Esp32Chip, FlashFile, RomLoader

        self.flash = FlashFile(image, flash_size)
        self.loader = RomLoader(self.flash, Esp32Chip(mac, flash_size), send, on_leave=on_leave)

    @property
    def baud(self) -> int:
        return self.loader.baud

    def enter(self) -> None:
        self.loader.reset()

    def feed(self, data: bytes) -> None:
        self.loader.feed(data)

    def close(self) -> None:
        self.flash.close()
