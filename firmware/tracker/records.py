# Telemetry records: what one reading looks like on the wire (JSON, one object per reading;
# the uplink sends them in batches {"device_id", "records": [...]}). The README's payload
# table says what each field means.
import json

from tracker.location.fix import degrees_text


def make_record(device_id, seq, ts, sample, position=None):
    """position: (Fix or None, reason or None, fix age in s) from the location module, or
    None on a board without GNSS (then the record has no location fields at all)."""
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
    if position is not None:
        fix, reason, age = position
        if fix is not None:
            # Microdegrees until encode() writes them out exactly (see location/fix.py).
            rec["lat"] = fix.lat
            rec["lon"] = fix.lon
            for name, value, digits in (
                ("alt", fix.alt, 1),
                ("speed", fix.speed, 2),
                ("heading", fix.heading, 1),
                ("hdop", fix.hdop, 1),
            ):
                if value is not None:
                    rec[name] = round(value, digits)
            if fix.sats is not None:
                rec["sats"] = fix.sats
            rec["fix_age_s"] = age
        if reason:
            rec["gnss"] = reason
    return rec


def encode(rec):
    lat = rec.get("lat")
    if lat is None:
        return json.dumps(rec).encode()
    # lat/lon as six-decimal literals: json.dumps of a single-precision float would keep
    # only about five (a metre) and a double's repr more digits than the fix has.
    lon = rec.pop("lon")
    del rec["lat"]
    try:
        text = json.dumps(rec)
    finally:
        rec["lat"] = lat
        rec["lon"] = lon
    return ('%s,"lat":%s,"lon":%s}' % (text[:-1], degrees_text(lat), degrees_text(lon))).encode()
