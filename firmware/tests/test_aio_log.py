from mptest import run

from tracker import aio, log


def test_ticks_diff_wraps():
    a = aio.ticks_add(0, -500)  # 500 ms below the wrap (2^30 ms on the device)
    later = aio.ticks_add(a, 1500)
    assert later == 1000 and a > later  # the counter wrapped between the two
    assert aio.ticks_diff(later, a) == 1500
    assert aio.ticks_diff(a, later) == -1500
    now = aio.ticks_ms()  # and wherever the counter is now
    assert aio.ticks_diff(aio.ticks_add(now, 1500), now) == 1500


def test_sleep_and_wait_for_ms_timeout():
    async def slow():
        await aio.sleep_ms(1000)

    async def main():
        try:
            await aio.wait_for_ms(slow(), 20)
        except aio.TimeoutError:
            return "timeout"
        return "finished"

    assert run(main()) == "timeout"


def test_log_ring_keeps_newest_and_counts_warnings():
    log.echo = False
    before = log.counts[log.WARNING]
    for n in range(40):
        log.w("t", "m%d" % n)
    entries = log.recent()
    assert len(entries) == 32
    assert entries[-1][3] == "m39" and entries[0][3] == "m8"
    assert log.counts[log.WARNING] == before + 40
    log.echo = True


def test_unix_time_is_after_2020():
    assert aio.unix_time() > 1577836800
