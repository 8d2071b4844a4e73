# The location module's pure parts (fix geometry, the modems' GNSS answers) and its state
# machine driven by a fake receiver and a fake clock. Runs on CPython and MicroPython.
from mptest import raises, run

from tracker.location.fix import (
    Fix,
    degrees_text,
    distance_m,
    heading_change,
    parse_ddmm,
    parse_degrees,
)
from tracker.location.modem_answers import cgnsinf, cgnssinfo, cgpsinfo, qgpsloc
from tracker.location.service import Location

# ---- microdegrees from text, by hand ----------------------------------------------------


def test_ddmm_to_microdegrees_by_integer_arithmetic():
    # 2037.72792 N: 20 + 37.72792/60 = 20.6287986666.. -> 20628799
    assert parse_ddmm("2037.72792", "N") == 20628799
    # 08704.08478 W: 87 + 4.08478/60 = 87.068079666.. -> -87068080
    assert parse_ddmm("08704.08478", "W") == -87068080
    assert parse_ddmm("6041.475467", "N") == 60691258  # 60 + 41.475467/60 = 60.69125778
    assert parse_ddmm("0000.0000", "S") == 0
    for bad in (("2037.7x", "N"), ("37.5", "N"), ("2060.0", "N"), ("9100.0", "N"),
                ("2037.5", "X"), ("", "N")):  # fmt: skip
        with raises(ValueError):
            parse_ddmm(*bad)


def test_decimal_degrees_round_half_away_from_zero():
    assert parse_degrees("44.74770") == 44747700
    assert parse_degrees("-85.56527") == -85565270
    assert parse_degrees("114.0598297") == 114059830  # ...8297 rounds up at the 7th digit
    assert parse_degrees("-0.0000005") == -1
    assert parse_degrees("22.6562366") == 22656237
    for bad in ("xx.xxxxx778", "1.2.3", "", "-", "181.0", "12a"):
        with raises(ValueError):
            parse_degrees(bad)


def test_degrees_text_is_exact():
    assert degrees_text(20628799) == "20.628799"
    assert degrees_text(-87068080) == "-87.068080"
    assert degrees_text(-1) == "-0.000001"
    assert degrees_text(180000000) == "180.000000"


def test_distance_and_heading_geometry():
    # One arc-minute of latitude is 1852 m by definition; equirectangular keeps it to 0.3 %.
    d = distance_m(45000000, 7000000, 45016667, 7000000)
    assert 1850 < d < 1860, d
    # 0.001 deg of longitude at 60 N is half of it at the equator (cos 60 = 0.5).
    eq = distance_m(0, 0, 0, 1000)
    north = distance_m(60000000, 0, 60000000, 1000)
    assert 111.0 < eq < 111.5 and abs(north - eq / 2) < 0.2, (eq, north)
    # Across the antimeridian the short way round, not 360 degrees.
    assert distance_m(0, 179999500, 0, -179999500) < 112
    assert heading_change(350, 10) == 20 and heading_change(10, 350) == 20
    assert heading_change(0, 180) == 180 and heading_change(90, 90) == 0


# ---- the modems' answers (reference/SENSORS_GNSS.md and the AT corpus) -----------------


def test_sim7600_cgnssinfo_fix():
    f = cgnssinfo(
        "+CGNSSINFO: 2,05,00,00,6041.475467,N,02846.185792,E,080222,114731.0,85.9,0.0,,1.5,1.3,0.9"
    )
    assert (f.lat, f.lon, f.mode, f.sats) == (60691258, 28769763, 2, 5)
    assert f.alt == 85.9 and f.speed == 0.0 and f.heading is None and f.hdop == 1.3
    assert f.ts == 1644320851  # 2022-02-08T11:47:31Z


def test_a76xx_cgnssinfo_fix_in_decimal_degrees():
    f = cgnssinfo(
        "+CGNSSINFO: 3,07,,03,00,22.6562366,N,114.0598297,E,291124,023114.00,118.4,0.679,,"
        "3.43,2.74,2.06,06"
    )
    assert (f.lat, f.lon, f.mode, f.sats) == (22656237, 114059830, 3, 10)
    assert abs(f.speed - 0.679 * 0.514444) < 1e-4 and f.hdop == 2.74
    assert f.ts == 1732847474  # 2024-11-29T02:31:14Z


