# A Tracker with its console, on a board whose buses are the honest fakes (fake_i2c), for
# CLI tests on CPython and the Unix port: bytes typed in, console output read back.
import os

from fake_i2c import FakeI2C, FakeSht4x
from mptest import TempDir

from tracker import log
from tracker.app import Tracker
from tracker.cli.port import ConsolePort
from tracker.config import Config


class FakeAdc:
    def __init__(self, uv):
        self.uv = uv

    def read_uv(self):
        return self.uv


class FakeWdt:
    def feed(self):
        pass


class Board:
    """What Tracker asks of boards/<board>/board.py; no network (open_stream refuses)."""

    name = "cli_test"
    battery_divider = 2.0

    def __init__(self):
        self.info = {"sht4x_addr": 0x44}
        self.bus = FakeI2C()
        self.sht = self.bus.attach(0x44, FakeSht4x())
        self.sht.set_celsius(4.5, 61.0)
        self.adc = FakeAdc(1950000)
        self.resets = 0

    def i2c(self):
        return self.bus

    def battery_adc(self):
        return self.adc

    def unique_id(self):
        return "00aabbccddee"

    def reset_cause(self):
        return "power_on"

    def reset(self):
        self.resets += 1

    def watchdog(self, timeout_ms):
        return FakeWdt()

    def open_stream(self, host, port):
        raise OSError(111)


class Rig:
    """`with Rig() as r:` a Tracker in a fresh directory (its flash) and its console."""

    def __init__(self, config_text=None):
        self.config_text = config_text
        self.out = []

    def __enter__(self):
        self._tmp = TempDir()
        self.dir = self._tmp.__enter__()
        self._cwd = os.getcwd()
        os.chdir(self.dir)
        if self.config_text is not None:
            with open("config.json", "w") as f:
                f.write(self.config_text)
        self.board = Board()
        self.cfg = Config.load("config.json")
        self.tracker = Tracker(self.board, self.cfg)
        self.port = ConsolePort(self.tracker, write=self.out.append)
        self._log = (log.echo, log.level)
        log.echo, log.level = True, log.INFO  # as on a device (other tests may change them)
        return self

    @property
    def console(self):
        """The Console the port built at the first key (None before, and once quiet)."""
        return self.port.console

    def __exit__(self, *exc):
        log.sink = None
        log.echo, log.level = self._log
        self.tracker.store.close()
        os.chdir(self._cwd)
        self._tmp.__exit__(*exc)
        return False

    def text(self):
        """Everything the console printed since the last take()."""
        return "".join(self.out)

    def take(self):
        t = self.text()
        del self.out[:]
        return t

    async def type(self, text):
        """Type `text` (str or bytes) byte by byte, as a person or a script does."""
        data = text.encode() if isinstance(text, str) else text
        for b in data:
            await self.port.feed(b)
        return self.take()

    async def command(self, line):
        """Run one command; its output lines (without echo, prompts and log lines)."""
        await self.type("\r")  # wake the command line (a no-op when it is awake)
        self.take()
        raw = await self.type(line + "\r")
        body = raw.split("\n", 1)[1] if "\n" in raw else ""
        prompt = self.console.editor.prompt
        if body.endswith(prompt):
            body = body[: -len(prompt)]
        return [ln for ln in body.split("\n") if ln and not _is_log(ln)]

    def stored(self):
        with open("config.json") as f:
            return f.read()


def _is_log(line):
    return len(line) > 2 and line[0] in "DIWE" and line[1] == " " and ": " in line
