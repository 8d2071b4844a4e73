# The network side of a cellular modem: registration (from answers and URCs), signal,
# operator and clock, the PDP context, the table of socket links inside the modem, and
# ModemSocket, a TCP connection there as a stream: `await read(n)` (b"" at EOF),
# `write(data)`, `await drain()`, `close()`, `await wait_closed()` -- what the MQTT client
# needs. The modem runs in manual-receive mode (MODEMS.md "Sockets"): a URC says data is
# waiting, read() fetches it with AT+CIPRXGET=2 / AT+QIRD into one receive buffer made once
# per socket. Writes are gathered into one send buffer, so an MQTT header and its payload go
# out in one AT+CIPSEND / AT+QISEND (at most max_send bytes each).
#
# Network is a base of modem.Modem; a family file implements its six `_` methods with its
# own AT commands. URC handlers only set flags and events (they run in the reader task).
from tracker import log
from tracker.aio import TimeoutError, asyncio, wait_for_ms
from tracker.aio import ticks_add as _add
from tracker.aio import ticks_diff as _diff
from tracker.aio import ticks_ms as _now
from tracker.modem.at import AtError, AtTimeout, ModemError
from tracker.modem.families import (
    REGISTERED,
    cclk_to_unix,
    operator_value,
    reg_stat,
    registration_name,
    signal_values,
)

_TAG = "modem"
_MS_WRAP = 0x3FFFFFFF  # socket_ms wraps here: a small int on a 32-bit port never allocates


class NotSupported(ModemError):
    """This family or board cannot do that (no PWRKEY pin, no power switch, ...)."""


class RegistrationDenied(ModemError):
    pass


class RegistrationTimeout(AtTimeout):
    def __init__(self, ms, state):
        AtTimeout.__init__(self, "registration (%s)" % state, ms)
        self.state = state


class PdpError(ModemError):
    """The data context could not be activated: the modem's code, or its error final."""

    def __init__(self, code, cmd=""):
        super().__init__("PDP activation failed: %s %s" % (cmd, code))
        self.code = code


class SocketError(ModemError):
    """A socket could not be opened: the modem's error code (+CIPOPEN/+QIOPEN, +CME)."""

    def __init__(self, code, link=None):
        super().__init__("socket %s: error %s" % (link, code))
        self.code = code
        self.link = link


class SocketClosed(OSError):
    """read/drain on a socket that was closed, lost with the data context, closed by the
    peer (drain) or broken by a failed modem command. An OSError, as a broken TCP socket
    raises, so stream users (the MQTT client) need no modem knowledge."""


