"""A simulated Sensirion SHT4x temperature/humidity sensor, as it behaves on the I2C wire.

The bench (`bench.py`) attaches it to the virtual I2C bus; the firmware's real driver talks to
it through `boards/unix_sim/simhal.py` with the real command bytes. Facts from the SHT4x
datasheet (Sensirion, "SHT4x Datasheet", v6 2023, sections 4.4-4.6):

- one-byte commands: 0xFD / 0xF6 / 0xE0 measure at high / medium / low precision,
  maximum durations 8.3 / 4.5 / 1.6 ms; 0x89 read serial number; 0x94 soft reset (max 1 ms);
  0x39 / 0x32 heater 200 mW for 1 s / 0.1 s, 0x2F / 0x24 110 mW, 0x1E / 0x15 20 mW, each
  followed by a high-precision measurement (heater on-time max 1.1 s / 0.11 s);
- the reply is 6 bytes: a 16-bit word, its CRC, a second word, its CRC (MSB first);
- Sensirion CRC-8: polynomial 0x31, init 0xFF, no final XOR (CRC(0xBE, 0xEF) = 0x92);
- T = -45 + 175 * S_T / 65535 degC, RH = -6 + 125 * S_RH / 65535 %RH;
- while a measurement runs the sensor does not acknowledge its address, so a read that
  comes too early is NACKed.

Modelling choices (not from the datasheet; marked so nobody mistakes them for facts):
- A write that arrives while the sensor is busy is NACKed like a read (check on hardware).
- A reply can be read once; reading again, or with nothing pending, is NACKed.
- A read longer than the reply clocks out 0xFF (the bus is released, pulled up).
- Serial number is ready 1 ms after the command (Sensirion's code waits 10 ms; check).
- Heater: the closing measurement sees the sensor warmed by HEATER_C_PER_MJ degC per mJ
  of heater energy (200 mW x 1 s -> +10 degC, 20 mW x 0.1 s -> +0.1 degC; the real rise
  depends on mounting and airflow), and RH for the same water content at that warmer
  temperature (Magnus formula), so RH drops as on a real part. No thermal memory: the
  next plain measurement reads the set temperature again.
- Faults: `nack` (the sensor does not answer at all: every transaction NACKed), `stuck`
  (it holds SDA low: every transaction on the whole bus times out), CRC corruption of the
  next N replies or of all replies while on (both CRC bytes are inverted, so a driver
  that checks either word sees the error).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_ADDRESS = 0x44  # SHT40-A parts; SHT40-B answers at 0x45

CMD_MEASURE_HIGH = 0xFD
CMD_MEASURE_MEDIUM = 0xF6
CMD_MEASURE_LOW = 0xE0
CMD_SERIAL = 0x89
CMD_SOFT_RESET = 0x94

# Datasheet maximum measurement durations, seconds.
MEASURE_S = {CMD_MEASURE_HIGH: 0.0083, CMD_MEASURE_MEDIUM: 0.0045, CMD_MEASURE_LOW: 0.0016}
SOFT_RESET_S = 0.001  # datasheet t_SR max 1 ms
SERIAL_S = 0.001  # modelling choice, see the module docstring

# Heater command -> (power mW, nominal pulse s, busy s = datasheet maximum heater on-time,
# the closing measurement included).
HEATER = {
    0x39: (200, 1.0, 1.1),
    0x32: (200, 0.1, 0.11),
    0x2F: (110, 1.0, 1.1),
    0x24: (110, 0.1, 0.11),
    0x1E: (20, 1.0, 1.1),
    0x15: (20, 0.1, 0.11),
}
HEATER_C_PER_MJ = 0.05  # modelled self-heating, degC per mJ of heater energy

T_MIN_C, T_MAX_C = -45.0, 130.0  # what the 16-bit temperature word can express
RH_MIN, RH_MAX = -6.0, 119.0  # what the 16-bit humidity word can express


def crc8(data: bytes) -> int:
    """Sensirion CRC-8: polynomial 0x31, init 0xFF, MSB first, no final XOR."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _word(value: int) -> bytes:
    hi_lo = bytes(((value >> 8) & 0xFF, value & 0xFF))
    return hi_lo + bytes((crc8(hi_lo),))


def _clamp_word(x: float) -> int:
    return max(0, min(65535, round(x)))


def temperature_word(celsius: float) -> int:
    """Raw S_T for a temperature: inverse of T = -45 + 175 * S / 65535, clamped to 16 bits."""
    return _clamp_word((celsius + 45.0) * 65535.0 / 175.0)


def humidity_word(pct: float) -> int:
    """Raw S_RH for a humidity: inverse of RH = -6 + 125 * S / 65535, clamped to 16 bits."""
    return _clamp_word((pct + 6.0) * 65535.0 / 125.0)


def _magnus(t: float) -> float:
    # Saturation vapour pressure exponent over water (Sensirion's dew point note: 17.62, 243.12)
    return 17.62 * t / (243.12 + t)


@dataclass
class _Pending:
    kind: str  # "measurement" | "serial" | "reset"
    ready_at: float
    reply: bytes | None  # None: nothing to read (soft reset)


