# Alarm rules (tracker/alarms/rules.py, geofence.py) with hand-computed expectations, and
# their config keys. Runs on CPython and on the ESP32-faithful MicroPython (run_mp.py).
import json

from mptest import raises

from tracker import log
from tracker.alarms import geofence
from tracker.alarms.rules import AlarmRules
from tracker.config import Config, ConfigError, check_together
from tracker.location.fix import distance_m

log.echo = False
T0 = 1700000000
DEPOT = (48856600, 2352200)  # 48.8566 N 2.3522 E
# Microdegrees of latitude per metre (fix.py: 0.11132 m per microdegree).
UDEG_PER_M = 1 / 0.11132


def reading(t=None, h=None, v=None, err=None):
    return {"temperature": t, "humidity": h, "battery": v, "sensor_error": err}


def feed(rules, series, position=None):
    """[(seconds after T0, reading)] -> [(seconds, events)] of the readings with events."""
    out = []
    for dt, r in series:
        ev = rules.evaluate(r, T0 + dt, position)
        if ev:
            out.append((dt, ev))
    return out


def temp_rules(**more):
    cfg = {"alarm_temp": "high", "alarm_temp_high_c": 8.0, "alarm_temp_delay_s": 600}
    cfg["alarm_temp_hysteresis_c"] = 0.5
    cfg.update(more)
    return AlarmRules(cfg)


# ---- temperature above: pending, raised after the delay, cleared beyond hysteresis ----


def test_temp_high_raises_after_its_delay_and_clears_past_the_hysteresis():
    a = temp_rules()
    assert a.evaluate(reading(7.0), T0) == [] and not a.changed
    assert a.evaluate(reading(8.2), T0 + 60) == [] and a.changed  # pending from T0+60
    assert a.active()["temp_high"]["state"] == "pending"
    assert a.active()["temp_high"]["since"] == T0 + 60
    assert a.evaluate(reading(8.9), T0 + 300) == []  # 240 s of 600
    ev = a.evaluate(reading(8.5), T0 + 660)  # 600 s since the start
    assert ev == [
        {"alarm": "temp_high", "state": "raised", "since": T0 + 60, "at": T0 + 660,
         "value": 8.5, "peak": 8.9, "limit": 8.0, "duration_s": 600}
    ], ev  # fmt: skip
    assert a.evaluate(reading(7.9), T0 + 720) == []  # below 8.0 but not below 7.5
    assert a.evaluate(reading(9.4), T0 + 780) == [] and a.changed  # a new peak
    assert a.evaluate(reading(8.1), T0 + 800) == [] and not a.changed
    ev = a.evaluate(reading(7.5), T0 + 840)  # 8.0 - 0.5: the excursion is over
    assert ev == [
        {"alarm": "temp_high", "state": "cleared", "since": T0 + 60, "cleared_at": T0 + 840,
         "value": 7.5, "peak": 9.4, "limit": 8.0, "duration_s": 780}
    ], ev  # fmt: skip
    assert a.active() == {} and a.state() == {"v": 1, "rules": {}}


def test_a_pending_excursion_shorter_than_the_delay_emits_nothing():
    a = temp_rules()
    assert feed(a, [(0, reading(8.5)), (300, reading(9.0)), (599, reading(7.4))]) == []
    assert a.active() == {} and a.changed
    # The next excursion counts its own delay from its own start.
    assert feed(a, [(700, reading(8.5)), (1200, reading(9.0))]) == []
    got = feed(a, [(1300, reading(8.6))])
    assert got[0][1][0]["since"] == T0 + 700 and got[0][1][0]["duration_s"] == 600


def test_a_value_hovering_at_the_limit_raises_once_and_never_chatters():
    a = temp_rules()
    series = [(60 * i, reading(8.1 if i % 2 else 7.9)) for i in range(1, 121)]
    got = feed(a, series)
    assert len(got) == 1, got
    assert got[0][0] == 660 and got[0][1][0]["state"] == "raised"  # 8.1 at 60 s + 600 s
    assert feed(a, [(7300, reading(7.4))])[0][1][0]["state"] == "cleared"


