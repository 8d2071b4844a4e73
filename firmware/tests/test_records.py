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
