# NMEA 0183 sentences from a GNSS receiver -> its current fix.
#
# The fix is combined across the sentences of one epoch (one UTC time) by gpsd's rules
# (driver_nmea0183.c and libgpsd_core.c), because gpsd's regression corpus is the oracle this
# parser is judged by (tests/test_nmea_corpus.py): a sentence whose time differs from the last
# timed one starts a new epoch and clears the fix; each sentence then merges only what it
# carries; GGA/GNS give 3D only with an altitude and 4+ satellites; RMC and GLL, which carry no
# altitude, keep the epoch 3D when it already was; GGA/GLL/GNS are dated by the last RMC/ZDA.
# Where gpsd is laxer we are not: a GGA with fix quality 0 is no fix (gpsd reads only its
# satellite count), and midnight is when the time of day falls back by over 12 hours (gpsd:
# any smaller hour, so a log that jumps back an hour gains a day). As gpsd does, a sentence
# without checksum is refused (counted as a bad checksum).
#
# Pure logic for the device: one sentence is parsed in place (field offsets into the line, no
# split, no per-sentence dict); latitude and longitude are integer microdegrees computed from
# the digits, because an ESP32's single-precision float cannot hold 1e-6 degree near 90.

from tracker.timing import civil_from_days, days_from_civil

_MAX_LEN = 120  # '$' to checksum: 82 by the standard, longer for survey-grade digits
_MAX_FIELDS = 40  # the longest in use: a 24-PRN GSA (Navior CH-4701) has 30

# What a sentence carries into the fix (gpsd's *_SET mask bits).
_TIME = 1
_LATLON = 2
_MODE = 4
_ALT = 8
_SPEED = 16
_TRACK = 32
_SATS = 64  # not gpsd's: satellites used, HDOP and GGA quality are kept per epoch too
_HDOP = 128
_QUALITY = 256
_TOD = 512  # a time of day, dated or not

_KNOT = 1852 / 3600  # m/s
_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)


def _key(a, b, c):
    return (a << 16) | (b << 8) | c


_GGA = _key(71, 71, 65)
_RMC = _key(82, 77, 67)
_GNS = _key(71, 78, 83)
_GLL = _key(71, 76, 76)
_VTG = _key(86, 84, 71)
_GSA = _key(71, 83, 65)
_ZDA = _key(90, 68, 65)