def test_no_fix_answers_are_none_and_garbage_is_an_error():
    assert cgnssinfo("+CGNSSINFO: ,,,,,,,,") is None
    assert cgpsinfo("+CGPSINFO: ,,,,,,,,") is None
    # The corpus's A7670 fix line has digits masked with x by its poster: not a position.
    with raises(ValueError):
        cgnssinfo(
            "+CGNSSINFO: 3,15,,05,00,xx.xxxxx778,N,xxxx.xxxxx9518,E,180425,072255.00,169.9,"
            "0.379,,10.40,6.39,8.20,0"
        )
    with raises(ValueError):
        cgnssinfo("+CGNSSINFO: 3,15,garbled")
    with raises(ValueError):
        qgpsloc("+CGPSINFO: 1,2")


def test_sim7600_cgpsinfo():
    f = cgpsinfo("+CGPSINFO: 3113.343286,N,12121.234064,E,250311,072809.3,44.1,0.0,0")
    assert (f.lat, f.lon) == (31222388, 121353901)
    assert f.alt == 44.1 and f.heading == 0.0 and f.ts == 1301038089  # 2011-03-25T07:28:09Z


def test_quectel_qgpsloc_mode_2():
    f = qgpsloc("+QGPSLOC: 113355.0,44.74770,-85.56527,1.2,192.0,2,277.11,0.0,0.0,250420,10")
    assert (f.lat, f.lon, f.mode, f.sats, f.hdop, f.alt) == (
        44747700, -85565270, 2, 10, 1.2, 192.0)  # fmt: skip
    assert abs(f.heading - (277 + 11 / 60)) < 1e-3  # COG is ddd.mm
    assert f.ts == 1587814435  # 2020-04-25T11:33:55Z


def test_sim70x0_cgnsinf_ignores_a_stale_position_without_fix():
    # corpus sim7070-gnss-cgnsinf-stale-1: run 1, fix status empty, a position anyway.
    stale = "+CGNSINF: 1,,,44.060004,20.920002,-37.592,,,1,,0.1,0.1,0.1,,,,155976.0,6000.0"
    assert cgnsinf(stale) is None
    f = cgnsinf("+CGNSINF: 1,1,20150327014838.000,31.221783,121.354528,114.600,0.28,0.0,1,,1.9,"
                "2.2,1.0,,8,4,,,42,,")  # fmt: skip
    assert (f.lat, f.lon, f.sats) == (31221783, 121354528, 4) and f.ts == 1427420918


# ---- the state machine ------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


class FakeReceiver:
    """Answers poll() from a script: position (lat, lon) in microdegrees, or None."""

    source = "fake"

    def __init__(self):
        self.on = False
        self.reason = "off"
        self.position = None
        self.heading = None
        self.speed = 0.0
        self.switches = []
        self.counters = {"queries": 0}

    async def power(self, on, now=0):
        self.on = on
        self.switches.append(on)
        self.reason = "searching" if on else "off"

    async def poll(self, now):
        if not self.on or self.position is None:
            return None
        return Fix(self.position[0], self.position[1], heading=self.heading, speed=self.speed,
                   at=now)  # fmt: skip


CFG = {"gnss": "auto", "move_distance_m": 100, "move_heading_deg": 30,
       "stationary_after_s": 60, "parked_check_s": 300, "gnss_fix_timeout_s": 30}  # fmt: skip


def rig(**cfg):
    clock = Clock()
    r = FakeReceiver()
    loc = Location(r, dict(CFG, **cfg), clock)
    return loc, r, clock


def seconds(loc, clock, n):
    for _ in range(n):
        run(loc.step())
        clock.t += 1000


