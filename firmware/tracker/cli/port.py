# The always-resident part of the command line: the console's reader. It holds nothing but
# the stream until a byte arrives; then it builds the Console (tracker/cli/console.py) and
# hands it every byte, and when the Console goes quiet (no key for IDLE_MS) it drops it and
# its modules again, so a tracker nobody talks to pays only for this (make bench measures).
#
# Ctrl-C: MicroPython would raise KeyboardInterrupt the moment one arrives, even inside line
# noise; here the interrupt character is off (micropython.kbd_intr(-1); the REPL turns it on
# again before it runs code) and the Console reads Ctrl-C as a byte: it leaves the app unless
# line noise came within 2 s. mpremote's "\r\x03" then "\r\x01" still reaches the REPL:
# nothing after the Ctrl-C is read here.
import sys

from tracker import log
from tracker.aio import asyncio, sleep_ms

try:
    from micropython import kbd_intr
except ImportError:  # CPython

    def kbd_intr(_char):
        pass


_TAG = "console"
CONSOLE_MODULES = ("console", "lineedit", "commands", "status", "selftest", "words")


class ConsolePort:
    def __init__(self, device, reader=None, **console_kw):
        """reader: the console's stream (sys.stdin.buffer's); console_kw: for the Console
        (write=, clock=), as tests give them."""
        self.device = device
        self._reader = reader
        self._console_kw = console_kw
        self.console = None  # a Console while someone is at the keyboard

    async def run(self):
        reader = self._reader or asyncio.StreamReader(sys.stdin.buffer)
        kbd_intr(-1)
        try:
            while True:
                data = await reader.read(1)
                if not data:  # nobody at the other end (a closed pipe): look again later
                    await sleep_ms(500)
                    continue
                try:
                    await self.feed(data[0])
                except MemoryError:
                    log.w(_TAG, "MemoryError: command line dropped; the app goes on")
                    self.quiet()
                except Exception as e:  # noqa: BLE001 -- never take the tracker down
                    log.exc(_TAG, e)
        finally:
            self.quiet()
            kbd_intr(3)

    async def feed(self, b):
        con = self.console
        if con is None:
            from tracker.cli.console import Console

            con = self.console = Console(self.device, on_idle=self.quiet, **self._console_kw)
            log.sink = con.log_line
        await con.feed(b)  # KeyboardInterrupt (a Ctrl-C) passes: it leaves the app

    def quiet(self):
        """Drop the Console and its modules: their RAM goes back to the app."""
        log.sink = None
        self.console = None
        import tracker.cli as pkg

        for name in CONSOLE_MODULES:
            sys.modules.pop("tracker.cli." + name, None)
            if hasattr(pkg, name):
                delattr(pkg, name)