class Nmea:
    """feed() one sentence at a time; the attributes hold the current epoch's fix:
    mode (0 nothing yet this epoch, 1 no fix, 2 2D, 3 3D), lat/lon (int microdegrees),
    alt (m MSL), speed (m/s), track (deg true), sats, hdop, quality (GGA), tod_ms (UTC ms of
    the day); date is a property. Unknown values are None. epochs counts the epochs begun."""

    def __init__(self):
        self.counters = {
            "sentences": 0,
            "taken": 0,
            "bad_checksum": 0,
            "malformed": 0,
            "unknown": 0,
        }
        self.epochs = 0  # epochs begun: a change means the previous one is complete
        self._b = b""
        self._n = 0
        self._s = [0] * _MAX_FIELDS
        self._e = [0] * _MAX_FIELDS
        # The receiver's date (nmea.date in gpsd): kept across epochs, as GGA, GLL and GNS
        # carry only the time of day.
        self._day = None
        self._tod = 0  # the last time of day read, for midnight
        self._frac = -1  # time of the last timed sentence, for epoch changes
        self._new_epoch = False
        self._gga_talker = 0
        self._gga_time = None
        self._latch = False  # GGA repeated its time: the receiver lost lock (Trimble)
        self._gsa_talker = 0
        self._gsa_used = 0
        self._gsa_other = False  # a GL/GB/BD/GQ/GA GSA seen: the GP one is only part
        # The last fix that had a time, and whether the epoch before it had an altitude
        # (gpsd's lastfix and oldfix): they decide whether RMC and GLL may keep 3D.
        self._last_mode = 0
        self._last_alt = False
        self._last_day = None
        self._last_tod = None
        self._old_alt = False
        # What the sentence being parsed carries (gpsd's newdata).
        self._nmode = 0
        self._nlat = 0
        self._nlon = 0
        self._nalt = 0.0
        self._nspeed = 0.0
        self._ntrack = 0.0
        self._ntod = 0
        self._nsats = None
        self._nhdop = 0.0
        self._nquality = None
        self._m = 0
        self._k = 0
        self._clear()

    def _clear(self):
        self.mode = 0
        self.lat = None
        self.lon = None
        self.alt = None
        self.speed = None
        self.track = None
        self.sats = None
        self.hdop = None
        self.quality = None
        self.tod_ms = None
        self._fix_day = None

    @property
    def date(self):
        """(year, month, day) of the fix, or None."""
        if self._fix_day is None:
            return None
        return civil_from_days(self._fix_day)

    def unix_time(self):
        """Unix seconds (UTC) of the fix, or None without both date and time."""
        if self._fix_day is None or self.tod_ms is None:
            return None
        return self._fix_day * 86400 + self.tod_ms // 1000

    def fixed(self):
        return self.mode >= 2 and self.lat is not None

    # -- one sentence ---------------------------------------------------------------------

    def feed(self, line):
        try:
            return self._feed(line)
        except Exception:  # never: a parser bug must not stop the receiver task
            self.counters["malformed"] += 1
            return None

    def _feed(self, line):
        c = self.counters
        if isinstance(line, str):
            try:
                line = line.encode()
            except Exception:
                line = b""
        end = len(line)
        while end and line[end - 1] in b" \t\r\n\x00":
            end -= 1
        if end == 0:
            return None
        c["sentences"] += 1
        # Start at the last '$': noise before a sentence is skipped, as gpsd's lexer does.
        start = line.rfind(b"$", 0, end)
        if start < 0 or end - start > _MAX_LEN:
            if start < 0 and line[0] == 33:  # '!': AIS, well formed but not ours
                c["unknown"] += 1
            else:
                c["malformed"] += 1
            return None
        star = line.find(b"*", start, end)
        stop = end if star < 0 else star
        total = 0
        for i in range(start + 1, stop):
            ch = line[i]
            if ch < 32 or ch > 126:  # binary, NUL fill, a glued binary packet
                c["malformed"] += 1
                return None
            total ^= ch
        if star < 0:
            # No checksum: refused, as gpsd refuses it (its corpus: hp58534a.log); a line cut
            # short by a UART overrun looks just like this.
            c["bad_checksum"] += 1
            return None
        if end - star != 3:
            c["malformed"] += 1
            return None
        hi = _hex(line[star + 1])
        lo = _hex(line[star + 2])
        if hi < 0 or lo < 0:
            c["malformed"] += 1
            return None
        if hi * 16 + lo != total:
            c["bad_checksum"] += 1
            return None
        # Field offsets, in place.
        s = self._s
        e = self._e
        n = 0
        i = start + 1
        while True:
            if n == _MAX_FIELDS:
                c["malformed"] += 1
                return None
            j = line.find(b",", i, stop)
            s[n] = i
            if j < 0:
                e[n] = stop
                n += 1
                break
            e[n] = j
            n += 1
            i = j + 1
        self._b = line
        self._n = n
        kind = self._dispatch(n)
        self._b = b""  # don't keep the caller's line alive
        # gpsd accumulates GSA satellites only over consecutive GSA sentences.
        if kind != "GSA":
            self._gsa_talker = 0
        if kind is None:
            c["unknown"] += 1
        elif kind == "":
            c["malformed"] += 1
            kind = None
        else:
            c["taken"] += 1
        return kind

    def _dispatch(self, n):
        b = self._b
        s0 = self._s[0]
        if self._e[0] - s0 != 5 or b[s0] == 80:  # 'P': proprietary
            return None
        t0 = b[s0]
        t1 = b[s0 + 1]
        if not (65 <= t0 <= 90 and 65 <= t1 <= 90):
            return None
        key = _key(b[s0 + 2], b[s0 + 3], b[s0 + 4])
        self._nmode = 0
        self._new_epoch = False
        # Minimum field counts (with the address) are gpsd's: shorter is a cut sentence.
        if key == _GGA:
            if n < 13:
                return ""
            self._commit(self._gga(t1))
            return "GGA"
        if key == _RMC:
            if n < 8:
                return ""
            self._commit(self._rmc(n))
            return "RMC"
        if key == _GNS:
            if n < 13:
                return ""
            self._commit(self._gns())
            return "GNS"
        if key == _GLL:
            if n < 7:
                return ""
            self._commit(self._gll(n))
            return "GLL"
        if key == _VTG:
            if n < 5:
                return ""
            self._commit(self._vtg(n))
            return "VTG"
        if key == _GSA:
            self._commit(self._gsa(n, t1))
            return "GSA"
        if key == _ZDA:
            if n < 5:
                return ""
            self._commit(self._zda())
            return "ZDA"
        return None

    def _commit(self, mask):
        # Don't let a sentence without altitude (RMC, GLL) turn a 3D epoch 2D.
        if (
            mask & _MODE
            and self.mode == 3
            and self._nmode != 1
            and (self._last_alt or self._old_alt)
        ):
            self._nmode = 3
        if self._new_epoch:
            self._clear()
            self.epochs += 1
        if mask & _TOD:
            self.tod_ms = self._ntod
        if mask & _TIME:
            self._fix_day = self._day
        if mask & _LATLON:
            self.lat = self._nlat
            self.lon = self._nlon
        if mask & _MODE:
            self.mode = self._nmode
        if mask & _ALT:
            self.alt = self._nalt
        if mask & _SPEED:
            self.speed = self._nspeed
        if mask & _TRACK:
            self.track = self._ntrack
        if mask & _SATS:
            self.sats = self._nsats
        if mask & _HDOP:
            self.hdop = self._nhdop
        if mask & _QUALITY:
            self.quality = self._nquality
        day = self._fix_day
        if day is not None:
            tod = self.tod_ms
            if day != self._last_day or tod != self._last_tod:
                self._old_alt = self._last_alt
            self._last_day = day
            self._last_tod = tod
            self._last_mode = self.mode
            self._last_alt = self.alt is not None

    # -- sentences ------------------------------------------------------------------------

    def _gga(self, talker):
        quality = self._int(6)
        last_talker = self._gga_talker
        self._gga_talker = talker
        tod = self._hhmmss(1)
        if last_talker and last_talker != talker:
            self._latch = False  # GPGGA then GLGGA in one epoch (SiRFstarV)
        else:
            self._latch = tod >= 0 and tod == self._gga_time
        if not self._latch:
            self._gga_time = tod
        mask = 0
        if tod >= 0:
            mask |= self._time(tod)
        sats = self._int(7)
        if quality == 0:  # "fix not valid": whatever the fields say
            self._nmode = 1
        elif self._latlon(2):
            mask |= _LATLON
            self._nmode = 2
            if self._decimal(9):
                self._nalt = self._m / _POW10[self._k]
                mask |= _ALT
                if sats is not None and sats >= 4:
                    self._nmode = 3
            # Fewer than 3 satellites is no fix, unless this GGA follows another
            # constellation's (SiRFstarV, Telit: GPGGA then GLGGA/GAGGA, each counting its own).
            if (sats is None or sats < 3) and not (last_talker and last_talker != talker):
                self._nmode = 1
        else:
            self._nmode = 1
        self._nquality = quality
        self._nsats = sats
        mask |= _SATS | _QUALITY
        if self._decimal(8):
            self._nhdop = self._m / _POW10[self._k]
            mask |= _HDOP
        return mask | _MODE

    def _rmc(self, n):
        status = self._ch(2)
        if (status != 65 and status != 68) or (n > 12 and self._ch(12) == 78):
            # V (void), or NMEA 2.3's mode indicator N (data not valid)
            # Its time and date are not trusted either (MTK3301 and RGM-3800 send bogus ones).
            self._nmode = 1
            return _MODE
        mask = 0
        if n > 9 and not self._empty(1) and not self._empty(9):
            tod = self._hhmmss(1)
            if tod >= 0 and self._ddmmyy(9):
                self._register(tod)
                self._ntod = tod
                mask |= _TIME | _TOD
        if self._latlon(3):
            mask |= _LATLON
            if self._last_mode <= 2:
                self._nmode = 2
                mask |= _MODE
            elif self._last_mode == 3:
                self._nmode = 3
                mask |= _MODE
        else:
            self._nmode = 1
            mask |= _MODE
        if self._decimal(7):
            self._nspeed = self._m * _KNOT / _POW10[self._k]
            mask |= _SPEED
        if self._decimal(8):
            self._ntrack = self._m / _POW10[self._k]
            mask |= _TRACK
        # RMC alone (Magellan EC-10X) would never be 3D without these two hints.
        if self._gsa_used > 3 or self.alt is not None:
            self._nmode = 3
            mask |= _MODE
        return mask

    def _gll(self, n):
        mask = 0
        if not self._empty(5):
            tod = self._hhmmss(5)
            if tod >= 0:
                mask |= self._time(tod)
        valid = self._ch(6)
        if valid == 65 and (n < 8 or self._ch(7) != 78) and self._latlon(1):  # A, not N
            mask |= _LATLON
            if self.alt is not None or self._gsa_used > 3:
                self._nmode = 3
            elif self.mode < 2 or not self._old_alt:
                self._nmode = 2
        else:
            self._nmode = 1
        return mask | _MODE

    def _gns(self):
        mask = 0
        if not self._empty(1):
            tod = self._hhmmss(1)
            if tod >= 0:
                mask |= self._time(tod)
        faa = self._ch(6)
        if faa == 0 or faa == 78:  # missing or N: not valid
            self._nmode = 1
            return mask | _MODE
        nav = self._ch(13)
        if nav == 85 or nav == 86:  # NMEA 4.1 navigation status U(nsafe) or V(oid)
            return mask
        sats = self._int(7)
        if self._latlon(2):
            mask |= _LATLON
            self._nmode = 2
            if self._decimal(9):
                self._nalt = self._m / _POW10[self._k]
                mask |= _ALT
                if sats is not None and sats > 3:
                    self._nmode = 3
        else:
            self._nmode = 1
        self._nsats = sats
        mask |= _SATS
        if self._decimal(8):
            self._nhdop = self._m / _POW10[self._k]
            mask |= _HDOP
        return mask | _MODE

    def _vtg(self, n):
        if self._empty(1) or self._empty(5):
            return 0
        if n > 9:
            faa = self._ch(9)
            if faa == 69 or faa == 78:  # E (dead reckoning) or N (not valid)
                return 0
        mask = 0
        if self._decimal(1):
            self._ntrack = self._m / _POW10[self._k]
            mask |= _TRACK
        if self._decimal(5):
            self._nspeed = self._m * _KNOT / _POW10[self._k]
            mask |= _SPEED
        return mask

    def _gsa(self, n, talker):
        last_talker = self._gsa_talker
        mask = 0
        hdop = 0
        if n >= 18 and not self._latch:
            mode = self._int(2)
            if mode is not None and 1 <= mode <= 3:
                self._nmode = mode
                mask = _MODE
            if n <= 19 and self._decimal(16):
                self._nhdop = self._m / _POW10[self._k]
                hdop = _HDOP
            # A receiver may split the used satellites over several GSA (GP + GL, or two
            # GN): count them together until another sentence type comes.
            if last_talker == 0 or (talker == last_talker and talker != 78):
                self._gsa_used = 0
            self._gsa_talker = talker
            if talker in b"BDQLA":
                self._gsa_other = True
            for i in range(3, n - 3):
                prn = self._int(i)
                if prn is not None and _known_prn(prn):
                    self._gsa_used += 1
        if self._gsa_other and talker == 80:  # GP before GL/BD/GA: wait for the rest
            return hdop
        if last_talker != 78 and talker == 78:  # the first of several GN: mode alone
            return _MODE | hdop
        return mask | hdop

    def _zda(self):
        if self._empty(1) or self._empty(2) or self._empty(3) or self._empty(4):
            return 0
        tod = self._hhmmss(1)
        if tod < 0:
            return 0
        day = self._int(2)
        month = self._int(3)
        year = self._int(4)
        if day is None or month is None or year is None:
            return 0
        if not (1980 <= year <= 2199 and 1 <= month <= 12 and 1 <= day <= 31):
            return 0
        self._day = days_from_civil(year, month, day)
        self._register(tod)
        self._ntod = tod
        return _TIME | _TOD

    # -- time ------------------------------------------------------------------------------

    def _hhmmss(self, i):
        """UTC milliseconds of the day from hhmmss[.sss], -1 when malformed."""
        b = self._b
        p = self._s[i]
        end = self._e[i]
        if end - p < 6:
            return -1
        v = 0
        for q in range(p, p + 6):
            d = b[q] - 48
            if d < 0 or d > 9:
                return -1
            v = v * 10 + d
        h = v // 10000
        mi = v // 100 % 100
        sec = v % 100
        if h > 23 or mi > 59 or sec > 60:
            return -1
        ms = 0
        q = p + 6
        if q < end:
            if b[q] != 46:  # '.'
                return -1
            q += 1
            if q == end:
                return -1
            scale = 100
            while q < end:
                d = b[q] - 48
                if d < 0 or d > 9:
                    return -1
                ms += d * scale
                scale //= 10
                q += 1
        tod = ((h * 60 + mi) * 60 + sec) * 1000 + ms
        # Midnight passed when the time of day falls back by more than half a day (a log
        # that jumps back an hour is not a new day).
        if self._day is not None and tod < self._tod - 43200000:
            self._day += 1
        self._tod = tod
        return tod

    def _time(self, tod):
        """A GGA/GLL/GNS time: starts an epoch when it moved; dates the fix only once a date
        is known (from RMC or ZDA)."""
        self._register(tod)
        self._ntod = tod
        return _TOD | _TIME if self._day is not None else _TOD

    def _register(self, tod):
        last = self._frac
        self._frac = tod
        if tod != last:
            self._new_epoch = True

    def _ddmmyy(self, i):
        b = self._b
        p = self._s[i]
        if self._e[i] - p != 6:
            return False
        v = 0
        for q in range(p, p + 6):
            d = b[q] - 48
            if d < 0 or d > 9:
                return False
            v = v * 10 + d
        day = v // 10000
        month = v // 100 % 100
        yy = v % 100
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return False
        # gpsd's century: two-digit years from 80 are 1980-1999 (GPS began in 1980),
        # the others 2000-2079.
        self._day = days_from_civil(1900 + yy if yy >= 80 else 2000 + yy, month, day)
        return True

    # -- fields ----------------------------------------------------------------------------

    def _empty(self, i):
        return i >= self._n or self._s[i] == self._e[i]

    def _ch(self, i):
        if i >= self._n or self._s[i] == self._e[i]:
            return 0
        return self._b[self._s[i]]

    def _int(self, i):
        """A field of digits as an int, None when empty or not all digits."""
        if i >= self._n:
            return None
        b = self._b
        p = self._s[i]
        end = self._e[i]
        if p == end or end - p > 9:
            return None
        v = 0
        while p < end:
            d = b[p] - 48
            if d < 0 or d > 9:
                return None
            v = v * 10 + d
            p += 1
        return v

    def _decimal(self, i):
        """A decimal field [-]d[.d] into self._m (int mantissa) and self._k (fraction digits,
        at most 9); False when empty or malformed."""
        if i >= self._n:
            return False
        b = self._b
        p = self._s[i]
        end = self._e[i]
        neg = False
        if p < end and (b[p] == 45 or b[p] == 43):
            neg = b[p] == 45
            p += 1
        m = 0
        k = -1
        digits = 0
        while p < end:
            ch = b[p]
            if ch == 46 and k < 0:
                k = 0
            elif 48 <= ch <= 57:
                if k < 9:
                    m = m * 10 + ch - 48
                    if k >= 0:
                        k += 1
                digits += 1
            else:
                return False
            p += 1
        if digits == 0 or digits > 18:
            return False
        self._m = -m if neg else m
        self._k = k if k > 0 else 0
        return True

    def _latlon(self, i):
        """Fields i..i+3 (ddmm.mmmm, N/S, dddmm.mmmm, E/W) into self._nlat/_nlon."""
        lat = self._angle(i, 90000000)
        if lat < 0:
            return False
        lon = self._angle(i + 2, 180000000)
        if lon < 0:
            return False
        ns = self._ch(i + 1)
        ew = self._ch(i + 3)
        if (ns != 78 and ns != 83) or (ew != 69 and ew != 87):
            return False
        self._nlat = -lat if ns == 83 else lat
        self._nlon = -lon if ew == 87 else lon
        return True

    def _angle(self, i, limit):
        """[d]ddmm.mmmm as microdegrees, rounded half away from zero by integer arithmetic;
        -1 when malformed, minutes >= 60 or beyond limit."""
        if i >= self._n:
            return -1
        b = self._b
        p = self._s[i]
        end = self._e[i]
        whole = 0
        n = 0
        while p < end and 48 <= b[p] <= 57:
            whole = whole * 10 + b[p] - 48
            n += 1
            p += 1
        if n == 0 or n > 5:
            return -1
        frac = 0
        k = 0
        if p < end:
            if b[p] != 46:
                return -1
            p += 1
            while p < end:
                d = b[p] - 48
                if d < 0 or d > 9 or k == 12:
                    return -1
                frac = frac * 10 + d
                k += 1
                p += 1
        minutes = whole % 100
        if minutes >= 60:
            return -1
        # microdegrees of the minutes = (minutes + frac / 10^k) * 10^6 / 60
        if k <= 6:
            num = (minutes * _POW10[k] + frac) * _POW10[6 - k]
            den = 60
        else:
            num = minutes * 10**k + frac
            den = 60 * 10 ** (k - 6)
        q = num // den
        if 2 * (num - q * den) >= den:
            q += 1
        v = whole // 100 * 1000000 + q
        return -1 if v > limit else v


def _hex(ch):
    if 48 <= ch <= 57:
        return ch - 48
    if 65 <= ch <= 70:
        return ch - 55
    if 97 <= ch <= 102:
        return ch - 87
    return -1


def _known_prn(prn):
    # The PRN ranges gpsd maps to a constellation (nmeaid_to_prn); others are not counted.
    return not (
        prn < 1
        or 97 <= prn <= 119
        or 159 <= prn <= 172
        or 183 <= prn <= 192
        or 198 <= prn <= 200
        or 238 <= prn <= 300
        or 357 <= prn <= 400
        or prn > 437
    )
