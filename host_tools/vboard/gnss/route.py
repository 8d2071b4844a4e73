"""Where the simulated asset is: a route of timed points, played back by time.

A `Route` comes from a GPX file (`<trk>/<trkpt>` or `<rte>/<rtept>`; their `<time>` when every
point has one, else a constant speed) or from a recorded NMEA log (positions and times of the
valid RMC/GGA fixes in it). `position(t)` answers where the asset is `t` seconds after the
route began: interpolated along the great circle between the two surrounding points, speed
from the segment's great-circle length over its duration, heading from the segment's initial
bearing; before the start it waits at the first point, after the end it is parked at the last.

The NMEA log is parsed here, on purpose apart from the firmware's parser (tracker/location):
the simulator is the oracle the firmware is tested against and must not share its bugs.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), what haversine distances use
DEFAULT_SPEED_MPS = 10.0  # points without times: 36 km/h, a town drive


class RouteError(ValueError):
    """A route file that cannot be used (no points, bad numbers, unknown format)."""


@dataclass(frozen=True)
class Position:
    lat: float  # degrees, north positive
    lon: float  # degrees, east positive
    alt: float  # metres above mean sea level
    speed: float  # metres per second over ground
    heading: float  # degrees true, 0 <= heading < 360


@dataclass(frozen=True)
class Point:
    t: float  # seconds since the route's first point
    lat: float
    lon: float
    alt: float = 0.0


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees true in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def intermediate(
    lat1: float, lon1: float, lat2: float, lon2: float, f: float
) -> tuple[float, float]:
    """The point a fraction `f` of the way along the great circle from point 1 to point 2."""
    d = haversine_m(lat1, lon1, lat2, lon2) / EARTH_RADIUS_M
    if d < 1e-12:
        return lat1, lon1
    p1, l1, p2, l2 = map(math.radians, (lat1, lon1, lat2, lon2))
    a = math.sin((1 - f) * d) / math.sin(d)
    b = math.sin(f * d) / math.sin(d)
    x = a * math.cos(p1) * math.cos(l1) + b * math.cos(p2) * math.cos(l2)
    y = a * math.cos(p1) * math.sin(l1) + b * math.cos(p2) * math.sin(l2)
    z = a * math.sin(p1) + b * math.sin(p2)
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))


class Route:
    """Timed points; `position(t)` interpolates, `length_m` and `duration_s` describe it."""

    def __init__(self, points: list[Point], *, name: str = "") -> None:
        if not points:
            raise RouteError("a route needs at least one point")
        for p in points:
            if not (-90 <= p.lat <= 90 and -180 <= p.lon <= 180) or not math.isfinite(p.alt):
                raise RouteError(f"point out of range: {p}")
        t0 = points[0].t
        pts = [Point(p.t - t0, p.lat, p.lon, p.alt) for p in points]
        for a, b in zip(pts, pts[1:], strict=False):
            if b.t < a.t:
                raise RouteError(f"route times go backwards at t={b.t:.1f} s")
        self.points = pts
        self.name = name
        self._times = [p.t for p in pts]
        self._seg_m = [
            haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in zip(pts, pts[1:], strict=False)
        ]
        # Heading of each segment; a segment that does not move keeps the one before it.
        headings: list[float] = []
        last = 0.0
        for i, a in enumerate(pts[:-1]):
            b = pts[i + 1]
            if self._seg_m[i] > 0.01:
                last = bearing_deg(a.lat, a.lon, b.lat, b.lon)
            headings.append(last)
        if headings:  # a route that starts standing still faces its first move
            first_move = next((h for i, h in enumerate(headings) if self._seg_m[i] > 0.01), 0.0)
            for i in range(len(headings)):
                if self._seg_m[i] > 0.01:
                    break
                headings[i] = first_move
        self._headings = headings

    # -- constructors ------------------------------------------------------------------

    @classmethod
    def from_coords(
        cls,
        coords: list[tuple[float, float] | tuple[float, float, float]],
        *,
        speed: float = DEFAULT_SPEED_MPS,
        name: str = "",
    ) -> Route:
        """Untimed (lat, lon[, alt]) points travelled at a constant `speed` (m/s)."""
        if speed <= 0:
            raise RouteError(f"speed must be > 0 m/s, not {speed}")
        points: list[Point] = []
        t = 0.0
        for i, c in enumerate(coords):
            lat, lon = float(c[0]), float(c[1])
            alt = float(c[2]) if len(c) > 2 else 0.0  # type: ignore[misc]
            if i:
                prev = points[-1]
                t += haversine_m(prev.lat, prev.lon, lat, lon) / speed
            points.append(Point(t, lat, lon, alt))
        return cls(points, name=name)

    @classmethod
    def load(cls, path: str | Path, *, speed: float = DEFAULT_SPEED_MPS) -> Route:
        """A .gpx file, or an NMEA log (any other name; recognised by its '$' lines)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise RouteError(f"cannot read route {p}: {e.strerror or e}") from None
        if p.suffix.lower() == ".gpx" or text.lstrip().startswith("<"):
            return cls.from_gpx(text, speed=speed, name=p.name)
        return cls.from_nmea(text, name=p.name)

    @classmethod
    def from_gpx(cls, text: str, *, speed: float = DEFAULT_SPEED_MPS, name: str = "") -> Route:
        try:
            root = ET.fromstring(text)
        except ET.ParseError as e:
            raise RouteError(f"not a GPX file: {e}") from None

        def local(tag: str) -> str:
            return tag.rsplit("}", 1)[-1]

        pts = [el for el in root.iter() if local(el.tag) == "trkpt"]
        if not pts:
            pts = [el for el in root.iter() if local(el.tag) == "rtept"]
        if not pts:
            raise RouteError("the GPX file has no <trkpt> or <rtept>")
        coords: list[tuple[float, float, float]] = []
        times: list[dt.datetime | None] = []
        for el in pts:
            try:
                lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
            except (KeyError, ValueError):
                raise RouteError("a GPX point without numeric lat/lon") from None
            alt = 0.0
            when = None
            for child in el:
                tag = local(child.tag)
                if tag == "ele" and child.text:
                    alt = float(child.text)
                elif tag == "time" and child.text:
                    when = _parse_iso(child.text.strip())
            coords.append((lat, lon, alt))
            times.append(when)
        if all(t is not None for t in times):
            t0 = times[0]
            assert t0 is not None
            points = [
                Point((t - t0).total_seconds(), *c)  # type: ignore[operator]
                for t, c in zip(times, coords, strict=True)
            ]
            return cls(points, name=name)
        return cls.from_coords(coords, speed=speed, name=name)  # type: ignore[arg-type]

    @classmethod
    def from_nmea(cls, text: str, *, name: str = "") -> Route:
        """Valid fixes of a recorded NMEA log: RMC (status A) and GGA (quality > 0) give
        position and time; GGA gives altitude; the date comes from the RMC sentences."""
        fixes: dict[dt.datetime, list[float]] = {}  # time -> [lat, lon, alt]
        date: dt.date | None = None
        pending: list[tuple[dt.time, float, float, float | None]] = []  # GGA before any RMC
        for raw in text.splitlines():
            fields = _nmea_fields(raw)
            if fields is None:
                continue
            kind = fields[0][2:]
            if kind == "RMC" and len(fields) >= 10 and fields[2] == "A":
                try:
                    date = dt.datetime.strptime(fields[9], "%d%m%y").date()
                    when = dt.datetime.combine(date, _nmea_time(fields[1]))
                    lat = _nmea_angle(fields[3], fields[4])
                    lon = _nmea_angle(fields[5], fields[6])
                except ValueError:
                    continue
                for t, la, lo, al in pending:
                    fixes.setdefault(dt.datetime.combine(date, t), [la, lo, al or 0.0])
                pending.clear()
                entry = fixes.setdefault(when, [lat, lon, 0.0])
                entry[0], entry[1] = lat, lon
            elif kind == "GGA" and len(fields) >= 10 and fields[6] not in ("", "0"):
                try:
                    t = _nmea_time(fields[1])
                    lat = _nmea_angle(fields[2], fields[3])
                    lon = _nmea_angle(fields[4], fields[5])
                    alt = float(fields[9]) if fields[9] else None
                except ValueError:
                    continue
                if date is None:
                    pending.append((t, lat, lon, alt))
                    continue
                entry = fixes.setdefault(dt.datetime.combine(date, t), [lat, lon, 0.0])
                if alt is not None:
                    entry[2] = alt
        if date is None:  # GGA only: no date in the log; times are still seconds apart
            for t, la, lo, al in pending:
                when = dt.datetime.combine(dt.date(2000, 1, 1), t)
                fixes.setdefault(when, [la, lo, al or 0.0])
        if not fixes:
            raise RouteError("no valid RMC/GGA fix in the NMEA log")
        ordered = sorted(fixes.items())
        t0 = ordered[0][0]
        points = [Point((when - t0).total_seconds(), *vals) for when, vals in ordered]
        return cls(points, name=name)

    # -- queries -----------------------------------------------------------------------

    @property
    def length_m(self) -> float:
        return sum(self._seg_m)

    @property
    def duration_s(self) -> float:
        return self.points[-1].t

    @property
    def start(self) -> Point:
        return self.points[0]

    def position(self, t: float) -> Position:
        """Where the asset is `t` seconds after the route began."""
        pts = self.points
        if len(pts) == 1 or t < 0:
            p = pts[0]
            return Position(p.lat, p.lon, p.alt, 0.0, self._headings[0] if self._headings else 0)
        if t >= self.duration_s:
            p = pts[-1]
            return Position(p.lat, p.lon, p.alt, 0.0, self._headings[-1])
        i = bisect.bisect_right(self._times, t) - 1
        i = min(i, len(pts) - 2)
        a, b = pts[i], pts[i + 1]
        span = b.t - a.t
        f = (t - a.t) / span if span > 0 else 1.0
        lat, lon = intermediate(a.lat, a.lon, b.lat, b.lon, f)
        speed = self._seg_m[i] / span if span > 0 else 0.0
        return Position(lat, lon, a.alt + (b.alt - a.alt) * f, speed, self._headings[i])

    def __repr__(self) -> str:
        return (
            f"<Route {self.name or '?'} {len(self.points)} points "
            f"{self.length_m:.0f} m {self.duration_s:.0f} s>"
        )


