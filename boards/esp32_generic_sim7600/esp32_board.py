# What every ESP32 + cellular-modem board has in common: machine objects built from the board's
# board.json (pins, buses, modem wiring), the reset cause with brown-out, the RTC and the chip ID.
# A board's board.py only names the board and calls create() below.
#
# One file, two board folders: boards/esp32_generic_sim7600/esp32_board.py is the file and
# boards/lilygo_t_sim7600/esp32_board.py a symlink to it. The image builder copies every .py and
# .json of a board folder to the device root (host_tools/image.py board_files), so on the device
# each board is one self-sufficient set of files; in the tree there is one copy to maintain.
#
# `machine` is imported when a method runs, so the file also imports on CPython for checks.
import json

# machine.reset_cause() values on the ESP32 port (ports/esp32/modmachine.c).
_CAUSES = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deepsleep", 5: "soft"}
# MicroPython maps ESP_RST_BROWNOUT to PWRON_RESET (modmachine.c, mp_machine_reset_cause), and
# neither `machine` nor `esp32` has another reset API. The chip still knows: the PRO CPU's
# reset reason is RTC_CNTL_RESET_STATE_REG bits 0..5 (ESP32 TRM, RTC_CNTL registers: DR_REG_
# RTCCNTL_BASE 0x3FF48000 + 0x34), in the ROM's RESET_REASON codes, where 15 is
# RTCWDT_BROWN_OUT_RESET ("reset when the vdd voltage is not stable"; ESP-IDF's
# esp_reset_reason() derives ESP_RST_BROWNOUT from it). Original ESP32 only: the S2/S3/C3 have
# the register elsewhere. (check on a board: a bench supply dipped below ~2.4 V for 10 ms)
RTC_CNTL_RESET_STATE_REG = 0x3FF48034
RESET_REASON_MASK = 0x3F
BROWN_OUT_RESET = 15

# Modem UART buffers (board.json modem.uart). At 115200 baud 8N1 a byte takes 86.8 us.
# machine.UART.write() on the ESP32 (uart_write_bytes) returns once the data is in the TX ring
# buffer plus the 128-byte hardware FIFO; the port's default ring is 256 bytes
# (ports/esp32/machine_uart.c), so a 1460-byte socket send waits for about 1460 - 256 - 128 =
# 1076 bytes to leave: ~93 ms with the whole event loop stopped (no URC reading, no sampling,
# no watchdog feed). txbuf 2048 holds a full send (1460 bytes, max_send of the drivers) with
# room to spare: the write returns at once and the UART drains it in the background (~127 ms).
# rxbuf 4096 is 355 ms of continuous input at 115200: a 1460-byte read answer plus a burst of
# URCs (MODEMS.md: the 256-byte default overflows). Both come from the IDF heap, not the
# MicroPython GC heap: 6 KB of internal RAM, allocated once.
TXBUF = 2048
RXBUF = 4096


def info_path():
    """board.json beside this file: at "/" on the device (and when frozen, where there is no
    __file__), in the board folder in a tree (the LilyGO's copy is a symlink, whose path is
    kept, so it finds the LilyGO's board.json)."""
    try:
        here = __file__
    except NameError:
        return "board.json"
    i = here.rfind("/")
    return here[: i + 1] + "board.json" if i >= 0 else "board.json"


def reset_cause(machine):
    """machine.reset_cause() as a name, and "brownout" for a power-on reset that the chip's
    reset-reason register says was a brown-out."""
    cause = _CAUSES.get(machine.reset_cause(), "unknown")
    if cause == "power_on":
        try:
            reason = machine.mem32[RTC_CNTL_RESET_STATE_REG] & RESET_REASON_MASK
        except (AttributeError, OSError, ValueError):  # a build without machine.mem32
            return cause
        if reason == BROWN_OUT_RESET:
            return "brownout"
    return cause


