# An honest scripted fake of the modem UART stream, for AT engine tests on CPython and
# MicroPython.
#
# It behaves like asyncio.StreamReader over machine.UART: `await readinto(buf)` /
# `await read(n)` block until bytes arrive and return what is there (never more than one
# injected piece per read, so a test controls exactly where reads split), `write(data)`
# records what the host sent, `await drain()` yields. Rules answer writes: when a write
# starts with a rule's `match`, the rule's reply pieces are queued, as a modem would answer.
# `inject()` puts bytes on the wire at any moment (URCs, late answers, garbage).
from tracker.aio import asyncio, sleep_ms


class FakeUart:
    def __init__(self, *, echo=False, piece=0):
        self.echo = echo  # answer each command line with its echo ("AT\r"), like ATE1
        self.piece = piece  # > 0: deliver at most this many bytes per read
        self.rules = []  # [match bytes, [reply pieces], remaining uses or -1]
        self.writes = []  # every write() as bytes, in order
        self.unanswered = []  # writes no rule matched
        self._rx = []  # pieces waiting to be read
        self._ev = asyncio.Event()
        self.reader_waiting = False

    # ---- scripting ---------------------------------------------------------------------

    def when(self, match, *replies, times=1):
        """When the host writes something starting with match, queue replies (each a
        separate piece on the wire). times=-1: forever."""
        self.rules.append([_b(match), [_b(r) for r in replies], times])
        return self

    def inject(self, *pieces):
        for p in pieces:
            p = _b(p)
            if p:
                self._rx.append(p)
        self._ev.set()

    def inject_split(self, data, *cuts):
        """data delivered in pieces cut at the given offsets."""
        data = _b(data)
        last = 0
        for c in cuts:
            self.inject(data[last:c])
            last = c
        self.inject(data[last:])

    @property
    def written(self):
        return b"".join(self.writes)

    async def idle(self, max_spins=20000):
        """Until every queued byte was read and the reader is back waiting for more."""
        for _ in range(max_spins):
            if not self._rx and self.reader_waiting:
                return
            await sleep_ms(0)
        raise AssertionError("reader did not drain the fake UART")

    # ---- the stream interface ----------------------------------------------------------

    def write(self, data):
        data = bytes(data)
        self.writes.append(data)
        if self.echo and data.endswith(b"\r") and data[:2] in (b"AT", b"at"):
            self.inject(data)
        for rule in self.rules:
            match, replies, times = rule
            if times != 0 and data.startswith(match):
                if times > 0:
                    rule[2] = times - 1
                self.inject(*replies)
                return len(data)
        self.unanswered.append(data)
        return len(data)

    async def drain(self):
        await sleep_ms(0)

    async def _next(self, n):
        while not self._rx:
            self._ev.clear()
            self.reader_waiting = True
            try:
                await self._ev.wait()
            finally:
                self.reader_waiting = False
        head = self._rx[0]
        k = min(n, len(head))
        if self.piece:
            k = min(k, self.piece)
        if k == len(head):
            self._rx.pop(0)
        else:
            self._rx[0] = head[k:]
        return head[:k]

    async def read(self, n=-1):
        return await self._next(n if n > 0 else 1 << 16)

    async def readinto(self, buf):
        data = await self._next(len(buf))
        buf[: len(data)] = data
        return len(data)


class ReadOnlyStream(FakeUart):
    """A stream with read() only (no readinto) and no drain(): a CPython-style reader
    with a synchronous writer."""

    readinto = None
    drain = None


def _b(x):
    return x.encode() if isinstance(x, str) else bytes(x)
