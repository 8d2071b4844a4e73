"""The GNSS simulator (host_tools/vboard/gnss) is an honest oracle for the firmware's location
module: routes play back as hand computation says, NMEA leaves the pty as a real receiver's
(checked with an independent parser, pynmea2), and each modem dialect answers its GNSS
commands in the real format from the same route. No MicroPython needed.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pynmea2
import pytest
import serial

from host_tools import cli
from host_tools.vboard.bench import Bench, BenchClient, BenchError
from host_tools.vboard.gnss import (
    DEFAULT_ROUTE,
    ROUTES_DIR,
    GnssError,
    GnssSim,
    GnssTimings,
    Motion,
    NmeaReceiver,
    Route,
    RouteError,
    haversine_m,
)
from host_tools.vboard.gnss.nmea import epoch_sentences
from host_tools.vboard.gnss.route import EARTH_RADIUS_M
from host_tools.vboard.gnss_wiring import attach_gnss
from host_tools.vboard.modem import ModemSimulator, Timings
from host_tools.vboard.modem.probe import AtProbe, power_on

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180  # one degree of a great circle, metres
T0_UTC = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.UTC)


class FakeClock:
    """Monotonic seconds and the matching UTC wall clock, both moved by hand."""

    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t

    def utc(self) -> dt.datetime:
        return T0_UTC + dt.timedelta(seconds=self.t - 5000.0)

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def square_route(speed: float = 10.0) -> Route:
    """East 0.01 deg along the equator, then north 0.01 deg along a meridian."""
    return Route.from_coords([(0.0, 0.0, 0.0), (0.0, 0.01, 0.0), (0.01, 0.01, 20.0)], speed=speed)


def make_rx(clock: FakeClock, route: Route | None = None, **kw: object) -> GnssSim:
    motion = Motion(route or square_route(), clock=clock)
    kw.setdefault("timings", GnssTimings(cold_ttff_s=30, warm_ttff_s=2, reacquire_s=1))
    return GnssSim(motion, utc=clock.utc, **kw)  # type: ignore[arg-type]


def dist(where: object, lat: float, lon: float) -> float:
    """Metres from a Fix/Position, or a pynmea2 sentence (its .latitude/.longitude), to lat/lon."""
    if isinstance(where, pynmea2.NMEASentence):
        return haversine_m(where.latitude, where.longitude, lat, lon)
    return haversine_m(where.lat, where.lon, lat, lon)  # type: ignore[attr-defined]


def nmea_checksum(body: str) -> str:
    value = 0
    for ch in body.encode():
        value ^= ch
    return f"{value:02X}"


# -- routes ---------------------------------------------------------------------------------


def test_haversine_matches_a_degree_of_great_circle() -> None:
    # Along the equator and along a meridian one degree is R * pi / 180 (111.195 km).
    assert haversine_m(0, 0, 0, 1) == pytest.approx(M_PER_DEG, rel=1e-9)
    assert haversine_m(0, 0, 1, 0) == pytest.approx(M_PER_DEG, rel=1e-9)
    # Arc de Triomphe -> Place de la Concorde by the equirectangular approximation (good to
    # well under 0.1 % over 2 km): dy = dlat, dx = dlon * cos(mean lat).
    lat1, lon1, lat2, lon2 = 48.87378, 2.29504, 48.86560, 2.32120
    dy = (lat2 - lat1) * M_PER_DEG
    dx = (lon2 - lon1) * M_PER_DEG * math.cos(math.radians((lat1 + lat2) / 2))
    assert haversine_m(lat1, lon1, lat2, lon2) == pytest.approx(math.hypot(dx, dy), rel=1e-3)


def test_route_interpolates_by_distance_and_time() -> None:
    route = square_route(speed=10.0)
    leg = 0.01 * M_PER_DEG  # 1111.95 m each
    assert route.length_m == pytest.approx(2 * leg, rel=1e-6)
    assert route.duration_s == pytest.approx(2 * leg / 10.0, rel=1e-6)
    half = route.position(leg / 2 / 10.0)  # halfway along the first leg
    assert half.lat == pytest.approx(0.0, abs=1e-9)
    assert half.lon == pytest.approx(0.005, abs=1e-7)
    assert half.speed == pytest.approx(10.0)
    assert half.heading == pytest.approx(90.0)
    north = route.position(1.5 * leg / 10.0)  # halfway up the second leg
    assert north.lat == pytest.approx(0.005, abs=1e-7)
    assert north.lon == pytest.approx(0.01, abs=1e-9)
    assert north.heading == pytest.approx(0.0, abs=1e-6)
    assert north.alt == pytest.approx(10.0)  # altitude interpolates too
    # Before the start: waiting at the first point; after the end: parked at the last.
    assert route.position(-5).lon == 0.0
    end = route.position(route.duration_s + 100)
    assert (end.lat, end.lon, end.speed) == (0.01, 0.01, 0.0)
    assert end.heading == pytest.approx(0.0, abs=1e-6)


def test_route_positions_lie_on_the_great_circle_and_cover_the_distance() -> None:
    route = Route.load(DEFAULT_ROUTE)
    travelled = 0.0
    prev = route.position(0)
    for t in range(1, int(route.duration_s) + 1):
        pos = route.position(t)
        travelled += haversine_m(prev.lat, prev.lon, pos.lat, pos.lon)
        prev = pos
    assert travelled == pytest.approx(route.length_m, rel=1e-4)


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


GPX_HEAD = '<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'


def test_gpx_track_with_times_uses_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.gpx",
        GPX_HEAD + "<trk><trkseg>"
        '<trkpt lat="0" lon="0"><ele>5</ele><time>2025-01-01T00:00:00Z</time></trkpt>'
        '<trkpt lat="0" lon="0.01"><ele>7</ele><time>2025-01-01T00:02:00Z</time></trkpt>'
        "</trkseg></trk></gpx>",
    )
    route = Route.load(path)
    assert route.duration_s == 120
    assert route.position(60).speed == pytest.approx(0.01 * M_PER_DEG / 120)
    assert route.position(60).alt == pytest.approx(6.0)


def test_gpx_route_without_times_goes_at_the_given_speed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.gpx",
        GPX_HEAD + '<rte><rtept lat="0" lon="0"/><rtept lat="0.01" lon="0"/></rte></gpx>',
    )
    assert Route.load(path).duration_s == pytest.approx(0.01 * M_PER_DEG / 10.0)  # default
    slow = Route.load(path, speed=2.5)
    assert slow.duration_s == pytest.approx(0.01 * M_PER_DEG / 2.5)
    assert slow.position(10).speed == pytest.approx(2.5)
    with pytest.raises(RouteError):
        Route.load(write(tmp_path, "empty.gpx", GPX_HEAD + "</gpx>"))


def test_nmea_log_gives_positions_times_and_altitude(tmp_path: Path) -> None:
    def s(body: str) -> str:
        return f"${body}*{nmea_checksum(body)}"

    lines = [
        s("GPGGA,120000.00,4807.03800,N,01131.00000,E,1,08,0.9,545.4,M,46.9,M,,"),
        s("GPRMC,120000.00,A,4807.03800,N,01131.00000,E,0.0,,230394,,,A"),
        s("GPRMC,120001.00,V,,,,,,,230394,,,N"),  # void: no position
        s("GPGGA,120002.00,4807.04800,N,01131.00000,E,1,08,0.9,546.0,M,46.9,M,,"),
        s("GPRMC,120002.00,A,4807.04800,N,01131.00000,E,1.0,0.0,230394,,,A"),
        "$GPRMC,120003.00,A,4900.00000,N,01131.00000,E,1.0,0.0,230394,,,A*00",  # bad sum
        s("GPRMC,120004.00,A,4807.05800,S,01131.00000,W,1.0,0.0,230394,,,A"),
    ]
    route = Route.load(write(tmp_path, "log.nmea", "\n".join(lines) + "\n"))
    assert [p.t for p in route.points] == [0.0, 2.0, 4.0]
    assert route.points[0].lat == pytest.approx(48 + 7.038 / 60)
    assert route.points[0].lon == pytest.approx(11 + 31 / 60)
    assert route.points[1].alt == pytest.approx(546.0)
    assert route.points[2].lat == pytest.approx(-(48 + 7.058 / 60))
    assert route.points[2].lon == pytest.approx(-(11 + 31 / 60))
    # 0.01 minute of latitude in 2 s: the speed comes from the fixes' spacing.
    assert route.position(1).speed == pytest.approx(0.01 / 60 * M_PER_DEG / 2, rel=1e-6)
    with pytest.raises(RouteError):
        Route.load(write(tmp_path, "void.nmea", s("GPRMC,120001.00,V,,,,,,,230394,,,N") + "\n"))


def test_shipped_routes_are_a_town_drive_and_a_walk() -> None:
    drive = Route.load(ROUTES_DIR / "paris-drive.gpx")
    walk = Route.load(ROUTES_DIR / "paris-walk.gpx")
    assert 5000 < drive.length_m < 7000
    assert 500 < walk.length_m < 1500
    drive_speeds = [drive.position(t).speed for t in range(int(drive.duration_s))]
    walk_speeds = [walk.position(t).speed for t in range(int(walk.duration_s))]
    assert 6 < max(drive_speeds) < 14  # town speeds (m/s), with red-light stops
    assert min(drive_speeds) == 0
    assert 1.0 < max(walk_speeds) < 2.0


# -- the receiver model ------------------------------------------------------------------------


def test_cold_start_takes_the_cold_ttff_and_is_counted(clock: FakeClock) -> None:
    rx = make_rx(clock)
    assert rx.fix() is None  # off
    rx.set_power(True)
    clock.advance(29.9)
    assert rx.fix() is None
    assert rx.ttff_s() is None
    clock.advance(0.2)
    fix = rx.fix()
    assert fix is not None
    assert rx.ttff_s() == pytest.approx(30.0)
    snap = rx.snapshot()
    assert snap["start"] == "cold" and snap["power_cycles"] == 1
    assert snap["on_s"] == pytest.approx(30.1)
    assert 4 <= fix.sats_used <= 12 and 0.5 < fix.hdop < 2.0
    assert fix.utc == clock.utc().replace(microsecond=0)


def test_warm_start_only_within_the_ephemeris_validity_after_a_fix(clock: FakeClock) -> None:
    rx = make_rx(
        clock,
        timings=GnssTimings(cold_ttff_s=30, warm_ttff_s=2, ephemeris_validity_s=3600),
    )
    rx.set_power(True)
    clock.advance(10)
    rx.set_power(False)  # never had a fix: nothing to warm-start from
    clock.advance(5)
    rx.set_power(True)
    clock.advance(3)
    assert rx.fix() is None and rx.snapshot()["start"] == "cold"
    clock.advance(30)
    assert rx.fix() is not None
    rx.set_power(False)
    clock.advance(3599)  # off for less than the ephemeris validity
    rx.set_power(True)
    assert rx.snapshot()["start"] == "warm"
    clock.advance(1.9)
    assert rx.fix() is None
    clock.advance(0.2)
    assert rx.fix() is not None and rx.ttff_s() == pytest.approx(2.0)
    rx.set_power(False)
    clock.advance(3601)  # ephemeris expired: cold again
    rx.set_power(True)
    clock.advance(2.1)
    assert rx.fix() is None and rx.snapshot()["start"] == "cold"
    snap = rx.snapshot()
    assert snap["power_cycles"] == 4
    assert snap["on_s"] == pytest.approx(10 + 33 + 2.1 + 2.1)


def test_fix_is_the_route_position_within_the_noise(clock: FakeClock) -> None:
    rx = make_rx(clock, noise_m=2.5)
    rx.set_power(True)
    clock.advance(40)
    errors = []
    for _ in range(60):
        clock.advance(1)
        truth = rx.motion.truth()
        fix = rx.fix()
        assert fix is not None
        errors.append(dist(fix, truth.lat, truth.lon))
        assert fix.speed == pytest.approx(truth.speed)
    assert max(errors) < 5 * 2.5 * 1.5  # 2D Gaussian with sigma 2.5 m per axis
    assert 0.5 < sum(errors) / len(errors) < 6  # noisy, but not wildly
    exact = make_rx(clock, noise_m=0.0)
    exact.set_power(True)
    clock.advance(31)
    fix, truth = exact.fix(), exact.motion.truth()
    assert fix is not None and dist(fix, truth.lat, truth.lon) < 0.01


def test_receivers_on_one_motion_agree_but_keep_their_own_power(clock: FakeClock) -> None:
    motion = Motion(square_route(), clock=clock)
    uart = GnssSim(motion, utc=clock.utc, noise_m=0.0, timings=GnssTimings.fast())
    modem = GnssSim(motion, utc=clock.utc, noise_m=0.0, timings=GnssTimings.fast(), seed="m")
    uart.set_power(True)
    clock.advance(20)
    assert uart.fix() is not None and modem.fix() is None  # the modem's GNSS is still off
    modem.set_power(True)
    clock.advance(0.3)
    assert modem.fix() is None  # its own cold start (0.4 s)
    clock.advance(0.2)
    a, b = uart.fix(), modem.fix()
    assert a is not None and b is not None
    assert haversine_m(a.lat, a.lon, b.lat, b.lon) < 0.01  # the same asset, the same route
    motion.park()
    clock.advance(5)
    assert uart.fix().speed == 0 and modem.fix().speed == 0  # type: ignore[union-attr]


def test_park_stops_the_asset_and_drive_continues(clock: FakeClock) -> None:
    motion = Motion(square_route(), clock=clock)
    clock.advance(50)
    at_park = motion.truth()
    motion.park()
    clock.advance(300)
    parked = motion.truth()
    assert (parked.lat, parked.lon) == (at_park.lat, at_park.lon) and parked.speed == 0
    motion.drive()
    assert dist(motion.truth(), at_park.lat, at_park.lon) < 1e-6
    clock.advance(10)
    assert dist(motion.truth(), at_park.lat, at_park.lon) == pytest.approx(100, rel=1e-3)
    motion.set_route(Route.from_coords([(10.0, 20.0), (10.0, 20.1)]))
    assert (motion.truth().lat, motion.truth().lon) == (10.0, 20.0)


def test_no_fix_fault_loses_the_fix_and_reacquires_after_it(clock: FakeClock) -> None:
    rx = make_rx(clock)
    rx.set_power(True)
    clock.advance(31)
    assert rx.fix() is not None and rx.satellites()
    rx.fault("no_fix")
    assert rx.fix() is None  # fails if the fault did nothing
    assert rx.satellites() == []  # indoors: nothing in view
    clock.advance(600)
    assert rx.fix() is None  # no TTFF runs without sky
    rx.fault("no_fix", on=False)
    clock.advance(0.9)
    assert rx.fix() is None
    clock.advance(0.2)  # reacquire_s = 1
    assert rx.fix() is not None


def test_no_fix_from_power_on_means_no_first_fix(clock: FakeClock) -> None:
    rx = make_rx(clock)
    rx.fault("no_fix")
    rx.set_power(True)
    clock.advance(300)
    assert rx.fix() is None and rx.ttff_s() is None
    rx.fault("no_fix", on=False)
    clock.advance(30.1)
    assert rx.fix() is not None and rx.ttff_s() == pytest.approx(330.0)


def test_jamming_drops_the_fix_and_satellites_at_low_cno(clock: FakeClock) -> None:
    rx = make_rx(clock)
    rx.set_power(True)
    clock.advance(31)
    before = rx.satellites()
    assert sum(s.used for s in before) >= 4
    rx.fault("jamming")
    jammed = rx.satellites()
    assert rx.fix() is None
    assert 0 < len(jammed) < len(before)
    assert not any(s.used for s in jammed)
    assert all(s.cno is not None and s.cno <= 16 for s in jammed)
    with pytest.raises(GnssError):
        rx.fault("corrupt", rate=2)
    with pytest.raises(GnssError):
        rx.fault("bogus")


# -- NMEA sentences (independent parser: pynmea2) ---------------------------------------------


def parse_all(lines: list[str]) -> list[pynmea2.NMEASentence]:
    out = []
    for line in lines:
        assert line.endswith("\r\n") and len(line) <= 82, line
        out.append(pynmea2.parse(line.strip(), check=True))  # raises on a bad checksum
    return out


def test_epoch_with_a_fix_parses_and_matches_the_route(clock: FakeClock) -> None:
    rx = make_rx(clock, noise_m=1.0)
    rx.set_power(True)
    clock.advance(60)  # 30 s into the drive: on the first (eastward) leg
    truth = rx.motion.truth()
    msgs = parse_all(epoch_sentences("GN", rx.utc(), rx.fix(), rx.satellites()))
    kinds = [m.sentence_type for m in msgs]
    assert kinds[:4] == ["RMC", "VTG", "GGA", "GSA"] and set(kinds[4:]) == {"GSV"}
    rmc, vtg, gga, gsa = msgs[:4]
    assert all(m.talker == "GN" for m in msgs[:4])
    assert rmc.status == "A"
    assert dist(rmc, truth.lat, truth.lon) < 10
    assert dist(gga, truth.lat, truth.lon) < 10
    assert float(rmc.spd_over_grnd) == pytest.approx(10 * 3600 / 1852, abs=0.01)
    assert float(rmc.true_course) == pytest.approx(90.0, abs=0.01)
    assert float(vtg.spd_over_grnd_kmph) == pytest.approx(36.0, abs=0.01)
    assert rmc.datestamp == T0_UTC.date()
    assert rmc.timestamp.replace(tzinfo=None) == (T0_UTC + dt.timedelta(seconds=60)).time()
    assert gga.gps_qual == 1 and 4 <= int(gga.num_sats) <= 12
    assert gsa.mode_fix_type == "3"
    gsv = [m for m in msgs if m.sentence_type == "GSV"]
    assert {m.talker for m in gsv} == {"GP", "GL"}
    in_view = sum(int(m.num_sv_in_view) for m in gsv if m.msg_num == "1")
    assert in_view == len(rx.satellites())


def test_epoch_without_a_fix_is_void_and_talker_is_configurable(clock: FakeClock) -> None:
    rx = make_rx(clock)
    rx.set_power(True)
    clock.advance(5)  # still acquiring
    msgs = parse_all(epoch_sentences("GP", rx.utc(), rx.fix(), rx.satellites()))
    rmc, vtg, gga, gsa = msgs[:4]
    assert all(m.talker == "GP" for m in msgs)
    assert rmc.status == "V" and rmc.lat == "" and rmc.datestamp == T0_UTC.date()
    assert gga.gps_qual == 0 and gga.lat == ""
    assert gsa.mode_fix_type == "1"


@pytest.fixture
def nmea_rx(tmp_path: Path) -> Iterator[callable]:
    made: list[tuple[NmeaReceiver, serial.Serial]] = []

    def make(baud: int = 115200, **kw: object) -> tuple[NmeaReceiver, serial.Serial]:
        motion = Motion(square_route())
        sim = GnssSim(motion, timings=GnssTimings.fast(), **kw)  # type: ignore[arg-type]
        rx = NmeaReceiver(sim, tmp_path, baud=baud).start()
        port = serial.serial_for_url(rx.uart_path, baudrate=baud, timeout=0.01)
        made.append((rx, port))
        return rx, port

    yield make
    for rx, port in made:
        port.close()
        rx.stop()
        assert not rx.internal_errors, rx.internal_errors[0]


def read_timed(port: serial.Serial, seconds: float) -> list[tuple[float, bytes]]:
    """(arrival time, chunk) for everything that arrives within `seconds`."""
    chunks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = port.read(4096)
        if data:
            chunks.append((time.monotonic(), data))
    return chunks


def arrival_at(chunks: list[tuple[float, bytes]], offset: int) -> float:
    """When the byte at `offset` of the concatenated chunks arrived."""
    end = 0
    for when, chunk in chunks:
        end += len(chunk)
        if end > offset:
            return when
    raise AssertionError(f"byte {offset} never arrived")


def arrivals(chunks: list[tuple[float, bytes]], marker: bytes) -> list[float]:
    """When the first byte of each occurrence of `marker` arrived."""
    data = b"".join(c for _, c in chunks)
    out, pos = [], data.find(marker)
    while pos >= 0:
        out.append(arrival_at(chunks, pos))
        pos = data.find(marker, pos + 1)
    return out


def utc_dates() -> set[str]:
    """Today's ddmmyy, and a few seconds ago's (an answer may straddle midnight)."""
    now = dt.datetime.now(dt.UTC)
    return {f"{now:%d%m%y}", f"{now - dt.timedelta(seconds=10):%d%m%y}"}


def test_uart_sends_one_epoch_a_second_only_while_powered(nmea_rx) -> None:
    rx, port = nmea_rx(baud=115200)
    assert read_timed(port, 1.1) == []  # off: silent
    rx.sim.set_power(True)
    chunks = read_timed(port, 3.6)
    data = b"".join(c for _, c in chunks)
    starts = arrivals(chunks, b"$GNRMC,")  # when each epoch began to arrive
    assert len(starts) in (3, 4)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # One a second on average; each gap loosely (a loaded CI machine delays single epochs).
    assert 0.9 < sum(gaps) / len(gaps) < 1.1 and all(0.6 < g < 1.4 for g in gaps), gaps
    lines = [ln + "\r\n" for ln in data.decode("ascii").split("\r\n") if ln]
    msgs = parse_all(lines)
    rmcs = [m for m in msgs if m.sentence_type == "RMC"]
    assert rmcs[-1].status == "A"  # fast TTFF (0.4 s) passed
    snap = rx.snapshot()
    assert snap["sentences"] == len(msgs) and snap["corrupted"] == 0
    assert snap["fixes"] == sum(m.status == "A" for m in rmcs)
    rx.sim.set_power(False)
    time.sleep(0.2)
    port.reset_input_buffer()
    assert read_timed(port, 1.1) == []


def test_uart_is_paced_at_the_baud_rate(nmea_rx) -> None:
    rx, port = nmea_rx(baud=9600)
    rx.sim.set_power(True)
    chunks = read_timed(port, 2.2)
    # One whole epoch: from an RMC's '$' to the last byte before the next RMC.
    data = b"".join(c for _, c in chunks)
    first = data.index(b"$GNRMC")
    second = data.index(b"$GNRMC", first + 1)
    epoch_bytes = second - first
    t_first = arrival_at(chunks, first)
    t_last = arrival_at(chunks, second - 1)  # the epoch's last byte
    wire_s = epoch_bytes * 10 / 9600  # 8N1: 10 bits a byte
    took = t_last - t_first
    # Never faster than the wire; slower only by scheduling delays (generous on loaded CI).
    assert 0.8 * wire_s < took < wire_s + 0.5, (epoch_bytes, wire_s, took)


def test_corrupt_fault_damages_sentences_and_counts_them(nmea_rx) -> None:
    rx, port = nmea_rx(baud=115200)
    rx.sim.fault("corrupt", rate=0.5, seed="x")
    rx.sim.set_power(True)
    chunks = read_timed(port, 3.2)
    # Off, then whatever was already on its way: the counters and the bytes then cover the
    # same sentences, however late a loaded machine ran the sender.
    rx.sim.set_power(False)
    chunks += read_timed(port, 1.0)
    data = b"".join(c for _, c in chunks)
    good = bad = 0
    for raw in data.split(b"\r\n"):
        if not raw:
            continue
        try:
            pynmea2.parse(raw.decode("ascii"), check=True)
            good += 1
        except (pynmea2.ParseError, UnicodeDecodeError, ValueError):
            bad += 1
    snap = rx.snapshot()
    assert bad > 0 and good > 0  # fails if the fault did nothing
    assert snap["corrupted"] == bad and snap["sentences"] == good + bad
    rx.sim.fault("corrupt", on=False)


# -- bench wiring ----------------------------------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="gnss-"))  # short: AF_UNIX paths are limited
    yield d
    shutil.rmtree(d, ignore_errors=True)


UART_INFO = {
    "source": "uart",
    "uart": {"id": 2, "baudrate": 9600},
    "enable": {"pin": "gnss_enable", "active": 1},
}


@pytest.fixture
def wired(workdir: Path) -> Iterator[tuple[Bench, NmeaReceiver, GnssSim, dict]]:
    bench = Bench(workdir).start()
    motion = Motion(square_route())
    uart_sim = GnssSim(motion, timings=GnssTimings.fast(), name="uart")
    modem_sim = GnssSim(motion, timings=GnssTimings.fast(), name="modem")
    rx = NmeaReceiver(uart_sim, workdir, baud=9600).start()
    env = attach_gnss(
        bench, motion, {"uart": uart_sim, "modem": modem_sim}, uart=rx, gnss_info=UART_INFO
    )
    yield bench, rx, modem_sim, env
    rx.stop()
    bench.stop()


def test_enable_pin_powers_the_receiver(wired) -> None:
    bench, rx, _modem, env = wired
    assert env == {"ALBATROSS_UART2": rx.uart_path}
    assert not rx.sim.powered
    bench.pin_write("gnss_enable", 1)
    assert rx.sim.powered
    bench.pin_write("gnss_enable", 0)
    assert not rx.sim.powered


def test_receiver_without_enable_pin_is_always_on_and_active_low_works(workdir: Path) -> None:
    with Bench(workdir) as bench:
        motion = Motion(square_route())
        always = NmeaReceiver(GnssSim(motion), workdir / "a").start()
        low = NmeaReceiver(GnssSim(motion), workdir / "b").start()
        try:
            attach_gnss(bench, motion, {}, uart=always, gnss_info={"source": "uart"})
            assert always.sim.powered
            info = {"source": "uart", "enable": {"pin": "gps_en_n", "active": 0}}
            bench2 = Bench(workdir / "c")
            attach_gnss(bench2, motion, {}, uart=low, gnss_info=info)
            assert not low.sim.powered
            bench2.pin_write("gps_en_n", 0)
            assert low.sim.powered
        finally:
            always.stop()
            low.stop()


def test_bench_faults_act_on_every_receiver(wired) -> None:
    bench, rx, modem_gnss, _env = wired
    bench.fault("gnss_no_fix")
    assert "no_fix" in rx.sim.faults and "no_fix" in modem_gnss.faults
    assert bench.faults()["gnss_no_fix"] == {"on": True}
    bench.fault("gnss_no_fix", False)
    bench.fault("gnss_corrupt", rate=0.3)
    assert bench.faults()["gnss_corrupt"] == {"on": True, "rate": 0.3}
    with pytest.raises(BenchError):
        bench.fault("gnss_corrupt", rate=7)
    with pytest.raises(BenchError):
        bench.fault("gnss_jamming", rate=1)


def run_cli(*argv: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return json.loads(out.getvalue())


def test_albatross_bench_gnss_operations(wired, workdir: Path, tmp_path: Path) -> None:
    _bench, rx, modem_gnss, _env = wired
    base = ("bench", "x", "--workdir", str(workdir), "--json")
    snap = run_cli(*base[:2], "gnss", *base[2:])
    assert set(snap) == {"truth", "uart", "modem"}
    assert snap["truth"]["parked"] is False and snap["uart"]["powered"] is False
    assert run_cli(*base[:2], "gnss", "park", *base[2:])["truth"]["parked"] is True
    assert rx.sim.motion.parked
    assert run_cli(*base[:2], "gnss", "drive", *base[2:])["truth"]["parked"] is False
    rte = '<rte><rtept lat="1" lon="2"/><rtept lat="1" lon="3"/></rte></gpx>'
    gpx = write(tmp_path, "r.gpx", GPX_HEAD + rte)
    moved = run_cli(*base[:2], "gnss", "route", str(gpx), "speed=20", *base[2:])
    assert moved["truth"]["route"] == "r.gpx" and moved["truth"]["lat"] == pytest.approx(1.0)
    one_deg_east = M_PER_DEG * math.cos(math.radians(1))
    assert rx.sim.motion.route.duration_s == pytest.approx(one_deg_east / 20, rel=1e-3)
    # Faults through the `fault` operation, values parsed by type.
    faults = run_cli(*base[:2], "fault", "gnss_corrupt", "on", "rate=0.25", *base[2:])["faults"]
    assert faults["gnss_corrupt"] == {"on": True, "rate": 0.25}
    faults = run_cli(*base[:2], "fault", "gnss_jamming", *base[2:])["faults"]
    assert faults["gnss_jamming"]["on"] and "jamming" in modem_gnss.faults
    run_cli(*base[:2], "fault", "gnss_jamming", "off", *base[2:])
    assert "jamming" not in modem_gnss.faults
    client = BenchClient(workdir)
    with pytest.raises(BenchError, match="no"):
        client.call("gnss_route", path=str(tmp_path / "missing.gpx"))


# -- the modems' GNSS AT commands -------------------------------------------------------------


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[callable]:
    made: list[tuple[ModemSimulator, AtProbe]] = []

    def make(dialect: str, **gnss_kw: float) -> tuple[ModemSimulator, AtProbe, GnssSim]:
        motion = Motion(Route.from_coords([(48.8738, 2.2950, 35.0), (48.8656, 2.3212, 35.0)]))
        timings = GnssTimings.fast(**gnss_kw)
        gnss = GnssSim(motion, timings=timings, noise_m=1.0, name="modem")
        sim = ModemSimulator(
            dialect, tmp_path / dialect, timings=Timings.fast(pwrkey_on_s=0.02), gnss=gnss
        ).start()
        probe = AtProbe(sim.uart_path)
        made.append((sim, probe))
        power_on(sim, probe)
        return sim, probe, gnss

    yield make
    for sim, probe in made:
        probe.close()
        sim.stop()
        assert not sim.internal_errors, sim.internal_errors[0]


def info_line(text: str, prefix: str) -> str:
    m = re.search(rf"\r\n({re.escape(prefix)}[^\r]*)\r\n", text)
    assert m, text
    return m.group(1)


def wait_fix(probe: AtProbe, command: str, prefix: str, timeout: float = 3.0) -> str:
    end = time.monotonic() + timeout
    while True:
        text = probe.cmd(command)
        if prefix in text and not text.count(",,,,,,,,") and "ERROR" not in text:
            return info_line(text, prefix)
        assert time.monotonic() < end, text
        time.sleep(0.05)


def ddmm(value: str, hemi: str) -> float:
    deg_len = value.index(".") - 2
    out = int(value[:deg_len]) + float(value[deg_len:]) / 60
    return -out if hemi in "SW" else out


CGPSINFO = re.compile(
    r"^\+CGPSINFO: (\d{4}\.\d{6}),([NS]),(\d{5}\.\d{6}),([EW]),(\d{6}),(\d{6}\.\d),"
    r"(-?\d+\.\d),(\d+\.\d),(\d+\.\d)?$"
)
CGNSSINFO_7600 = re.compile(
    r"^\+CGNSSINFO: ([23]),(\d\d),(\d\d),(\d\d),(\d{4}\.\d{6}),([NS]),(\d{5}\.\d{6}),([EW]),"
    r"(\d{6}),(\d{6}\.\d),(-?\d+\.\d),(\d+\.\d),(\d+\.\d)?,(\d+\.\d),(\d+\.\d),(\d+\.\d)$"
)
CGNSSINFO_A76 = re.compile(
    r"^\+CGNSSINFO: ([23]),(\d\d),(\d\d),(\d\d),(\d\d),(\d+\.\d{7}),([NS]),(\d+\.\d{7}),([EW]),"
    r"(\d{6}),(\d{6}\.\d\d),(-?\d+\.\d),(\d+\.\d{3}),(\d+\.\d\d)?,(\d+\.\d\d),(\d+\.\d\d),"
    r"(\d+\.\d\d),(\d\d)$"
)
QGPSLOC = re.compile(
    r"^\+QGPSLOC: (\d{6}\.\d),(-?\d+\.\d{5}),(-?\d+\.\d{5}),(\d+\.\d),(-?\d+\.\d),([23]),"
    r"(\d+\.\d\d),(\d+\.\d),(\d+\.\d),(\d{6}),(\d\d)$"
)


def near_truth(gnss: GnssSim, lat: float, lon: float) -> None:
    truth = gnss.motion.truth()
    # 1 m noise, and the asset moves 10 m/s while the answer crosses the wire.
    assert haversine_m(lat, lon, truth.lat, truth.lon) < 25


def test_sim7600_cgps_and_its_info_commands(modem) -> None:
    sim, probe, gnss = modem("sim7600")
    assert "+CGPS: 0,1" in probe.cmd("AT+CGPS?")
    assert "\r\n+CGPSINFO: ,,,,,,,,\r\n" in probe.cmd("AT+CGPSINFO")
    assert probe.cmd("AT+CGPS=1").endswith("\r\nOK\r\n")
    assert probe.cmd("AT+CGPS=1").endswith("\r\nERROR\r\n")  # already running
    assert "+CGPS: 1,1" in probe.cmd("AT+CGPS?")
    assert "\r\n+CGNSSINFO: ,,,,,,,,\r\n" in probe.cmd("AT+CGNSSINFO")  # acquiring
    m = CGPSINFO.match(wait_fix(probe, "AT+CGPSINFO", "+CGPSINFO:"))
    assert m, "CGPSINFO format"
    near_truth(gnss, ddmm(m[1], m[2]), ddmm(m[3], m[4]))
    assert float(m[8]) == pytest.approx(10 * 3600 / 1852, abs=0.06)  # knots
    assert m[5] in utc_dates()
    line = info_line(probe.cmd("AT+CGNSSINFO"), "+CGNSSINFO:")
    m = CGNSSINFO_7600.match(line)
    assert m, line
    near_truth(gnss, ddmm(m[5], m[6]), ddmm(m[7], m[8]))
    assert probe.cmd("AT+CGPS=0").endswith("\r\nOK\r\n")
    assert "+CGPS: 0,1" in probe.cmd("AT+CGPS?")
    assert gnss.snapshot()["fixes"] >= 2


def test_a7670_cgnsspwr_ready_urc_and_decimal_cgnssinfo(modem) -> None:
    sim, probe, gnss = modem("a7670", ready_s=0.3)
    assert "+CGNSSPWR: 0,0,1" in probe.cmd("AT+CGNSSPWR?")
    assert probe.cmd("AT+CGNSSINFO").endswith("\r\nERROR\r\n")  # GNSS off
    assert probe.cmd("AT+CGPS=1").endswith("\r\nERROR\r\n")  # not an A76xx command
    assert probe.cmd("AT+CGNSSPWR=1").endswith("\r\nOK\r\n")
    assert "\r\n+CGNSSINFO: ,,,,,,,,\r\n" in probe.cmd("AT+CGNSSINFO")  # not ready yet
    probe.expect(rb"\r\n\+CGNSSPWR: READY!\r\n", timeout=2)
    assert "+CGNSSPWR: 1,0,1" in probe.cmd("AT+CGNSSPWR?")
    line = wait_fix(probe, "AT+CGNSSINFO", "+CGNSSINFO:")
    m = CGNSSINFO_A76.match(line)
    assert m, line
    lat = float(m[6]) * (1 if m[7] == "N" else -1)
    lon = float(m[8]) * (1 if m[9] == "E" else -1)
    near_truth(gnss, lat, lon)
    assert int(m[18]) >= 4  # satellites used
    assert probe.cmd("AT+CGNSSPWR=0").endswith("\r\nOK\r\n")
    assert probe.cmd("AT+CGNSSINFO").endswith("\r\nERROR\r\n")


def test_bg96_qgps_session_and_qgpsloc_errors(modem) -> None:
    sim, probe, gnss = modem("bg96")
    assert "+QGPS: 0" in probe.cmd("AT+QGPS?")
    assert probe.cmd("AT+QGPSLOC=2").endswith("\r\n+CME ERROR: 505\r\n")  # off
    assert probe.cmd("AT+QGPSEND").endswith("\r\n+CME ERROR: 505\r\n")
    assert probe.cmd("AT+QGPS=1").endswith("\r\nOK\r\n")
    assert probe.cmd("AT+QGPS=1").endswith("\r\n+CME ERROR: 504\r\n")  # session ongoing
    assert probe.cmd("AT+QGPSLOC=2").endswith("\r\n+CME ERROR: 516\r\n")  # not fixed yet
    line = wait_fix(probe, "AT+QGPSLOC=2", "+QGPSLOC:")
    m = QGPSLOC.match(line)
    assert m, line
    near_truth(gnss, float(m[2]), float(m[3]))
    assert float(m[8]) == pytest.approx(36.0, abs=0.1)  # km/h
    assert m[10] in utc_dates()
    probe.cmd("AT+CMEE=2")
    gnss.fault("no_fix")
    assert probe.cmd("AT+QGPSLOC=2").endswith("\r\n+CME ERROR: Not fixed now\r\n")
    assert probe.cmd("AT+QGPSEND").endswith("\r\nOK\r\n")
    assert "+QGPS: 0" in probe.cmd("AT+QGPS?")


@pytest.mark.parametrize(
    "dialect, on, query, off_answer",
    [
        ("sim7600", "AT+CGPS=1", "AT+CGPS?", "+CGPS: 0,1"),
        ("a7670", "AT+CGNSSPWR=1", "AT+CGNSSPWR?", "+CGNSSPWR: 0,0,1"),
        ("bg96", "AT+QGPS=1", "AT+QGPS?", "+QGPS: 0"),
    ],
)
def test_modem_gnss_is_off_after_the_modem_reboots(modem, dialect, on, query, off_answer) -> None:
    sim, probe, gnss = modem(dialect)
    assert probe.cmd(on).endswith("OK\r\n")
    assert gnss.powered
    sim.set_power(False)
    assert not gnss.powered
    sim.set_power(True)
    power_on(sim, probe)
    assert off_answer in probe.cmd(query)
    assert gnss.snapshot()["power_cycles"] == 1


# -- VirtualBoard(gnss=..., route=...) ------------------------------------------------------


def test_albatross_vboard_takes_route_and_gnss() -> None:
    args = cli.build_parser().parse_args(["vboard", "--gnss", "uart", "--route", "a.gpx"])
    assert (args.gnss, args.route) == ("uart", Path("a.gpx"))
    args = cli.build_parser().parse_args(["vboard"])
    assert (args.gnss, args.route) == ("board", None)
    with pytest.raises(SystemExit), redirect_stdout(io.StringIO()):
        cli.build_parser().parse_args(["vboard", "--gnss", "gps"])


def vboard(**kw: object):
    from host_tools.vboard.runner import VirtualBoard
    from host_tools.vboard.supervisor import VboardError

    try:
        return VirtualBoard(name="gnss-args", usb_port=None, **kw)  # type: ignore[arg-type]
    except VboardError as e:
        if "runtime" in str(e).lower() or "micropython" in str(e).lower():
            pytest.skip(f"no MicroPython runtime here: {e}")
        raise


def test_vboard_gnss_rewrites_board_json_like_modem_does(tmp_path: Path) -> None:
    from host_tools.vboard.supervisor import VboardError

    assert vboard().board_info["gnss"] == {"source": "modem"}  # unix_sim's board.json
    assert vboard(modem="none").board_info["gnss"] is None  # its GNSS was the modem's
    assert vboard(gnss="none").board_info["gnss"] is None
    assert vboard(gnss="uart", modem="none").board_info["gnss"] == UART_INFO
    assert vboard(gnss="modem", modem="a7670").board_info["gnss"] == {"source": "modem"}
    assert vboard().route.name == DEFAULT_ROUTE.name
    walk = ROUTES_DIR / "paris-walk.gpx"
    assert vboard(route=walk).route.length_m == pytest.approx(Route.load(walk).length_m)
    with pytest.raises(VboardError, match="needs a modem"):
        vboard(gnss="modem", modem="none")
    with pytest.raises(VboardError, match="unknown gnss"):
        vboard(gnss="gps")
    with pytest.raises(VboardError, match="route"):
        vboard(route=tmp_path / "nowhere.gpx")
