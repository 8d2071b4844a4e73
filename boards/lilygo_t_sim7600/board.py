# Board factory of the LilyGO T-SIM7600 (ESP32-WROVER-B + SIM7600). Pin numbers come from
# board.json (sources cited there); this file only turns them into machine objects.
# `machine` is imported when a method runs, so the file also imports on CPython for checks.
import json

# machine.reset_cause() values on the ESP32 port.
_CAUSES = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deepsleep", 5: "soft"}


def _info_path():
    try:
        here = __file__
    except NameError:
        return "board.json"
    i = here.rfind("/")
    return here[: i + 1] + "board.json" if i >= 0 else "board.json"


class Board:
    def __init__(self, info):
        self.info = info
        self.name = info.get("name", "lilygo_t_sim7600")
        self.battery_divider = float(info.get("battery_divider", 2.0))
        self._i2c = None
        self._adc = None
        self._flight = None

    def i2c(self):
        """The external sensor bus (hardware I2C 0); the same object on every call."""
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
        """ADC on the battery divider (GPIO35 is on ADC1, which Wi-Fi never blocks)."""
        if self._adc is None:
            from machine import ADC, Pin

            adc = ADC(Pin(self.info["battery"]["adc_pin"]))
            # 11 dB: the only range that covers a 4.2 V cell through a /2 divider (2.1 V).
            adc.atten(ADC.ATTN_11DB)
            self._adc = adc
        return self._adc

    async def open_stream(self, host, port):
        # This board has no network of its own: every byte goes through the modem, which
        # the app drives through modem_stream()/modem_pins() below.
        raise NotImplementedError("no native network on this board: use the modem")

    @property
    def modem_info(self):
        return self.info.get("modem")

    def modem_stream(self):
        """The SIM7600's UART as an asyncio stream, with a 4 KB RX buffer (board.json)."""
        import asyncio

        from machine import UART, Pin

        cfg = self.info["modem"]["uart"]
        if self._flight is None and self.info["modem"].get("flight"):
            # RF on: the LilyGO example holds FLIGHT high for the radio to work.
            self._flight = Pin(self.info["modem"]["flight"]["pin"], Pin.OUT, value=1)
        uart = UART(cfg["id"], baudrate=cfg.get("baudrate", 115200), tx=cfg["tx"],
                    rx=cfg["rx"], rxbuf=cfg.get("rxbuf", 4096))  # fmt: skip
        return asyncio.StreamReader(uart)

    def modem_pins(self):
        from machine import Pin

        info = self.info["modem"]
        pwrkey = info.get("pwrkey")
        status = info.get("status")
        power = info.get("power")
        active = pwrkey.get("active", 1) if pwrkey else 1
        return {
            "pwrkey": Pin(pwrkey["pin"], Pin.OUT, value=1 - active) if pwrkey else None,
            "pwrkey_active": active,
            "power": Pin(power["pin"], Pin.OUT) if power else None,
            "power_active": power.get("active", 1) if power else 1,
            "status": Pin(status["pin"], Pin.IN) if status else None,
        }

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
        """machine.WDT(timeout=timeout_ms): resets the board (WDT_RESET) unless fed in time.
        It cannot be stopped; called again, the same watchdog takes the new timeout."""
        import machine

        return machine.WDT(timeout=timeout_ms)

    def reset_cause(self):
        """One of power_on, hard, watchdog, deepsleep, soft (unknown for anything else)."""
        import machine

        return _CAUSES.get(machine.reset_cause(), "unknown")

    def unique_id(self):
        """The chip ID (the ESP32's base MAC address) as lowercase hex."""
        import machine

        return "".join("%02x" % b for b in machine.unique_id())


def create(info_path=None):
    with open(info_path or _info_path()) as f:
        info = json.load(f)
    return Board(info)
