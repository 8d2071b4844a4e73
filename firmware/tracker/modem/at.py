# The AT engine: one reader task owns the modem UART, assembles lines (at_lines), hands
# each line to the command in flight, to a URC waiter or handler by prefix, or logs it.
# Commands run one at a time; nothing is ever flushed before a command (URCs would be
# lost). Errors are typed and there are no retry loops here (STYLE.md 7): the modem
# supervisor owns retries and the recovery ladder.
#
# The UART is a MicroPython-style async stream: `await read(n)` or `await readinto(buf)`
# (asyncio.StreamReader over machine.UART on the ESP32, over a pty on the virtual board),
# `write(data)` and, if present, `await drain()`. `write=` overrides the writer with a
# plain function (e.g. machine.UART.write when only the reader is a stream).
import gc

from tracker import aio, log
from tracker.aio import TimeoutError, asyncio, sleep_ms, wait_for_ms
from tracker.errors import ModemError  # defined apart so the uplink needs no AT engine
from tracker.modem import at_lines as L

_TAG = "at"
_MAX_LINES = 64  # information lines kept per command; more are dropped and counted
_SETTLE_MS = 100  # after a resync's first answer, how long further stale answers may take

_COUNTERS = (
    "commands timeouts errors bytes_tx bytes_rx urcs unknown_urcs stray_finals stray_prompts"
    " echoes dropped_lines handler_errors read_errors resyncs memory_errors"
).split()


class AtTimeout(ModemError):
    """No final result (or prompt, or URC) for `cmd` within `ms` milliseconds."""

    def __init__(self, cmd, ms):
        super().__init__("%s: no answer within %d ms" % (cmd, ms))
        self.cmd = cmd
        self.ms = ms


class AtError(ModemError):
    """The modem ended `cmd` with an error final (ERROR, SEND FAIL, NO CARRIER, ...).
    `lines`: the information lines it printed before that final, which often say why
    ("+IP ERROR: Network not opened", "+CDNSGIP: 0,10"; corpus sim7600-*); () if none."""

    def __init__(self, cmd, final, lines=None):
        super().__init__("%s: %s" % (cmd, final))
        self.cmd = cmd
        self.final = final
        self.lines = lines or ()


class CmeError(AtError):
    """+CME ERROR: code is an int (AT+CMEE=1) or the verbose text (AT+CMEE=2)."""

    def __init__(self, code, cmd, final=None, lines=None):
        AtError.__init__(self, cmd, final or "+CME ERROR: %s" % code, lines)
        self.code = code


class CmsError(AtError):
    """+CMS ERROR (SMS commands): code as for CmeError."""

    def __init__(self, code, cmd, final=None, lines=None):
        AtError.__init__(self, cmd, final or "+CMS ERROR: %s" % code, lines)
        self.code = code


class AtResponse:
    __slots__ = ("lines", "final")

    def __init__(self, lines, final):
        self.lines = lines
        self.final = final

    def first(self, default=None):
        return self.lines[0] if self.lines else default

    def __repr__(self):
        return "AtResponse(%r, %r)" % (self.lines, self.final)


class UrcWaiter:
    """The next line starting with `prefix`, registered before the command that causes it
    is sent (`with engine.expect_urc("+CIPOPEN:") as w: ...; line = await w.wait(ms)`)."""

    def __init__(self, engine, prefix):
        self._engine = engine
        self.prefix = prefix
        self.line = None
        self._ev = asyncio.Event()

    async def wait(self, timeout_ms):
        try:
            if self.line is None:
                await wait_for_ms(self._ev.wait(), timeout_ms)
            return self.line
        except TimeoutError:
            raise AtTimeout(self.prefix, timeout_ms)
        finally:
            self.cancel()

    def cancel(self):
        ws = self._engine._waiters
        if self in ws:
            ws.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


def _raise_for(cmd, final, kind, lines):
    if kind == L.CME:
        raise CmeError(L.error_code(final), cmd, final, lines)
    if kind == L.CMS:
        raise CmsError(L.error_code(final), cmd, final, lines)
    raise AtError(cmd, final, lines)