def test_delay_zero_raises_at_the_first_reading_beyond_the_limit():
    a = temp_rules(alarm_temp_delay_s=0)
    ev = a.evaluate(reading(8.01), T0)
    assert ev[0]["state"] == "raised" and ev[0]["duration_s"] == 0 and ev[0]["since"] == T0


def test_exactly_at_the_limit_is_not_beyond_it():
    a = temp_rules(alarm_temp_delay_s=0, alarm_temp="both", alarm_temp_low_c=2.0)
    assert feed(a, [(0, reading(8.0)), (60, reading(2.0))]) == [] and a.active() == {}


def test_temp_low_peak_is_the_minimum_and_clears_above_limit_plus_hysteresis():
    a = temp_rules(alarm_temp="low", alarm_temp_low_c=2.0, alarm_temp_delay_s=120)
    got = feed(
        a,
        [(0, reading(3.0)), (60, reading(1.5)), (120, reading(0.5)), (180, reading(1.0)),
         (240, reading(2.4)), (300, reading(2.5))],
    )  # fmt: skip
    assert got == [
        (180, [{"alarm": "temp_low", "state": "raised", "since": T0 + 60, "at": T0 + 180,
                "value": 1.0, "peak": 0.5, "limit": 2.0, "duration_s": 120}]),
        (300, [{"alarm": "temp_low", "state": "cleared", "since": T0 + 60,
                "cleared_at": T0 + 300, "value": 2.5, "peak": 0.5, "limit": 2.0,
                "duration_s": 240}]),
    ], got  # fmt: skip


def test_off_means_no_temperature_rule_at_all():
    a = temp_rules(alarm_temp="off", alarm_temp_delay_s=0)
    assert a.rules == [] and feed(a, [(0, reading(40.0)), (60, reading(-40.0))]) == []


def test_missing_values_hold_the_state_and_the_start():
    a = temp_rules()
    feed(a, [(0, reading(9.0))])
    assert feed(a, [(120, reading(None, err="crc")), (300, reading(None))]) == []
    assert not a.changed and a.active()["temp_high"]["since"] == T0
    got = feed(a, [(600, reading(8.6))])
    assert got[0][1][0]["state"] == "raised" and got[0][1][0]["since"] == T0


def test_humidity_both_sides_are_two_rules():
    a = AlarmRules(
        {"alarm_humidity": "both", "alarm_humidity_high_pct": 80.0,
         "alarm_humidity_low_pct": 20.0, "alarm_humidity_delay_s": 0,
         "alarm_humidity_hysteresis_pct": 2.0}
    )  # fmt: skip
    assert sorted(r.rid for r in a.rules) == ["humidity_high", "humidity_low"]
    got = feed(
        a,
        [(0, reading(h=85.0)), (60, reading(h=78.5)), (120, reading(h=77.0)),
         (180, reading(h=19.0)), (240, reading(h=22.0))],
    )  # fmt: skip
    summary = [(dt, e["alarm"], e["state"]) for dt, ev in got for e in ev]
    assert summary == [
        (0, "humidity_high", "raised"),
        (120, "humidity_high", "cleared"),
        (180, "humidity_low", "raised"),
        (240, "humidity_low", "cleared"),
    ], summary


# ---- sensor failure and battery ----


def test_sensor_failure_at_once_by_default_and_cleared_by_a_good_reading():
    a = AlarmRules({"alarm_sensor": True})
    ev = a.evaluate(reading(None, err="crc"), T0)
    assert ev == [{"alarm": "sensor", "state": "raised", "since": T0, "at": T0, "value": "crc",
                   "duration_s": 0}], ev  # fmt: skip
    assert a.evaluate(reading(None, err="nack"), T0 + 60) == []
    ev = a.evaluate(reading(5.0), T0 + 120)
    assert ev == [{"alarm": "sensor", "state": "cleared", "since": T0, "cleared_at": T0 + 120,
                   "value": None, "duration_s": 120}], ev  # fmt: skip


