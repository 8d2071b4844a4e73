# Tiny helpers that let one test file run under pytest (CPython) and under the
# MicroPython Unix port (through run_mp.py), which has no pytest.
import asyncio
import os
import random


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
        base = os.getenv("TMPDIR") or "/tmp"
        self.path = "%s/albatross_test_%08x" % (base.rstrip("/"), random.getrandbits(32))
        os.mkdir(self.path)
        return self.path

    def __exit__(self, *exc):
        for name in os.listdir(self.path):
            os.remove(self.path + "/" + name)
        os.rmdir(self.path)
        return False
