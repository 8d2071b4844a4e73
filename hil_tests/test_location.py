"""A virtual tracker driven along a route reports where it is: through each modem dialect's
GNSS and through a standalone NMEA receiver on a UART. Where the asset really was comes from
the bench's GNSS simulator (host_tools/vboard/gnss), never from the firmware."""

from __future__ import annotations

import statistics
import time

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from host_tools.gnss_accuracy import Clocks, accuracy
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.gnss import GnssTimings

pytestmark = [pytest.mark.hil, pytest.mark.bench]
REPORT_S = 60  # generous for shared CI machines; the first fix typically lands in ~5 s
# Simulator noise is a few metres; the firmware adds at most 0.11 m (microdegrees) and BG96's
# five decimals 1.1 m. Twice the worst noise seen plus margin.
CROSS_TRACK_M = 25.0
STATUS_S = 10


def _positioned(dev: str):
    topic = f"albatross/{dev}/telemetry"
    return lambda m: m.topic == topic and "lat" in m.last


def _gnss_status(dev: str, check):
    topic = f"albatross/{dev}/status"
    return lambda m: m.topic == topic and m.json.get("gnss") and check(m.json["gnss"])


@pytest.mark.parametrize(
    ("modem", "gnss"),
    [("sim7600", "modem"), ("a7670", "modem"), ("bg96", "modem"), ("none", "uart")],
    ids=["sim7600", "a7670", "bg96", "nmea-uart"],
)
def test_a_tracker_on_a_route_reports_where_it_is(
    vboard: VboardFactory, mqtt: MqttWatch, modem: str, gnss: str
) -> None:
    clocks = Clocks()
    vb = vboard(
        modem=modem,
        gnss=gnss,
        gnss_timings=GnssTimings.fast(),
        config={"status_interval_s": STATUS_S, "move_distance_m": 50, "report_min_s": 2},
        interval=3,
    )
    dev = vb.device_id
    first = mqtt.wait_for(_positioned(dev), REPORT_S, what="a reading with a position",
                          logs=logs_of(vb))  # fmt: skip
    before = [r for r in mqtt.telemetry(dev) if r["seq"] < first.last["seq"]]
    # Until the first fix the readings say why they have no position (and never make one up).
    assert all("lat" not in r and r.get("gnss") for r in before), before
    mark = mqtt.mark()
    deadline = time.monotonic() + REPORT_S
    while time.monotonic() < deadline:
        records = [r for r in mqtt.telemetry(dev) if "lat" in r]
        if len({(r["lat"], r["lon"]) for r in records}) >= 8:
            break
        time.sleep(0.5)
    records = [r for r in mqtt.telemetry(dev) if "lat" in r]
    motion = vb.motion
    acc = accuracy(records, motion, clocks)
    assert acc.readings >= 8, f"only {acc.readings} distinct positions; logs: {logs_of(vb)}"
    assert acc.cross_max_m <= CROSS_TRACK_M, (acc, logs_of(vb))
    # Against the true position at the fix's time: timestamps are whole seconds, so allow
    # 2 s of travel at the route's speed on top.
    speed = max(r["speed"] for r in records)
    assert acc.truth_p95_m <= CROSS_TRACK_M + 2 * speed, (acc, logs_of(vb))
    # Speed and heading follow the route's, at each fix's time (median over the readings).
    speed_err, heading_err = [], []
    for r in records:
        true = motion.truth(clocks.monotonic(r["ts"] + 0.5 - r["fix_age_s"]))
        speed_err.append(abs(r["speed"] - true.speed))
        heading_err.append(abs((r["heading"] - true.heading + 180) % 360 - 180))
    assert statistics.median(speed_err) <= 1.0, speed_err
    assert statistics.median(heading_err) <= 10, heading_err
    last = records[-1]
    if modem != "sim7600" or gnss == "uart":
        assert last["sats"] >= 4 and 0 < last["hdop"] < 5, last
    # The status reports the fix: time to first fix as the firmware saw it, and the GNSS on.
    status = mqtt.wait_for(
        _gnss_status(dev, lambda g: g["fixes"] >= 1 and g["state"] == "tracking"),
        STATUS_S * 3,
        what="a status with GNSS tracking",
        after=mark,
        logs=logs_of(vb),
    ).json["gnss"]
    assert status["source"] == gnss and status["ttff_s"] is not None and status["on_s"] >= 1
    # Movement asked for readings between the 3 s beats (50 m at ~12 m/s: every ~4 s).
    assert status["triggers"] >= 1, status