def test_sensor_failure_with_a_delay_needs_failures_that_long():
    a = AlarmRules({"alarm_sensor": True, "alarm_sensor_delay_s": 120})
    got = feed(
        a,
        [(0, reading(None, err="crc")), (60, reading(5.0)), (100, reading(None, err="crc")),
         (160, reading(None, err="crc")), (220, reading(None, err="nack"))],
    )  # fmt: skip
    assert len(got) == 1 and got[0][0] == 220, got
    assert got[0][1][0]["since"] == T0 + 100 and got[0][1][0]["value"] == "nack"


def test_low_battery_ignores_one_sagging_reading_and_has_hysteresis():
    a = AlarmRules({"alarm_battery_low_v": 3.4})
    got = feed(
        a,
        [(0, reading(v=3.35)), (30, reading(v=3.8)),  # one sag under a modem burst
         (100, reading(v=3.3)), (130, reading(v=3.45)), (160, reading(v=3.25)),
         (220, reading(v=3.45)), (280, reading(v=3.6))],
    )  # fmt: skip
    assert got == [
        (160, [{"alarm": "battery_low", "state": "raised", "since": T0 + 100, "at": T0 + 160,
                "value": 3.25, "peak": 3.25, "limit": 3.4, "duration_s": 60}]),
        (280, [{"alarm": "battery_low", "state": "cleared", "since": T0 + 100,
                "cleared_at": T0 + 280, "value": 3.6, "peak": 3.25, "limit": 3.4,
                "duration_s": 180}]),
    ], got  # fmt: skip


def test_battery_limit_zero_is_off():
    assert AlarmRules({"alarm_battery_low_v": 0.0}).rules == []


# ---- geofences ----


def north_of_depot(metres):
    return (DEPOT[0] + int(metres * UDEG_PER_M + 0.5), DEPOT[1])


def fence_rules(mode, spec="depot:c:48.8566,2.3522,500", delay=0):
    return AlarmRules(
        {"alarm_geofence": mode, "geofences": spec, "alarm_geofence_delay_s": delay,
         "alarm_geofence_hysteresis_m": 25}
    )  # fmt: skip


def test_circle_exit_raises_outside_and_clears_25_m_back_inside():
    a = fence_rules("exit")
    assert a.evaluate(reading(), T0, DEPOT) == []
    ev = a.evaluate(reading(), T0 + 60, north_of_depot(600))
    # 600 m from the centre of a 500 m circle: 100 m outside.
    assert ev == [{"alarm": "geofence_exit", "fence": "depot", "state": "raised",
                   "since": T0 + 60, "at": T0 + 60, "value": 100, "peak": 100,
                   "duration_s": 0}], ev  # fmt: skip
    assert a.evaluate(reading(), T0 + 120, north_of_depot(490)) == []  # 10 m in: held
    ev = a.evaluate(reading(), T0 + 180, north_of_depot(470))  # 30 m in
    assert ev[0]["state"] == "cleared" and ev[0]["peak"] == 100 and ev[0]["value"] == -30


def test_circle_enter_raises_inside_after_its_delay():
    a = fence_rules("enter", delay=300)
    assert a.evaluate(reading(), T0, north_of_depot(800)) == []
    assert a.evaluate(reading(), T0 + 100, north_of_depot(400)) == []  # 100 m in: pending
    ev = a.evaluate(reading(), T0 + 400, DEPOT)
    assert ev[0]["alarm"] == "geofence_enter" and ev[0]["state"] == "raised"
    assert ev[0]["since"] == T0 + 100 and ev[0]["peak"] == 500  # the centre: 500 m inside
    ev = a.evaluate(reading(), T0 + 500, north_of_depot(530))
    assert ev[0]["state"] == "cleared" and ev[0]["value"] == -30


