"""The modems' GNSS AT commands, answered from the board's GNSS model (host_tools/vboard/gnss).

Mixins for the dialects (simcom.py, quectel.py); they read `self.m.gnss`, a `GnssSim` with its
own power state and TTFF over the board's shared route (None: the module has no GNSS, every
command answers ERROR, as on an A7670G). The modem's GNSS is off after every boot
(core.Modem._reset_state powers it off).

Formats and their sources (SENSORS_GNSS.md and the corpus /work/shared/corpus/at-transcripts;
"unverified" marks choices no source here confirms):

SIM7600 (SIM7500/SIM7600 AT manual, as quoted by drivers and LilyGO issues):
  AT+CGPS=1 / AT+CGPS=0 -> OK; AT+CGPS=1 while the session runs -> ERROR ("If GPS is already
  on, sending AT+CGPS=1 will definitely return an error", LilyGO T-SIM7600X issue 123);
  AT+CGPS? -> "+CGPS: <on>,1" (1 = standalone mode; "+CGPS: 1,1" in T-SIM7600X issue 105).
  AT+CGPSINFO -> "+CGPSINFO: 3113.343286,N,12121.234064,E,250311,072809.3,44.1,0.0,0":
  lat ddmm.mmmmmm, N/S, lon dddmm.mmmmmm, E/W, date ddmmyy, UTC hhmmss.s, alt m, speed knots,
  course; no fix "+CGPSINFO: ,,,,,,,," (T-SIM7600X issue 42).
  AT+CGNSSINFO -> SENSORS_GNSS.md's "2,05,00,00,6041.475467,N,02846.185792,E,080222,114731.0,
  85.9,0.0,,1.5,1.3,0.9": mode, GPS/GLONASS/BeiDou satellites, lat, N/S, lon, E/W, date, UTC,
  alt, speed (knots, check), course (empty while standing still, as in that sample), PDOP,
  HDOP, VDOP; no fix "+CGNSSINFO: ,,,,,,,,". Unverified: both info commands answer the
  no-fix line while GNSS is off.
A7670 (A76xx): AT+CGNSSPWR=1 -> OK, then "+CGNSSPWR: READY!" after GnssTimings.ready_s
  (7.8 s in a7670-boot-gnss-cgnsinf-error); AT+CGNSSPWR=0 -> OK; AT+CGNSSPWR? ->
  "+CGNSSPWR: <on>,0,1" (the A7608E-H log in LilyGo-Modem-Series issue 202);
  AT+CGNSSINFO -> 18 fields (SIM767XX/A76XX AT manual section "AT+CGNSSINFO", as quoted by
  drivers): mode, GPS-SVs, GLONASS-SVs, GALILEO-SVs, BEIDOU-SVs (satellites in view), lat,
  N/S, lon, E/W in decimal degrees, date ddmmyy, UTC hhmmss.ss, alt, speed (knots, check),
  course, PDOP, HDOP, VDOP, satellites used ("3,15,,05,00,xx.xxxxx778,N,...,180425,072255.00,
  169.9,0.379,,10.40,6.39,8.20,0" in a7670-gnss-cgnssinfo-nofix-then-fix); no fix
  "+CGNSSINFO: ,,,,,,,," (same transcript); GNSS off -> ERROR (issue 202: "+CGNSSPWR: 0,0,1"
  then "AT+CGNSSINFO" -> "ERROR"). AT+CGPS / AT+CGPSINFO are not A76xx commands -> ERROR.
  Unverified: AT+CGNSSPWR=1 while on answers OK without a second READY.
BG96 (Quectel GNSS AT manual, as the mbed BG96_GNSS driver and SENSORS_GNSS.md quote it):
  AT+QGPS=1 -> OK, again while on -> +CME ERROR: 504 (session is ongoing); AT+QGPSEND -> OK,
  while off -> +CME ERROR: 505 (session not active); AT+QGPS? -> "+QGPS: <on>";
  AT+QGPSLOC=2 -> "+QGPSLOC: 113355.0,44.74770,-85.56527,1.2,192.0,2,277.11,0.0,0.0,250420,10"
  (UTC hhmmss.s, lat, lon, HDOP, alt, fix 2/3, COG, km/h, knots, date, satellites);
  mode 0 gives "ddmm.mmmmN"-style and mode 1 "ddmm.mmmmmm,N"-style positions;
  +CME ERROR: 516 without a fix, 505 while GNSS is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands import CmeError, Command, CommandError, Reply
from .common import at

if TYPE_CHECKING:
    from host_tools.vboard.gnss.model import Fix, GnssSim

    from .core import Modem

NO_FIX_SIMCOM = ",,,,,,,,"  # "+CGPSINFO: ,,,,,,,," / "+CGNSSINFO: ,,,,,,,,"


def _ddmm(value: float, deg_digits: int, decimals: int) -> str:
    a = abs(value)
    deg = int(a)
    minutes = round((a - deg) * 60, decimals)
    if minutes >= 60:
        deg, minutes = deg + 1, 0.0
    return f"{deg:0{deg_digits}d}{minutes:0{3 + decimals}.{decimals}f}"


def _hemi(value: float, pos: str, neg: str) -> str:
    return pos if value >= 0 else neg


class _GnssAt:
    m: Modem

    def _gnss(self) -> GnssSim:
        gnss = self.m.gnss
        if gnss is None:
            raise CommandError("no GNSS on this module")
        gnss.count_command(self._cmd_name)
        return gnss

    _cmd_name = ""

    def _take(self, cmd: Command) -> GnssSim:
        self._cmd_name = cmd.at_name
        return self._gnss()

    @staticmethod
    def _counts(gnss: GnssSim) -> tuple[int, int]:
        """(GPS, GLONASS) satellites used."""
        used = [s for s in gnss.satellites() if s.used]
        return sum(s.system == "GP" for s in used), sum(s.system == "GL" for s in used)


class Sim7600Gnss(_GnssAt):
    @at("+CGPS")
    def c_cgps(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        if cmd.kind == "read":
            reply.info(f"+CGPS: {1 if gnss.powered else 0},1")
            return
        if cmd.kind == "test":
            reply.info("+CGPS: (0,1),(1-3)")
            return
        if cmd.kind != "set":
            raise CommandError(cmd.text)
        on = cmd.int_arg(0)
        mode = cmd.int_arg(1, 1)
        if on not in (0, 1) or mode not in (1, 2, 3):
            raise CommandError(cmd.text)
        if on and gnss.powered:
            raise CommandError(cmd.text)  # already running: ERROR (T-SIM7600X issue 123)
        gnss.set_power(bool(on))

    @at("+CGPSINFO")
    def c_cgpsinfo(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        if cmd.kind == "test":
            return
        fix = gnss.fix(count=True)
        if fix is None:
            reply.info(f"+CGPSINFO: {NO_FIX_SIMCOM}")
            return
        course = "" if fix.heading is None else f"{fix.heading:.1f}"
        reply.info(
            f"+CGPSINFO: {_ddmm(fix.lat, 2, 6)},{_hemi(fix.lat, 'N', 'S')},"
            f"{_ddmm(fix.lon, 3, 6)},{_hemi(fix.lon, 'E', 'W')},"
            f"{fix.utc:%d%m%y},{fix.utc:%H%M%S}.0,{fix.alt:.1f},{fix.speed_knots:.1f},{course}"
        )

    @at("+CGNSSINFO")
    def c_cgnssinfo(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        if cmd.kind == "test":
            return
        fix = gnss.fix(count=True)
        if fix is None:
            reply.info(f"+CGNSSINFO: {NO_FIX_SIMCOM}")
            return
        gps, glo = self._counts(gnss)
        course = "" if fix.heading is None else f"{fix.heading:.1f}"
        reply.info(
            f"+CGNSSINFO: {fix.fix_mode},{gps:02d},{glo:02d},00,"
            f"{_ddmm(fix.lat, 2, 6)},{_hemi(fix.lat, 'N', 'S')},"
            f"{_ddmm(fix.lon, 3, 6)},{_hemi(fix.lon, 'E', 'W')},"
            f"{fix.utc:%d%m%y},{fix.utc:%H%M%S}.0,{fix.alt:.1f},{fix.speed_knots:.1f},{course},"
            f"{fix.pdop:.1f},{fix.hdop:.1f},{fix.vdop:.1f}"
        )


class A7670Gnss(_GnssAt):
    _ready_gen = 0
    _ready = False

    @at("+CGPS", "+CGPSINFO")
    def c_no_cgps(self, cmd: Command, reply: Reply) -> None:
        raise CommandError(cmd.text)  # SIM7600 commands; the A76xx has CGNSSPWR/CGNSSINFO

    @at("+CGNSSPWR")
    def c_cgnsspwr(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        m = self.m
        if cmd.kind == "read":
            reply.info(f"+CGNSSPWR: {1 if gnss.powered else 0},0,1")
            return
        if cmd.kind == "test":
            reply.info("+CGNSSPWR: (0,1)")
            return
        if cmd.kind != "set":
            raise CommandError(cmd.text)
        on = cmd.int_arg(0)
        if on not in (0, 1):
            raise CommandError(cmd.text)
        if not on:
            self._ready_gen += 1
            self._ready = False
            gnss.set_power(False)
            return
        if gnss.powered:
            return
        gnss.set_power(True)
        self._ready = False
        self._ready_gen += 1
        gen = self._ready_gen

        def ready() -> None:
            if gen == self._ready_gen and gnss.powered:
                self._ready = True
                m.urc("+CGNSSPWR: READY!")

        m.later(gnss.timings.ready_s, ready)

    @at("+CGNSSINFO")
    def c_cgnssinfo_a76(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        if cmd.kind == "test":
            return
        if not gnss.powered:
            raise CommandError(cmd.text)  # LilyGo-Modem-Series issue 202: off -> ERROR
        fix = gnss.fix(count=True) if self._ready else None
        if fix is None:
            reply.info(f"+CGNSSINFO: {NO_FIX_SIMCOM}")
            return
        view = gnss.satellites()
        gps = sum(s.system == "GP" for s in view)
        glo = sum(s.system == "GL" for s in view)
        course = "" if fix.heading is None else f"{fix.heading:.2f}"
        reply.info(
            f"+CGNSSINFO: {fix.fix_mode},{gps:02d},{glo:02d},00,00,"
            f"{abs(fix.lat):.7f},{_hemi(fix.lat, 'N', 'S')},"
            f"{abs(fix.lon):.7f},{_hemi(fix.lon, 'E', 'W')},"
            f"{fix.utc:%d%m%y},{fix.utc:%H%M%S}.00,{fix.alt:.1f},{fix.speed_knots:.3f},{course},"
            f"{fix.pdop:.2f},{fix.hdop:.2f},{fix.vdop:.2f},{fix.sats_used:02d}"
        )


class Bg96Gnss(_GnssAt):
    @at("+QGPS")
    def c_qgps(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        if cmd.kind == "read":
            reply.info(f"+QGPS: {1 if gnss.powered else 0}")
            return
        if cmd.kind == "test":
            reply.info("+QGPS: (0,1),(1-3),(1-1000),(1-65535),(0-65535)")
            return
        if cmd.kind != "set" or cmd.int_arg(0) not in (0, 1):
            raise CmeError(50)
        if cmd.int_arg(0) == 0:
            raise CmeError(50)  # the session ends with AT+QGPSEND
        if gnss.powered:
            raise CmeError(504)  # session is ongoing
        gnss.set_power(True)

    @at("+QGPSEND")
    def c_qgpsend(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        if cmd.kind == "test":
            return
        if not gnss.powered:
            raise CmeError(505)  # session not active
        gnss.set_power(False)

    @at("+QGPSLOC")
    def c_qgpsloc(self, cmd: Command, reply: Reply) -> None:
        gnss = self._take(cmd)
        if cmd.kind == "test":
            reply.info("+QGPSLOC: (0-2)")
            return
        mode = cmd.int_arg(0, 0) if cmd.kind == "set" else 0
        if mode not in (0, 1, 2):
            raise CmeError(50)
        if not gnss.powered:
            raise CmeError(505)
        fix = gnss.fix(count=True)
        if fix is None:
            raise CmeError(516)  # not fixed now
        reply.info(f"+QGPSLOC: {qgpsloc_fields(fix, mode)}")


def qgpsloc_fields(fix: Fix, mode: int) -> str:
    ns, ew = _hemi(fix.lat, "N", "S"), _hemi(fix.lon, "E", "W")
    if mode == 2:
        lat, lon = f"{fix.lat:.5f}", f"{fix.lon:.5f}"
    elif mode == 1:
        lat = f"{_ddmm(fix.lat, 2, 6)},{ns}"
        lon = f"{_ddmm(fix.lon, 3, 6)},{ew}"
    else:
        lat, lon = f"{_ddmm(fix.lat, 2, 4)}{ns}", f"{_ddmm(fix.lon, 3, 4)}{ew}"
    cog = fix.heading if fix.heading is not None else 0.0
    return (
        f"{fix.utc:%H%M%S}.0,{lat},{lon},{fix.hdop:.1f},{fix.alt:.1f},{fix.fix_mode},"
        f"{cog:.2f},{fix.speed_kmh:.1f},{fix.speed_knots:.1f},{fix.utc:%d%m%y},{fix.sats_used:02d}"
    )
