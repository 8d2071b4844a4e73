# Time as an ESP32 keeps it: ticks_ms() wraps at 2^30 ms (12.4 days), ticks_diff() tells
# apart only differences below 2^29 ms (6.2 days), and small ints are 31-bit, so `t + n` past
# the wrap is a long int that the device's ticks_diff() misreads. Runs under CPython (whose
# fallback counter starts anywhere) and the Unix port.
from fake_i2c import FakeI2C, FakeSht4x
from mptest import FakeClock, TempDir, raises, run

from tracker import app, log
from tracker.aio import asyncio, ticks_add, ticks_diff, wait_for_ms
from tracker.config import Config

log.echo = False
WRAP = 1 << 30
HOUR_MS = 3600 * 1000


class FakeAdc:
    def read_uv(self):
        return 1850000


class FakeBoard:
    """What Tracker asks of a board, with the fake SHT4x on its bus and no network."""

    name = "fake"
    info = {}
    battery_divider = 2.0

    def __init__(self):
        self.bus = FakeI2C()
        self.bus.attach(0x44, FakeSht4x())

    def i2c(self):
        return self.bus

    def battery_adc(self):
        return FakeAdc()

    def reset_cause(self):
        return "power_on"

    def unique_id(self):
        return "a1b2c3d4e5f6"

    async def open_stream(self, host, port):
        raise OSError(113)  # EHOSTUNREACH: these tests never run the uplink


def tracker(root, clock, **values):
    cfg = Config()
    cfg.set("device_id", "t1")
    for name in values:
        cfg.set(name, values[name])
    # Every file the Tracker keeps, in the test's directory (its flash).
    names = ("STORE_ROOT", "ALARM_ROOT", "ALARM_STATE_PATH", "DOWNLINK_PATH")
    saved = [getattr(app, n) for n in names]
    for n in names:
        setattr(app, n, root + "/" + getattr(app, n))
    try:
        return app.Tracker(FakeBoard(), cfg, clock)
    finally:
        for i in range(len(names)):
            setattr(app, names[i], saved[i])


def test_tick_arithmetic_across_the_wrap():
    assert ticks_add(WRAP - 5, 10) == 5
    assert ticks_diff(5, WRAP - 5) == 10 and ticks_diff(WRAP - 5, 5) == -10
    assert ticks_diff(WRAP // 2 + 1, 0) < 0  # half a period apart already reads as "before"
    with raises(OverflowError):
        ticks_add(0, WRAP // 2)  # a deadline ticks_diff could not tell from the past


def test_sampling_keeps_its_interval_across_the_wrap():
    clock = FakeClock(WRAP - 450)  # the counter wraps during the 5th reading's wait
    times = []
    with TempDir() as d:
        t = tracker(d, clock, interval_s=0.1)
        sample = t.sensors.sample

        async def timed_sample():
            times.append(clock())
            return await sample()

        t.sensors.sample = timed_sample

        async def main():
            try:
                await wait_for_ms(t.sample_loop(), 1050)
            except asyncio.TimeoutError:
                pass

        run(main())
    assert times[0] > WRAP - 1000 and times[-1] < 1000, times  # the wrap was crossed
    gaps = [ticks_diff(b, a) for a, b in zip(times, times[1:])]
    # A reading every 100 ms throughout: no burst (a gap near 0) and no stall (the device
    # misreading a long-int deadline sleeps for days, or never stops catching up). As many
    # readings as the measured span holds (a loaded machine may start the loop late).
    span = ticks_diff(times[-1], times[0])
    assert len(times) >= 6 and abs(len(times) - 1 - span / 100) <= 1, (span, gaps)
    assert min(gaps) >= 50 and max(gaps) <= 250, gaps


def test_uptime_keeps_counting_for_weeks():
    # Three weeks in hourly steps (the health loop reads the uptime far more often), from
    # just below the wrap: past the 6.2 days where ticks_diff(now, start) turns negative and
    # past the second wrap at 12.4 days.
    clock = FakeClock(WRAP - 1000)
    with TempDir() as d:
        t = tracker(d, clock)
        for hour in range(1, 21 * 24 + 1):
            clock.advance(HOUR_MS)
            up = t.status()["uptime_s"]
            assert 0 <= up - hour * 3600 <= 5, (hour, up)
