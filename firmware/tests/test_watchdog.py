# The firmware's recovery (tracker/watchdog.py) with a fake clock, WDT and board: the crash
# record, safe-mode counting, liveness -> feed, MemoryError policy.
import os

from mptest import TempDir, raises, run

from tracker import watchdog as wd
from tracker.aio import asyncio, ticks_add

try:
    import micropython

    heap_lock = micropython.heap_lock
    heap_unlock = micropython.heap_unlock
except (ImportError, AttributeError):  # CPython: nothing to lock
    heap_lock = heap_unlock = None

NEAR_WRAP = (1 << 30) - 1500  # the ticks counter wraps at 2^30 ms on the ESP32


class Clock:
    def __init__(self, start=NEAR_WRAP):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, ms):
        self.now = ticks_add(self.now, ms)


class FakeWdt:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class FakeBoard:
    def __init__(self, cause="power_on"):
        self.cause = cause
        self.resets = 0
        self.wdt = FakeWdt()
        self.wdt_timeouts = []

    def reset_cause(self):
        return self.cause

    def reset(self):
        self.resets += 1

    def watchdog(self, timeout_ms):
        self.wdt_timeouts.append(timeout_ms)
        return self.wdt


def _record(path):
    return wd.CrashRecord(path + "/crash.json")


def _crash_then_boot(path, cause="hard", error="ValueError"):
    r = _record(path)
    r.failed(error, "boom", 12)
    return _record(path).boot(cause)  # a fresh object: what the next boot reads from flash


# ---- crash record ---------------------------------------------------------------------


def test_crash_record_is_on_flash_with_error_and_uptime_and_no_temp_left():
    with TempDir() as d:
        r = _record(d)
        assert r.count == 0 and r.error is None
        r.failed("ValueError", "boom", 42)
        assert sorted(os.listdir(d)) == ["crash.json"]  # written temp-then-rename
        again = _record(d)
        assert (again.count, again.error, again.message, again.uptime_s) == (
            1,
            "ValueError",
            "boom",
            42,
        )
        assert again.pending is True


def test_the_reset_after_a_recorded_crash_is_not_counted_twice():
    with TempDir() as d:
        assert _crash_then_boot(d, "hard") is False
        r = _record(d)
        assert r.count == 1 and r.pending is False and r.streak == 0  # streak: this boot's
        r2 = _record(d)
        r2.boot("hard")  # a deliberate machine.reset() is no failure: the count stays
        assert _record(d).count == 1


def test_watchdog_reset_without_a_record_counts_as_a_blocked_loop():
    with TempDir() as d:
        r = _record(d)
        assert r.boot("watchdog") is False
        assert r.count == 1 and r.streak == 1 and r.error == "WDT_RESET"
        assert _record(d).count == 1  # saved
        # A hang the feeder recorded before the WDT fired is counted once, by the feeder.
        r = _record(d)
        r.failed("hung", "sampling made no progress for 12000 ms", 30)
        r = _record(d)
        r.boot("watchdog")
        assert r.count == 2 and r.error == "hung"


def test_five_failures_in_a_row_mean_safe_mode_then_the_next_reset_tries_again():
    with TempDir() as d:
        for cause in ("hard", "watchdog", "hard", "hard"):
            assert _crash_then_boot(d, cause) is False
        assert _record(d).count == 4
        assert _record(d).boot("soft") is False  # mpremote's soft reset breaks no streak
        assert _crash_then_boot(d, "hard") is True
        r = _record(d)
        assert r.count == 0 and r.error == "ValueError"  # the last error stays to read
        assert r.boot("hard") is False  # the technician's machine.reset(): app again


def test_blocked_loop_watchdog_resets_alone_reach_safe_mode():
    with TempDir() as d:
        results = [_record(d).boot("watchdog") for _ in range(5)]
        assert results == [False, False, False, False, True]


def test_power_on_and_a_healthy_run_clear_the_count():
    with TempDir() as d:
        _crash_then_boot(d)
        _crash_then_boot(d)
        assert _record(d).count == 2
        r = _record(d)
        r.healthy()
        assert _record(d).count == 0
        _crash_then_boot(d)
        assert _record(d).count == 1
        assert _record(d).boot("power_on") is False
        assert _record(d).count == 0


def test_a_damaged_record_reads_as_none():
    with TempDir() as d:
        for text in ("{truncated", '{"count": "x"}', "[1, 2]", ""):
            with open(d + "/crash.json", "w") as f:
                f.write(text)
            r = _record(d)
            assert r.count == 0 and r.pending is False
            assert r.boot("hard") is False


# ---- liveness -> feed -----------------------------------------------------------------


def _feeder(clock, *limits):
    wdt = FakeWdt()
    f = wd.Feeder(wdt, clock)
    watches = []
    for i, limit in enumerate(limits):
        w = wd.Watch()
        f.watch("task%d" % i, w, limit)
        watches.append(w)
    return f, wdt, watches


def test_feeds_while_every_task_makes_progress_across_the_ticks_wrap():
    clock = Clock()
    f, wdt, (a, b) = _feeder(clock, 5000, 5000)
    seen = []
    for _ in range(10):  # 10 s, across the wrap: each task progresses every second
        clock.advance(1000)
        seen.append(clock())
        a.beat()
        b.beat()
        assert f.check(clock()) is True
    assert seen[0] > NEAR_WRAP and seen[-1] < 10000, seen  # the counter wrapped on the way
    assert wdt.feeds == 10 and f.hung is None
    assert f.uptime_s == 10


