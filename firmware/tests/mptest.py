# Tiny helpers that let one test file run under pytest (CPython) and under the
# MicroPython Unix port (through run_mp.py), which has no pytest.
import asyncio


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
