# Sensirion SHT4x temperature/humidity sensor on I2C.
#
# The driver receives a machine.I2C-like object (writeto, readfrom_into) and never blocks
# the event loop: it writes a command, awaits the conversion time, then reads the reply.
# Facts from the SHT4x datasheet:
# - every reply is 16-bit words, each followed by a Sensirion CRC-8;
# - reading before a measurement is done is NACKed by the sensor;
# - T = -45 + 175 * S / 65535 degC, RH = -6 + 125 * S / 65535 %, RH clamped to 0..100.
from tracker.aio import asyncio, const, sleep_ms

DEFAULT_ADDR = const(0x44)  # SHT40-A; SHT40-B parts answer at 0x45

# Measurement commands with the wait before reading: a little over the datasheet's maximum
# measurement duration (8.3 / 4.5 / 1.6 ms), since a read that comes too early is NACKed.
_MEASURE = {
    "high": (0xFD, 10),
    "medium": (0xF6, 5),
    "low": (0xE0, 2),
}
_CMD_SERIAL = const(0x89)
_CMD_SOFT_RESET = const(0x94)
# Serial number: Sensirion's reference code waits 10 ms before reading.
_SERIAL_WAIT_MS = const(10)
# Soft reset: datasheet max 1 ms, but community drivers wait ~10 ms.
# It only runs during recovery, so take the safe figure.
_RESET_WAIT_MS = const(10)


class CrcError(Exception):
    """A reply word failed its CRC twice in a row (noise, loose wire, floating bus)."""

    def __init__(self, cmd, word, expected, got):
        super().__init__(
            "cmd 0x%02x word %d: crc 0x%02x, expected 0x%02x" % (cmd, word, got, expected)
        )
        self.cmd = cmd
        self.word = word
        self.expected = expected
        self.got = got


class SensorBusError(OSError):
    """The I2C transaction failed. `.errno` is the bus's errno (ESP32: 19 ENODEV = no ACK,
    116 ETIMEDOUT = bus stuck); `.op` says which step ("write 0xfd", "read 0xfd")."""

    def __init__(self, errno, op):
        super().__init__(errno, op)
        self.op = op


def _errno(err):
    code = getattr(err, "errno", None)
    if code is None and err.args:
        code = err.args[0]
    return code


def sensirion_crc8(data, start=0, end=None):
    """Sensirion CRC-8 over data[start:end]: polynomial 0x31, init 0xFF, no final XOR."""
    if end is None:
        end = len(data)
    crc = 0xFF
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


class Sht4x:
    def __init__(self, i2c, addr=DEFAULT_ADDR):
        self.i2c = i2c
        self.addr = addr
        self._cmd = bytearray(1)
        self._buf = bytearray(6)
        # Command, wait, read must not interleave between two callers (e.g. the sampler
        # and a CLI diagnostic), or one would read the other's reply.
        self._lock = asyncio.Lock()
        self.reads = 0  # transactions attempted (write command, wait, read reply)
        self.crc_errors = 0  # reply words that failed their CRC, retried ones included
        self.bus_errors = 0  # transactions that ended in an OSError from the bus

    def _bad_word(self, cmd):
        buf = self._buf
        for word in (0, 1):
            i = word * 3
            crc = sensirion_crc8(buf, i, i + 2)
            if crc != buf[i + 2]:
                self.crc_errors += 1
                return CrcError(cmd, word, crc, buf[i + 2])
        return None

    async def _once(self, cmd, wait_ms):
        self.reads += 1
        self._cmd[0] = cmd
        try:
            self.i2c.writeto(self.addr, self._cmd)
        except OSError as err:
            self.bus_errors += 1
            raise SensorBusError(_errno(err), "write 0x%02x" % cmd)
        await sleep_ms(wait_ms)
        try:
            self.i2c.readfrom_into(self.addr, self._buf)
        except OSError as err:
            self.bus_errors += 1
            raise SensorBusError(_errno(err), "read 0x%02x" % cmd)

    async def _transfer(self, cmd, wait_ms):
        # A bad CRC is retried once with a fresh command: the sensor does not resend a
        # reply, and one flipped bit on a long cable should not lose a sample.
        async with self._lock:
            await self._once(cmd, wait_ms)
            bad = self._bad_word(cmd)
            if bad is None:
                return
            await self._once(cmd, wait_ms)
            bad = self._bad_word(cmd)
            if bad is not None:
                raise bad

    async def measure(self, precision="high"):
        """(temperature_c, humidity_pct) from one measurement.

        Raises CrcError (after one retry), SensorBusError, or ValueError for an unknown
        precision ("high", "medium", "low").
        """
        spec = _MEASURE.get(precision)
        if spec is None:
            raise ValueError("precision must be high, medium or low, got %r" % (precision,))
        await self._transfer(spec[0], spec[1])
        buf = self._buf
        raw_t = (buf[0] << 8) | buf[1]
        raw_rh = (buf[3] << 8) | buf[4]
        t = -45.0 + 175.0 * raw_t / 65535
        rh = -6.0 + 125.0 * raw_rh / 65535
        # The RH formula spans -6..119 %; values outside 0..100 are physically impossible
        # and the datasheet says to clamp them.
        if rh < 0.0:
            rh = 0.0
        elif rh > 100.0:
            rh = 100.0
        return t, rh

    async def serial_number(self):
        """The sensor's 32-bit serial number."""
        await self._transfer(_CMD_SERIAL, _SERIAL_WAIT_MS)
        buf = self._buf
        return (buf[0] << 24) | (buf[1] << 16) | (buf[3] << 8) | buf[4]

    async def soft_reset(self):
        """Reset the sensor (command 0x94) and wait until it accepts commands again."""
        async with self._lock:
            self._cmd[0] = _CMD_SOFT_RESET
            try:
                self.i2c.writeto(self.addr, self._cmd)
            except OSError as err:
                self.bus_errors += 1
                raise SensorBusError(_errno(err), "write 0x94")
            await sleep_ms(_RESET_WAIT_MS)
