# Board factory of the virtual board (MicroPython Unix port + the simulated bench).
#
# The firmware imports `board` and calls create(); it gets a Board whose i2c(), battery_adc()
# and open_stream() behave like the real board's, so the app cannot tell it is virtual.
# Peripherals live in simhal.py (next to this file); resets and the chip ID come from the
# ROM's `machine`, imported only when used so this file also imports on CPython.
import asyncio
import json

import simhal

# machine.reset_cause() values (ESP32 numbering, which the virtual ROM uses too).
_CAUSES = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deepsleep", 5: "soft"}
# The ESP32's own reset reason (RTC_CNTL_RESET_STATE_REG bits 0..5); 15 = brown-out.
_RTC_CNTL_RESET_STATE_REG = 0x3FF48034
_BROWN_OUT_RESET = 15


def _info_path():
    # board.json sits beside this file: at "/" on the device, in boards/unix_sim/ in a tree.
    try:
        here = __file__
    except NameError:
        return "board.json"
    i = here.rfind("/")
    return here[: i + 1] + "board.json" if i >= 0 else "board.json"


class _Duplex:
    # CPython's open_connection returns a reader and a writer; MicroPython's returns one
    # Stream twice. The app wants one object with both halves.
    def __init__(self, reader, writer):
        self.read = reader.read
        self.readexactly = reader.readexactly
        self.readline = reader.readline
        self.write = writer.write
        self.drain = writer.drain
        self.close = writer.close
        self.wait_closed = writer.wait_closed


class Board:
    def __init__(self, info):
        self.info = info
        self.name = info.get("name", "unix_sim")
        self.battery_divider = float(info.get("battery_divider", 2.0))
        self._i2c = None
        self._adc = None

    def i2c(self):
        """The sensor bus (machine.I2C API); the same object on every call."""
        if self._i2c is None:
            self._i2c = simhal.I2C(self.info.get("i2c", {}).get("id", 0))
        return self._i2c

    def battery_adc(self):
        """ADC on the battery divider (machine.ADC API: read_uv(), read_u16())."""
        if self._adc is None:
            self._adc = simhal.ADC(self.info.get("battery", {}).get("adc", "battery"))
        return self._adc

    async def open_stream(self, host, port):
        """A TCP stream to host:port (the host's network stands in for the modem)."""
        reader, writer = await asyncio.open_connection(host, port)
        if reader is writer:
            return reader
        return _Duplex(reader, writer)

    # -- the cellular modem (board.json "modem"; None when the board has none) -------------

    @property
    def modem_info(self):
        return self.info.get("modem")

    def modem_stream(self):
        """The modem UART as an asyncio stream (read/write/drain), as on the ESP32 where it
        is asyncio.StreamReader(machine.UART(...))."""
        import simuart

        uart = self.info["modem"].get("uart", {})
        # The same board.json keys as the ESP32 boards; the pty has its own buffers, so the
        # sizes are taken and ignored (simuart.UART).
        self._uart = simuart.UART(
            uart.get("id", 1),
            uart.get("baudrate", 115200),
            rxbuf=uart.get("rxbuf", 256),
            txbuf=uart.get("txbuf", 256),
        )
        return asyncio.StreamReader(self._uart.stream())

    def gnss_stream(self):
        """A standalone GNSS receiver's UART (board.json gnss.uart): a pty whose other end
        is the bench's GNSS simulator (host_tools/vboard/gnss), paced at its baud rate."""
        import simuart

        uart = self.info["gnss"].get("uart", {})
        self._gnss_uart = simuart.UART(uart.get("id", 2), uart.get("baudrate", 9600))
        return asyncio.StreamReader(self._gnss_uart.stream())

    def gnss_enable(self):
        """The receiver's power-enable pin (a bench GPIO), or None: always on."""
        spec = (self.info.get("gnss") or {}).get("enable")
        return simhal.Pin(spec["pin"]) if spec else None

    def _modem_pin(self, role):
        spec = (self.info.get("modem") or {}).get(role)
        return simhal.Pin(spec["pin"]) if spec else None

    def modem_pins(self):
        """{"pwrkey": Pin|None, "pwrkey_active": level, "power": ..., "status": ...}"""
        info = self.info.get("modem") or {}
        return {
            "pwrkey": self._modem_pin("pwrkey"),
            "pwrkey_active": (info.get("pwrkey") or {}).get("active", 1),
            "power": self._modem_pin("power"),
            "power_active": (info.get("power") or {}).get("active", 1),
            "status": self._modem_pin("status"),
            # The level STATUS reads while the modem runs; the bench's line follows it.
            "status_active": (info.get("status") or {}).get("active", 1),
        }

    def set_time(self, unix_s):
        """Set the RTC from Unix seconds UTC through machine.RTC, as the ESP32 boards do (the
        Unix port counts from 1970 where ESP32 MicroPython counts from 2000)."""
        import time

        from machine import RTC

        y, mo, d, h, mi, s, wd = time.gmtime(unix_s)[:7]
        RTC().datetime((y, mo, d, wd, h, mi, s, 0))

    def reset(self):
        import machine

        machine.reset()

    def watchdog(self, timeout_ms):
        """machine.WDT(timeout=timeout_ms): resets the board (WDT_RESET) unless fed in time.
        It cannot be stopped; called again, the same watchdog takes the new timeout."""
        import machine

        return machine.WDT(timeout=timeout_ms)

    def reset_cause(self):
        """power_on, brownout, hard, watchdog, deepsleep, soft (unknown for anything else).
        As the ESP32 boards do (boards/esp32_generic_sim7600/esp32_board.py, repeated here so
        this folder stays self-sufficient): a power-on reset is a brown-out when the chip's
        reset-reason register says 15, which the virtual ROM's machine.mem32 answers."""
        import machine

        cause = _CAUSES.get(machine.reset_cause(), "unknown")
        if cause == "power_on" and hasattr(machine, "mem32"):
            if machine.mem32[_RTC_CNTL_RESET_STATE_REG] & 0x3F == _BROWN_OUT_RESET:
                return "brownout"
        return cause

    def unique_id(self):
        """The chip ID as lowercase hex (the ESP32's is its base MAC address)."""
        import machine

        return "".join("%02x" % b for b in machine.unique_id())


def create(info_path=None):
    with open(info_path or _info_path()) as f:
        info = json.load(f)
    return Board(info)
