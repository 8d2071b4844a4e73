# Sampling temperature, humidity and battery voltage.
#
# A failed measurement gives None values and names the error; it never produces a made-up
# number. The temperature/humidity driver is any object with `async measure(precision)`
# returning (degC, %RH) and raising CrcError or OSError (Sht4x does); `async soft_reset()`
# is used for bus recovery.
import math

from tracker import log
from tracker.aio import asyncio
from tracker.sensing.sht4x import CrcError

_TAG = "sensors"
PRECISIONS = ("high", "medium", "low")
# Consecutive bus errors before a soft reset is tried, and again after every as many more.
# Three misses a row rule out a one-off glitch; the reset costs only ~10 ms.
BUS_RECOVERY_AFTER = 3


class Battery:
    """Battery voltage through a resistor divider into an ADC pin.

    `adc` has machine.ADC's read_uv() (calibrated microvolts at the pin on ESP32);
    `divider` is (R_top + R_bottom) / R_bottom, 2.0 for the common 100k/100k divider.
    """

    def __init__(self, adc, divider=2.0):
        self.adc = adc
        self.divider = divider

    def read_v(self):
        """Battery voltage in volts, rounded to millivolts."""
        return round(self.adc.read_uv() * self.divider / 1000000, 3)


def _magnus(t):
    # Magnus exponent for saturation vapour pressure over water (coefficients 17.62 and
    # 243.12 degC, as in Sensirion's dew point application note).
    return 17.62 * t / (243.12 + t)


def compensate_humidity(rh, measured_c, corrected_c):
    """RH at `corrected_c` for air that reads `rh` at `measured_c` (same dew point).

    A temperature offset that corrects self-heating means the sensor sits in warmer air than
    the room: the same water content is a higher RH at the true, lower temperature.
    """
    if measured_c == corrected_c:
        return rh
    rh = rh * math.exp(_magnus(measured_c) - _magnus(corrected_c))
    if rh < 0.0:
        return 0.0
    if rh > 100.0:
        return 100.0
    return rh


class Sensors:
    def __init__(self, sht, battery, *, precision="high", temperature_offset_c=0.0):
        """`sht` (temperature/humidity driver) or `battery` may be None when not fitted."""
        self.sht = sht
        self.battery = battery
        self.precision = "high"
        self.temperature_offset_c = 0.0
        self.configure(precision=precision, temperature_offset_c=temperature_offset_c)
        self._samples = 0
        self._failed = 0
        self._battery_errors = 0
        self._bus_recoveries = 0
        self._bus_streak = 0  # consecutive samples that ended in a bus error
        # One measurement at a time: a second command to the sensor restarts the first
        # (the CLI's `sensor` and `selftest` sample beside the sampling loop).
        self._lock = asyncio.Lock()

    def configure(self, *, precision=None, temperature_offset_c=None):
        """Apply new settings (e.g. after a config change); None leaves one as it is."""
        if precision is not None:
            if precision not in PRECISIONS:
                raise ValueError("precision must be high, medium or low, got %r" % (precision,))
            self.precision = precision
        if temperature_offset_c is not None:
            self.temperature_offset_c = float(temperature_offset_c)

    def counters(self):
        sht = self.sht
        return {
            "samples": self._samples,
            "failed_samples": self._failed,
            # The driver counts every bad reply, including ones its retry recovered.
            "crc_errors": getattr(sht, "crc_errors", 0),
            "bus_errors": getattr(sht, "bus_errors", 0),
            "bus_recoveries": self._bus_recoveries,
            "battery_errors": self._battery_errors,
        }

    async def _recover_bus(self):
        self._bus_recoveries += 1
        log.w(_TAG, "%d bus errors in a row, soft-resetting the sensor" % self._bus_streak)
        try:
            await self.sht.soft_reset()
        except OSError as err:
            log.w(_TAG, "soft reset failed: %s" % (err,))

    async def _measure(self):
        """(temperature, humidity, error) with error None, "crc" or "bus"."""
        try:
            t, rh = await self.sht.measure(self.precision)
        except CrcError as err:
            self._bus_streak = 0
            log.w(_TAG, "measurement rejected: %s" % (err,))
            return None, None, "crc"
        except OSError as err:
            self._bus_streak += 1
            if self._bus_streak == 1:
                log.w(_TAG, "sensor bus error: %s" % (err,))
            else:
                # Logged once per outage, so a dead sensor does not flood the log ring.
                log.d(_TAG, "sensor bus error %d in a row: %s" % (self._bus_streak, err))
            if self._bus_streak % BUS_RECOVERY_AFTER == 0:
                await self._recover_bus()
            return None, None, "bus"
        if self._bus_streak:
            log.i(_TAG, "sensor answers again after %d bus errors" % self._bus_streak)
            self._bus_streak = 0
        offset = self.temperature_offset_c
        if offset:
            corrected = t + offset
            rh = compensate_humidity(rh, t, corrected)
            t = corrected
        return round(t, 2), round(rh, 2), None

    async def sample(self):
        """One sample: {"temperature", "humidity", "battery", "sensor_error"}.

        Values are floats or None (failed or not fitted); sensor_error is None, "crc" or
        "bus" and describes the temperature/humidity sensor.
        """
        self._samples += 1
        t = rh = err = None
        if self.sht is not None:
            await self._lock.acquire()
            try:
                t, rh, err = await self._measure()
            finally:
                self._lock.release()
            if err is not None:
                self._failed += 1
        volts = None
        if self.battery is not None:
            try:
                volts = self.battery.read_v()
            except OSError as e:
                self._battery_errors += 1
                log.w(_TAG, "battery read failed: %s" % (e,))
        return {"temperature": t, "humidity": rh, "battery": volts, "sensor_error": err}
