"""Watch what trackers send to a broker: one readable line per message (per record of a
telemetry or alarm batch; alarms in capitals)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as paho

from host_tools.broker import BrokerError, connect_url

TOPICS = "albatross/#"


def format_message(topic: str, payload: bytes) -> str:
    """A line a person can read at a glance (one per record for a batch); unknown payloads
    are shown raw."""
    return "\n".join(format_lines(topic, payload))


def format_lines(topic: str, payload: bytes) -> list[str]:
    """format_message as a list: one line per message, or per record of a telemetry batch
    (`{"device_id", "records": [record, ...]}`)."""
    parts = topic.split("/")
    device = parts[1] if len(parts) > 2 else "?"
    kind = "/".join(parts[2:])
    stamp = time.strftime("%H:%M:%S")
    try:
        body = json.loads(payload)
    except ValueError:
        return [f"{stamp} {device:<12} {kind:<10} {payload[:80]!r}"]
    if kind == "telemetry" and isinstance(body, dict):
        records = body.get("records")
        if not isinstance(records, list):
            return [_telemetry_line(stamp, device, body, "")]
        if not records:
            return [f"{stamp} {device:<12} telemetry  empty batch"]
        n = len(records)
        return [
            _telemetry_line(stamp, device, rec, f"  [{i}/{n}]")
            if isinstance(rec, dict)
            else f"{stamp} {device:<12} telemetry  [{i}/{n}] not a record: {rec!r:.60}"
            for i, rec in enumerate(records, 1)
        ]
    if kind == "alarm" and isinstance(body, dict):
        records = body.get("records")
        items = records if isinstance(records, list) else [body]
        return [
            alarm_line(stamp, device, rec)
            if isinstance(rec, dict)
            else f"{stamp} {device:<12} ALARM      not an alarm record: {rec!r:.60}"
            for rec in items
        ] or [f"{stamp} {device:<12} ALARM      empty batch"]
    if kind in _DOWNLINK and isinstance(body, dict):
        return [f"{stamp} {device:<12} {kind:<10} {_DOWNLINK[kind](body)}"]
    if kind == "status" and isinstance(body, dict):
        extra = ""
        if body.get("state") == "online":
            extra = f"  fw {body.get('fw')}  reset: {body.get('reset_cause')}"
        return [f"{stamp} {device:<12} status     {body.get('state')}{extra}"]
    return [f"{stamp} {device:<12} {kind:<10} {json.dumps(body)[:100]}"]


def _telemetry_line(stamp: str, device: str, rec: dict, where: str) -> str:
    if rec.get("sensor_error"):
        values = f"sensor error: {rec['sensor_error']}"
    else:
        values = (
            f"T={_num(rec.get('temperature'), '.2f')} °C  RH={_num(rec.get('humidity'), '.1f')} %"
        )
    return (
        f"{stamp} {device:<12} telemetry  #{rec.get('seq')}  {values}  "
        f"battery={_num(rec.get('battery'), '.2f')} V{_position(rec)}{where}"
    )


# Unit and format of an alarm's value, peak and limit by the alarm's name (README: alarm).
_ALARM_UNITS = {
    "temp_high": (" °C", ".1f"),
    "temp_low": (" °C", ".1f"),
    "humidity_high": (" %RH", ".1f"),
    "humidity_low": (" %RH", ".1f"),
    "geofence_enter": (" m", ".0f"),
    "geofence_exit": (" m", ".0f"),
    "battery_low": (" V", ".2f"),
}


def alarm_line(stamp: str, device: str, rec: dict) -> str:
    """`ALARM raised temp_high 8.9 °C (limit 8.0) since 12:03:10` or, once it is over,
    `ALARM cleared temp_high peak 9.4 °C (limit 8.0) since 12:03:10, cleared 12:23:10
    after 20 min`: capitals, so an alarm stands out among telemetry lines."""
    name = rec.get("alarm", "?")
    unit, fmt = _ALARM_UNITS.get(str(name), ("", "g"))

    def value(v: object, with_unit: bool = True) -> str:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return f"{v:{fmt}}{unit if with_unit else ''}"
        return "-" if v is None else str(v)

    state = rec.get("state", "?")
    what = f"{name} {rec['fence']}" if rec.get("fence") else str(name)
    limit = f" (limit {value(rec['limit'], False)})" if rec.get("limit") is not None else ""
    since = f" since {_clock(rec.get('since'))}"
    if state == "cleared":
        text = f"{what} peak {value(rec.get('peak'))}{limit}{since}"
        text += f", cleared {_clock(rec.get('cleared_at'))}"
        if isinstance(rec.get("duration_s"), int | float):
            text += f" after {_duration(rec['duration_s'])}"
    else:
        text = f"{what} {value(rec.get('value'))}{limit}{since}"
        if rec.get("peak") is not None and rec.get("peak") != rec.get("value"):
            text += f", peak {value(rec['peak'])}"
    return f"{stamp} {device:<12} ALARM {state} {text}  #{rec.get('seq')}"


def _config_set_text(body: dict) -> str:
    """A request, secrets masked: a retained config/set holds them in clear."""
    values = body.get("set") if isinstance(body.get("set"), dict) else {}
    parts = [f"{k}={'***' if _secret(k) else json.dumps(v)}" for k, v in values.items()]
    if body.get("unset"):
        parts.append(f"unset {json.dumps(body['unset'])}")
    return f"{body.get('id')}: {', '.join(parts) or 'nothing'}"


def _secret(name: str) -> bool:
    from host_tools.fwconfig import firmware_config

    config = firmware_config()
    try:
        return bool(config.key(name).secret)
    except config.ConfigError:  # a key of another firmware version: mask what looks secret
        return "password" in name or "secret" in name


def _config_reported_text(body: dict) -> str:
    if body.get("ok") is True:
        changed = body.get("changed") if isinstance(body.get("changed"), dict) else {}
        return f"{body.get('id')}: applied, changed {', '.join(changed) or 'nothing'}"
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
    reasons = "; ".join(f"{k}: {v}" for k, v in errors.items())
    return f"{body.get('id')}: REFUSED {reasons}"


def _cmd_ack_text(body: dict) -> str:
    if body.get("ok") is True:
        return f"{body.get('id')}: {body.get('cmd')} ok {json.dumps(body.get('result'))[:80]}"
    return f"{body.get('id')}: {body.get('cmd')} FAILED: {body.get('error')}"


_DOWNLINK = {
    "config/set": _config_set_text,
    "config/reported": _config_reported_text,
    "cmd": lambda b: f"{b.get('id')}: {b.get('cmd')} {json.dumps(b.get('args', {}))[:80]}",
    "cmd/ack": _cmd_ack_text,
}


def _clock(ts: object) -> str:
    """Unix seconds as local HH:MM:SS (the monitor's own clock), with the date if not today."""
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return "?"
    when = time.localtime(ts)
    if time.strftime("%Y-%m-%d", when) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", when)
    return time.strftime("%Y-%m-%d %H:%M:%S", when)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _position(rec: dict) -> str:
    """Where the reading was taken, if the tracker has GNSS (README: telemetry records)."""
    if "lat" in rec:
        return (
            f"  at {rec['lat']},{rec['lon']} {_num(rec.get('speed'), '.1f')} m/s "
            f"({_num(rec.get('fix_age_s'), 'd')} s old)"
        )
    return f"  gnss: {rec['gnss']}" if rec.get("gnss") else ""


def _num(value: object, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def subscribe(
    url: str,
    on_message: Callable[[str, bytes], None],
    topic: str | Sequence[str] = TOPICS,
    timeout: float = 10.0,
) -> paho.Client:
    """Connect a paho client, subscribe (QoS 1) to one topic filter or several (one SUBSCRIBE,
    so one SUBACK covers them all), and call on_message(topic, payload) from its thread."""
    host, port = connect_url(url)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    filters = [(topic, 1)] if isinstance(topic, str) else [(t, 1) for t in topic]
    client.on_message = lambda _c, _u, msg: on_message(msg.topic, msg.payload)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, *_: c.subscribe(filters)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise BrokerError(f"cannot reach the broker at {url}: {e}") from None
    client.loop_start()
    if not subscribed.wait(timeout):
        client.loop_stop()
        raise BrokerError(f"no SUBACK from {url} within {timeout:.0f} s")
    return client


def listen(
    url: str,
    on_message: Callable[[str, bytes], None],
    *,
    topic: str | Sequence[str] = TOPICS,
    seconds: float | None = None,
    until_idle: float | None = None,
    on_subscribed: Callable[[], None] | None = None,
) -> None:
    """Call on_message(topic, payload) for each message until `seconds` have passed, no
    message came for `until_idle` seconds (counted from the subscription on), or Ctrl-C."""
    wake = threading.Condition()
    last = time.monotonic()

    def handle(msg_topic: str, payload: bytes) -> None:
        nonlocal last
        try:
            on_message(msg_topic, payload)
        finally:
            with wake:
                last = time.monotonic()
                wake.notify_all()

    client = subscribe(url, handle, topic)
    try:
        started = last = time.monotonic()
        if on_subscribed is not None:
            on_subscribed()
        with wake:
            while True:
                deadlines = []
                if seconds is not None:
                    deadlines.append(started + seconds)
                if until_idle is not None:
                    deadlines.append(last + until_idle)
                left = min(deadlines) - time.monotonic() if deadlines else 1.0
                if left <= 0:
                    break
                wake.wait(min(left, 1.0))  # short waits keep Ctrl-C responsive
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()


def monitor(
    url: str,
    *,
    seconds: float | None = None,
    until_idle: float | None = None,
    as_json: bool = False,
) -> int:
    def show(topic: str, payload: bytes) -> None:
        if as_json:
            print(
                json.dumps({"topic": topic, "payload": payload.decode(errors="replace")}),
                flush=True,
            )
        else:
            print(format_message(topic, payload), flush=True)

    listen(url, show, seconds=seconds, until_idle=until_idle)
    return 0