class Network:
    """Registration, PDP context and link table: a base of modem.Modem, which sets the
    attributes used here (at, counters, registration, registration_changed, pdp_active,
    _reg, _socks).
    Timeouts: families override them, constructors too."""

    reg_timeout_ms = 180000  # wait_registered() default
    reg_poll_ms = 10000  # re-read +CEREG? in case a URC was lost
    reg_domains = ("CEREG", "CGREG")  # +CEREG (EPS) and +CGREG (GPRS) decide "registered"
    has_cesq = True

    pdp_timeout_ms = 120000
    pdp_close_ms = 40000
    socket_open_ms = 120000
    socket_send_ms = 15000
    socket_read_ms = 5000
    socket_close_ms = 10000
    socket_poll_ms = 5000  # ModemSocket: poll for data even without a URC
    max_links = 10
    max_send = 1460  # bytes per send command and per read command
    max_read = 1460

    # ---- registration ------------------------------------------------------------------

    def _on_reg(self, line):
        stat = reg_stat(line)
        if stat is not None:
            self._reg[line[1 : line.find(":")]] = stat
            self._update_registration()

    def _update_registration(self):
        name = registration_name(self._reg.values())
        if name != self.registration:
            log.i(_TAG, "registration %s -> %s" % (self.registration, name))
            self.registration = name
            self.counters["registration_changes"] += 1
        self.registration_changed.set()

    async def query_registration(self):
        """Re-read +CEREG?/+CGREG? (answers update the state as URCs do)."""
        for d in self.reg_domains:
            try:
                r = await self.at.cmd("AT+%s?" % d)
            except AtError:
                continue  # a domain this SKU lacks
            for line in r.lines:
                self._on_reg(line)
        return self.registration

    async def wait_registered(self, timeout_ms=None):
        """Until home or roaming (returned). RegistrationDenied, RegistrationTimeout."""
        ms = self.reg_timeout_ms if timeout_ms is None else timeout_ms
        deadline = _add(_now(), ms)
        await self.query_registration()
        while True:
            self.registration_changed.clear()
            st = self.registration
            if st in REGISTERED:
                return st
            if st == "denied":
                raise RegistrationDenied("registration denied by the network")
            left = _diff(deadline, _now())
            if left <= 0:
                raise RegistrationTimeout(ms, st)
            try:
                await wait_for_ms(self.registration_changed.wait(), min(left, self.reg_poll_ms))
            except TimeoutError:
                if _diff(deadline, _now()) > 0:
                    await self.query_registration()

    # ---- network facts -----------------------------------------------------------------

    async def signal(self):
        """{"csq", "rssi_dbm"} and, where the family has AT+CESQ, "rsrq_db", "rsrp_dbm"."""
        csq = (await self.at.cmd("AT+CSQ")).first("+CSQ: 99,99")
        cesq = None
        if self.has_cesq:
            try:
                cesq = (await self.at.cmd("AT+CESQ")).first()
            except AtError:
                pass
        return signal_values(csq, cesq)

    async def operator(self):
        return operator_value((await self.at.cmd("AT+COPS?")).first("+COPS: 0"))

    async def network_time(self):
        """Unix seconds UTC from the network clock (AT+CCLK?), None before network time."""
        return cclk_to_unix((await self.at.cmd("AT+CCLK?")).first(""))

    # ---- PDP ---------------------------------------------------------------------------

    async def activate_pdp(self, timeout_ms=None):
        ms = self.pdp_timeout_ms if timeout_ms is None else timeout_ms
        try:
            await self._activate(ms)
        except AtError as e:
            self.counters["pdp_failures"] += 1
            raise PdpError(getattr(e, "code", e.final), e.cmd)
        except ModemError:
            self.counters["pdp_failures"] += 1
            raise
        self.pdp_active = True
        self.counters["pdp_activations"] += 1

    async def deactivate_pdp(self):
        self._lose_pdp(None)
        await self._deactivate()

    def _lose_pdp(self, why):
        if why and self.pdp_active:
            self.counters["pdp_losses"] += 1
            log.w(_TAG, "data context lost: %s" % why)
        self.pdp_active = False
        for s in self._socks.values():
            s._lose()

    # ---- sockets -----------------------------------------------------------------------

    async def open_socket(self, host, port, timeout_ms=None):
        """A connected ModemSocket (TCP) to host:port. SocketError(code) on refusal."""
        if not self.pdp_active:
            raise SocketError("no data context")
        link = 0
        while link in self._socks:
            link += 1
        if link >= self.max_links:
            raise SocketError("no free link")
        sock = ModemSocket(self, link)
        self._socks[link] = sock  # before the command: its URCs may come at once
        ms = self.socket_open_ms if timeout_ms is None else timeout_ms
        try:
            await self._open(link, host, port, ms)
        except BaseException as e:
            self.counters["socket_failures"] += 1
            if isinstance(e, AtTimeout):  # it may still connect: do not leave it open
                try:
                    await self._close(link, sock)
                except ModemError:
                    pass
            del self._socks[link]
            self._recycle(sock)
            if isinstance(e, AtError) and not isinstance(e, SocketError):
                raise SocketError(getattr(e, "code", e.final), link)
            raise
        self.counters["socket_opens"] += 1
        return sock

    def _sock(self, link):
        return self._socks.get(link)

    async def _release(self, sock):
        """The AT side of ModemSocket.close(); the link is free afterwards in any case."""
        try:
            await self._close(sock.link, sock)
        except ModemError as e:
            log.w(_TAG, "close link %d: %s" % (sock.link, e))
        finally:
            if self._socks.get(sock.link) is sock:
                del self._socks[sock.link]
                self._recycle(sock)
            self.counters["socket_closes"] += 1

    def _recycle(self, sock):
        # A closed socket's two buffers (max_read + max_send, ~3 KB) serve the next one: on a
        # PSRAM-less heap that churns, two fresh 1.5 KB blocks at a reconnect may no longer
        # be found in one piece (MemoryError), though as much is free in smaller pieces.
        sock._r = sock._w = 0  # a stale reader finds nothing and, closed, gets b""
        self._spare_bufs = (sock._rx, sock._tx)

    # ---- what a family implements ------------------------------------------------------

    def _register_urcs(self):
        pass

    async def _activate(self, ms):
        raise NotSupported("PDP")

    async def _deactivate(self):
        raise NotSupported("PDP")

    async def _open(self, link, host, port, ms):
        raise NotSupported("sockets")

    async def _send(self, link, data):
        """Send len(data) <= max_send bytes; raise when the modem did not take them."""
        raise NotSupported("sockets")

    async def _recv(self, link, buf):
        """Read up to len(buf) waiting bytes into buf: (n, more_waiting)."""
        raise NotSupported("sockets")

    async def _close(self, link, sock):
        """Close the link at the modem (sock.peer_closed / sock.lost say what is left)."""
        raise NotSupported("sockets")


