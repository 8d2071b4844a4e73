"""The numbers of the ESP32 serial download protocol: command ops (esptool loader.py
ESPLoader.ESP_CMDS), the ROM's and the stubs' error codes, the SYNC payload and the data
checksum (esptool docs "Serial Protocol"), shared by the loader and its tests."""

from __future__ import annotations

# Commands (esptool ESPLoader.ESP_CMDS).
FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
READ_FLASH_SLOW = 0x0E
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH = 0xD0
ERASE_REGION = 0xD1
READ_FLASH = 0xD2
RUN_USER_CODE = 0xD3

# ROM loader error codes (docs "ROM Loader Errors"); sent as status 1, error code, 0, 0.
ROM_INVALID_MESSAGE = 0x05
ROM_FAILED_TO_ACT = 0x06
ROM_INVALID_CRC = 0x07
ROM_FLASH_WRITE_ERROR = 0x08
ROM_FLASH_READ_ERROR = 0x09
ROM_READ_LENGTH_ERROR = 0x0A
ROM_DEFLATE_ERROR = 0x0B

# Stub error codes (esptool util.py FatalError.WithResult: 0xC000.. is "<code> 00").
STUB_BAD_DATA_LEN = 0xC0
STUB_BAD_CHECKSUM = 0xC1
STUB_BAD_BLOCKSIZE = 0xC2
STUB_INVALID_COMMAND = 0xC3  # both stubs' answer to an op they do not know
STUB_FAILED_SPI_OP = 0xC4
STUB_NOT_IN_FLASH_MODE = 0xC6
STUB_INFLATE_ERROR = 0xC7
STUB_NOT_ENOUGH_DATA = 0xC8
STUB_TOO_MUCH_DATA = 0xC9

SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
# Real ESP32 ROMs answer a SYNC eight times with value 0x20120707 (traces in esptool and
# esptool-js issues); esptool reads all eight, and takes value 0 for "the stub is running".
SYNC_REPLIES = 8
ROM_SYNC_VALUE = 0x20120707
CHECKSUM_SEED = 0xEF  # ESPLoader.ESP_CHECKSUM_MAGIC
ROM_BAUD = 115200
ROM_DEFAULT_FLASH_SIZE = 2 * 1024 * 1024  # "The ROM defaults to 2MB flash size" (cmds.py)
READ_FLASH_SLOW_BLOCK = 64  # ESP32ROM.read_flash_slow: the ROM answers 64 bytes per command
OHAI = b"OHAI"  # the stub's greeting, the only unsolicited packet (docs)


def checksum(data: bytes) -> int:
    """The 8-bit XOR checksum of a data packet's payload (docs "Checksum")."""
    state = CHECKSUM_SEED
    for b in data:
        state ^= b
    return state
