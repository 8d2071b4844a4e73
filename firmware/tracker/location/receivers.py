# The two ways a tracker gets position, behind one interface the location service drives:
#   await r.power(True|False)    GNSS on or off (off: no current drawn for it)
#   await r.poll(now)            -> Fix, or None; r.reason says why there is none
#   r.counters                   what went wrong, for the status
# UartReceiver: a standalone NMEA receiver (u-blox, Quectel L76K, ...) on a UART, its power
# behind an optional enable pin. ModemReceiver: the cellular modem's own GNSS over AT, in
# the family's dialect (location/modem_answers.py has the answers' formats).
from tracker import log
from tracker.aio import sleep_ms, ticks_diff
from tracker.location.fix import Fix
from tracker.location.modem_answers import cgnssinfo, cgpsinfo, qgpsloc
from tracker.location.nmea import Nmea
from tracker.modem.at import AtError, AtTimeout, CmeError

_TAG = "gnss"
_MAX_LINE = 120  # NMEA allows 82 characters; longer is noise (or a binary protocol)
SILENT_MS = 3000  # a powered receiver that sent nothing this long is not there


class UartReceiver:
    source = "uart"
    poll_ms = 1000  # takes what the resident reader parsed: cheap

    def __init__(self, stream, enable=None, enable_active=1):
        self._stream = stream  # asyncio stream over machine.UART
        self._enable = enable
        self._active = enable_active
        self.nmea = Nmea()
        self.on = False
        self.started_at = None  # ticks_ms() the receiver was switched on
        self.reason = "off"
        self.counters = {"bytes": 0, "overlong": 0, "read_errors": 0}
        self._line = bytearray()
        self._skip = False  # inside an overlong line
        self._buf = bytearray(128)
        self._heard = None  # ticks_ms() of the last byte
        self._on_at = 0
        self._fix = None  # the last complete epoch's fix, until poll() takes it
        self._types = 0  # position sentences seen in the current epoch (bit 1 RMC, 2 GGA/GNS)
        self._tod = None
        if enable is not None:
            enable.value(1 - enable_active)  # off until the service asks

    async def power(self, on, now=0):
        if self._enable is not None:
            self._enable.value(self._active if on else 1 - self._active)
        if on and not self.on:
            self._on_at = now
            self.started_at = now
            self._heard = None
        self.on = on
        self.reason = "searching" if on else "off"

    async def run(self, clock):
        """Resident reader: the UART is drained all the time so that its ring buffer never
        overruns into half sentences; bytes of a receiver that is off are only counted."""
        into = getattr(self._stream, "readinto", None)
        buf = self._buf
        while True:
            try:
                if into is not None:
                    n = await into(buf)
                    data = buf
                else:
                    data = await self._stream.read(len(buf))
                    n = len(data) if data else 0
            except Exception as e:  # not CancelledError (a BaseException)
                self.counters["read_errors"] += 1
                log.w(_TAG, "UART read failed: %s" % e)
                await sleep_ms(200)
                continue
            if not n:
                await sleep_ms(50)  # EOF on a pty whose other side restarts
                continue
            self.counters["bytes"] += n
            self._heard = clock()
            self._take(data, n, self._heard)

    def _take(self, data, n, now):
        line = self._line
        for i in range(n):
            b = data[i]
            if b == 10 or b == 13:
                if line and not self._skip:
                    self._sentence(line, now)
                line[:] = b""  # in place: no new buffer per sentence
                self._skip = False
            elif self._skip:
                continue
            elif len(line) < _MAX_LINE:
                line.append(b)
            else:  # dropped up to the end of the line, counted once
                self.counters["overlong"] += 1
                self._skip = True

    def _sentence(self, line, now):
        n = self.nmea
        kind = n.feed(line)
        if kind is None:
            return
        if n.tod_ms != self._tod:  # a new epoch: the previous one is complete
            self._epoch_done(now)
            self._tod = n.tod_ms
            self._types = 0
        if kind == "RMC":
            self._types |= 1
        elif kind in ("GGA", "GNS"):
            self._types |= 2
        if self._types == 3:  # both halves of the epoch: report it without waiting
            self._epoch_done(now)
            self._types = 4

    def _epoch_done(self, now):
        n = self.nmea
        if self._types & 3 and n.fixed() and n.lat is not None:
            self._fix = Fix(
                n.lat, n.lon, alt=n.alt, speed=n.speed, heading=n.track, sats=n.sats,
                hdop=n.hdop, mode=n.mode, ts=n.unix_time(), at=now,
            )  # fmt: skip

    async def poll(self, now):
        fix = self._fix
        self._fix = None
        if fix is not None:
            self.reason = None
            return fix
        heard = self._heard if self._heard is not None else self._on_at
        if ticks_diff(now, heard) >= SILENT_MS:
            self.reason = "no_data"  # unpowered, unplugged, wrong baud rate or pin
        elif self.nmea.mode == 1 or self.nmea.mode == 0:
            self.reason = "searching"
        return None