def test_both_fence_alarms_and_no_position_changes_nothing():
    a = fence_rules("both")
    assert sorted(r.rid for r in a.rules) == ["geofence_enter:depot", "geofence_exit:depot"]
    ev = a.evaluate(reading(), T0, DEPOT)
    assert [e["alarm"] for e in ev] == ["geofence_enter"]
    assert a.evaluate(reading(), T0 + 60) == [] and not a.changed  # no fix: inert
    ev = a.evaluate(reading(), T0 + 120, north_of_depot(1000))
    assert sorted((e["alarm"], e["state"]) for e in ev) == [
        ("geofence_enter", "cleared"), ("geofence_exit", "raised")
    ]  # fmt: skip


# An L-shaped yard: the square 48.1..48.2 N, 2.1..2.2 E without its north-east quarter.
L_YARD = "yard:p:48.1,2.1 48.2,2.1 48.2,2.15 48.15,2.15 48.15,2.2 48.1,2.2"


def test_polygon_inside_outside_and_distance_to_the_nearest_edge():
    fence = geofence.parse(L_YARD)[0]
    # Inside the west arm, nearest edge the west side (2.1 E) at the same latitude.
    lat, lon = 48170000, 2110000
    d = geofence.outside_m(fence, lat, lon)
    assert abs(d + distance_m(lat, lon, lat, 2100000)) < 0.5, d
    # In the missing quarter (the notch): outside, nearest the inner corner's edges.
    lat, lon = 48160000, 2190000
    d = geofence.outside_m(fence, lat, lon)
    assert abs(d - distance_m(lat, lon, 48150000, lon)) < 0.5, d  # 10 mdeg lat: 1113 m
    # North of the square: 1113 m above the north edge.
    d = geofence.outside_m(fence, 48210000, 2120000)
    assert abs(d - 1113.2) < 0.5, d
    # A vertex latitude exactly at the point's (the ray passes through corners).
    assert geofence.outside_m(fence, 48150000, 2120000) < 0
    assert geofence.outside_m(fence, 48150000, 2250000) > 0


def test_polygon_exit_and_enter_events():
    a = fence_rules("exit", spec=L_YARD)
    assert a.evaluate(reading(), T0, (48120000, 2120000)) == []
    ev = a.evaluate(reading(), T0 + 60, (48160000, 2190000))  # into the notch
    assert ev[0]["state"] == "raised" and ev[0]["fence"] == "yard"
    assert 1100 < ev[0]["value"] < 1120  # ~0.01 deg of latitude from the notch's south edge
    ev = a.evaluate(reading(), T0 + 120, (48140000, 2190000))  # back into the east arm
    assert ev[0]["state"] == "cleared"


def test_geofence_spec_parsing_and_refusals():
    fences = geofence.parse(" depot:c:48.8566,2.3522,500 ; yard:p:-1.5,2 -1.4,2  -1.4,2.1 ")
    assert fences == [
        ("depot", "c", (48856600, 2352200, 500)),
        ("yard", "p", ((-1500000, 2000000), (-1400000, 2000000), (-1400000, 2100000))),
    ]
    assert geofence.parse("") == [] and geofence.parse(" ; ") == []
    for bad, why in (
        ("depot:c:48.8,2.3", "circle is"),
        ("depot:c:48.8,2.3,x", "not a number"),
        ("depot:c:48.8,2.3,0", "radius"),
        ("depot:x:48.8,2.3,5", "kind"),
        ("yard:p:1,1 1,2", "3..16"),
        ("yard:p:1,1 1,2 91,2", "latitude"),
        ("a:c:1,1,5;a:c:2,2,5", "twice"),
        (":c:1,1,5", "name"),
        ("depot:c:1;1,5", "circle is"),
    ):
        with raises(ValueError) as err:
            geofence.parse(bad)
        assert why in str(err.value), (bad, str(err.value))


# ---- reboots: restore() continues exactly ----


