"""Watch what trackers send to a broker: one readable line per message."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho

from host_tools.broker import BrokerError, connect_url

TOPICS = "albatross/#"


def format_message(topic: str, payload: bytes) -> str:
    """A line a person can read at a glance; unknown payloads are shown raw."""
    parts = topic.split("/")
    device = parts[1] if len(parts) > 2 else "?"
    kind = "/".join(parts[2:])
    stamp = time.strftime("%H:%M:%S")
    try:
        body = json.loads(payload)
    except ValueError:
        return f"{stamp} {device:<12} {kind:<10} {payload[:80]!r}"
    if kind == "telemetry" and isinstance(body, dict):
        if body.get("sensor_error"):
            values = f"sensor error: {body['sensor_error']}"
        else:
            values = f"T={_num(body.get('temperature'), '.2f')} °C  " \
                     f"RH={_num(body.get('humidity'), '.1f')} %"
        return (f"{stamp} {device:<12} telemetry  #{body.get('seq')}  {values}  "
                f"battery={_num(body.get('battery'), '.2f')} V")
    if kind == "status" and isinstance(body, dict):
        extra = ""
        if body.get("state") == "online":
            extra = f"  fw {body.get('fw')}  reset: {body.get('reset_cause')}"
        return f"{stamp} {device:<12} status     {body.get('state')}{extra}"
    return f"{stamp} {device:<12} {kind:<10} {json.dumps(body)[:100]}"


def _num(value: object, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def subscribe(
    url: str,
    on_message: Callable[[str, bytes], None],
    topic: str = TOPICS,
    timeout: float = 10.0,
) -> paho.Client:
    """Connect a paho client, subscribe, and call on_message(topic, payload) from its thread."""
    host, port = connect_url(url)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, msg: on_message(msg.topic, msg.payload)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise BrokerError(f"cannot reach the broker at {url}: {e}") from None
    client.loop_start()
    if not subscribed.wait(timeout):
        client.loop_stop()
        raise BrokerError(f"no SUBACK from {url} within {timeout:.0f} s")
    return client


def monitor(url: str, *, seconds: float | None = None, as_json: bool = False) -> int:
    def show(topic: str, payload: bytes) -> None:
        if as_json:
            print(json.dumps({"topic": topic, "payload": payload.decode(errors="replace")}),
                  flush=True)
        else:
            print(format_message(topic, payload), flush=True)

    client = subscribe(url, show)
    try:
        done = threading.Event()
        try:
            done.wait(seconds)
        except KeyboardInterrupt:
            pass
    finally:
        client.loop_stop()
        client.disconnect()
    return 0
