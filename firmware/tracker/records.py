# Telemetry records: what one reading looks like on the wire (JSON, one object per reading;
# the uplink sends them in batches {"device_id", "records": [...]}).
import json


def make_record(device_id, seq, ts, sample):
    rec = {
        "device_id": device_id,
        "seq": seq,
        "ts": ts,
        "temperature": sample.get("temperature"),
        "humidity": sample.get("humidity"),
        "battery": sample.get("battery"),
    }
    if sample.get("sensor_error"):
        rec["sensor_error"] = sample["sensor_error"]
    return rec


def encode(rec):
    return json.dumps(rec).encode()