def reboot(a, cfg):
    """What the caller does across a power cut: state() to flash as JSON, restore() after."""
    b = AlarmRules(cfg)
    b.restore(json.loads(json.dumps(a.state())))
    return b


def test_restore_mid_pending_counts_the_delay_from_the_real_start():
    cfg = {"alarm_temp": "high", "alarm_temp_delay_s": 600}
    a = AlarmRules(cfg)
    feed(a, [(0, reading(7.0)), (60, reading(8.7)), (300, reading(9.1))])
    b = reboot(a, cfg)
    assert b.restore_ignored == 0 and b.active()["temp_high"]["since"] == T0 + 60
    got = feed(b, [(660, reading(8.6))])
    assert got[0][1][0]["since"] == T0 + 60 and got[0][1][0]["peak"] == 9.1


def test_restore_mid_raised_neither_repeats_nor_loses_the_alarm():
    cfg = {"alarm_temp": "high", "alarm_temp_delay_s": 0}
    a = AlarmRules(cfg)
    assert len(feed(a, [(0, reading(9.5)), (60, reading(8.4))])) == 1
    b = reboot(a, cfg)
    assert feed(b, [(120, reading(9.0))]) == []  # still raised: no second "raised"
    got = feed(b, [(180, reading(7.0))])
    assert got[0][1][0] == {
        "alarm": "temp_high", "state": "cleared", "since": T0, "cleared_at": T0 + 180,
        "value": 7.0, "peak": 9.5, "limit": 8.0, "duration_s": 180,
    }  # fmt: skip


def test_restore_ignores_rules_whose_parameters_changed_or_that_are_gone():
    cfg = {"alarm_temp": "both", "alarm_temp_delay_s": 0, "alarm_sensor": True}
    a = AlarmRules(cfg)
    feed(a, [(0, reading(9.0)), (60, reading(None, err="crc"))])
    assert sorted(a.active()) == ["sensor", "temp_high"]
    b = reboot(a, {"alarm_temp": "both", "alarm_temp_high_c": 9.0, "alarm_temp_delay_s": 0})
    assert b.active() == {} and b.restore_ignored == 2


def test_garbage_state_is_counted_and_ignored():
    cfg = {"alarm_temp": "high"}
    sig = AlarmRules(cfg).rules[0].sig
    for junk in (
        None, "x", 7, [], {}, {"v": 2, "rules": {}}, {"v": 1, "rules": "x"},
        {"v": 1, "rules": {"temp_high": [1, 2]}},
        {"v": 1, "rules": {"temp_high": [sig, "raised", "soon", 8.5]}},
        {"v": 1, "rules": {"temp_high": [sig, "raised", True, 8.5]}},
        {"v": 1, "rules": {"temp_high": [sig, "weird", T0, 8.5]}},
        {"v": 1, "rules": {"temp_high": [sig, "raised", T0, "hot"]}},
        {"v": 1, "rules": {"temp_high": [sig, "raised", T0, 8.5, 8.5]}},
        {"v": 1, "rules": {"temp_high": None, "nope": [sig, "raised", T0, 8.5]}},
    ):  # fmt: skip
        a = AlarmRules(cfg)
        a.restore(junk)
        assert a.active() == {} and a.restore_ignored >= 1, junk
    a = AlarmRules(cfg)
    a.restore({"v": 1, "rules": {"temp_high": [sig, "raised", T0, 8.5]}})
    assert a.restore_ignored == 0 and a.active()["temp_high"]["state"] == "raised"


