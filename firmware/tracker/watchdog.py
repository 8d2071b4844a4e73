# The firmware's own recovery (an ESP32 only resets on machine.reset(), a machine.WDT
# timeout or power: an exception out of main.py leaves it in the REPL for good).
#
#   Guard       runs the app; an uncaught exception is written to the crash record on flash,
#               then the board is reset (hard). Safe mode after SAFE_MODE_AFTER in a row.
#   CrashRecord consecutive crash/watchdog resets, the last error, uptime (crash.json).
#   Feeder      feeds the machine.WDT only while every watched task makes progress: a hung
#               task starves it and the chip resets (WDT_RESET). No allocation per feed.
#   MemoryErrors / supervise(): a MemoryError in a task is counted, collected and the task
#               restarted; only MEMORY_ERRORS_FATAL within a minute escalate to the guard.
#
# A watched object has `progress` (an int that changes when it gets work done, kept a small
# int: masked to 30 bits) and `idle` (True while it waits where waiting is its job, e.g. the
# AT reader on a quiet UART). Watch is that pair for a task that has no other.
import gc
import json
import sys

from tracker import log
from tracker.aio import sleep_ms, ticks_diff, ticks_ms
from tracker.store.layout import write_atomic

_TAG = "watchdog"
CRASH_PATH = "crash.json"
SAFE_MODE_AFTER = 5  # consecutive crash/watchdog resets before the app is not started
HEALTHY_AFTER_MS = 60000  # a run this long clears the count
FEED_EVERY_MS = 1000
CONSOLE_WDT_MS = 3600000  # after Ctrl-C: the WDT cannot stop; a technician gets an hour
MEMORY_ERRORS_FATAL = 3
MEMORY_WINDOW_MS = 60000
MASK = 0x3FFFFFFF  # progress counters stay small ints on a 32-bit port (no allocation)


class Watch:
    __slots__ = ("progress", "idle")

    def __init__(self):
        self.progress = 0
        self.idle = False

    def beat(self):
        self.progress = (self.progress + 1) & MASK


class CrashRecord:
    """crash.json, written temp-then-rename. `pending`: this failure's reset is on its way
    and the count already includes it (the next boot must not count it again)."""

    def __init__(self, path=CRASH_PATH):
        self.path = path
        self.count = 0
        self.error = self.message = self.uptime_s = None
        self.pending = False
        self.streak = 0  # failures in a row up to this boot, for the status
        try:
            with open(path) as f:
                d = json.load(f)
            self.count = int(d["count"])
            self.error, self.message, self.uptime_s = d["error"], d["message"], d["uptime_s"]
            self.pending = d["pending"] is True
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or damaged: a zero record

    def save(self):
        d = {"count": self.count, "error": self.error, "message": self.message}
        d["uptime_s"], d["pending"] = self.uptime_s, self.pending
        write_atomic(self.path, json.dumps(d))

    def failed(self, error, message, uptime_s):
        self.count += 1
        self.error, self.message, self.uptime_s = error, message, uptime_s
        self.pending = True
        self.save()

    def boot(self, cause):
        """Account for the reset that started this boot (cause as board.reset_cause()
        names it). True: SAFE_MODE_AFTER failures in a row, do not start the app; the count
        starts over, so the next reset tries the app again."""
        before = (self.count, self.pending)
        if cause == "power_on":
            self.count = 0  # someone power-cycled it: a fresh start
        elif not self.pending and cause == "watchdog":
            # Nothing was recorded before the WDT fired: the event loop itself was blocked.
            self.failed("WDT_RESET", "watchdog reset, no hung task on record", None)
        self.pending = False
        self.streak = self.count
        safe = self.count >= SAFE_MODE_AFTER
        if safe:
            self.count = 0
        if (self.count, self.pending) != before:
            self.save()
        return safe

    def healthy(self):
        if self.count:
            self.count = 0
            self.save()


class MemoryErrors:
    def __init__(self):
        self.count = 0
        self._at = [0] * MEMORY_ERRORS_FATAL

    def note(self, now):
        """Count one and collect. True when MEMORY_ERRORS_FATAL of them came within
        MEMORY_WINDOW_MS: the heap is not coming back, reset."""
        gc.collect()
        self._at[self.count % MEMORY_ERRORS_FATAL] = now
        self.count += 1
        oldest = self._at[self.count % MEMORY_ERRORS_FATAL]
        # ticks_diff is exact only within 2^29 ms: an oldest error older than that reads as
        # negative (so: not within the window); only one a whole 2^30 ms period back aliases.
        age = ticks_diff(now, oldest)
        return self.count >= MEMORY_ERRORS_FATAL and 0 <= age <= MEMORY_WINDOW_MS