def _parse_iso(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RouteError(f"bad GPX time {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _nmea_fields(line: str) -> list[str] | None:
    """The fields of one NMEA sentence with a good checksum (or none), else None."""
    line = line.strip()
    start = line.find("$")
    if start < 0:
        return None
    body = line[start + 1 :]
    if "*" in body:
        body, _, given = body.partition("*")
        calc = 0
        for ch in body.encode("latin-1", errors="replace"):
            calc ^= ch
        try:
            if int(given[:2], 16) != calc:
                return None
        except ValueError:
            return None
    fields = body.split(",")
    return fields if len(fields[0]) == 5 else None


def _nmea_time(text: str) -> dt.time:
    hh, mm, ss = int(text[0:2]), int(text[2:4]), float(text[4:])
    sec = int(ss)
    return dt.time(hh, mm, sec, round((ss - sec) * 1e6) % 1_000_000)


def _nmea_angle(value: str, hemi: str) -> float:
    """ddmm.mmmm / dddmm.mmmm with N/S/E/W -> signed degrees."""
    if not value or hemi not in ("N", "S", "E", "W"):
        raise ValueError("empty position")
    dot = value.index(".") if "." in value else len(value)
    deg = int(value[: dot - 2])
    minutes = float(value[dot - 2 :])
    out = deg + minutes / 60.0
    return -out if hemi in ("S", "W") else out