class Esp32Board:
    def __init__(self, info, name):
        self.info = info
        self.name = info.get("name", name)
        self.battery_divider = float(info.get("battery_divider", 2.0))
        self._i2c = None
        self._adc = None
        self._held = {}  # modem control lines held at a defined level (see modem_pins)

    def i2c(self):
        """The external sensor bus (hardware I2C); the same object on every call."""
        if self._i2c is None:
            from machine import I2C, Pin

            cfg = self.info["i2c"]
            # 100 kHz: an SHT4x on a few tens of cm of cable is reliable there; the part
            # itself allows up to 1 MHz ("I2C FM+" in the datasheet's features).
            self._i2c = I2C(
                cfg.get("id", 0),
                scl=Pin(cfg["scl"]),
                sda=Pin(cfg["sda"]),
                freq=cfg.get("freq", 100000),
            )
        return self._i2c

    def battery_adc(self):
        """ADC on the battery divider (an ADC1 pin: ADC2 is unusable while Wi-Fi runs)."""
        if self._adc is None:
            from machine import ADC, Pin

            adc = ADC(Pin(self.info["battery"]["adc_pin"]))
            # 11 dB: the only range that covers a 4.2 V cell through a /2 divider (2.1 V).
            adc.atten(ADC.ATTN_11DB)
            self._adc = adc
        return self._adc

    async def open_stream(self, host, port):
        # No network of its own: every byte goes through the modem, which the app drives
        # through modem_stream()/modem_pins() below.
        raise NotImplementedError("no native network on this board: use the modem")

    @property
    def modem_info(self):
        return self.info.get("modem")

    def modem_stream(self):
        """The modem's UART as an asyncio stream, with the buffers of board.json (see TXBUF)."""
        import asyncio

        from machine import UART

        cfg = self.info["modem"]["uart"]
        uart = UART(cfg["id"], baudrate=cfg.get("baudrate", 115200), tx=cfg["tx"],
                    rx=cfg["rx"], txbuf=cfg.get("txbuf", TXBUF),
                    rxbuf=cfg.get("rxbuf", RXBUF))  # fmt: skip
        return asyncio.StreamReader(uart)

    def gnss_stream(self):
        """A standalone GNSS receiver's UART (board.json gnss.uart) as an asyncio stream. Its
        RX ring holds a few seconds of NMEA (about 500 B/s at 1 Hz) while the loop is busy."""
        import asyncio

        from machine import UART

        cfg = self.info["gnss"]["uart"]
        uart = UART(cfg["id"], baudrate=cfg.get("baudrate", 9600), tx=cfg["tx"], rx=cfg["rx"],
                    rxbuf=cfg.get("rxbuf", 1024))  # fmt: skip
        return asyncio.StreamReader(uart)

    def gnss_enable(self):
        """The receiver's power-enable pin (board.json gnss.enable), or None: always on."""
        from machine import Pin

        spec = (self.info.get("gnss") or {}).get("enable")
        return Pin(spec["pin"], Pin.OUT) if spec else None

    def modem_pins(self):
        """The pins the modem driver uses (PWRKEY, power switch, STATUS with its polarity),
        after holding the lines it does not use at a defined level (hold_idle_lines)."""
        from machine import Pin

        info = self.info["modem"]
        self.hold_idle_lines()
        pwrkey = info.get("pwrkey")
        status = info.get("status")
        power = info.get("power")
        active = pwrkey.get("active", 1) if pwrkey else 1
        return {
            # Released (1 - active) from the first instant: a floating key could press itself.
            "pwrkey": Pin(pwrkey["pin"], Pin.OUT, value=1 - active) if pwrkey else None,
            "pwrkey_active": active,
            "power": Pin(power["pin"], Pin.OUT) if power else None,
            "power_active": power.get("active", 1) if power else 1,
            # A hint only: the driver confirms every on/off decision with AT (modem.py).
            "status": Pin(status["pin"], Pin.IN) if status else None,
            "status_active": status.get("active", 1) if status else 1,
        }

    def hold_idle_lines(self):
        """Modem control lines the firmware does not switch, held at a defined level instead
        of floating (board.json modem.flight / dtr / ri; a line that is null is not wired):
        - FLIGHT (SIM7600 FLIGHTMODE): flight mode while at `active`; held at the other level,
          RF on (LilyGO's examples: "exit airplane mode", pin HIGH).
        - DTR: held at `level`, 0 on both boards: DTR asserted, so the modem never sleeps under
          AT+CSCLK=1 (it sleeps only while DTR is high) and never sees the ON-to-OFF edge that
          AT&D1/&D2 act on (LilyGO's examples: "pull down DTR to ensure the modem is not in
          sleep state").
        - RI: an output of the modem (ring/URC indicator): an input here, so two drivers never
          fight over the line. Nothing reads it yet.
        Between the MCU's reset and this call the lines float (ESP32 GPIOs reset to inputs);
        the modem's or the breakout's pulls decide then."""
        if self._held:
            return
        from machine import Pin

        info = self.info["modem"]
        flight = info.get("flight")
        if flight:
            self._held["flight"] = Pin(flight["pin"], Pin.OUT, value=1 - flight.get("active", 0))
        dtr = info.get("dtr")
        if dtr:
            self._held["dtr"] = Pin(dtr["pin"], Pin.OUT, value=dtr.get("level", 0))
        ri = info.get("ri")
        if ri:
            self._held["ri"] = Pin(ri["pin"], Pin.IN)

    def set_time(self, unix_s):
        """Set the RTC (MicroPython's ESP32 epoch is 2000-01-01) from Unix seconds UTC."""
        import time

        from machine import RTC

        y, mo, d, h, mi, s, wd, _ = time.gmtime(unix_s - 946684800)
        RTC().datetime((y, mo, d, wd, h, mi, s, 0))

    def reset(self):
        import machine

        machine.reset()

    def watchdog(self, timeout_ms):
        """machine.WDT(timeout=timeout_ms): resets the chip (WDT_RESET) unless fed in time.
        It cannot be stopped; called again, the same watchdog takes the new timeout
        (ports/esp32/machine_wdt.c)."""
        import machine

        return machine.WDT(timeout=timeout_ms)

    def reset_cause(self):
        """power_on, brownout, hard, watchdog, deepsleep, soft (unknown for anything else)."""
        import machine

        return reset_cause(machine)

    def unique_id(self):
        """The chip ID (the ESP32's base MAC address) as lowercase hex."""
        import machine

        return "".join("%02x" % b for b in machine.unique_id())


def create(name, path=None):
    """The Board of the board.json at `path`, or of the one beside this file."""
    with open(path or info_path()) as f:
        info = json.load(f)
    return Esp32Board(info, name)