class AtEngine:
    def __init__(
        self,
        uart,
        *,
        urcs=None,
        write=None,
        recorder=None,
        default_timeout_ms=5000,
        max_line=512,
        resync_ms=1000,
        read_size=256,
    ):
        self._uart = uart
        self._write_fn = write
        self._drain = getattr(uart, "drain", None) if write is None else None
        self.recorder = recorder
        self.default_timeout_ms = default_timeout_ms
        # After a timed-out command the modem may still answer it; the next command first
        # sends "AT" and swallows every final up to that probe's answer (0 disables).
        self.resync_ms = resync_ms
        self.on_unknown = None  # optional plain function(line), for transcripts and tests
        self.counters = {k: 0 for k in _COUNTERS}
        self._asm = L.LineAssembler(self._on_event, max_line, self.counters)
        # Bytes asked for per read. A stream must return what is there (ESP32 UART,
        # O_NONBLOCK fd); over a blocking file, whose read(n) waits for all n bytes, use 1.
        self._rbuf = bytearray(read_size)
        self._handlers = []  # [(prefix, handler)]
        self._waiters = []  # [UrcWaiter]
        self._lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._task = None
        self._stale = 0  # commands written whose final never came (timed out / cancelled)
        self._prev = None  # the previous command, whose echo may still arrive
        # Liveness for the watchdog's feeder: progress counts reads; idle while the reader
        # waits on the UART (a quiet modem is not a hung reader), False once it is gone.
        self.progress = 0
        self.idle = False
        self._idle()
        if urcs:
            for prefix, handler in urcs.items() if hasattr(urcs, "items") else urcs:
                self.on_urc(prefix, handler)

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self):
        if self._task is None:
            self._task = asyncio.create_task(self._reader())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def pending(self):
        """The command in flight (written, no final yet), or None."""
        return self._cmd

    # ---- URCs --------------------------------------------------------------------------

    def busy(self):
        """Whether a command is in progress (a send, a read, a query): another would wait."""
        return self._lock.locked()

    def on_urc(self, prefix, handler):
        """handler(line) for every unsolicited line starting with prefix. Handlers run in
        the reader task: they may set events or flags, never block."""
        self._handlers.append((prefix, handler))

    def off_urc(self, prefix, handler=None):
        self._handlers = [
            (p, h) for p, h in self._handlers if p != prefix or (handler and h is not handler)
        ]

    def expect_urc(self, prefix):
        """A UrcWaiter for the next line starting with prefix. Register it before sending
        the command that causes the line; it takes the line before the command in flight
        and before handlers (which still see it)."""
        w = UrcWaiter(self, prefix)
        self._waiters.append(w)
        return w

    async def wait_urc(self, prefix, timeout_ms):
        return await self.expect_urc(prefix).wait(timeout_ms)

    # ---- commands ----------------------------------------------------------------------

    async def cmd(self, text, *, timeout_ms=None, expect=None):
        """Send `text` + CR, return AtResponse(lines, final). Information lines belong to
        the command when they start with `expect` (str or tuple) or, without it, with the
        command's own "+XYZ:" prefix, or are plain value lines (IMEI, ATI text)."""
        ms = self.default_timeout_ms if timeout_ms is None else timeout_ms
        await self._lock.acquire()  # not `async with`: that allocates more
        try:
            if self._stale:
                await self._resync()
            self._begin(text, expect)
            await self._exchange(text, ms, True)
            return self._result(text, None)
        finally:
            self._lock.release()

    async def send_with_prompt(self, text, payload, *, timeout_ms=None, final=("OK", "SEND OK")):
        """AT+CIPSEND / AT+QISEND / AT+CASEND: send text, wait for the ">" prompt, write
        payload, wait for a final listed in `final`. An error final before the prompt
        raises and the payload is not sent. One deadline covers the whole exchange."""
        ms = self.default_timeout_ms if timeout_ms is None else timeout_ms
        await self._lock.acquire()  # not `async with`: that allocates more
        try:
            if self._stale:
                await self._resync()
            deadline = aio.ticks_add(aio.ticks_ms(), ms)
            self._begin(text, None)
            self._want_prompt = True
            await self._exchange(text, ms, False)
            if self._final is not None:
                early = self._final
                self._result(text, None)  # raises for error finals
                raise AtError(text, early)  # e.g. OK without a prompt: nothing was sent
            self._done.clear()
            self._final = None
            await self._exchange(
                payload, max(0, aio.ticks_diff(deadline, aio.ticks_ms())), True, raw=True
            )
            return self._result(text, final)
        finally:
            self._lock.release()

    async def read_payload(self, text, header_prefix, length_of, timeout_ms=None, *, buf=None):
        """AT+CIPRXGET=2,0,<max> / AT+QIRD=0,<max>: returns (header_line, payload). After
        the line starting with header_prefix, length_of(header) bytes are read raw. With
        buf (a bytearray) the payload is a memoryview into it; otherwise a new bytearray.
        (None, b"") when the modem answered OK without a header."""
        ms = self.default_timeout_ms if timeout_ms is None else timeout_ms
        await self._lock.acquire()  # not `async with`: that allocates more
        try:
            if self._stale:
                await self._resync()
            self._begin(text, header_prefix)
            self._hdr = header_prefix
            self._length_of = length_of
            self._raw_into = buf
            try:
                await self._exchange(text, ms, True)
            finally:
                if self._asm.raw_left:
                    self._asm.cancel_raw()  # never swallow later lines as payload
            header, payload = self._header, self._payload
            self._result(text, None)
            return header, (b"" if payload is None else payload)
        finally:
            self._lock.release()

    # ---- internals: command state ------------------------------------------------------

    def _idle(self):
        self._cmd = None
        self._echo = None
        self._pfx = None
        self._expect = None
        self._lines = None
        self._final = None
        self._kind = 0
        self._want_prompt = False
        self._got_prompt = False
        self._hdr = None
        self._length_of = None
        self._raw_into = None
        self._header = None
        self._payload = None
        self._need = 1
        self._seen = 0

    def _begin(self, text, expect):
        self._idle()
        self._echo = text.strip()
        p = L.cmd_prefix(self._echo)
        self._pfx = p + ":" if p else None
        self._expect = expect
        self._lines = []
        self._done.clear()
        self.counters["commands"] += 1

    async def _exchange(self, data, ms, until_final, raw=False):
        """Write data and wait for the final (or the prompt) within ms. On timeout or
        cancellation the command is abandoned and its late answer becomes stale."""
        text = self._echo
        try:
            await wait_for_ms(self._send_and_wait(data, raw), ms)
        except TimeoutError:
            self.counters["timeouts"] += 1
            self._abandon()
            raise AtTimeout(text, ms)
        except BaseException:
            self._abandon()
            raise
        if until_final or self._final is not None:
            self._cmd = None

    async def _send_and_wait(self, data, raw):
        if raw:
            await self._write(data)
        else:
            self._cmd = self._echo
            await self._write(data + "\r")
        await self._done.wait()

    def _abandon(self):
        if self._cmd is not None:
            self._stale += 1
            self._prev = self._cmd
        self._idle()

    async def _write(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.counters["bytes_tx"] += len(data)
        if self.recorder:
            self.recorder("tx", bytes(data))
        if self._write_fn is not None:
            self._write_fn(data)
            return
        self._uart.write(data)
        if self._drain is not None:
            await self._drain()

    def _result(self, text, accept):
        final = self._final
        kind = self._kind
        lines = self._lines
        self._prev = self._echo
        self._idle()
        ok = kind == L.OK or kind == L.SEND_OK or kind == L.CONNECT
        if ok and (accept is None or final in accept):
            return AtResponse(lines, final)
        self.counters["errors"] += 1
        _raise_for(text, final, kind, lines)

    async def _resync(self):
        if not self._stale or not self.resync_ms:
            self._stale = 0
            return
        need = min(self._stale, 2) + 1  # the stale answers, then the probe's own
        self._stale = 0
        self.counters["resyncs"] += 1
        self._begin("AT", None)
        self._need = need
        try:
            try:
                await wait_for_ms(self._send_and_wait("AT", False), self.resync_ms)
            except TimeoutError:
                self.counters["timeouts"] += 1
                self._stale = need  # all of them may still arrive
                raise AtTimeout("AT", self.resync_ms)
            if self._seen < need:
                # The first answer came; the remaining ones follow at once if they exist.
                self._done.clear()
                try:
                    await wait_for_ms(self._done.wait(), _SETTLE_MS)
                except TimeoutError:
                    pass
        finally:
            self._prev = "AT"
            self._idle()

    # ---- internals: reader -------------------------------------------------------------

    async def _reader(self):
        uart = self._uart
        buf = self._rbuf
        into = getattr(uart, "readinto", None)
        try:
            while True:
                self.progress = (self.progress + 1) & 0x3FFFFFFF
                self.idle = True
                try:
                    if into is not None:
                        n = await into(buf)
                        data = buf
                    else:
                        data = await uart.read(len(buf))
                        n = len(data) if data else 0
                except Exception as e:  # not CancelledError: that is a BaseException
                    self.idle = False
                    self.counters["read_errors"] += 1
                    log.w(_TAG, "read failed: %s" % e)
                    await sleep_ms(100)
                    continue
                self.idle = False
                if not n:
                    # EOF on a pty whose other side restarts: poll gently, keep the engine.
                    await sleep_ms(50)
                    continue
                self.counters["bytes_rx"] += n
                if self.recorder:
                    self.recorder("rx", bytes(data[:n]))
                try:
                    self._asm.feed(data, n)
                except MemoryError:
                    # Never fatal: this read's bytes are lost, as in a UART overrun; a command
                    # in flight times out and the next one resyncs.
                    self.counters["memory_errors"] += 1
                    self._asm.reset()
                    gc.collect()
        finally:
            self.idle = False

    def _on_event(self, kind, value):
        try:
            if kind == L.LINE:
                self._on_line(value)
            elif kind == L.PROMPT:
                if self._cmd is not None and self._want_prompt and not self._got_prompt:
                    self._got_prompt = True
                    self._done.set()
                else:
                    self.counters["stray_prompts"] += 1
            else:
                self._payload = value
        except Exception as e:  # a bad handler or length_of must not kill the reader
            self.counters["handler_errors"] += 1
            log.exc(_TAG, e)

    def _on_line(self, line):
        cmd = self._cmd
        if cmd is not None or self._prev is not None:
            s = line.strip() if line[-1:] == " " or line[:1] == " " else line
            if s == self._echo and cmd is not None or s == self._prev:
                self.counters["echoes"] += 1
                return
        kind = L.classify(line)
        if kind:
            if cmd is None:
                # A late answer to an abandoned command: never the next command's answer.
                self.counters["stray_finals"] += 1
                if self._stale:
                    self._stale -= 1
                if log.level <= log.DEBUG:
                    log.d(_TAG, "stray final %s" % line)
                return
            self._seen += 1
            if self._seen < self._need:
                self.counters["stray_finals"] += 1  # a stale answer, during the resync
                self._done.set()
                return
            self._final = line
            self._kind = kind
            self._cmd = None  # lines after the final are not this command's
            self._done.set()
            return
        hdr = self._hdr
        if cmd is not None and hdr is not None and self._header is None and line.startswith(hdr):
            self._header = line
            n = self._length_of(line)
            if n and n > 0:
                self._asm.expect_raw(n, self._raw_into)
            return
        for w in self._waiters:
            if w.line is None and line.startswith(w.prefix):
                w.line = line
                w._ev.set()
                self._waiters.remove(w)
                self.counters["urcs"] += 1
                self._call_handlers(line)
                return
        if cmd is not None and self._belongs(line):
            self._add_line(line)
            return
        if self._call_handlers(line):
            self.counters["urcs"] += 1
            return
        if cmd is not None and self._hdr is None and not L.is_urc(line):
            if line[0] != "+" or (self._pfx is None and self._expect is None):
                self._add_line(line)  # a plain value line: IMEI, ATI text
                return
        self.counters["unknown_urcs"] += 1
        if log.level <= log.DEBUG:
            log.d(_TAG, "unhandled: %s" % line)
        if self.on_unknown is not None:
            self.on_unknown(line)

    def _belongs(self, line):
        if L.starts_any(line, L.ERROR_INFO):
            return True  # the reason for the error final that follows
        e = self._expect
        if e is not None:
            return L.starts_any(line, e)  # a tuple too, also before MicroPython v1.25
        return self._pfx is not None and line.startswith(self._pfx)

    def _add_line(self, line):
        if len(self._lines) < _MAX_LINES:
            self._lines.append(line)
        else:
            self.counters["dropped_lines"] += 1

    def _call_handlers(self, line):
        hit = False
        for prefix, handler in self._handlers:
            if line.startswith(prefix):
                hit = True
                try:
                    handler(line)
                except Exception as e:
                    self.counters["handler_errors"] += 1
                    log.exc(_TAG, e)
        return hit