def test_configure_keeps_the_state_of_unchanged_rules():
    cfg = {"alarm_temp": "both", "alarm_temp_delay_s": 600, "alarm_humidity": "high"}
    a = AlarmRules(cfg)
    feed(a, [(0, reading(9.0, h=50.0))])
    high = a.rules[0]
    cfg["alarm_humidity_high_pct"] = 60.0
    a.configure(cfg)
    assert a.active()["temp_high"]["since"] == T0 and not a.changed
    assert a.rules[0] is high
    got = feed(a, [(600, reading(9.0))])
    assert got[0][1][0]["state"] == "raised"  # the delay counted across the change
    cfg["alarm_temp_hysteresis_c"] = 1.0
    ev = a.configure(cfg, T0 + 700)
    assert a.active() == {} and a.changed  # new parameters: a fresh rule, state dropped
    # ...and the raised alarm is closed rather than left up at the operator's end.
    assert ev == [{"alarm": "temp_high", "state": "cleared", "reason": "config",
                   "since": T0, "cleared_at": T0 + 700, "value": 9.0, "peak": 9.0,
                   "limit": 8.0, "duration_s": 700}], ev  # fmt: skip
    cfg["alarm_temp"] = "off"
    a.configure(cfg)
    assert [r.rid for r in a.rules] == ["humidity_high"]


def test_changed_tells_when_state_must_be_saved():
    a = temp_rules(alarm_temp_delay_s=120)
    flags = []
    for dt, t in ((0, 7.0), (60, 8.5), (90, 8.4), (120, 8.7), (180, 8.6), (240, 7.0)):
        a.evaluate(reading(t), T0 + dt)
        flags.append(a.changed)
    # nothing; the start; no new peak; a new peak; raised (120 s after 60); cleared
    assert flags == [False, True, False, True, True, True], flags


# ---- config keys ----


def test_alarm_keys_parse_as_a_technician_types_them():
    cfg = Config()
    assert cfg["alarm_temp"] == "off" and cfg["alarm_temp_high_c"] == 8.0
    assert cfg["mkt_activation_kj"] == 83.144 and cfg["geofences"] == ""
    assert cfg.set("alarm_temp", "BOTH") == "both"
    assert cfg.set("geofences", "depot:c:48.8566,2.3522,500") == "depot:c:48.8566,2.3522,500"
    with raises(ConfigError) as err:
        cfg.set("geofences", "depot:c:48.8566,2.3522")
    assert str(err.value).startswith("geofences: depot: a circle is LAT,LON,RADIUS_M")
    with raises(ConfigError):
        cfg.set("geofences", "depot:c:48.8566,2.3522,500/")  # "/" is not allowed at all
    assert cfg["geofences"] == "depot:c:48.8566,2.3522,500"  # a refusal changes nothing


def test_low_limit_must_stay_below_high():
    values = Config().to_dict(secrets=True)
    values["alarm_temp_low_c"] = 8.0
    with raises(ConfigError) as err:
        check_together(values, {"alarm_temp_low_c": 2.0})
    assert err.value.key == "alarm_temp_low_c" and "alarm_temp_high_c" in err.value.reason
    values["alarm_temp_low_c"] = 2.0
    values["alarm_humidity_high_pct"] = 10.0
    with raises(ConfigError) as err:
        check_together(values, {"alarm_humidity_high_pct": 80.0})
    assert err.value.key == "alarm_humidity_high_pct"
    values["alarm_humidity_high_pct"] = 80.0
    check_together(values, {"alarm_temp_low_c": 1.0})  # fine together


def test_rules_read_a_config_object():
    cfg = Config()
    cfg.update({"alarm_temp": "high", "alarm_temp_delay_s": 0, "alarm_sensor": True})
    a = AlarmRules(cfg)
    assert sorted(r.rid for r in a.rules) == ["sensor", "temp_high"]


def test_a_clock_that_goes_back_restarts_the_delay_instead_of_raising_early():
    a = temp_rules()
    feed(a, [(1000, reading(9.0))])  # pending since T0+1000 by a wrong clock
    assert feed(a, [(100, reading(9.0))]) == [] and a.changed  # the clock is set back
    assert a.active()["temp_high"]["since"] == T0 + 100
    assert feed(a, [(600, reading(9.0))]) == []  # 500 s since the corrected start
    assert feed(a, [(700, reading(9.0))])[0][1][0]["duration_s"] == 600
