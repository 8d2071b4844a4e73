"""The ESP32's SPI0/1 controller in "user command" mode and the SPI NOR chip behind it: what
esptool reaches through WRITE_REG/READ_REG to read the flash's JEDEC id (RDID 0x9F), its SFDP
table (0x5A) and status registers, and to send it reset and power-mode commands.

esptool (loader.py run_spiflash_command) sets SPI_USER (which phases run), SPI_USER1 (address
and dummy lengths), SPI_USER2 (the command byte), SPI_MOSI/MISO_DLEN (bit counts - 1) and
W0..W15 (data), then writes SPI_CMD_USR (bit 18) to SPI_CMD and polls it until the controller
clears it; the bytes read back are in W0.. with the first byte in W0[7:0]."""

from __future__ import annotations

import struct

SPI_REG_BASE = 0x3FF42000  # esptool targets/esp32.py SPI_REG_BASE (SPI1, the flash's bus)
SPI_CMD = 0x00
SPI_ADDR = 0x04
SPI_USER = 0x1C
SPI_USER1 = 0x20
SPI_USER2 = 0x24
SPI_MOSI_DLEN = 0x28
SPI_MISO_DLEN = 0x2C
SPI_W0 = 0x80
SPI_W_COUNT = 16
SPI_REG_SPAN = 0x100

SPI_CMD_USR = 1 << 18
SPI_USR_COMMAND = 1 << 31
SPI_USR_ADDR = 1 << 30
SPI_USR_DUMMY = 1 << 29
SPI_USR_MISO = 1 << 28
SPI_USR_MOSI = 1 << 27
SPI_USR_ADDR_LEN_SHIFT = 26

# SPI NOR commands (JEDEC JESD216 for SFDP; the rest are common to GigaDevice/Winbond parts).
RDID = 0x9F
RDSFDP = 0x5A
RDSR = (0x05, 0x35, 0x15)
WRSR = (0x01, 0x31, 0x11)
WREN = 0x06
WRDI = 0x04
WEVSR = 0x50
RDP_RES = 0xAB  # release from deep power-down, answers the device id

GIGADEVICE = 0xC8  # JEDEC manufacturer id of the GD25Q family on many ESP32 modules
NOR_SERIAL_MEMORY_TYPE = 0x40


def capacity_code(size: int) -> int:
    """The JEDEC RDID capacity byte: log2 of the size in bytes (0x16 for 4 MiB), which
    esptool's DETECTED_FLASH_SIZES maps back to "4MB"."""
    if size <= 0 or size & (size - 1):
        raise ValueError(f"flash size {size:#x} is not a power of two")
    return size.bit_length() - 1


class SpiNorChip:
    """The flash chip's answers to commands sent outside the memory array."""

    def __init__(self, size: int, manufacturer: int = GIGADEVICE) -> None:
        self.size = size
        self.jedec = bytes((manufacturer, NOR_SERIAL_MEMORY_TYPE, capacity_code(size)))
        self.status = [0x00, 0x00, 0x00]
        self.write_enabled = False
        self.sfdp = self._sfdp_table()
        self.commands: list[int] = []  # every command byte seen, for tests and logs

    def _sfdp_table(self) -> bytes:
        """A JESD216 SFDP area: the "SFDP" signature, two parameter headers (the basic flash
        parameter table and the vendor's, whose id is the manufacturer id - esptool reads
        that byte at 0x10 to tell XMC chips apart) and the basic table with the density."""
        table = bytearray(b"\xff" * 0x100)
        table[0:8] = b"SFDP" + bytes((0x06, 0x01, 0x01, 0xFF))
        table[8:16] = bytes((0x00, 0x06, 0x01, 0x10, 0x30, 0x00, 0x00, 0xFF))
        table[16:24] = bytes((self.jedec[0], 0x00, 0x01, 0x03, 0x90, 0x00, 0x00, 0xFF))
        bfpt = [0xFFF920E5, self.size * 8 - 1] + [0xFFFFFFFF] * 14
        table[0x30:0x70] = struct.pack("<16I", *bfpt)
        return bytes(table)

    def transfer(self, command: int, address: int | None, mosi: bytes, miso_len: int) -> bytes:
        """Run one command; return the `miso_len` bytes the chip shifts out (0xFF where it
        drives nothing: the MISO line's pull-up)."""
        self.commands.append(command)
        out = b""
        if command == RDID:
            out = self.jedec
        elif command == RDSFDP:
            start = address or 0
            out = self.sfdp[start : start + miso_len]
        elif command in RDSR:
            out = bytes((self.status[RDSR.index(command)],))
        elif command == RDP_RES:
            out = self.jedec[2:3]
        elif command in (WREN, WEVSR):
            self.write_enabled = True
        elif command == WRDI:
            self.write_enabled = False
        elif command in WRSR and self.write_enabled:
            first = WRSR.index(command)
            for i, b in enumerate(mosi[: 3 - first]):
                self.status[first + i] = b & 0xFC  # WIP and WEL are read-only
            self.write_enabled = False
        return (out + b"\xff" * miso_len)[:miso_len]


class SpiUserController:
    """SPI1's register file; a write of SPI_CMD_USR runs the user command at once (so the
    bit reads back clear: the transfer has finished before esptool polls)."""

    def __init__(self, chip: SpiNorChip) -> None:
        self.chip = chip
        self.regs: dict[int, int] = {}

    @staticmethod
    def owns(addr: int) -> bool:
        return SPI_REG_BASE <= addr < SPI_REG_BASE + SPI_REG_SPAN

    def read(self, addr: int) -> int:
        return self.regs.get(addr - SPI_REG_BASE, 0)

    def write(self, addr: int, value: int) -> None:
        offset = addr - SPI_REG_BASE
        if offset == SPI_CMD and value & SPI_CMD_USR:
            self._run_user_command()
            value &= ~SPI_CMD_USR
        self.regs[offset] = value & 0xFFFFFFFF

    def _data(self, nbytes: int) -> bytes:
        words = [self.regs.get(SPI_W0 + 4 * i, 0) for i in range(SPI_W_COUNT)]
        return struct.pack("<16I", *words)[:nbytes]

    def _run_user_command(self) -> None:
        user = self.regs.get(SPI_USER, 0)
        user1 = self.regs.get(SPI_USER1, 0)
        command = self.regs.get(SPI_USER2, 0) & 0xFF
        address = None
        if user & SPI_USR_ADDR:
            addr_bits = ((user1 >> SPI_USR_ADDR_LEN_SHIFT) & 0x3F) + 1
            address = self.regs.get(SPI_ADDR, 0) >> (32 - addr_bits)  # sent MSB first
        mosi = b""
        if user & SPI_USR_MOSI:
            mosi = self._data((self.regs.get(SPI_MOSI_DLEN, 0) + 1 + 7) // 8)
        miso_len = 0
        if user & SPI_USR_MISO:
            miso_len = min((self.regs.get(SPI_MISO_DLEN, 0) + 1 + 7) // 8, 4 * SPI_W_COUNT)
        out = self.chip.transfer(command, address, mosi, miso_len)
        if out:
            buf = bytearray(self._data(4 * SPI_W_COUNT))
            buf[: len(out)] = out  # the rest of the data registers keeps its bytes
            for i, word in enumerate(struct.unpack("<16I", buf)):
                self.regs[SPI_W0 + 4 * i] = word
