"""An ESP32 in serial download mode, for the virtual board: the ROM loader and esptool's
flasher stub as the pinned, unmodified esptool sees them over a serial line.

  slip                  SLIP framing, incremental decoder
  protocol              ops, error codes, SYNC payload, data checksum
  flashfile.FlashFile   the board's SPI NOR flash as one image file (NOR program/erase)
  chip.Esp32Chip        registers and eFuses of an ESP32-D0WD-V3 rev v3.0 (MAC from the uid)
  spi                   the SPI controller's user commands and the flash chip's answers
  stubs                 recognising esptool's flasher stubs among uploaded RAM images
  loader.RomLoader      ROM loader and stub: feed() host bytes, send() replies, baud, reset()
  transport             LinePacer (UART timing) and a socket:// server for esptool
  __main__              `serve` one board for esptool, `throughput` against the line's limit
"""

from host_tools.vboard.esp32rom.chip import Esp32Chip, mac_from_uid
from host_tools.vboard.esp32rom.flashfile import FlashFile
from host_tools.vboard.esp32rom.loader import RomLoader
from host_tools.vboard.esp32rom.transport import LinePacer, TcpSerialServer, serve_tcp

__all__ = [
    "Esp32Chip",
    "FlashFile",
    "LinePacer",
    "RomLoader",
    "TcpSerialServer",
    "mac_from_uid",
    "serve_tcp",
]
