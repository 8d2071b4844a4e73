# Tiny helpers that let one test file run under pytest (CPython) and under the
# MicroPython Unix port (through run_mp.py), which has no pytest.
import asyncio
import os
import random
import time

from tracker import aio
from tracker.aio import ticks_add, ticks_diff, ticks_ms


class Skipped(Exception):
    """Raised by skip() where there is no pytest (run_mp.py counts it apart)."""


def skip(reason):
    """Skip the running test, not pass it: pytest.skip under pytest; on MicroPython the
    runner (run_mp.py) reports it as skipped, with the reason."""
    try:
        import pytest
    except ImportError:
        raise Skipped(reason)
    pytest.skip(reason)


class raises:
    """`with raises(ValueError):` -- like pytest.raises, on both interpreters."""

    def __init__(self, exc_type):
        self.exc_type = exc_type
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            raise AssertionError("did not raise %s" % self.exc_type.__name__)
        if not issubclass(exc_type, self.exc_type):
            return False
        self.value = exc
        return True


def run(coro):
    """Run a coroutine to completion on a fresh event loop on both interpreters."""
    return asyncio.run(coro)


class TempDir:
    """`with TempDir() as path:` a fresh directory under $TMPDIR or /tmp, removed afterwards
    with its files (MicroPython has no tempfile)."""

    def __enter__(self):
        base = (os.getenv("TMPDIR") or "/tmp").rstrip("/")
        # mkdir is the arbiter: another process may draw the same name (hypothesis seeds the
        # `random` module alike in every worker), so a taken name means draw again.
        for n in range(1000):
            self.path = "%s/albatross_test_%08x_%d" % (base, random.getrandbits(32), n)
            try:
                os.mkdir(self.path)
                return self.path
            except OSError as e:
                if (e.args[0] if e.args else None) != 17:  # EEXIST
                    raise
        raise OSError("no free temporary directory name under " + base)

    def __exit__(self, *exc):
        _remove_tree(self.path)
        return False


def _remove_tree(path):
    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:  # S_IFDIR (a store's data directory)
            _remove_tree(p)
        else:
            os.remove(p)
    os.rmdir(path)


class FakeClock:
    """A ticks_ms() for code that takes a clock: it reads `start` now (say just below the
    2^30 wrap), counts on in real time, so asyncio sleeps still match it, and jumps ahead on
    advance(ms) (days pass in a test that way, in steps of less than 2^29 ms)."""

    def __init__(self, start):
        self._base = start
        self._t0 = ticks_ms()

    def __call__(self):
        return ticks_add(self._base, ticks_diff(ticks_ms(), self._t0))

    def advance(self, ms):
        self._base = ticks_add(self._base, ms)


def ticks_before_wrap(before_ms):
    """Bring ticks_ms() to `before_ms` below its wrap, for code that reads the counter itself.
    CPython's counter is set (aio.set_ticks_ms; ticks_after_test() puts it back). The device's
    can't be: the interpreter must have started near the wrap (ALBATROSS_TICKS_START_MS, see
    tests/test_firmware_on_unix_port.py), and this waits for the moment. False when the
    counter is far from the wrap and nobody asked for it to be near: the caller skips."""
    if hasattr(aio, "set_ticks_ms"):
        aio.set_ticks_ms(ticks_add(0, -before_ms))
        return True
    wait = ticks_diff(0, ticks_ms()) - before_ms  # ms until then (counter below the wrap)
    if 0 <= wait < 60000:
        time.sleep_ms(wait)
        return True
    if os.getenv("ALBATROSS_TICKS_START_MS"):
        raise AssertionError("ticks_ms() is %d: not close enough below the wrap" % ticks_ms())
    return False


def ticks_after_test():
    if hasattr(aio, "set_ticks_ms"):
        aio.set_ticks_ms(None)


def write(path, data):
    """Write bytes to a file (both interpreters; no pathlib on MicroPython)."""
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False
