"""What an ESP32-D0WD-V3 (chip revision v3.0, 40 MHz crystal) answers to register reads: the
chip-detect magic word, the eFuse words esptool decodes into MAC, package, revision and
features, the clock registers it derives the crystal from, and the SPI flash controller.

Every address and bit position here is the one esptool 5.6.0 reads (esptool/targets/esp32.py,
ESP32ROM): read_efuse(n) is a READ_REG of EFUSE_RD_REG_BASE + 4n, and
  word 1, word 2[15:0]  MAC (read_mac packs words 2 and 1 big-endian, drops the first 2 bytes)
  word 2[23:16]         MAC CRC8 (espefuse's MAC_CRC; esptool does not check it)
  word 3[0], [1]        CHIP_VER_DIS_APP_CPU, CHIP_VER_DIS_BT (0: dual core, BT)
  word 3[11:9], [2]     package version (1: ESP32-D0WD, "-V3" when the major revision is 3)
  word 3[13], [12]      CPU frequency rated / low (1, 0: 240 MHz)
  word 3[15], word 5[20], APB_CTL_DATE[31]   the three bits of the major revision (all set: 3)
  word 5[25:24]         minor revision (0)
  word 4[7:0]           CK8M frequency the ROM calibrates its crystal estimate with
  word 4[12:8]          ADC Vref calibration (non-zero: "Vref calibration in eFuse")
  word 6[1:0]           coding scheme (0: None); word 0 and 6 security bits all clear.
"""

from __future__ import annotations

from host_tools.vboard.esp32rom.spi import SpiNorChip, SpiUserController

CHIP_DETECT_MAGIC_REG_ADDR = 0x40001000  # ESPLoader.CHIP_DETECT_MAGIC_REG_ADDR
ESP32_MAGIC_VALUE = 0x00F01D83  # ESP32ROM.MAGIC_VALUE
EFUSE_RD_REG_BASE = 0x3FF5A000
APB_CTL_DATE_ADDR = 0x3FF6607C
UART_CLKDIV_REG = 0x3FF40014
RTCCALICFG1 = 0x3FF5F06C
GPIO_STRAP_REG = 0x3FF44038
RTC_CNTL_SDIO_CONF_REG = 0x3FF48074

ESPRESSIF_OUI = bytes((0x24, 0x0A, 0xC4))  # an Espressif OUI (IEEE MA-L) of ESP32 modules

XTAL_HZ = 40_000_000
# The ROM estimates its crystal from the 8 MHz RC clock: cali * 15625 * ck8m / 40 (esptool
# ESP32ROM.get_rom_cal_crystal_freq). With these two values it estimates exactly 40 MHz, so
# the baud rate esptool asks for with CHANGE_BAUDRATE is the one the UART then runs at.
CK8M_FREQ_EFUSE = 100
RTC_CALI_VALUE = 1024
ADC_VREF_EFUSE = 0x0B

STRAP_DOWNLOAD_BOOT = 0x03  # boot:0x3, DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2)


def mac_crc8(mac: bytes) -> int:
    """CRC-8 of the factory MAC as the ROM's esp_crc8() computes it (reflected polynomial
    0x8C, initial value 0; espefuse efuse/esp32/fields.py EfuseMacField.calc_crc)."""
    crc = 0
    for b in mac:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def mac_from_uid(uid: str | bytes) -> bytes:
    """The board's factory MAC: Espressif's OUI and the last three bytes of its uid (the
    virtual board's ALBATROSS_UID, 12 hex digits), so two boards with different uids differ."""
    raw = bytes.fromhex(uid) if isinstance(uid, str) else bytes(uid)
    if len(raw) < 3:
        raise ValueError(f"uid {uid!r} has fewer than 3 bytes")
    return ESPRESSIF_OUI + raw[-3:]


