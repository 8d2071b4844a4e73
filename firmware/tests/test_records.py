import json

from tracker.records import encode, make_record


def test_record_carries_values_and_error_flag():
    ok = make_record(
        "dev1",
        7,
        1700000000,
        {"temperature": 21.5, "humidity": 40.0, "battery": 3.9, "sensor_error": None},
    )
    assert json.loads(encode(ok)) == {
        "device_id": "dev1",
        "seq": 7,
        "ts": 1700000000,
        "temperature": 21.5,
        "humidity": 40.0,
        "battery": 3.9,
    }
    bad = make_record(
        "dev1",
        8,
        1700000001,
        {"temperature": None, "humidity": None, "battery": 3.9, "sensor_error": "crc"},
    )
    decoded = json.loads(encode(bad))
    assert decoded["temperature"] is None and decoded["sensor_error"] == "crc"


def test_position_fields_are_exact_decimal_degrees_and_absent_without_a_fix():
    from tracker.location.fix import Fix

    sample = {"temperature": 4.5, "humidity": 60.0, "battery": 3.9}
    fix = Fix(-33868820, 151209296, alt=58.25, speed=13.889, heading=271.04, sats=9, hdop=0.87)
    text = encode(make_record("dev1", 9, 1700000000, sample, (fix, None, 3)))
    # Six decimals exactly as the microdegrees say (a float32 would print 151.2093).
    assert b'"lat":-33.868820' in text and b'"lon":151.209296' in text, text
    got = json.loads(text)
    assert got["alt"] == 58.2 or got["alt"] == 58.3  # round() of a binary 58.25
    assert (got["speed"], got["heading"], got["sats"], got["hdop"], got["fix_age_s"]) == (
        13.89, 271.0, 9, 0.9, 3)  # fmt: skip
    assert "gnss" not in got
    none = json.loads(encode(make_record("dev1", 10, 1700000001, sample, (None, "timeout", None))))
    assert none["gnss"] == "timeout"
    assert not [k for k in ("lat", "lon", "alt", "speed", "heading", "fix_age_s") if k in none]
    # A board without GNSS: no location fields at all.
    plain = json.loads(encode(make_record("dev1", 11, 1700000002, sample)))
    assert "gnss" not in plain and "lat" not in plain
