# A position fix as the tracker keeps it, and the geometry the motion policy needs.
#
# Latitude and longitude are integer microdegrees (about 11 cm): an ESP32's single-precision
# float cannot hold a degree value to 1e-6 (its step near 87 deg is 7.6e-6), and microdegrees
# up to 180e6 stay small ints (< 2^30) on the device. Everything else is a float or None.
from math import cos, sqrt

# Metres per microdegree of latitude (WGS84 mean meridian degree, 111,320 m).
_M_PER_UDEG = 0.11132


class Fix:
    """lat, lon: int microdegrees; alt (m MSL), speed (m/s), heading (deg true), hdop:
    float or None; sats: int or None; mode: 2 (2D) or 3 (3D); ts: Unix seconds UTC of the
    fix or None; at: the tracker's ticks_ms() when it was obtained."""

    def __init__(self, lat, lon, *, alt=None, speed=None, heading=None, sats=None, hdop=None,
                 mode=3, ts=None, at=0):  # fmt: skip
        self.lat = lat
        self.lon = lon
        self.alt = alt
        self.speed = speed
        self.heading = heading
        self.sats = sats
        self.hdop = hdop
        self.mode = mode
        self.ts = ts
        self.at = at

    def __repr__(self):
        return "Fix(%s, %s, mode=%s)" % (degrees_text(self.lat), degrees_text(self.lon), self.mode)


def degrees_text(udeg):
    """Microdegrees as a decimal-degree literal with six decimals ("-87.068080"), exact on
    a device whose floats would round it."""
    sign = "-" if udeg < 0 else ""
    udeg = -udeg if udeg < 0 else udeg
    return "%s%d.%06d" % (sign, udeg // 1000000, udeg % 1000000)


def parse_degrees(text):
    """A signed decimal-degree field ("-85.56527", "114.0598297") -> int microdegrees,
    rounded half away from zero, by integer arithmetic; ValueError when it is not one."""
    text = text.strip()
    neg = text[:1] == "-"
    if neg or text[:1] == "+":
        text = text[1:]
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError("not a degree value: %r" % text)
    frac = (frac + "0000000")[:7]
    value = int(whole) * 1000000 + (int(frac) + 5) // 10
    if value > 180000000:
        raise ValueError("degrees out of range: %r" % text)
    return -value if neg else value


def parse_ddmm(text, hemisphere):
    """An NMEA-style `ddmm.mmmm` / `dddmm.mmmm` field and its N/S/E/W letter -> int
    microdegrees (south and west negative); ValueError when malformed."""
    whole, _, frac = text.strip().partition(".")
    if len(whole) < 3 or not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError("not a ddmm.mmmm value: %r" % text)
    if hemisphere not in ("N", "S", "E", "W"):
        raise ValueError("not a hemisphere: %r" % hemisphere)
    deg = int(whole[:-2])
    frac = (frac + "000000")[:6]
    minutes_e6 = int(whole[-2:]) * 1000000 + int(frac)  # minutes x 1e6 (< 6e7: a small int)
    if minutes_e6 >= 60000000 or deg > (90 if hemisphere in ("N", "S") else 180):
        raise ValueError("not a ddmm.mmmm value: %r" % text)
    value = deg * 1000000 + (minutes_e6 + 30) // 60  # udeg = minutes x 1e6 / 60, rounded
    return -value if hemisphere in ("S", "W") else value


def distance_m(lat1, lon1, lat2, lon2):
    """Metres between two positions in microdegrees (equirectangular: within 0.1 % below
    a few tens of km, which is all a report threshold needs, and cheap in single precision:
    the differences are exact ints before they become floats)."""
    dy = (lat2 - lat1) * _M_PER_UDEG
    dlon = lon2 - lon1
    if dlon > 180000000:
        dlon -= 360000000
    elif dlon < -180000000:
        dlon += 360000000
    dx = dlon * _M_PER_UDEG * cos((lat1 + lat2) * 8.726646e-09)  # mean lat in radians
    return sqrt(dx * dx + dy * dy)


def heading_change(a, b):
    """The smaller angle between two headings in degrees (0..180)."""
    d = (b - a) % 360
    return 360 - d if d > 180 else d