class Sht4xSim:
    """An SHT4x on the bench's I2C bus.

    I2C-device interface used by the bench's bus (all calls hold the bench's lock):
    `write(data) -> bool` (False: NACK), `read(n) -> bytes | None` (None: NACK),
    `holds_bus_low` (SDA stuck: the whole bus times out), `power_cycle()`.
    """

    def __init__(
        self,
        *,
        address: int = DEFAULT_ADDRESS,
        serial_number: int = 0x0F4A_2C11,
        temperature_c: float = 21.0,
        humidity_pct: float = 45.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.serial_number = serial_number & 0xFFFF_FFFF
        self.temperature_c = temperature_c
        self.humidity_pct = humidity_pct
        self.clock = clock
        # Faults
        self.nack = False
        self.stuck = False
        self._crc_all = False
        self._crc_remaining = 0
        # Counters
        self.measurements_served = 0  # measurement replies read by the host
        self.corrupted_replies = 0
        self.nacked = 0  # transactions this sensor did not acknowledge
        self.heater_pulses = 0
        self.soft_resets = 0
        self.commands: dict[int, int] = {}  # command byte -> times accepted
        self._pending: _Pending | None = None

    # -- faults ---------------------------------------------------------------------------

    def set_crc_fault(self, on: bool, count: int | None = None) -> None:
        """Corrupt the CRCs of the next `count` replies, or of every reply while on."""
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        self._crc_all = bool(on) and count is None
        self._crc_remaining = count if (on and count is not None) else 0

    @property
    def crc_fault(self) -> dict[str, object]:
        if self._crc_all:
            return {"on": True}
        if self._crc_remaining:
            return {"on": True, "count": self._crc_remaining}
        return {"on": False}

    @property
    def holds_bus_low(self) -> bool:
        return self.stuck

    # -- the wire -------------------------------------------------------------------------

    def _busy(self, now: float) -> bool:
        return self._pending is not None and now < self._pending.ready_at

    def _nack(self) -> None:
        self.nacked += 1

    def write(self, data: bytes) -> bool:
        """One write transaction addressed to the sensor. False means it was NACKed."""
        now = self.clock()
        if self.nack or self._busy(now):
            self._nack()
            return False
        if not data:
            return True  # address-only probe (what I2C.scan() sends)
        cmd = data[0]
        if len(data) != 1 or not self._start(cmd, now):
            self._nack()  # unknown command or a trailing byte: the sensor NACKs it
            return False
        self.commands[cmd] = self.commands.get(cmd, 0) + 1
        return True

    def _start(self, cmd: int, now: float) -> bool:
        if cmd in MEASURE_S:
            reply = self._measurement(self.temperature_c, self.humidity_pct)
            self._pending = _Pending("measurement", now + MEASURE_S[cmd], reply)
        elif cmd in HEATER:
            power_mw, pulse_s, busy_s = HEATER[cmd]
            rise = HEATER_C_PER_MJ * power_mw * pulse_s
            t = self.temperature_c + rise
            # Same water content at a warmer sensor: RH falls (Magnus, as the dew point note)
            rh = self.humidity_pct * math.exp(_magnus(self.temperature_c) - _magnus(t))
            self._pending = _Pending("measurement", now + busy_s, self._measurement(t, rh))
            self.heater_pulses += 1
        elif cmd == CMD_SERIAL:
            sn = self.serial_number
            reply = _word(sn >> 16) + _word(sn & 0xFFFF)
            self._pending = _Pending("serial", now + SERIAL_S, reply)
        elif cmd == CMD_SOFT_RESET:
            self._pending = _Pending("reset", now + SOFT_RESET_S, None)
            self.soft_resets += 1
        else:
            return False
        return True

    @staticmethod
    def _measurement(t: float, rh: float) -> bytes:
        return _word(temperature_word(t)) + _word(humidity_word(rh))

    def read(self, n: int) -> bytes | None:
        """One read transaction of `n` bytes. None means the read header was NACKed."""
        now = self.clock()
        pending = self._pending
        if self.nack or pending is None or now < pending.ready_at or pending.reply is None:
            self._nack()
            return None
        if n == 0:
            return b""  # address acknowledged, no data clocked: the reply stays pending
        self._pending = None
        reply = bytearray(pending.reply)
        if self._crc_all or self._crc_remaining:
            if self._crc_remaining:
                self._crc_remaining -= 1
            reply[2] ^= 0xFF
            reply[5] ^= 0xFF
            self.corrupted_replies += 1
        if pending.kind == "measurement":
            self.measurements_served += 1
        reply.extend(b"\xff" * max(0, n - len(reply)))  # released bus reads as 0xFF
        return bytes(reply[:n])

    def power_cycle(self) -> None:
        """Power loss: a conversion in progress and an unread reply are gone."""
        self._pending = None

    def snapshot(self) -> dict[str, object]:
        now = self.clock()
        return {
            "address": self.address,
            "temperature_c": self.temperature_c,
            "humidity_pct": self.humidity_pct,
            "serial_number": self.serial_number,
            "busy": self._busy(now),
            "reply_pending": self._pending is not None and self._pending.reply is not None,
            "faults": {"nack": self.nack, "stuck": self.stuck, "crc": self.crc_fault},
            "measurements_served": self.measurements_served,
            "corrupted_replies": self.corrupted_replies,
            "nacked": self.nacked,
            "heater_pulses": self.heater_pulses,
            "soft_resets": self.soft_resets,
            "commands": {f"0x{c:02x}": k for c, k in sorted(self.commands.items())},
        }
