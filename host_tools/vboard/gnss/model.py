"""The GNSS model shared by the standalone receiver (NMEA on a UART) and the modem's GNSS.

Two layers:
- `Motion`: where the asset truly is. A `Route` played in real time from when the motion
  started (monotonic clock, injectable), that can be parked (the asset stops where it is)
  and driven on, or given a new route. One `Motion` per board: every receiver on the board
  sees the same asset.
- `GnssSim`: one receiver. Powered on or off (on-time and power cycles counted), time to
  first fix after power-on (cold start, or warm when it was off for less than the ephemeris
  validity after a fix), satellites and DOPs, small seeded position noise, and the faults
  `no_fix` (indoors: no sky), `jamming` (fix lost, satellites drop, C/N0 low) and `corrupt`
  (for the NMEA output: a fraction of sentences damaged).

    motion = Motion(Route.load("drive.gpx"))
    rx = GnssSim(motion, timings=GnssTimings.fast(), seed="uart")
    rx.set_power(True)
    rx.fix()          # None until the TTFF has passed, then a Fix (noisy position, UTC time)
    motion.truth()    # Position: the true lat/lon/alt/speed/heading now
    rx.snapshot()     # counters: on_s, power_cycles, sentences, corrupted, fixes, ttff_s ...

Numbers (SENSORS_GNSS.md asks to count time-to-first-fix; the values are modelling choices,
configurable in `GnssTimings`): cold start ~30 s (typical of u-blox M8 / Quectel L76K data
sheets' "cold start TTFF" with open sky, check), warm/hot start ~2 s when the ephemeris is
still valid (GPS broadcast ephemerides are fit for about 4 h and receivers use them for ~2 h,
hence the default 2 h validity, check), reacquisition 1 s after a short outage.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .route import EARTH_RADIUS_M, Position, Route

Clock = Callable[[], float]
WallClock = Callable[[], dt.datetime]

FAULTS: dict[str, dict] = {
    "no_fix": {},
    "jamming": {},
    "corrupt": {"rate": 0.2, "seed": None},
}


class GnssError(ValueError):
    """A bad argument to the GNSS simulator (unknown fault or parameter, bad value)."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class GnssTimings:
    """Delays the receiver imposes, in seconds. `GnssTimings.fast()` for tests."""

    cold_ttff_s: float = 30.0  # power-on without valid ephemeris -> first fix
    warm_ttff_s: float = 2.0  # power-on within ephemeris_validity_s of the last fix
    reacquire_s: float = 1.0  # sky back (fault ended) after a fix in this session
    ephemeris_validity_s: float = 7200.0  # off for less than this after a fix: warm start
    ready_s: float = 7.8  # A7670: AT+CGNSSPWR=1 -> "+CGNSSPWR: READY!" (7.8 s in the corpus)

    @classmethod
    def fast(cls, **overrides: float) -> GnssTimings:
        values = dict(cold_ttff_s=0.4, warm_ttff_s=0.1, reacquire_s=0.1, ready_s=0.05)
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Satellite:
    prn: int  # NMEA id: GPS 1-32, GLONASS 65-96
    elevation: int  # degrees
    azimuth: int  # degrees true
    cno: int | None  # carrier-to-noise density, dB-Hz; None = not tracked
    used: bool

    @property
    def system(self) -> str:
        return "GL" if 65 <= self.prn <= 96 else "GP"


@dataclass(frozen=True)
class Fix:
    """What a receiver reports for one epoch with a position."""

    utc: dt.datetime
    lat: float
    lon: float
    alt: float  # metres above mean sea level
    speed: float  # m/s
    heading: float | None  # degrees true; None while standing still
    sats_used: int
    hdop: float
    pdop: float
    vdop: float
    fix_mode: int = 3  # 2 = 2D, 3 = 3D
    geoid_sep: float = 45.0  # geoid height above WGS84 ellipsoid (GGA field 11), plausible

    @property
    def speed_knots(self) -> float:
        return self.speed * 3600 / 1852

    @property
    def speed_kmh(self) -> float:
        return self.speed * 3.6


class Motion:
    """The asset moving along a route in real time; park() stops it where it is."""

    def __init__(self, route: Route, *, clock: Clock = time.monotonic) -> None:
        self._lock = threading.RLock()
        self.clock = clock
        self.route = route
        self._t0 = clock()  # clock time at route time 0
        self._parked_at: float | None = None  # route time frozen while parked

    def route_time(self, now: float | None = None) -> float:
        with self._lock:
            if self._parked_at is not None:
                return self._parked_at
            return (self.clock() if now is None else now) - self._t0

    @property
    def parked(self) -> bool:
        return self._parked_at is not None

    def park(self) -> None:
        with self._lock:
            if self._parked_at is None:
                self._parked_at = self.route_time()

    def drive(self) -> None:
        with self._lock:
            if self._parked_at is not None:
                self._t0 = self.clock() - self._parked_at
                self._parked_at = None

    def set_route(self, route: Route) -> None:
        """Start `route` from its beginning now (a parked asset stays parked, at its start)."""
        with self._lock:
            self.route = route
            self._t0 = self.clock()
            if self._parked_at is not None:
                self._parked_at = 0.0

    def truth(self, now: float | None = None) -> Position:
        with self._lock:
            pos = self.route.position(self.route_time(now))
            if self._parked_at is not None:
                pos = Position(pos.lat, pos.lon, pos.alt, 0.0, pos.heading)
            return pos

    def snapshot(self) -> dict:
        with self._lock:
            pos = self.truth()
            return {
                "route": self.route.name,
                "route_length_m": round(self.route.length_m, 1),
                "route_duration_s": round(self.route.duration_s, 1),
                "route_time_s": round(self.route_time(), 3),
                "parked": self.parked,
                "lat": round(pos.lat, 7),
                "lon": round(pos.lon, 7),
                "alt": round(pos.alt, 1),
                "speed_mps": round(pos.speed, 2),
                "heading": round(pos.heading, 1),
            }


