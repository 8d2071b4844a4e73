# Pure parsers of the modems' GNSS answers (reference/SENSORS_GNSS.md, "GNSS through the
# modem's AT port"): one answer line in, a Fix out, or None while there is no fix.
# ValueError for a line that is not the answer it claims to be (a garbled reply must not
# become a position).
#
# SIM7600  +CGPSINFO: lat(ddmm.mmmmmm),N/S,lon(dddmm.mmmmmm),E/W,ddmmyy,hhmmss.s,alt,knots,course
# SIM7600  +CGNSSINFO: mode,gps,glo,bds,lat(ddmm),N/S,lon(dddmm),E/W,ddmmyy,hhmmss.s,alt,knots,
#          course,pdop,hdop,vdop
# A76xx    +CGNSSINFO: mode,gps,glo,bds,gal,lat(deg),N/S,lon(deg),E/W,ddmmyy,hhmmss.ss,alt,knots,
#          course,pdop,hdop,vdop[,sats]
# Quectel  +QGPSLOC: hhmmss.s,lat(deg),lon(deg),hdop,alt,fix,cog,km/h,knots,ddmmyy,nsat
# SIM70x0  +CGNSINF: run,fix,yyyyMMddhhmmss.sss,lat,lon,alt,km/h,course,mode,,hdop,pdop,vdop,,
#          view,used,...
# No fix: SIMCom answers the line with every field empty; Quectel +CME ERROR: 516 (the
# driver handles that error); SIM70x0 leaves <fix> empty or 0 -- and then may still print a
# stale position (corpus sim7070-gnss-cgnsinf-stale-1), which must not count.
from tracker.location.fix import Fix, parse_ddmm, parse_degrees
from tracker.timing import days_from_civil

KNOT_MS = 0.514444  # 1852 m / 3600 s
KMH_MS = 0.277778


def _fields(line, prefix):
    if not line.startswith(prefix):
        raise ValueError("not a %s answer: %r" % (prefix, line[:40]))
    return [f.strip() for f in line[len(prefix) :].split(",")]


def _num(text, scale=1.0):
    return float(text) * scale if text else None


def _int(text):
    return int(text) if text else None


def unix_time(ddmmyy, hhmmss):
    """`ddmmyy` and `hhmmss[.s]` -> Unix seconds UTC (20yy); None when either is empty."""
    if not ddmmyy or not hhmmss:
        return None
    if len(ddmmyy) != 6 or len(hhmmss) < 6 or not (ddmmyy + hhmmss[:6]).isdigit():
        raise ValueError("bad date/time %r %r" % (ddmmyy, hhmmss))
    d, mo, y = int(ddmmyy[:2]), int(ddmmyy[2:4]), 2000 + int(ddmmyy[4:])
    h, mi, s = int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ValueError("bad date/time %r %r" % (ddmmyy, hhmmss))
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s


def _empty(f):
    for x in f:
        if x:
            return False
    return True


def cgpsinfo(line):
    f = _fields(line, "+CGPSINFO:")
    if _empty(f):
        return None
    if len(f) < 9:
        raise ValueError("short +CGPSINFO: %r" % line)
    return Fix(
        parse_ddmm(f[0], f[1]),
        parse_ddmm(f[2], f[3]),
        alt=_num(f[6]),
        speed=_num(f[7], KNOT_MS),
        heading=_num(f[8]),
        mode=3 if f[6] else 2,
        ts=unix_time(f[4], f[5]),
    )


def cgnssinfo(line):
    """SIM7600 (ddmm) and A76xx (degrees, one more constellation) told apart by where the
    N/S letter sits, so a firmware that moves a field is an error rather than a wrong fix."""
    f = _fields(line, "+CGNSSINFO:")
    if _empty(f):
        return None
    if len(f) >= 17 and f[6] in ("N", "S"):
        lat, lon = parse_degrees(f[5]), parse_degrees(f[7])
        if f[6] == "S":
            lat = -lat
        if f[8] == "W":
            lon = -lon
        svs, i = f[1:5], 9
    elif len(f) >= 16 and f[5] in ("N", "S"):
        lat, lon = parse_ddmm(f[4], f[5]), parse_ddmm(f[6], f[7])
        svs, i = f[1:4], 8
    else:
        raise ValueError("unknown +CGNSSINFO layout: %r" % line)
    mode = _int(f[0])
    if mode not in (2, 3):
        return None
    sats = 0
    for n in svs:
        sats += int(n) if n else 0
    return Fix(
        lat,
        lon,
        alt=_num(f[i + 2]),
        speed=_num(f[i + 3], KNOT_MS),
        heading=_num(f[i + 4]),
        hdop=_num(f[i + 6]),
        sats=sats,
        mode=mode,
        ts=unix_time(f[i], f[i + 1]),
    )


def _ddd_mm(text):
    # Quectel's <COG> is "ddd.mm": degrees and minutes, not decimal degrees (BG96 GNSS AT
    # manual, AT+QGPSLOC) (check).
    if not text:
        return None
    deg, _, minutes = text.partition(".")
    return int(deg) + (int(minutes[:2]) if minutes else 0) / 60


def qgpsloc(line):
    """+QGPSLOC in <mode> 2 (signed decimal degrees)."""
    f = _fields(line, "+QGPSLOC:")
    if len(f) < 11:
        raise ValueError("short +QGPSLOC: %r" % line)
    mode = _int(f[5])
    if mode not in (2, 3):
        raise ValueError("+QGPSLOC fix %r" % f[5])
    return Fix(
        parse_degrees(f[1]),
        parse_degrees(f[2]),
        hdop=_num(f[3]),
        alt=_num(f[4]),
        heading=_ddd_mm(f[6]),
        speed=_num(f[7], KMH_MS),
        sats=_int(f[10]),
        mode=mode,
        ts=unix_time(f[9], f[0]),
    )


def cgnsinf(line):
    f = _fields(line, "+CGNSINF:")
    if len(f) < 16 or f[1] != "1":
        return None  # GNSS off, or on without a fix (a stale position may still be printed)
    t = f[2]
    if len(t) < 14:
        raise ValueError("bad +CGNSINF time %r" % t)
    return Fix(
        parse_degrees(f[3]),
        parse_degrees(f[4]),
        alt=_num(f[5]),
        speed=_num(f[6], KMH_MS),
        heading=_num(f[7]),
        hdop=_num(f[10]),
        sats=_int(f[15]),
        mode=3 if f[5] else 2,
        ts=unix_time(t[6:8] + t[4:6] + t[2:4], t[8:]),
    )