def test_time_to_first_fix_is_measured_from_power_on():
    loc, r, clock = rig()
    seconds(loc, clock, 5)
    assert r.on and loc.state == "searching" and loc.snapshot() == (None, "searching", None)
    r.position = (45000000, 7000000)
    seconds(loc, clock, 1)
    assert loc.state == "tracking" and loc.ttff_ms == 5000
    fix, reason, age = loc.snapshot()
    assert (fix.lat, reason, age) == (45000000, None, 1)
    assert loc.triggered == "first_fix"


def test_fix_timeout_switches_gnss_off_until_the_next_check():
    loc, r, clock = rig()
    seconds(loc, clock, 31)
    assert loc.state == "resting" and not r.on and loc.counters["timeouts"] == 1
    assert loc.snapshot() == (None, "timeout", None)
    seconds(loc, clock, 298)
    assert not r.on
    seconds(loc, clock, 3)
    assert r.on and loc.state == "searching" and loc.counters["sessions"] == 2


def test_distance_and_heading_ask_for_readings():
    loc, r, clock = rig()
    r.position = (45000000, 7000000)
    seconds(loc, clock, 2)  # on, then the first fix
    loc.reported(loc.last)
    r.position = (45000500, 7000000)  # 56 m north: not yet
    r.speed, r.heading = 5.0, 0.0
    seconds(loc, clock, 1)
    assert loc.triggered is None
    r.position = (45001000, 7000000)  # 111 m from the reported fix
    seconds(loc, clock, 1)
    assert loc.triggered == "distance"
    loc.reported(loc.last)
    loc._reported.heading = 0.0
    r.position, r.heading = (45001100, 7000000), 40.0
    seconds(loc, clock, 1)
    assert loc.triggered == "heading"
    loc.reported(loc.last)
    r.speed, r.heading = 0.5, 120.0  # turning on the spot: heading is noise
    seconds(loc, clock, 1)
    assert loc.triggered is None and loc.counters["triggers"] == 3


def test_parks_when_still_and_tracks_again_when_moved():
    loc, r, clock = rig()
    r.position = (45000000, 7000000)
    seconds(loc, clock, 62)
    assert loc.state == "parked" and not r.on and loc.counters["parks"] == 1
    on_s = loc.on_seconds()
    assert 60 <= on_s <= 62, on_s
    # A check (300 s later: on, then a fix) finds it where it parked: off again.
    seconds(loc, clock, 302)
    assert loc.state == "parked" and not r.on
    checks = r.switches.count(True)
    assert checks == 2, r.switches
    # Moved 1 km while parked: the next check goes back to tracking and asks for a reading.
    r.position = (45009000, 7000000)
    loc.reported(loc.last)
    seconds(loc, clock, 301)
    assert loc.state == "tracking" and r.on and loc.counters["unparks"] == 1
    assert loc.triggered == "distance"
    assert loc.on_seconds() < on_s + 5  # parked: GNSS on only for the checks


def test_gnss_off_by_config_powers_it_down_and_says_so():
    loc, r, clock = rig()
    r.position = (45000000, 7000000)
    seconds(loc, clock, 2)
    loc.cfg["gnss"] = "off"
    seconds(loc, clock, 1)
    assert not r.on and loc.state == "off"
    fix, reason, _ = loc.snapshot()
    assert reason == "off" and fix is not None  # the last position stays known


def test_status_reports_state_and_counters():
    loc, r, clock = rig()
    r.position = (45000000, 7000000)
    seconds(loc, clock, 3)
    s = loc.status()
    assert (s["source"], s["state"], s["reason"], s["fixes"], s["sessions"]) == (
        "fake", "tracking", None, 2, 1)  # fmt: skip
    assert s["ttff_s"] == 1.0 and s["fix_age_s"] == 1 and s["receiver"] == {"queries": 0}


def test_locate_searches_a_parked_asset_at_once_and_asks_for_a_reading():
    loc, r, clock = rig()
    r.position = (45000000, 7000000)
    seconds(loc, clock, 62)
    assert loc.state == "parked" and not r.on
    loc.reported(loc.last)
    loc.locate()
    seconds(loc, clock, 2)  # on at once (not parked_check_s later), then the fix
    assert loc.triggered == "locate" and loc.counters["sessions"] == 2