@dataclass
class _Counters:
    on_s: float = 0.0
    power_cycles: int = 0
    sentences: int = 0
    corrupted: int = 0
    fixes: int = 0
    commands: dict[str, int] = field(default_factory=dict)


class GnssSim:
    """One GNSS receiver over a shared `Motion`. Thread-safe."""

    def __init__(
        self,
        motion: Motion,
        *,
        timings: GnssTimings | None = None,
        noise_m: float = 2.5,
        seed: str = "gnss",
        utc: WallClock = utc_now,
        name: str = "gnss",
    ) -> None:
        if noise_m < 0:
            raise GnssError(f"noise must be >= 0 m, not {noise_m}")
        self._lock = threading.RLock()
        self.motion = motion
        self.clock = motion.clock
        self.timings = timings or GnssTimings()
        self.noise_m = noise_m
        self.seed = seed
        self.utc = utc
        self.name = name
        self.powered = False
        self._on_since: float | None = None
        self._session_start: float | None = None
        self._sky_since: float | None = None  # on and with sky since then (acquiring)
        self._needed_s = self.timings.cold_ttff_s  # sky time the next fix needs
        self._session_fixed = False  # a fix was had in this power session
        self._first_fix_at: float | None = None
        self._ephemeris_at: float | None = None  # when the last session with a fix ended
        self._start_kind = "cold"
        self.faults: dict[str, dict] = {}
        self.corrupt_rng = random.Random(f"{seed}:corrupt")
        self.counters = _Counters()

    # -- power -----------------------------------------------------------------------------

    def set_power(self, on: bool) -> None:
        with self._lock:
            now = self.clock()
            self._settle(now)
            if on == self.powered:
                return
            if on:
                self.powered = True
                self.counters.power_cycles += 1
                self._on_since = self._session_start = now
                self._session_fixed = False
                self._first_fix_at = None
                warm = (
                    self._ephemeris_at is not None
                    and now - self._ephemeris_at < self.timings.ephemeris_validity_s
                )
                self._start_kind = "warm" if warm else "cold"
                self._needed_s = self.timings.warm_ttff_s if warm else self.timings.cold_ttff_s
                self._sky_since = None if self._sky_blocked() else now
            else:
                if self._on_since is not None:
                    self.counters.on_s += now - self._on_since
                if self._session_fixed:
                    self._ephemeris_at = now
                self.powered = False
                self._on_since = self._session_start = self._sky_since = None

    def _sky_blocked(self) -> bool:
        return "no_fix" in self.faults or "jamming" in self.faults

    def _settle(self, now: float) -> None:
        """Record the first fix of the session once its time has come (lazy evaluation)."""
        if not self.powered or self._sky_since is None:
            return
        fix_at = self._sky_since + self._needed_s
        if now >= fix_at and not self._session_fixed:
            self._session_fixed = True
            self._first_fix_at = fix_at

    def has_fix(self, now: float | None = None) -> bool:
        with self._lock:
            now = self.clock() if now is None else now
            self._settle(now)
            return (
                self.powered
                and self._sky_since is not None
                and now >= self._sky_since + self._needed_s
            )

    # -- faults ----------------------------------------------------------------------------

    def fault(self, name: str, on: bool = True, **params: object) -> None:
        if name not in FAULTS:
            raise GnssError(f"unknown GNSS fault {name!r}: choose {', '.join(FAULTS)}")
        unknown = set(params) - set(FAULTS[name])
        if unknown:
            raise GnssError(f"GNSS fault {name!r} has no parameter {', '.join(sorted(unknown))}")
        merged = {**FAULTS[name], **params}
        with self._lock:
            now = self.clock()
            self._settle(now)
            if name == "corrupt":
                if on:
                    try:
                        rate = float(merged["rate"])  # type: ignore[arg-type]
                    except (TypeError, ValueError):
                        raise GnssError(
                            f"corrupt rate must be a number, not {merged['rate']!r}"
                        ) from None
                    if not 0 <= rate <= 1:
                        raise GnssError(f"corrupt rate must be 0..1, not {rate}")
                    if merged["seed"] is not None:
                        self.corrupt_rng.seed(str(merged["seed"]))
                    self.faults["corrupt"] = {"rate": rate}
                else:
                    self.faults.pop("corrupt", None)
                return
            was_blocked = self._sky_blocked()
            if on:
                self.faults[name] = {}
            else:
                self.faults.pop(name, None)
            blocked = self._sky_blocked()
            if blocked and not was_blocked:
                self._sky_since = None  # fix lost; acquisition waits for the sky
            elif was_blocked and not blocked and self.powered:
                # Sky again: a receiver that had a fix this session still holds fresh
                # ephemerides and reacquires quickly; one that had none goes on acquiring
                # from where the TTFF stands (modelled as starting over).
                self._sky_since = now
                if self._session_fixed:
                    self._needed_s = self.timings.reacquire_s

    # -- what the receiver reports --------------------------------------------------------------

    def satellites(self, now: float | None = None) -> list[Satellite]:
        """Satellites in view (GSV) with the ones used in the fix marked."""
        with self._lock:
            now = self.clock() if now is None else now
            if not self.powered or "no_fix" in self.faults:
                return []  # indoors: nothing in view
            epoch = int(self.utc().timestamp())
            rng = random.Random(f"{self.seed}:sats:{epoch // 60}")  # sky changes slowly
            sats: list[Satellite] = []
            prns = rng.sample(range(1, 33), 9) + rng.sample(range(65, 89), 4)
            fixed = self.has_fix(now)
            jam = "jamming" in self.faults
            count_used = 0
            for i, prn in enumerate(prns):
                elev = rng.randint(8, 85)
                az = rng.randint(0, 359)
                if jam:
                    if i % 3:
                        continue  # most satellites drop out under jamming
                    cno: int | None = rng.randint(8, 16)
                elif fixed or self._sky_since is not None:
                    # Acquiring: satellites are tracked before the fix, none used yet.
                    cno = min(50, 22 + elev // 3 + rng.randint(0, 6))
                else:
                    cno = None
                used = fixed and not jam and cno is not None and cno >= 28 and count_used < 12
                count_used += used
                sats.append(Satellite(prn, elev, az, cno, used))
            return sats

    def fix(self, now: float | None = None, *, count: bool = False) -> Fix | None:
        """The receiver's answer now: a Fix, or None without one. count=True counts the
        reported fix (an NMEA epoch, an AT answer)."""
        with self._lock:
            now = self.clock() if now is None else now
            if not self.has_fix(now):
                return None
            truth = self.motion.truth(now)
            utc = self.utc().replace(microsecond=0)
            used = [s for s in self.satellites(now) if s.used]
            n = max(4, len(used))
            rng = random.Random(f"{self.seed}:noise:{int(utc.timestamp())}")
            hdop = round(0.5 + 4.0 / n + rng.uniform(0, 0.15), 2)
            north, east = rng.gauss(0, self.noise_m), rng.gauss(0, self.noise_m)
            dlat = math.degrees(north / EARTH_RADIUS_M)
            dlon = math.degrees(
                east / (EARTH_RADIUS_M * max(0.01, math.cos(math.radians(truth.lat))))
            )
            alt = truth.alt + rng.gauss(0, 1.5 * self.noise_m)
            heading = truth.heading if truth.speed >= 0.1 else None
            if count:
                self.counters.fixes += 1
            return Fix(
                utc=utc,
                lat=truth.lat + dlat,
                lon=truth.lon + dlon,
                alt=alt,
                speed=truth.speed,
                heading=heading,
                sats_used=n,
                hdop=hdop,
                pdop=round(hdop * 1.6, 2),
                vdop=round(hdop * 1.3, 2),
            )

    def count_sent(self, sentences: int, corrupted: int = 0) -> None:
        with self._lock:
            self.counters.sentences += sentences
            self.counters.corrupted += corrupted

    def count_command(self, name: str) -> None:
        with self._lock:
            cmds = self.counters.commands
            cmds[name] = cmds.get(name, 0) + 1

    # -- counters --------------------------------------------------------------------------

    def on_time_s(self) -> float:
        with self._lock:
            extra = self.clock() - self._on_since if self._on_since is not None else 0.0
            return self.counters.on_s + extra

    def ttff_s(self) -> float | None:
        """Time to first fix of the current (or last) session, None before it."""
        with self._lock:
            self._settle(self.clock())
            if self._first_fix_at is None or self._session_start is None:
                return None
            return self._first_fix_at - self._session_start

    def snapshot(self) -> dict:
        with self._lock:
            now = self.clock()
            fixed = self.has_fix(now)
            ttff = self.ttff_s()
            c = self.counters
            return {
                "name": self.name,
                "powered": self.powered,
                "fix": fixed,
                "start": self._start_kind if self.powered else None,
                "ttff_s": None if ttff is None else round(ttff, 3),
                "on_s": round(self.on_time_s(), 3),
                "power_cycles": c.power_cycles,
                "sentences": c.sentences,
                "corrupted": c.corrupted,
                "fixes": c.fixes,
                "commands": dict(sorted(c.commands.items())),
                "faults": {k: dict(v) for k, v in sorted(self.faults.items())},
                "noise_m": self.noise_m,
            }