# family -> (power on, power off, position query, answer parser)
_SIMCOM = ("AT+CGPS=1", "AT+CGPS=0", "AT+CGNSSINFO", cgnssinfo)
_A76XX = ("AT+CGNSSPWR=1", "AT+CGNSSPWR=0", "AT+CGNSSINFO", cgnssinfo)
_QUECTEL = ("AT+QGPS=1", "AT+QGPSEND", "AT+QGPSLOC=2", qgpsloc)
DIALECTS = {"sim7600": _SIMCOM, "a76xx": _A76XX, "bg96": _QUECTEL, "bg95": _QUECTEL,
            "ec25": _QUECTEL}  # fmt: skip
# Quectel +CME ERROR codes (BG96 GNSS AT manual): 504 session ongoing (already on), 505
# session not active (off), 516 not fixed now.
_ALREADY_ON = 504
_NOT_ACTIVE = 505
_NO_FIX = 516
QUERY_MS = 3000


class ModemReceiver:
    source = "modem"
    # A query every 2 s, not every second: each is an AT exchange that holds the engine the
    # uplink shares and leaves garbage on a PSRAM-less heap; 2 s is still a fix per ~25 m at
    # city speeds, finer than move_distance_m.
    poll_ms = 2000

    def __init__(self, modem):
        self.modem = modem
        try:
            self._on, self._off, self._query, self._parse = DIALECTS[modem.family]
        except KeyError:
            raise ValueError("no GNSS commands known for modem family %s" % modem.family)
        self.on = False
        self.started_at = None  # ticks_ms() the modem took the GNSS on command
        self.reason = "off"
        self.counters = {"queries": 0, "errors": 0, "restarts": 0}
        self._generation = None  # the modem's boot count when GNSS was last switched on

    def _boots(self):
        c = self.modem.counters
        return c["power_ons"] + c["unexpected_resets"]

    def _unavailable(self):
        m = self.modem
        return m.powered is not True or m.changing_power or m.off()

    async def _cmd(self, text):
        try:
            return await self.modem.at.cmd(text, timeout_ms=QUERY_MS)
        except (AtError, AtTimeout) as e:
            return e

    async def power(self, on, now=0):
        self.on = on
        self.reason = "searching" if on else "off"
        if self._unavailable():
            self._generation = None  # switched on when the modem is back
            return
        if on:
            await self._switch_on(now)
        else:
            self._generation = None
            r = await self._cmd(self._off)
            if isinstance(r, Exception) and getattr(r, "code", None) != _NOT_ACTIVE:
                self.counters["errors"] += 1

    async def _switch_on(self, now):
        self.started_at = now
        r = await self._cmd(self._on)
        code = getattr(r, "code", None)
        if isinstance(r, Exception) and code != _ALREADY_ON:
            # SIMCom answers a second AT+CGPS=1 with ERROR: on already, which the query
            # will show; anything else is counted.
            self.counters["errors"] += 1
        self._generation = self._boots()

    async def poll(self, now):
        if not self.on:
            return None
        if self._unavailable():
            self.reason = "modem_off"
            self._generation = None
            return None
        if self._generation != self._boots():
            if self._generation is not None:
                self.counters["restarts"] += 1  # the modem rebooted: its GNSS is off again
                log.i(_TAG, "modem restarted: GNSS on again")
            await self._switch_on(now)
        self.counters["queries"] += 1
        r = await self._cmd(self._query)
        if isinstance(r, Exception):
            code = getattr(r, "code", None)
            plain_error = isinstance(r, AtError) and not isinstance(r, CmeError)
            if plain_error and self._query == "AT+CGNSSINFO" and self._on == "AT+CGPS=1":
                # SIM7600 firmware older than AT+CGNSSINFO: the classic query (no satellite
                # count or HDOP in it).
                self._query, self._parse = "AT+CGPSINFO", cgpsinfo
                log.i(_TAG, "AT+CGNSSINFO refused: using AT+CGPSINFO")
                self.reason = "searching"
                return None
            if code == _NO_FIX:
                self.reason = "searching"
            elif code == _NOT_ACTIVE:
                self._generation = None  # switched off behind our back: on again next poll
                self.reason = "searching"
            else:
                self.counters["errors"] += 1
                self.reason = "modem_error"
            return None
        line = r.first()
        try:
            fix = self._parse(line) if line else None
        except ValueError as e:
            self.counters["errors"] += 1
            self.reason = "bad_answer"
            log.w(_TAG, "GNSS answer not understood: %s" % e)
            return None
        if fix is None:
            self.reason = "searching"
            return None
        fix.at = now
        self.reason = None
        return fix