class ModemSocket:
    def __init__(self, modem, link):
        self._m = modem
        self.link = link
        self.closed = False  # close() was called
        self.peer_closed = False  # +IPCLOSE / +QIURC: "closed": what the modem holds is the rest
        self.lost = False  # the data context or the modem went away: nothing left to read
        self.error = None  # why the stream broke (a failed AT command), or None
        self.poll_ms = modem.socket_poll_ms
        self._pending = False  # the modem said data is waiting (or a poll is due)
        self._ev = asyncio.Event()  # data waiting, peer closed, lost, closed
        self._done = asyncio.Event()  # the AT close has run
        self._closer = None
        spare = getattr(modem, "_spare_bufs", None)  # a closed socket's (Network._recycle)
        if spare is not None:
            modem._spare_bufs = None
            self._rx, self._tx = spare
        else:
            self._rx = bytearray(modem.max_read)
            self._tx = bytearray(modem.max_send)
        self._rxmv = memoryview(self._rx)
        self._r = self._w = 0  # unread bytes are _rx[_r:_w]
        self._txmv = memoryview(self._tx)
        self._out = []  # written buffers, not yet sent
        self._off = 0  # bytes of _out[0] already sent

    def __repr__(self):
        return "ModemSocket(link %d%s%s%s)" % (
            self.link,
            " closed" if self.closed else "",
            " peer-closed" if self.peer_closed else "",
            " lost" if self.lost else "",
        )

    # ---- called by the modem's URC handlers (reader task: never block) -----------------

    def _data_waiting(self):
        self._pending = True
        self._ev.set()

    def _peer_close(self):
        if not self.peer_closed:
            self.peer_closed = True
            self._m.counters["peer_closes"] += 1
        self._ev.set()

    def _lose(self):
        self.lost = True
        self._ev.set()

    def _took(self, t0):
        # Milliseconds in socket commands (the AT lock's wait included), so socket_ms over
        # sends + reads shows how long the modem takes to answer them.
        c = self._m.counters
        c["socket_ms"] = (c["socket_ms"] + _diff(_now(), t0)) & _MS_WRAP

    def _broken(self, err):
        self.error = err
        self._ev.set()
        return SocketClosed("link %d: %s" % (self.link, err))

    # ---- the stream --------------------------------------------------------------------

    async def read(self, n=-1):
        """Up to n buffered or waiting bytes; waits (without holding the AT engine) until
        the modem reports data, polling every poll_ms in case that URC was lost. b"" once
        the peer closed and everything was read, or the data context is gone."""
        m = self._m
        while True:
            avail = self._w - self._r
            if avail:
                k = avail if n < 0 or n > avail else n
                out = bytes(self._rxmv[self._r : self._r + k])
                self._r += k
                return out
            if self.closed or self.lost:
                return b""
            if self.error is not None:
                raise SocketClosed("link %d: %s" % (self.link, self.error))
            if self._pending or self.peer_closed:
                self._pending = False  # a URC during the read sets it again
                t0 = _now()
                try:
                    got, more = await m._recv(self.link, self._rx)
                except ModemError as e:
                    raise self._broken(e)
                self._took(t0)
                m.counters["reads"] += 1
                m.counters["bytes_received"] += got
                self._r, self._w = 0, got
                if more:
                    self._pending = True
                elif not got and self.peer_closed and not self._pending:
                    return b""
                continue
            self._ev.clear()
            try:
                await wait_for_ms(self._ev.wait(), self.poll_ms)
            except TimeoutError:
                m.counters["polls"] += 1
                self._pending = True

    def write(self, data):
        if data:
            self._out.append(data if isinstance(data, bytes) else bytes(data))

    async def drain(self):
        """Send what was written, max_send bytes per modem command. SocketClosed when the
        socket is closed or gone, or a send failed (the stream cannot be trusted then)."""
        m = self._m
        while self._out:
            if self.closed or self.lost or self.peer_closed or self.error is not None:
                self._out = []
                self._off = 0
                why = self.error or ("closed" if self.closed else "lost" if self.lost else "peer")
                raise SocketClosed("link %d: %s" % (self.link, why))
            k = self._fill()
            t0 = _now()
            try:
                await m._send(self.link, self._txmv[:k])
            except ModemError as e:
                raise self._broken(e)
            self._took(t0)
            m.counters["sends"] += 1
            m.counters["bytes_sent"] += k

    def _fill(self):
        """Copy queued buffers into the send buffer; the number of bytes copied."""
        out = self._out
        cap = len(self._tx)
        k = 0
        while out and k < cap:
            p = out[0]
            off = self._off
            take = min(len(p) - off, cap - k)
            self._txmv[k : k + take] = memoryview(p)[off : off + take]
            k += take
            if off + take == len(p):
                out.pop(0)
                self._off = 0
            else:
                self._off = off + take
        return k

    def close(self):
        """Mark closed at once; the modem's close command runs in a task (wait_closed())."""
        if self._closer is not None:
            return
        self.closed = True
        self._out = []
        self._ev.set()
        self._closer = asyncio.create_task(self._close_task())

    async def _close_task(self):
        try:
            await self._m._release(self)
        finally:
            self._done.set()

    async def wait_closed(self):
        self.close()
        await self._done.wait()