@pytest.mark.slow
def test_no_sky_times_out_switches_gnss_off_and_recovers(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(
        modem="bg96",
        gnss="modem",
        gnss_timings=GnssTimings.fast(),
        config={"status_interval_s": STATUS_S, "gnss_fix_timeout_s": 10, "parked_check_s": 30},
        interval=2,
    )
    dev = vb.device_id
    vb.bench.fault("gnss_no_fix", True)  # indoors from the start
    topic = f"albatross/{dev}/telemetry"
    timed_out = mqtt.wait_for(
        lambda m: m.topic == topic and m.last.get("gnss") == "timeout",
        REPORT_S,
        what="a reading saying the fix timed out",
        logs=logs_of(vb),
    )
    # The fault happened: the firmware asked for positions, the simulator never gave a fix,
    # and the firmware said so (the reading above).
    sim = vb.modem_gnss.snapshot()
    assert sim["fixes"] == 0 and "no_fix" in sim["faults"], sim
    assert sum(n for c, n in sim["commands"].items() if "QGPSLOC" in c) >= 1, sim
    assert all("lat" not in r for r in mqtt.telemetry(dev))
    # ... and GNSS is off: the modem's receiver stops accumulating on-time.
    off_at = vb.modem_gnss.on_time_s()
    time.sleep(4)
    assert not vb.modem_gnss.powered and vb.modem_gnss.on_time_s() - off_at < 0.5
    # Sky again: the next check (parked_check_s after the timeout) finds a fix.
    vb.bench.fault("gnss_no_fix", False)
    after = mqtt.wait_for(
        _positioned(dev), 30 + REPORT_S, what="a position after the sky came back",
        after=mqtt.messages.index(timed_out),
        logs=logs_of(vb),
    )  # fmt: skip
    assert after.last["seq"] > timed_out.last["seq"]
    status = mqtt.wait_for(
        _gnss_status(dev, lambda g: g["timeouts"] >= 1 and g["fixes"] >= 1),
        STATUS_S * 3,
        what="a status counting the timeout and the fix",
        logs=logs_of(vb),
    ).json["gnss"]
    assert status["sessions"] >= 2, status


@pytest.mark.slow
def test_a_parked_asset_turns_gnss_off_and_tracks_again_when_it_moves(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(
        modem="none",
        gnss="uart",
        gnss_timings=GnssTimings.fast(),
        config={
            "status_interval_s": STATUS_S,
            "stationary_after_s": 15,
            "parked_check_s": 30,
            "move_distance_m": 50,
            "report_min_s": 2,
        },
        interval=2,
    )
    dev = vb.device_id
    mqtt.wait_for(_positioned(dev), REPORT_S, what="a first position", logs=logs_of(vb))
    vb.motion.park()
    parked = mqtt.wait_for(
        _gnss_status(dev, lambda g: g["state"] == "parked"),
        15 + REPORT_S,
        what="a status saying parked",
        logs=logs_of(vb),
    ).json["gnss"]
    assert parked["parks"] == 1
    rx = vb.gnss_uart.sim
    assert not rx.powered  # the firmware switched the receiver off by its enable pin
    on_parked = rx.on_time_s()
    time.sleep(8)
    assert rx.on_time_s() - on_parked < 0.5
    # Readings go on, with the parked position and a growing age.
    recs = [r for r in mqtt.telemetry(dev) if "lat" in r]
    assert recs[-1]["fix_age_s"] >= 5 and "gnss" not in recs[-1], recs[-1]
    mark = mqtt.mark()
    vb.motion.drive()
    moving = mqtt.wait_for(
        _gnss_status(dev, lambda g: g["state"] == "tracking" and g["parks"] >= 1),
        30 + REPORT_S,
        what="tracking again after the asset moved",
        after=mark,
        logs=logs_of(vb),
    ).json["gnss"]
    assert moving["sessions"] >= 2 and moving["fixes"] > parked["fixes"]
    assert rx.powered


def test_corrupted_nmea_is_refused_and_the_positions_stay_right(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    clocks = Clocks()
    vb = vboard(
        modem="none",
        gnss="uart",
        gnss_timings=GnssTimings.fast(),
        config={"status_interval_s": STATUS_S},
        interval=2,
    )
    dev = vb.device_id
    vb.bench.fault("gnss_corrupt", True, rate=0.3, seed=7)
    mark = mqtt.mark()
    status = mqtt.wait_for(
        _gnss_status(dev, lambda g: g["fixes"] >= 5 and g["receiver"]["bad_checksum"] >= 3),
        REPORT_S,
        what="a status with fixes and refused sentences",
        after=mark,
        logs=logs_of(vb),
    ).json["gnss"]
    sim = vb.gnss_uart.snapshot()
    assert sim["corrupted"] >= 3, sim  # the fault happened on the wire
    refused = sum(status["receiver"][k] for k in ("bad_checksum", "malformed"))
    assert refused >= 3, status
    # Nothing damaged became a position: every reported fix lies on the route.
    acc = accuracy([r for r in mqtt.telemetry(dev) if "lat" in r], vb.motion, clocks)
    assert acc.cross_max_m <= CROSS_TRACK_M, (acc, logs_of(vb))
