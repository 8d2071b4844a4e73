import math

from fake_i2c import FakeI2C, FakeSht4x
from mptest import raises, run

from tracker import log
from tracker.sensing.sensors import BUS_RECOVERY_AFTER, Battery, Sensors
from tracker.sensing.sht4x import Sht4x

log.echo = False


class FakeAdc:
    def __init__(self, uv):
        self.uv = uv

    def read_uv(self):
        if self.uv is None:
            raise OSError(5)
        return self.uv


def rig(uv=1850000, **kw):
    bus = FakeI2C()
    dev = bus.attach(0x44, FakeSht4x())
    sens = Sensors(Sht4x(bus), Battery(FakeAdc(uv)), **kw)
    return bus, dev, sens


def test_battery_scales_pin_voltage_by_divider():
    assert Battery(FakeAdc(1850000)).read_v() == 3.7
    assert Battery(FakeAdc(1234567), divider=3.0).read_v() == 3.704  # 3.703701 V, to mV


def test_sample_reports_sensor_values_rounded():
    bus, dev, sens = rig()
    dev.set_celsius(21.5, 40.0)
    s = run(sens.sample())
    assert s == {"temperature": 21.5, "humidity": 40.0, "battery": 3.7, "sensor_error": None}
    dev.raw_t, dev.raw_rh = 0x4000, 0xC000  # -1.249332... degC, 87.751430... %RH
    s = run(sens.sample())
    assert s["temperature"] == -1.25 and s["humidity"] == 87.75
    c = sens.counters()
    assert c["samples"] == 2 and c["failed_samples"] == 0


def test_precision_is_passed_to_the_sensor():
    bus, dev, sens = rig(precision="low")
    run(sens.sample())
    sens.configure(precision="medium")
    run(sens.sample())
    assert dev.commands == [0xE0, 0xF6]
    with raises(ValueError):
        sens.configure(precision="max")
    with raises(ValueError):
        Sensors(None, None, precision="HIGH!")


def test_crc_failure_gives_no_numbers_but_battery_still_read():
    bus, dev, sens = rig()
    dev.corrupt_replies = 2  # the retry fails too
    s = run(sens.sample())
    assert s == {"temperature": None, "humidity": None, "battery": 3.7, "sensor_error": "crc"}
    c = sens.counters()
    assert c["failed_samples"] == 1 and c["crc_errors"] == 2 and c["bus_errors"] == 0


def test_crc_recovered_by_retry_is_counted_but_sample_is_good():
    bus, dev, sens = rig()
    dev.corrupt_replies = 1
    s = run(sens.sample())
    assert s["sensor_error"] is None and s["temperature"] == 25.0
    c = sens.counters()
    assert c["crc_errors"] == 1 and c["failed_samples"] == 0


def test_missing_sensor_gives_bus_error():
    bus = FakeI2C()
    sens = Sensors(Sht4x(bus), Battery(FakeAdc(2000000)))
    s = run(sens.sample())
    assert s == {"temperature": None, "humidity": None, "battery": 4.0, "sensor_error": "bus"}
    assert sens.counters()["bus_errors"] == 1


def test_repeated_bus_errors_trigger_one_soft_reset_then_recover():
    bus, dev, sens = rig()
    dev.nack = BUS_RECOVERY_AFTER  # the sensor ignores the next few transactions
    for _ in range(BUS_RECOVERY_AFTER - 1):
        assert run(sens.sample())["sensor_error"] == "bus"
    assert dev.resets == 0  # not after a single glitch
    assert run(sens.sample())["sensor_error"] == "bus"
    assert dev.resets == 1
    assert sens.counters()["bus_recoveries"] == 1
    s = run(sens.sample())
    assert s["sensor_error"] is None and s["temperature"] == 25.0
    c = sens.counters()
    assert c["samples"] == BUS_RECOVERY_AFTER + 1 and c["failed_samples"] == BUS_RECOVERY_AFTER


def test_soft_reset_retried_every_few_errors_while_sensor_stays_dead():
    bus = FakeI2C()
    dev = FakeSht4x()
    sens = Sensors(Sht4x(bus), None)
    for _ in range(2 * BUS_RECOVERY_AFTER):
        assert run(sens.sample())["sensor_error"] == "bus"  # reset fails too: no exception
    assert sens.counters()["bus_recoveries"] == 2
    bus.attach(0x44, dev)  # reconnected
    assert run(sens.sample())["temperature"] == 25.0


def test_crc_error_breaks_a_bus_error_streak():
    bus, dev, sens = rig()
    dev.nack = BUS_RECOVERY_AFTER - 1
    for _ in range(BUS_RECOVERY_AFTER - 1):
        run(sens.sample())
    dev.corrupt_replies = 2
    assert run(sens.sample())["sensor_error"] == "crc"
    dev.nack = 1
    run(sens.sample())
    assert dev.resets == 0


def test_temperature_offset_corrects_humidity_at_same_dew_point():
    bus, dev, sens = rig(temperature_offset_c=-2.0)
    dev.set_celsius(25.0, 50.0)
    s = run(sens.sample())
    assert s["temperature"] == 23.0

    def vapour_pressure_hpa(t, rh):  # Magnus formula over water
        return rh / 100 * 6.112 * math.exp(17.62 * t / (243.12 + t))

    # Same water content in the air before and after the correction.
    assert abs(vapour_pressure_hpa(23.0, s["humidity"]) - vapour_pressure_hpa(25.0, 50.0)) < 0.01
    assert 56.0 < s["humidity"] < 57.0  # about 6 %RH per kelvin at room temperature


def test_offset_never_pushes_humidity_above_100():
    bus, dev, sens = rig(temperature_offset_c=-10.0)
    dev.set_celsius(30.0, 95.0)
    s = run(sens.sample())
    assert s["temperature"] == 20.0 and s["humidity"] == 100.0


def test_parts_not_fitted_give_none_without_error():
    sens = Sensors(None, None)
    s = run(sens.sample())
    assert s == {"temperature": None, "humidity": None, "battery": None, "sensor_error": None}
    assert sens.counters()["failed_samples"] == 0


def test_battery_read_failure_is_none_and_counted():
    bus, dev, sens = rig(uv=None)
    s = run(sens.sample())
    assert s["battery"] is None and s["temperature"] == 25.0 and s["sensor_error"] is None
    assert sens.counters()["battery_errors"] == 1
