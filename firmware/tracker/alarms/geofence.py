# Geofences: the `geofences` config spec and the signed distance of a position to a fence.
#
# Spec (docs/alarms.md): fences separated by ";", each NAME:c:LAT,LON,RADIUS_M (a circle) or
# NAME:p:LAT,LON LAT,LON LAT,LON ... (a polygon of 3 or more corners, points separated by
# spaces). Degrees are decimal; they become int microdegrees as tracker.location.fix keeps
# them, because a single-precision float cannot hold a degree value to 1e-6.
from math import cos, sqrt

from tracker.location.fix import _M_PER_UDEG, distance_m, parse_degrees

MAX_FENCES = 8
MAX_CORNERS = 16
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _point(text):
    lat, sep, lon = text.partition(",")
    if not sep:
        raise ValueError("expected LAT,LON, got %r" % text)
    lat = parse_degrees(lat)
    lon = parse_degrees(lon)
    if lat > 90000000 or lat < -90000000:
        raise ValueError("latitude beyond 90 degrees in %r" % text)
    return lat, lon


def _fence(part):
    name, _, rest = part.partition(":")
    kind, _, geom = rest.partition(":")
    name = name.strip()
    kind = kind.strip()
    if not name or len(name) > 16 or any(c not in _NAME_CHARS for c in name):
        raise ValueError("fence name %r: 1..16 of A-Za-z0-9_-" % name)
    if kind == "c":
        fields = geom.strip().split(",")
        if len(fields) != 3:
            raise ValueError("%s: a circle is LAT,LON,RADIUS_M" % name)
        lat, lon = _point(fields[0] + "," + fields[1])
        try:
            radius = int(float(fields[2]))
        except ValueError:
            raise ValueError("%s: radius %r is not a number" % (name, fields[2]))
        if not 1 <= radius <= 1000000:
            raise ValueError("%s: radius must be 1..1000000 m" % name)
        return (name, "c", (lat, lon, radius))
    if kind == "p":
        corners = []
        for word in geom.split(" "):
            if word:
                corners.append(_point(word))
        if not 3 <= len(corners) <= MAX_CORNERS:
            raise ValueError("%s: a polygon has 3..%d corners" % (name, MAX_CORNERS))
        return (name, "p", tuple(corners))
    raise ValueError("%s: kind must be c (circle) or p (polygon), got %r" % (name, kind))


def parse(spec):
    """[(name, "c", (lat, lon, radius_m)) | (name, "p", ((lat, lon), ...))] from a spec;
    ValueError with a short reason a technician can act on."""
    fences = []
    names = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        fence = _fence(part)
        if fence[0] in names:
            raise ValueError("fence name %r used twice" % fence[0])
        names.append(fence[0])
        fences.append(fence)
    if len(fences) > MAX_FENCES:
        raise ValueError("at most %d fences" % MAX_FENCES)
    return fences


def config_check(spec):
    """The config schema's check of `geofences`: None, or why the spec is refused."""
    try:
        parse(spec)
    except ValueError as e:
        return str(e)
    return None


def _segment_distance(ax, ay, bx, by):
    # Distance from the origin to segment a-b (metres, local plane).
    dx = bx - ax
    dy = by - ay
    d2 = dx * dx + dy * dy
    t = 0.0 if d2 == 0 else -(ax * dx + ay * dy) / d2
    if t < 0:
        t = 0.0
    elif t > 1:
        t = 1.0
    px = ax + t * dx
    py = ay + t * dy
    return sqrt(px * px + py * py)


def _polygon_outside_m(corners, lat, lon):
    # Each corner becomes metres east/north of the position (an equirectangular plane around
    # it: exact int differences first, then floats, so single precision keeps centimetres
    # near the fence). Ray casting along +x from the origin decides inside or outside; the
    # nearest edge gives the distance.
    kx = _M_PER_UDEG * cos(lat * 1.7453293e-08)
    pts = []
    for clat, clon in corners:
        dlon = clon - lon
        if dlon > 180000000:
            dlon -= 360000000
        elif dlon < -180000000:
            dlon += 360000000
        pts.append((dlon * kx, (clat - lat) * _M_PER_UDEG))
    inside = False
    nearest = None
    ax, ay = pts[-1]
    for bx, by in pts:
        if (ay > 0) != (by > 0):
            # x where the edge crosses the ray's line y = 0; ay != by here.
            if ax + (bx - ax) * (0 - ay) / (by - ay) > 0:
                inside = not inside
        d = _segment_distance(ax, ay, bx, by)
        if nearest is None or d < nearest:
            nearest = d
        ax, ay = bx, by
    return -nearest if inside else nearest


def outside_m(fence, lat, lon):
    """Signed metres from the fence's boundary: > 0 outside, < 0 inside."""
    kind = fence[1]
    geom = fence[2]
    if kind == "c":
        return distance_m(geom[0], geom[1], lat, lon) - geom[2]
    return _polygon_outside_m(geom, lat, lon)
