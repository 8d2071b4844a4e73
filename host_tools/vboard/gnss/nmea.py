"""NMEA 0183 sentences of one receiver epoch, and the `corrupt` fault's damage.

Per epoch (1 Hz, as u-blox and Quectel L76K receivers default to): RMC, VTG, GGA, GSA, GSV
(SENSORS_GNSS.md: `$<talker><type>,f1,...*HH\\r\\n`, checksum = XOR of the bytes between '$'
and '*', at most 82 characters). Without a fix: RMC status V with empty position, GGA
quality 0, GSA mode 1, VTG mode N -- the shapes the u-blox M8 protocol description gives for
"no fix" (empty fields, not zeros). Layout follows NMEA 2.3 (RMC/VTG/GGA mode indicator 'A'
autonomous / 'N' not valid), which NMEA 4.x readers also accept. GSV goes per constellation
(GP for GPS PRNs 1-32, GL for GLONASS 65-96) as combined (GN) receivers send it.
"""

from __future__ import annotations

import datetime as dt
import random

from .model import Fix, Satellite

TALKERS = ("GN", "GP", "GL", "GA", "GB", "BD", "GQ")
MAX_SENTENCE = 82  # characters from '$' to the checksum, CR LF included (NMEA 0183)


def checksum(body: str) -> str:
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return f"{value:02X}"


def sentence(body: str) -> str:
    """'GPRMC,...' -> '$GPRMC,...*HH\\r\\n'."""
    return f"${body}*{checksum(body)}\r\n"


def _lat(value: float) -> tuple[str, str]:
    a = abs(value)
    deg = int(a)
    minutes = (a - deg) * 60
    if round(minutes, 5) >= 60:
        deg, minutes = deg + 1, 0.0
    return f"{deg:02d}{minutes:08.5f}", "N" if value >= 0 else "S"


def _lon(value: float) -> tuple[str, str]:
    a = abs(value)
    deg = int(a)
    minutes = (a - deg) * 60
    if round(minutes, 5) >= 60:
        deg, minutes = deg + 1, 0.0
    return f"{deg:03d}{minutes:08.5f}", "E" if value >= 0 else "W"


def _time(utc: dt.datetime) -> str:
    return utc.strftime("%H%M%S") + ".00"


def epoch_sentences(
    talker: str, utc: dt.datetime, fix: Fix | None, sats: list[Satellite]
) -> list[str]:
    """The sentences of one epoch, each with '$', checksum and CR LF."""
    t = _time(utc)
    date = utc.strftime("%d%m%y")
    out: list[str] = []
    if fix is not None:
        lat, ns = _lat(fix.lat)
        lon, ew = _lon(fix.lon)
        kn = f"{fix.speed_knots:.3f}"
        cog = "" if fix.heading is None else f"{fix.heading:.2f}"
        out.append(sentence(f"{talker}RMC,{t},A,{lat},{ns},{lon},{ew},{kn},{cog},{date},,,A"))
        out.append(sentence(f"{talker}VTG,{cog},T,,M,{kn},N,{fix.speed_kmh:.3f},K,A"))
        out.append(
            sentence(
                f"{talker}GGA,{t},{lat},{ns},{lon},{ew},1,{fix.sats_used:02d},{fix.hdop:.2f},"
                f"{fix.alt:.1f},M,{fix.geoid_sep:.1f},M,,"
            )
        )
        prns = [f"{s.prn:02d}" for s in sats if s.used][:12]
        prns += [""] * (12 - len(prns))
        out.append(
            sentence(
                f"{talker}GSA,A,{fix.fix_mode},{','.join(prns)},"
                f"{fix.pdop:.2f},{fix.hdop:.2f},{fix.vdop:.2f}"
            )
        )
    else:
        out.append(sentence(f"{talker}RMC,{t},V,,,,,,,{date},,,N"))
        out.append(sentence(f"{talker}VTG,,T,,M,,N,,K,N"))
        out.append(sentence(f"{talker}GGA,{t},,,,,0,00,99.99,,,,,,"))
        out.append(sentence(f"{talker}GSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"))
    out.extend(gsv_sentences(talker, sats))
    return out


def gsv_sentences(talker: str, sats: list[Satellite]) -> list[str]:
    """GSV groups of four satellites; per constellation when the talker is GN."""
    if talker == "GN":
        groups = {"GP": [s for s in sats if s.system == "GP"]}
        glonass = [s for s in sats if s.system == "GL"]
        if glonass:
            groups["GL"] = glonass
    else:
        groups = {talker: [s for s in sats if s.system == "GP" or talker != "GP"]}
    out: list[str] = []
    for tk, group in groups.items():
        total = max(1, (len(group) + 3) // 4)
        for i in range(total):
            chunk = group[i * 4 : i * 4 + 4]
            parts = [f"{tk}GSV,{total},{i + 1},{len(group):02d}"]
            for s in chunk:
                cno = "" if s.cno is None else f"{s.cno:02d}"
                parts.append(f"{s.prn:02d},{s.elevation:02d},{s.azimuth:03d},{cno}")
            out.append(sentence(",".join(parts)))
    return out


CORRUPTIONS = ("checksum", "truncated", "garbage")


def corrupt(line: str, rng: random.Random) -> tuple[bytes, str]:
    """Damage one sentence as a noisy line would: a wrong checksum, a line cut short (its
    end lost, the next '$' follows after the CR LF), or bytes replaced by garbage (non-ASCII,
    never '$' or CR/LF, so sentence framing survives). Returns (bytes, kind)."""
    kind = rng.choice(CORRUPTIONS)
    data = line.encode("ascii")
    if kind == "checksum":
        star = data.rindex(b"*")
        good = int(data[star + 1 : star + 3], 16)
        bad = (good ^ rng.randint(1, 255)) & 0xFF
        return data[: star + 1] + f"{bad:02X}".encode() + data[star + 3 :], kind
    if kind == "truncated":
        cut = rng.randint(3, max(3, len(data) - 6))
        return data[:cut] + b"\r\n", kind
    body = bytearray(data)
    count = rng.randint(1, 4)
    for _ in range(count):
        pos = rng.randint(1, len(body) - 6)  # not the '$', not the checksum and CR LF
        body[pos] = rng.randint(0x80, 0xFF)
    return bytes(body), kind
