# Cold-chain statistics (tracker/alarms/coldchain.py) on hand-worked series. Runs on CPython
# and on the ESP32-faithful MicroPython (single-precision floats); tests/test_coldchain_host.py
# compares generated series with double-precision values computed independently.
import json

from tracker.alarms.coldchain import Stats, Trip

T0 = 1700000000


def near(a, b, tol):
    return a is not None and abs(a - b) <= tol


def fed(series, step=60, high=8.0, low=2.0, **kw):
    s = Stats(high, low, **kw)
    for i, t in enumerate(series):
        s.add(t, T0 + step * i)
    return s


def test_empty_stats_say_so():
    d = Stats(8.0, 2.0).as_dict()
    assert d == {"n": 0, "min": None, "max": None, "mean": None, "mkt": None, "above_s": 0,
                 "below_s": 0, "excursions": 0, "from": None, "to": None}, d  # fmt: skip


def test_a_fridge_series_by_hand():
    # 4 6 9 10 7 1 3 degC a minute apart. Sum 40: mean 5.714. Above 8: 9 and 10 hold a
    # minute each (120 s); below 2: 1 holds a minute (60 s); 3 is the last, it holds nothing.
    # Two excursions: one above (9, 10), one below (1).
    s = fed([4.0, 6.0, 9.0, 10.0, 7.0, 1.0, 3.0])
    d = s.as_dict()
    assert d["n"] == 7 and d["min"] == 1.0 and d["max"] == 10.0
    assert d["mean"] == 5.71 and near(s.mean(), 40 / 7, 1e-4)
    assert d["above_s"] == 120 and d["below_s"] == 60 and d["excursions"] == 2
    assert d["from"] == T0 and d["to"] == T0 + 360
    # MKT by the formula with dH = 83.144 kJ/mol (dH/R = 10000.05 K), worked in doubles:
    # 6.2509 degC, above the mean as MKT always is (exp is convex).
    assert near(s.mkt(), 6.2509, 0.002) and d["mkt"] == 6.25


def test_mkt_of_two_readings_worked_by_hand():
    # 5 and 25 degC: a/278.15 = 35.952, a/298.15 = 33.540; mean of exp(-a/T) =
    # exp(-33.540) * (1 + exp(-2.412)) / 2 = exp(-33.540) * 0.5448, so -ln(mean) = 34.147
    # and MKT = 10000.05 / 34.147 = 292.85 K = 19.70 degC (a double computation: 19.6977).
    s = fed([5.0, 25.0])
    assert near(s.mkt(), 19.6977, 0.002), s.mkt()


def test_mkt_of_a_constant_temperature_is_that_temperature_at_any_activation_energy():
    for kj in (10.0, 83.144, 500.0):
        for t in (-80.0, 4.0, 25.0, 85.0):
            s = fed([t] * 1000, activation_kj=kj)
            assert near(s.mkt(), t, 0.001) and near(s.mean(), t, 1e-4), (kj, t, s.mkt())


def test_extreme_range_stays_finite_in_single_precision():
    # -80 and +125 degC at the highest activation energy: relative to -80, exp(x) of 125
    # would be e^160 (beyond single precision's e^88), and the plain formula's
    # exp(-a/T) = e^-311 underflows. The reference moves to the hot reading instead; at
    # this energy the hot half dominates: a = 60136 K, MKT = a / (a/398.15 + ln 2)
    # = 60136 / (151.04 + 0.69) = 396.33 K = 123.18 degC.
    s = fed([-80.0, 125.0] * 50, activation_kj=500.0)
    assert near(s.mkt(), 123.18, 0.01), s.mkt()
    s = fed([125.0, -80.0] * 50, activation_kj=500.0)  # hot first: the cold underflow to 0
    assert near(s.mkt(), 123.18, 0.01), s.mkt()


def test_long_series_keeps_its_mean():
    # 20,000 readings alternating 4.1 and 4.3: a plain single-precision sum of ~84,000 would
    # have a step of 0.0078 and drift; the compensated deviation sum keeps the mean.
    s = Stats(8.0, 2.0)
    for i in range(20000):
        s.add(4.1 if i % 2 else 4.3, T0 + i)
    assert near(s.mean(), 4.2, 1e-4), s.mean()
    assert near(s.mkt(), 4.2, 1e-3), s.mkt()


