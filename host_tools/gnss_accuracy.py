"""How far a tracker's reported positions are from where the simulated asset really was.

Two measures, because a reading's timestamp is whole seconds and a moving asset covers
metres per second: the distance to the route's path (cross-track: the receiver's and the
firmware's error, whatever the timing), and the distance to the true position at the fix's
time (ts - fix_age_s, so it also holds the timing error)."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from host_tools.vboard.gnss.model import Motion
from host_tools.vboard.gnss.route import Route, haversine_m

_EARTH_M = 6371008.8


def _local_xy(lat0: float, lat: float, lon: float) -> tuple[float, float]:
    k = math.pi / 180 * _EARTH_M
    return lon * k * math.cos(math.radians(lat0)), lat * k


def cross_track_m(route: Route, lat: float, lon: float) -> float:
    """Metres from (lat, lon) to the nearest point of the route's path."""
    pts = route.points
    if len(pts) == 1:
        return haversine_m(lat, lon, pts[0].lat, pts[0].lon)
    px, py = _local_xy(lat, lat, lon)
    best = math.inf
    for a, b in zip(pts, pts[1:], strict=False):
        ax, ay = _local_xy(lat, a.lat, a.lon)
        bx, by = _local_xy(lat, b.lat, b.lon)
        dx, dy = bx - ax, by - ay
        seg = dx * dx + dy * dy
        t = 0.0 if seg == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / seg))
        best = min(best, math.hypot(px - (ax + t * dx), py - (ay + t * dy)))
    return best


@dataclass
class Accuracy:
    readings: int
    cross_median_m: float
    cross_p95_m: float
    cross_max_m: float
    truth_median_m: float
    truth_p95_m: float

    def as_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in vars(self).items()}


class Clocks:
    """The host's wall clock (what the device's ts follow) against the monotonic clock the
    simulator's Motion runs on, sampled once."""

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()

    def monotonic(self, wall: float) -> float:
        return wall - self.offset


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def accuracy(records: list[dict], motion: Motion, clocks: Clocks) -> Accuracy:
    """Over the readings that carry a position (each distinct fix counted once)."""
    cross: list[float] = []
    truth: list[float] = []
    seen = set()
    for r in records:
        if "lat" not in r or (r["lat"], r["lon"]) in seen:
            continue
        seen.add((r["lat"], r["lon"]))
        cross.append(cross_track_m(motion.route, r["lat"], r["lon"]))
        # The reading's second starts at ts; the fix is fix_age_s older, +0.5 s either way.
        at = clocks.monotonic(r["ts"] + 0.5 - r["fix_age_s"])
        true = motion.truth(at)
        truth.append(haversine_m(r["lat"], r["lon"], true.lat, true.lon))
    if not cross:
        raise ValueError("no reading carries a position")
    return Accuracy(
        readings=len(cross),
        cross_median_m=statistics.median(cross),
        cross_p95_m=_p95(cross),
        cross_max_m=max(cross),
        truth_median_m=statistics.median(truth),
        truth_p95_m=_p95(truth),
    )
