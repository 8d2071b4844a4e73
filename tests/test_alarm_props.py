"""Properties of the alarm rules (firmware/tracker/alarms/rules.py) on random reading series
(CPython, hypothesis): per rule the events alternate raised/cleared starting with raised; a
raised alarm had its condition for at least the minimum duration; a peak is the worst value
of its excursion; and a reboot anywhere (state() -> JSON -> restore()) changes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))

from tracker import log  # noqa: E402
from tracker.alarms.rules import AlarmRules  # noqa: E402

log.echo = False
T0 = 1_700_000_000
DEPOT = (48856600, 2352200)
FENCES = "depot:c:48.8566,2.3522,300;yard:p:48.855,2.350 48.858,2.350 48.858,2.355"

configs = st.fixed_dictionaries(
    {
        "alarm_temp": st.sampled_from(["high", "low", "both"]),
        "alarm_temp_high_c": st.integers(4, 12).map(float),
        "alarm_temp_low_c": st.integers(-2, 3).map(float),
        "alarm_temp_delay_s": st.sampled_from([0, 60, 300, 600, 1200]),
        "alarm_temp_hysteresis_c": st.sampled_from([0.0, 0.25, 0.5, 2.0]),
        "alarm_humidity": st.sampled_from(["off", "both"]),
        "alarm_humidity_delay_s": st.sampled_from([0, 300]),
        "alarm_sensor": st.booleans(),
        "alarm_sensor_delay_s": st.sampled_from([0, 120, 600]),
        "alarm_battery_low_v": st.sampled_from([0.0, 3.4]),
        "alarm_geofence": st.sampled_from(["off", "enter", "exit", "both"]),
        "geofences": st.just(FENCES),
        "alarm_geofence_delay_s": st.sampled_from([0, 60, 600]),
        "alarm_geofence_hysteresis_m": st.sampled_from([0, 25, 100]),
    }
)

temps = st.one_of(st.none(), st.integers(-60, 150).map(lambda c: c / 10))
positions = st.one_of(
    st.none(),
    st.tuples(st.integers(-6000, 6000), st.integers(-8000, 8000)).map(
        lambda d: (DEPOT[0] + d[0], DEPOT[1] + d[1])
    ),
)
steps = st.lists(
    st.tuples(
        st.integers(1, 600),  # seconds since the previous reading
        temps,
        st.one_of(st.none(), st.integers(0, 100).map(float)),
        st.one_of(st.none(), st.integers(30, 42).map(lambda v: v / 10)),
        st.sampled_from([None, None, None, "crc", "nack"]),
        positions,
    ),
    max_size=120,
)


def series_of(raw):
    out = []
    t = T0
    for gap, temp, hum, volts, err, pos in raw:
        t += gap
        reading = {"temperature": temp, "humidity": hum, "battery": volts, "sensor_error": err}
        out.append((t, reading, pos))
    return out


def run(cfg, series, rules=None):
    rules = rules or AlarmRules(cfg)
    events = []
    for t, reading, pos in series:
        before = json.dumps(rules.state(), sort_keys=True)
        events.extend(rules.evaluate(reading, t, pos))
        after = json.dumps(rules.state(), sort_keys=True)
        # `changed` is what tells the caller to persist: it must never miss a change.
        assert rules.changed or before == after
    return events, rules


def rule_id(e):
    return e["alarm"] + (":" + e["fence"] if "fence" in e else "")


def delay_of(cfg, alarm):
    if alarm.startswith("temp"):
        return cfg["alarm_temp_delay_s"]
    if alarm.startswith("humidity"):
        return cfg["alarm_humidity_delay_s"]
    if alarm == "sensor":
        return cfg["alarm_sensor_delay_s"]
    if alarm == "battery_low":
        return 60
    return cfg["alarm_geofence_delay_s"]


@settings(max_examples=400, deadline=None)
@given(cfg=configs, raw=steps)
def test_events_alternate_and_raise_only_after_the_minimum_duration(cfg, raw):
    series = series_of(raw)
    events, _ = run(cfg, series)
    last = {}
    for e in events:
        rid = rule_id(e)
        expected = "cleared" if last.get(rid) == "raised" else "raised"
        assert e["state"] == expected, (rid, e, last)
        last[rid] = e["state"]
        if e["state"] == "raised":
            assert e["at"] - e["since"] == e["duration_s"] >= delay_of(cfg, e["alarm"]), e
        else:
            assert e["cleared_at"] - e["since"] == e["duration_s"] >= delay_of(cfg, e["alarm"])
        if e["alarm"] in ("temp_high", "temp_low"):
            check_temperature_excursion(cfg, series, e)


def check_temperature_excursion(cfg, series, e):
    """Recomputed from the readings: the excursion began at `since` beyond the limit, stayed
    beyond limit -/+ hysteresis up to the event, and its peak is the worst value in it."""
    high = e["alarm"] == "temp_high"
    limit = cfg["alarm_temp_high_c"] if high else cfg["alarm_temp_low_c"]
    hyst = cfg["alarm_temp_hysteresis_c"]
    end = e.get("at", e.get("cleared_at"))
    inside = [
        r["temperature"]
        for t, r, _ in series
        if e["since"] <= t < end + (1 if "at" in e else 0) and r["temperature"] is not None
    ]
    assert (inside[0] > limit) if high else (inside[0] < limit), (e, inside)
    for v in inside:
        assert (v > limit - hyst) if high else (v < limit + hyst), (e, inside)
    assert e["peak"] == (max(inside) if high else min(inside)), (e, inside)
    if e["state"] == "cleared":
        v = e["value"]
        assert (v <= limit - hyst) if high else (v >= limit + hyst), e


@settings(max_examples=300, deadline=None)
@given(cfg=configs, raw=steps, data=st.data())
def test_a_reboot_anywhere_neither_loses_nor_repeats_an_event(cfg, raw, data):
    series = series_of(raw)
    whole, _ = run(cfg, series)
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(series)), max_size=3, unique=True), label="cuts")
    )
    events = []
    rules = None
    start = 0
    for cut in [*cuts, len(series)]:
        part, rules = run(cfg, series[start:cut], rules)
        events.extend(part)
        saved = json.loads(json.dumps(rules.state()))  # to flash and back
        rules = AlarmRules(cfg)  # a fresh boot
        rules.restore(saved)
        assert rules.restore_ignored == 0
        start = cut
    assert events == whole


@settings(max_examples=200, deadline=None)
@given(cfg=configs, raw=steps, data=st.data())
def test_configure_with_the_same_config_changes_nothing(cfg, raw, data):
    series = series_of(raw)
    whole, _ = run(cfg, series)
    cut = data.draw(st.integers(0, len(series)), label="cut")
    first, rules = run(cfg, series[:cut])
    assert rules.configure(dict(cfg), T0) == [] and not rules.changed
    rest, _ = run(cfg, series[cut:], rules)
    assert first + rest == whole


@settings(max_examples=200, deadline=None)
@given(state=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=5),
    max_leaves=20,
))  # fmt: skip
def test_restore_of_anything_never_raises(state):
    rules = AlarmRules({"alarm_temp": "both", "alarm_sensor": True, "alarm_battery_low_v": 3.4})
    rules.restore(state)
    rules.restore({"v": 1, "rules": state})
    rules.evaluate({"temperature": 5.0, "humidity": None, "battery": 3.9, "sensor_error": None},
                   T0)  # fmt: skip
