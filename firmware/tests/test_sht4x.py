from fake_i2c import ENODEV, ETIMEDOUT, FakeI2C, FakeSht4x
from mptest import raises, run

from tracker.sensing.sht4x import CrcError, SensorBusError, Sht4x, sensirion_crc8


def rig(addr=0x44, **kw):
    bus = FakeI2C()
    dev = bus.attach(addr, FakeSht4x(**kw))
    return bus, dev, Sht4x(bus, addr)


def close(a, b):
    return abs(a - b) < 1e-6


def test_crc_vectors_from_datasheet():
    assert sensirion_crc8(b"\xbe\xef") == 0x92
    assert sensirion_crc8(b"\xff\xff") == 0xAC
    # start/end select a word inside a reply buffer
    assert sensirion_crc8(b"\x00\xbe\xef\x92", 1, 3) == 0x92
    assert sensirion_crc8(bytearray(b"\x12\xff\xff"), 1) == 0xAC


def test_measure_converts_known_raw_values():
    bus, dev, sht = rig(raw_t=0x6666, raw_rh=0x6666)
    t, rh = run(sht.measure())
    assert close(t, 25.0)  # -45 + 175 * 0.4
    assert close(rh, 44.0)  # -6 + 125 * 0.4
    # one high-precision command, then one 6-byte read of the reply
    assert bus.transactions[0] == ("w", 0x44, b"\xfd")
    assert bus.transactions[1][0:2] == ("r", 0x44) and len(bus.transactions[1][2]) == 6
    assert sht.reads == 1 and sht.crc_errors == 0 and sht.bus_errors == 0


def test_measure_scale_ends_and_humidity_clamp():
    bus, dev, sht = rig(raw_t=0, raw_rh=0)
    t, rh = run(sht.measure())
    assert close(t, -45.0)
    assert rh == 0.0  # formula gives -6 %, clamped
    dev.raw_t, dev.raw_rh = 0xFFFF, 0xFFFF
    t, rh = run(sht.measure())
    assert close(t, 130.0)
    assert rh == 100.0  # formula gives 119 %, clamped


def test_precision_selects_command():
    bus, dev, sht = rig()
    run(sht.measure("medium"))
    run(sht.measure("low"))
    run(sht.measure("high"))
    assert dev.commands == [0xF6, 0xE0, 0xFD]
    with raises(ValueError):
        run(sht.measure("ultra"))


def test_fake_nacks_a_read_before_the_measurement_is_done():
    # This is what makes the next test meaningful: a driver that reads without awaiting
    # the conversion time gets a NACK.
    bus, dev, sht = rig()
    bus.writeto(0x44, b"\xfd")
    with raises(OSError):
        bus.readfrom(0x44, 6)


def test_measure_waits_long_enough_at_every_precision():
    bus, dev, sht = rig()
    for precision in ("high", "medium", "low"):
        for _ in range(3):
            run(sht.measure(precision))
    assert sht.bus_errors == 0


def test_one_bad_crc_is_retried_with_a_fresh_measurement():
    bus, dev, sht = rig(raw_t=0x6666)
    dev.corrupt_replies = 1
    t, rh = run(sht.measure())
    assert close(t, 25.0)
    assert dev.commands == [0xFD, 0xFD]
    assert sht.crc_errors == 1 and sht.reads == 2


def test_two_bad_crcs_raise_crc_error():
    bus, dev, sht = rig()
    dev.corrupt_replies = 2
    with raises(CrcError) as err:
        run(sht.measure())
    assert err.value.cmd == 0xFD and err.value.word == 0
    assert sht.crc_errors == 2
    # the sensor is fine again afterwards
    t, rh = run(sht.measure())
    assert close(t, 25.0)


class FloatingBus:
    """SDA pulled up with nothing driving it: every byte reads 0xFF."""

    def write(self, data):
        pass

    def read(self, n):
        return b"\xff" * n


def test_floating_bus_reading_all_ff_is_rejected_not_reported():
    bus = FakeI2C()
    bus.attach(0x44, FloatingBus())
    sht = Sht4x(bus)
    with raises(CrcError):
        run(sht.measure())


def test_missing_sensor_nack_is_a_counted_bus_error():
    bus = FakeI2C()  # nothing at 0x44
    sht = Sht4x(bus)
    with raises(SensorBusError) as err:
        run(sht.measure())
    assert err.value.errno == ENODEV
    assert isinstance(err.value, OSError)
    assert "0xfd" in err.value.op
    assert sht.bus_errors == 1 and sht.crc_errors == 0


def test_stuck_bus_reports_etimedout():
    bus, dev, sht = rig()
    bus.stuck = True
    with raises(SensorBusError) as err:
        run(sht.measure())
    assert err.value.errno == ETIMEDOUT
    assert sht.bus_errors == 1


def test_nack_on_the_read_is_a_bus_error_too():
    class LosesReply(FakeSht4x):
        def read(self, n):
            raise OSError(ENODEV)

    bus = FakeI2C()
    bus.attach(0x44, LosesReply())
    sht = Sht4x(bus)
    with raises(SensorBusError) as err:
        run(sht.measure())
    assert err.value.op.startswith("read")


def test_second_address_part():
    bus, dev, sht = rig(addr=0x45, raw_t=0x6666)
    t, rh = run(sht.measure())
    assert close(t, 25.0)
    with raises(SensorBusError):
        run(Sht4x(bus).measure())  # default 0x44 is not there


def test_serial_number():
    bus, dev, sht = rig(serial=0x0BADCAFE)
    assert run(sht.serial_number()) == 0x0BADCAFE
    assert dev.commands == [0x89]


def test_soft_reset_then_measure():
    bus, dev, sht = rig()
    run(sht.soft_reset())
    assert dev.resets == 1
    t, rh = run(sht.measure())
    assert close(t, 25.0)


def test_soft_reset_on_missing_sensor_raises_bus_error():
    sht = Sht4x(FakeI2C())
    with raises(SensorBusError):
        run(sht.soft_reset())
    assert sht.bus_errors == 1
