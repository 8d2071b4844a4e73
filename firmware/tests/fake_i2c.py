# An honest fake I2C bus with an SHT4x on it, for driver tests on CPython and MicroPython.
#
# It speaks the sensor's wire behaviour the driver relies on: one command byte per write,
# a measurement that takes the datasheet's time (reading earlier is NACKed), 6-byte replies
# of two CRC-protected words, NACK when no reply is pending, and the ESP32 errnos
# (ENODEV for a NACK, ETIMEDOUT for a stuck bus). Its CRC is its own code, so a wrong
# driver CRC cannot agree with it by accident.
from tracker.aio import ticks_diff, ticks_ms

ENODEV = 19
ETIMEDOUT = 116


def crc8(a, b):
    crc = 0xFF
    for byte in (a, b):
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1) ^ 0x31 if crc & 0x80 else crc << 1
            crc &= 0xFF
    return crc


def _word(value):
    hi, lo = (value >> 8) & 0xFF, value & 0xFF
    return bytes((hi, lo, crc8(hi, lo)))


class FakeI2C:
    """machine.I2C look-alike: devices are objects with write(data) and read(n) -> bytes."""

    def __init__(self):
        self.devices = {}
        self.stuck = False  # every transaction fails with ETIMEDOUT (SDA held low)
        self.transactions = []  # ("w", addr, bytes) / ("r", addr, bytes)

    def attach(self, addr, device):
        self.devices[addr] = device
        return device

    def _device(self, addr):
        if self.stuck:
            raise OSError(ETIMEDOUT)
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(ENODEV)
        return dev

    def scan(self):
        return [] if self.stuck else sorted(self.devices)

    def writeto(self, addr, buf, stop=True):
        data = bytes(buf)
        self._device(addr).write(data)
        self.transactions.append(("w", addr, data))
        return len(data)

    def readfrom_into(self, addr, buf, stop=True):
        data = self._device(addr).read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]
        self.transactions.append(("r", addr, bytes(data)))

    def readfrom(self, addr, n, stop=True):
        buf = bytearray(n)
        self.readfrom_into(addr, buf)
        return bytes(buf)


# Command -> measurement time in ms. The datasheet maxima are 8.3 / 4.5 / 1.6 ms; with
# whole-millisecond ticks the fake NACKs reads earlier than 8 / 4 / 1 ms.
_MEASURE_MS = {0xFD: 8, 0xF6: 4, 0xE0: 1}


class FakeSht4x:
    def __init__(self, raw_t=0x6666, raw_rh=0x6666, serial=0x12345678):
        self.raw_t = raw_t
        self.raw_rh = raw_rh
        self.serial = serial
        self.corrupt_replies = 0  # the next N replies get a flipped CRC bit
        self.nack = 0  # the next N transactions are not acknowledged
        self.resets = 0
        self.commands = []
        self._reply = None
        self._issued = 0  # ticks_ms of the last command
        self._busy_ms = 0  # how long after it the reply is ready

    def set_celsius(self, t, rh):
        """Let the sensor see `t` degC and `rh` %RH (inverse of the datasheet formulas)."""
        self.raw_t = int((t + 45) * 65535 / 175 + 0.5)
        self.raw_rh = int((rh + 6) * 65535 / 125 + 0.5)

    def _take_nack(self):
        if self.nack:
            self.nack -= 1
            raise OSError(ENODEV)

    def write(self, data):
        self._take_nack()
        if len(data) != 1:
            raise OSError(ENODEV)
        cmd = data[0]
        self.commands.append(cmd)
        if cmd in _MEASURE_MS:
            self._reply = _word(self.raw_t) + _word(self.raw_rh)
            self._busy_ms = _MEASURE_MS[cmd]
        elif cmd == 0x89:
            self._reply = _word(self.serial >> 16) + _word(self.serial & 0xFFFF)
            self._busy_ms = 1
        elif cmd == 0x94:
            self.resets += 1
            self._reply = None
        else:
            raise OSError(ENODEV)
        self._issued = ticks_ms()

    def read(self, n):
        self._take_nack()
        if self._reply is None:
            raise OSError(ENODEV)  # nothing to send: the read header is NACKed
        if ticks_diff(ticks_ms(), self._issued) < self._busy_ms:
            raise OSError(ENODEV)  # still measuring
        reply = bytearray(self._reply)
        self._reply = None
        if self.corrupt_replies:
            self.corrupt_replies -= 1
            reply[2] ^= 0x01
        # A master that clocks out more bytes than the sensor sends reads a released bus.
        while len(reply) < n:
            reply.append(0xFF)
        return reply[:n]