async def supervise(name, start, memory, fail, clock=ticks_ms):
    """Run `await start()`; restart it after a MemoryError; fail(err) on anything else."""
    while True:
        try:
            await start()
            return
        except MemoryError as e:
            if memory.note(clock()):
                fail(e)
                return
            log.w(_TAG, "%s: MemoryError, collected and restarted" % name)
            await sleep_ms(100)
        except Exception as e:  # CancelledError is a BaseException: it passes
            fail(e)
            return


class Feeder:
    def __init__(self, wdt, clock=ticks_ms):
        self._wdt = wdt
        self._clock = clock
        self._names, self._objs, self._limits, self._seen, self._at = [], [], [], [], []
        self.hung = None  # the name of the watch that stalled; then nothing feeds any more
        self.stalled_ms = 0
        self.uptime_s = 0  # accumulated, so it stays right past the ticks wrap
        self._last = clock()
        self._ms = 0

    def watch(self, name, obj, limit_ms):
        self._names.append(name)
        self._objs.append(obj)
        self._limits.append(limit_ms)
        self._seen.append(obj.progress)
        self._at.append(self._clock())

    def set_limit(self, name, limit_ms):
        """A watched task's new allowance (its period changed, e.g. interval_s). It counts
        from now: a task that waited a minute under the old one is not hung under a 15 s one."""
        i = self._names.index(name)
        self._limits[i] = limit_ms
        self._at[i] = self._clock()

    def check(self, now):
        """Feed the WDT if every watch progressed (or is idle) within its limit."""
        if self.hung is not None:
            return False
        self._ms += ticks_diff(now, self._last)
        self._last = now
        if self._ms >= 1000:
            self.uptime_s += self._ms // 1000
            self._ms %= 1000
        objs, seen, at = self._objs, self._seen, self._at
        for i in range(len(objs)):
            o = objs[i]
            p = o.progress
            if o.idle or p != seen[i]:
                seen[i] = p
                at[i] = now
            elif ticks_diff(now, at[i]) > self._limits[i]:
                self.hung = self._names[i]
                self.stalled_ms = ticks_diff(now, at[i])
                return False
        self._wdt.feed()
        return True

    async def run(self, on_hang):
        while self.check(self._clock()):
            await sleep_ms(FEED_EVERY_MS)
        on_hang(self.hung, self.stalled_ms)  # and feed no more: the WDT resets the chip


class Guard:
    def __init__(self, board, path=CRASH_PATH, clock=ticks_ms):
        self.board = board
        self.record = CrashRecord(path)
        self.memory = MemoryErrors()
        self.feeder = None
        self._clock = clock
        self._started = clock()

    def boot(self):
        """True: safe mode (see CrashRecord.boot)."""
        return self.record.boot(self.board.reset_cause())

    def watchdog(self, timeout_ms):
        self.feeder = Feeder(self.board.watchdog(timeout_ms), self._clock)
        return self.feeder

    def uptime_s(self):
        if self.feeder is not None:
            return self.feeder.uptime_s
        return ticks_diff(self._clock(), self._started) // 1000

    def run(self, app):
        """app(): the whole application; returns only if it ends on its own."""
        try:
            app()
        except KeyboardInterrupt:
            if self.feeder is not None:
                self.board.watchdog(CONSOLE_WDT_MS)
                log.w(_TAG, "still running: reset in %d s unless fed" % (CONSOLE_WDT_MS // 1000))
            raise
        except Exception as e:
            self.crashed(e)

    def crashed(self, err):
        """Record err, then reset: a crashed tracker must not sit in the REPL in the field."""
        try:
            pe = getattr(sys, "print_exception", None)
            if pe is not None:
                pe(err)
            log.e(_TAG, "crash: %s: %s; resetting" % (type(err).__name__, err))
            self.record.failed(type(err).__name__, str(err), self.uptime_s())
        finally:
            self.board.reset()

    def hung(self, name, ms):
        log.e(_TAG, "%s made no progress for %d ms: letting the watchdog reset" % (name, ms))
        self.record.failed("hung", "%s made no progress for %d ms" % (name, ms), self.uptime_s())