def test_a_task_without_progress_past_its_limit_starves_the_watchdog_for_good():
    clock = Clock()
    f, wdt, (sampling, uplink) = _feeder(clock, 3000, 60000)
    clock.advance(3000)
    uplink.beat()
    assert f.check(clock()) is True  # exactly at the limit: still fed
    clock.advance(1)
    assert f.check(clock()) is False
    assert f.hung == "task0" and f.stalled_ms == 3001 and wdt.feeds == 1
    sampling.beat()  # too late: the decision stands, the WDT will reset the chip
    clock.advance(1000)
    assert f.check(clock()) is False and wdt.feeds == 1


def test_a_lowered_limit_counts_from_when_it_was_set():
    # interval_s 60 -> 1 while the sampler sleeps out its minute: it has the new allowance
    # from the change on, not one already spent.
    clock = Clock()
    f, wdt, (sampling,) = _feeder(clock, 75000)
    clock.advance(40000)
    assert f.check(clock()) is True
    f.set_limit("task0", 15000)
    clock.advance(15000)
    assert f.check(clock()) is True and f.hung is None
    clock.advance(1)
    assert f.check(clock()) is False and f.hung == "task0" and f.stalled_ms == 15001


def test_an_idle_task_is_not_hung_but_a_gone_one_is():
    clock = Clock()
    f, wdt, (reader,) = _feeder(clock, 2000)
    reader.idle = True  # e.g. the AT reader waiting on a quiet UART
    for _ in range(5):
        clock.advance(1000)
        assert f.check(clock()) is True
    reader.idle = False  # the reader task ended
    clock.advance(2001)
    assert f.check(clock()) is False and f.hung == "task0"


def test_a_check_allocates_nothing():
    clock = Clock()
    f, wdt, (a, b, c) = _feeder(clock, 5000, 5000, 5000)
    c.idle = True
    now = clock()
    if heap_lock is not None:
        heap_lock()
    try:
        for _ in range(100):
            a.beat()
            b.beat()
            ok = f.check(now)
    finally:
        if heap_unlock is not None:
            heap_unlock()
    assert ok is True and wdt.feeds == 100


def test_run_reports_the_hung_task_and_stops_feeding():
    clock = Clock()
    f, wdt, (a, b) = _feeder(clock, 1000, 1000)
    hung = []
    clock.advance(1500)
    b.beat()
    run(f.run(lambda name, ms: hung.append((name, ms))))
    assert hung == [("task0", 1500)] and wdt.feeds == 0


# ---- MemoryError policy ----------------------------------------------------------------


def test_memory_errors_escalate_only_when_three_come_within_a_minute():
    clock = Clock()
    m = wd.MemoryErrors()
    assert m.note(clock()) is False
    clock.advance(40000)
    assert m.note(clock()) is False
    clock.advance(40000)
    assert m.note(clock()) is False  # three, but spread over 80 s
    clock.advance(10000)
    assert m.note(clock()) is True  # the last three within 50 s
    assert m.count == 4


def test_a_task_survives_memory_errors_and_fails_on_anything_else():
    m = wd.MemoryErrors()
    failures = []
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) <= 2:
            raise MemoryError
        return "done"

    run(wd.supervise("flaky", flaky, m, failures.append))
    assert len(calls) == 3 and m.count == 2 and failures == []

    async def broken():
        raise ValueError("bug")

    run(wd.supervise("broken", broken, m, failures.append))
    assert len(failures) == 1 and isinstance(failures[0], ValueError)


def test_repeated_memory_errors_in_a_task_escalate_to_a_failure():
    m = wd.MemoryErrors()
    failures = []
    calls = []

    async def starved():
        calls.append(1)
        raise MemoryError

    run(wd.supervise("starved", starved, m, failures.append))
    assert len(calls) == 3 and m.count == 3
    assert len(failures) == 1 and isinstance(failures[0], MemoryError)


# ---- the guard ---------------------------------------------------------------------------


def test_guard_records_an_uncaught_exception_then_resets_the_board():
    with TempDir() as d:
        board = FakeBoard("power_on")
        g = wd.Guard(board, d + "/crash.json")
        assert g.boot() is False

        def app():
            raise RuntimeError("injected")

        g.run(app)
        assert board.resets == 1
        r = _record(d)
        assert (r.count, r.error, r.message, r.pending) == (1, "RuntimeError", "injected", True)


def test_guard_leaves_ctrl_c_to_the_repl_with_an_hour_on_the_watchdog():
    with TempDir() as d:
        board = FakeBoard()
        g = wd.Guard(board, d + "/crash.json")

        def app():
            g.watchdog(30000)
            raise KeyboardInterrupt

        with raises(KeyboardInterrupt):
            g.run(app)
        assert board.wdt_timeouts == [30000, wd.CONSOLE_WDT_MS] and board.resets == 0
        assert _record(d).count == 0


def test_guard_records_a_hang_before_the_watchdog_fires():
    with TempDir() as d:
        board = FakeBoard("hard")
        g = wd.Guard(board, d + "/crash.json")
        g.hung("sampling", 12000)
        assert board.resets == 0  # the WDT does it
        r = _record(d)
        assert r.error == "hung" and "sampling" in r.message and r.pending
        board.cause = "watchdog"
        g2 = wd.Guard(board, d + "/crash.json")
        assert g2.boot() is False and g2.record.streak == 1


def test_tasks_keep_running_on_both_interpreters():
    # The asyncio pieces the feeder relies on: a task that sleeps, a check between.
    clock = Clock()
    f, wdt, (a,) = _feeder(clock, 10000)

    async def main():
        t = asyncio.create_task(f.run(lambda *x: None))
        for _ in range(3):
            a.beat()
            await asyncio.sleep(0)
        t.cancel()

    run(main())
    assert wdt.feeds >= 1
