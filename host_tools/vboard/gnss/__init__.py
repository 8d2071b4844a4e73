"""GNSS simulator for the virtual board: a route played in real time, receivers over it.

    route = Route.load(DEFAULT_ROUTE)               # GPX (trk/rte) or a recorded NMEA log
    motion = Motion(route)                          # the asset moving; park() / drive()
    rx = GnssSim(motion, timings=GnssTimings.fast())   # one receiver: power, TTFF, faults
    uart = NmeaReceiver(rx, workdir, baud=9600).start() # NMEA at 1 Hz on a pty
    ModemSimulator("bg96", workdir, gnss=GnssSim(motion))  # the modem's own GNSS

host_tools/vboard/gnss_wiring.py attaches them to the bench (pins, faults, controls).
"""

from pathlib import Path

from .model import FAULTS, Fix, GnssError, GnssSim, GnssTimings, Motion, Satellite
from .route import Position, Route, RouteError, bearing_deg, haversine_m
from .uart import NmeaReceiver

ROUTES_DIR = Path(__file__).parent / "routes"
DEFAULT_ROUTE = ROUTES_DIR / "paris-drive.gpx"

__all__ = [
    "DEFAULT_ROUTE",
    "FAULTS",
    "ROUTES_DIR",
    "Fix",
    "GnssError",
    "GnssSim",
    "GnssTimings",
    "Motion",
    "NmeaReceiver",
    "Position",
    "Route",
    "RouteError",
    "Satellite",
    "bearing_deg",
    "haversine_m",
]