def test_excursions_use_the_hysteresis_and_failed_readings_stop_the_clock():
    s = fed([8.5, 7.8, 8.5, 7.4, 8.5], hysteresis=0.5)
    # Above 8.0: the first and third 8.5 (60 s each); 7.8 is not above the limit but does
    # not end the excursion (not below 7.5); 7.4 does, so the last 8.5 is a second one.
    assert s.excursions == 2 and s.above_s == 120
    s = Stats(8.0, 2.0)
    s.add(9.0, T0)
    s.add(None, T0 + 60)  # the 60 s up to here count above
    s.add(9.0, T0 + 600)  # the sensor's gap does not
    s.add(5.0, T0 + 660)
    assert s.above_s == 120 and s.n == 3 and s.excursions == 1


def test_state_round_trips_through_json_and_refuses_garbage():
    s = fed([4.0, 9.0, 1.0, 5.5], activation_kj=100.0)
    back = Stats(8.0, 2.0)
    assert back.restore(json.loads(json.dumps(s.state())))
    assert back.activation_kj == 100.0  # a stats keeps the parameters it was built with
    for t in (4.5, 8.5):
        s.add(t, T0 + 300)
        back.add(t, T0 + 300)
    assert back.as_dict() == s.as_dict() and back.mkt() == s.mkt()
    for junk in (None, "x", [], [1] * 19, s.state()[:19], [None] * 20, {"n": 1}):
        t = Stats(8.0, 2.0)
        assert not t.restore(junk) and t.as_dict()["n"] == 0, junk
    bad = s.state()
    bad[4] = "many"
    assert not Stats(8.0, 2.0).restore(bad)


def test_trip_start_stop_and_restore():
    trip = Trip(8.0, 2.0)
    assert not trip.running and trip.summary() is None and trip.stop(T0) is None
    trip.add(30.0, T0)  # no trip: ignored
    trip.start(T0 + 100)
    for i, t in enumerate((5.0, 9.0, 6.0)):
        trip.add(t, T0 + 100 + 60 * i)
    again = Trip(8.0, 2.0)
    assert again.restore(json.loads(json.dumps(trip.state())))
    assert again.summary(T0 + 300) == trip.summary(T0 + 300)
    d = again.stop(T0 + 400)
    assert d["started_at"] == T0 + 100 and d["stopped_at"] == T0 + 400
    assert d["duration_s"] == 300 and d["n"] == 3 and d["max"] == 9.0 and d["above_s"] == 60
    assert not again.running and again.state() is None
    assert again.restore(None) and not again.running
    assert not again.restore({"started_at": "x", "stats": []}) and not again.running


def test_stats_and_trips_read_their_parameters_from_the_config():
    from tracker.config import Config

    cfg = Config()
    cfg.update({"alarm_temp_high_c": 10.0, "mkt_activation_kj": 100.0})
    s = Stats(cfg)
    assert (s.high, s.low, s.activation_kj, s.hysteresis) == (10.0, 2.0, 100.0, 0.5)
    assert Stats({}).activation_kj == 83.144  # a bare dict: the schema's defaults
    s.add(11.0, T0)
    cfg.update({"alarm_temp_high_c": 12.0, "mkt_activation_kj": 50.0})
    s.configure(cfg)
    s.add(11.0, T0 + 60)  # no longer above
    assert s.high == 12.0 and s.activation_kj == 100.0 and s.above_s == 60
    trip = Trip(cfg)
    trip.start(T0)
    assert trip.stats.activation_kj == 50.0 and trip.as_dict()["started_at"] == T0
    cfg.update({"mkt_activation_kj": 60.0})
    trip.configure(cfg)
    assert trip.stats.activation_kj == 50.0  # kept for the running trip...
    trip.stop(T0 + 60)
    trip.start(T0 + 60)
    assert trip.stats.activation_kj == 60.0  # ...the next one takes the new value


def test_closing_a_window_carries_the_running_reading_and_excursion_over():
    s = Stats(8.0, 2.0)
    s.add(9.0, T0)
    s.add(9.5, T0 + 60)
    d = s.close()
    assert d["n"] == 2 and d["above_s"] == 60 and d["excursions"] == 1
    s.add(9.0, T0 + 120)  # the 60 s since the last reading count in the new window
    s.add(5.0, T0 + 180)
    d = s.close()
    assert d["n"] == 2 and d["above_s"] == 120 and d["excursions"] == 0  # the same excursion
    assert d["from"] == T0 + 120 and d["min"] == 5.0