def efuse_words(mac: bytes) -> list[int]:
    """EFUSE_BLK0_RDATA0..6 of an ESP32-D0WD-V3 rev v3.0 whose factory MAC is `mac`."""
    if len(mac) != 6:
        raise ValueError("a MAC has 6 bytes")
    word1 = int.from_bytes(mac[2:6], "big")
    word2 = (mac_crc8(mac) << 16) | (mac[0] << 8) | mac[1]
    pkg_d0wd = 1
    word3 = (pkg_d0wd << 9) | (1 << 13) | (1 << 15)
    word4 = (ADC_VREF_EFUSE << 8) | CK8M_FREQ_EFUSE
    word5 = 1 << 20
    return [0, word1, word2, word3, word4, word5, 0]


class Esp32Chip:
    """The registers of one ESP32. Unknown addresses read 0 until written; written values
    read back (the ROM's READ_REG/WRITE_REG are plain 32-bit memory accesses)."""

    chip_name = "ESP32"

    def __init__(self, mac: bytes, flash_size: int, *, strapping: int = STRAP_DOWNLOAD_BOOT):
        self.mac = bytes(mac)
        self.flash_size = flash_size
        self.flash_chip = SpiNorChip(flash_size)
        self.spi = SpiUserController(self.flash_chip)
        self.uart_baud = 115200  # the loader keeps this current: UART_CLKDIV follows it
        self.regs: dict[int, int] = {}
        self.defaults: dict[int, int] = {
            CHIP_DETECT_MAGIC_REG_ADDR: ESP32_MAGIC_VALUE,
            APB_CTL_DATE_ADDR: (1 << 31) | 0x16042000,
            RTCCALICFG1: RTC_CALI_VALUE << 7,
            GPIO_STRAP_REG: strapping,
            RTC_CNTL_SDIO_CONF_REG: 0,
        }
        for n, word in enumerate(efuse_words(self.mac)):
            self.defaults[EFUSE_RD_REG_BASE + 4 * n] = word

    @classmethod
    def for_board(cls, uid: str | bytes, flash_size: int = 4 * 1024 * 1024) -> Esp32Chip:
        return cls(mac_from_uid(uid), flash_size)

    @property
    def description(self) -> str:
        return "ESP32-D0WD-V3 (revision v3.0)"  # what esptool prints for these eFuses

    def rom_calculated_xtal_hz(self) -> float:
        cali = (self.read_reg(RTCCALICFG1) >> 7) & 0x01FFFFFF
        ck8m = self.read_reg(EFUSE_RD_REG_BASE + 4 * 4) & 0xFF
        return cali * 15625 * ck8m / 40

    def rom_baud(self, requested: int) -> int:
        """The rate the ROM's UART ends up at for a CHANGE_BAUDRATE argument: the ROM sets
        its divider from its own crystal estimate, which is why esptool scales the argument
        (ESP32ROM.change_baud, the CK_8M drift workaround)."""
        est = self.rom_calculated_xtal_hz()
        valid = 40_000_000 if est > 33_000_000 else 26_000_000
        return max(1, round(requested * valid / est)) if est else requested

    def uart_clkdiv(self) -> int:
        """UART_CLKDIV_REG: APB (= crystal in the ROM) / baud, integer part in [19:0] and
        sixteenths in [23:20]; esptool multiplies it by its baud rate to guess the crystal."""
        div16 = round(XTAL_HZ * 16 / self.uart_baud)
        return ((div16 & 0xF) << 20) | (div16 >> 4)

    def read_reg(self, addr: int) -> int:
        if SpiUserController.owns(addr):
            return self.spi.read(addr)
        if addr == UART_CLKDIV_REG and addr not in self.regs:
            return self.uart_clkdiv()
        if addr in self.regs:
            return self.regs[addr]
        return self.defaults.get(addr, 0)

    def write_reg(self, addr: int, value: int, mask: int = 0xFFFFFFFF) -> None:
        value = (self.read_reg(addr) & ~mask | value & mask) & 0xFFFFFFFF
        if SpiUserController.owns(addr):
            self.spi.write(addr, value)
        else:
            self.regs[addr] = value

    def reset(self) -> None:
        """A chip reset clears what was written; eFuses and ROM stay."""
        self.regs.clear()
        self.spi.regs.clear()
        self.uart_baud = 115200
