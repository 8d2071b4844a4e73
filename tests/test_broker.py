"""The local broker behaves like the MQTT broker a tracker reports to.

Each test runs against every broker kind: mosquitto (skipped when not installed) and amqtt.
"""

from __future__ import annotations

import queue
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from host_tools import broker as broker_mod
from host_tools.broker import Broker, BrokerError, connect_url, port_is_open, start_broker

WAIT_S = 10.0  # a failure deadline, not a performance limit

_SKIP_REASON = {
    "mosquitto": "mosquitto is not installed (apt-get install mosquitto, or run make setup)",
    "amqtt": "amqtt is not installed in this interpreter (pip install -e '.[dev]')",
}


def _kind_param(kind: str) -> object:
    installed = kind in broker_mod.available_kinds()
    return pytest.param(
        kind, id=kind, marks=pytest.mark.skipif(not installed, reason=_SKIP_REASON[kind])
    )


KIND_PARAMS = [_kind_param(kind) for kind in broker_mod.KINDS]


@pytest.fixture(scope="module", params=KIND_PARAMS)
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    log_dir = tmp_path_factory.mktemp(f"broker-{request.param}")
    with start_broker(prefer=request.param, log_dir=log_dir) as running:
        yield running


class Client:
    """A paho-mqtt 2.x client that records what it receives, for one test."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._events: queue.Queue[str] = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{name}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.paho.on_connect = lambda c, u, flags, rc, props: self._events.put(f"connect {rc}")
        self.paho.on_subscribe = lambda c, u, mid, rcs, props: self._events.put("suback")
        self.paho.on_message = lambda c, u, msg: self.messages.put(msg)
        self._broker = broker

    def connect(self) -> Client:
        self.paho.connect(self._broker.host, self._broker.port, keepalive=30)
        self.paho.loop_start()
        assert self._events.get(timeout=WAIT_S) == "connect Success"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.paho.subscribe(topic, qos=qos)
        assert self._events.get(timeout=WAIT_S) == "suback"

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=WAIT_S)  # QoS 1: returns once the broker sent PUBACK
        assert info.is_published()

    def next_message(self) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"no message arrived within {WAIT_S:.0f} s")

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[object]:
    made: list[Client] = []

    def make(name: str) -> Client:
        client = Client(broker, name)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _topic(name: str) -> str:
    return f"albatross/test-{uuid.uuid4().hex[:8]}/{name}"


def test_subscriber_receives_qos1_message(broker: Broker, clients) -> None:
    topic = _topic("telemetry")
    subscriber = clients("sub").connect()
    subscriber.subscribe(topic, qos=1)
    clients("pub").connect().publish(topic, b'{"seq": 1, "t": 21.5}', qos=1)

    message = subscriber.next_message()
    assert message.topic == topic
    assert message.payload == b'{"seq": 1, "t": 21.5}'
    assert message.qos == 1
    assert not message.retain


def test_retained_message_reaches_late_subscriber(broker: Broker, clients) -> None:
    topic = _topic("status")
    clients("device").connect().publish(topic, b"online", qos=1, retain=True)

    late = clients("late").connect()
    late.subscribe(topic, qos=1)
    message = late.next_message()
    assert message.payload == b"online"
    assert message.retain


def test_retained_message_only_reaches_matching_subscribers(broker: Broker, clients) -> None:
    device_a, device_b = _topic("status"), _topic("status")
    clients("device-a").connect().publish(device_a, b"online", qos=1, retain=True)
    clients("watcher-a").connect().subscribe(device_a, qos=1)  # device_a now has a subscriber

    watcher_b = clients("watcher-b").connect()
    watcher_b.subscribe(device_b, qos=1)
    clients("device-b").connect().publish(device_b, b"b online", qos=1)
    message = watcher_b.next_message()
    assert (message.topic, message.payload) == (device_b, b"b online")
    assert watcher_b.messages.empty()


def test_last_will_published_when_client_vanishes(broker: Broker, clients) -> None:
    topic = _topic("status")
    watcher = clients("watcher").connect()
    watcher.subscribe(topic, qos=1)

    device = clients("device")
    device.paho.will_set(topic, b"offline", qos=1, retain=True)
    device.connect()
    device.paho.loop_stop()
    # Drop the TCP connection without an MQTT DISCONNECT, as a tracker losing power does.
    sock = device.paho.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()

    message = watcher.next_message()
    assert message.topic == topic
    assert message.payload == b"offline"


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_stop_closes_port_and_url_points_at_broker(kind: str, tmp_path: Path) -> None:
    running = start_broker(prefer=kind, log_dir=tmp_path)
    assert running.kind == kind
    assert connect_url(running.url) == (running.host, running.port)
    assert port_is_open(running.host, running.port)
    assert running.log_path.is_file()

    running.stop()
    running.stop()  # idempotent
    assert not running.running
    assert not port_is_open(running.host, running.port)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_taken_port_gives_error_naming_log(kind: str, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError) as failure:
            start_broker(port, prefer=kind, log_dir=tmp_path)
    assert str(tmp_path / f"{kind}-{port}.log") in str(failure.value)


def test_temporary_log_folder_removed_on_stop() -> None:
    with start_broker() as running:
        log_path = running.log_path
        assert log_path.is_file()
    assert not log_path.parent.exists()


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown broker kind 'rabbit'"):
        start_broker(prefer="rabbit")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", ("127.0.0.1", 1884)),
        ("mqtt://broker.example.com", ("broker.example.com", 1883)),
        ("mqtt://[::1]:1885/", ("::1", 1885)),
    ],
)
def test_connect_url_accepts_mqtt_urls(url: str, expected: tuple[str, int]) -> None:
    assert connect_url(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:1883", "expected mqtt://HOST:PORT"),
        ("127.0.0.1:1883", "expected mqtt://HOST:PORT"),
        ("mqtt://:1883", "no host name"),
        ("mqtt://host:port", "bad broker URL"),
        ("mqtt://host:70000", "bad broker URL"),
        ("mqtt://host:0", "port 0"),
        ("mqtt://user:pw@host:1883", "credentials"),
        ("mqtt://host:1883/topic", "unexpected text"),
    ],
)
def test_connect_url_rejects_bad_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="bad broker URL") as failure:
        connect_url(url)
    assert problem in str(failure.value)
    assert url in str(failure.value)
