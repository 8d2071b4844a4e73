"""MQTT codec and client on CPython: hypothesis round trips and fuzzing, byte-level interop
with paho-mqtt in both directions, and the client against a real mosquitto broker."""

from __future__ import annotations

import asyncio
import queue
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware" / "tests"))

import mqtt_server_codec as s  # noqa: E402
from mqtt_server_codec import ServerParser, fields  # noqa: E402

from host_tools import image as img  # noqa: E402
from host_tools.broker import find_mosquitto, start_broker  # noqa: E402
from tracker import log  # noqa: E402
from tracker.uplink import mqtt_codec as c  # noqa: E402
from tracker.uplink.mqtt import MqttClient  # noqa: E402
from tracker.uplink.mqtt_codec import MqttProtocolError, Parser  # noqa: E402

log.echo = False
WAIT_S = 10.0  # failure deadline only, never a performance limit
FAST = settings(max_examples=150, deadline=None)

# ---- strategies ---------------------------------------------------------------------------

_chars = st.characters(blacklist_characters="\x00+#", blacklist_categories=("Cs",))
topics = st.text(_chars, min_size=1, max_size=40)
_level = st.text(st.characters(blacklist_characters="\x00+#/", blacklist_categories=("Cs",)))
topic_filters = st.builds(
    lambda levels, hash_end: "/".join(levels + (["#"] if hash_end else [])) or "#",
    st.lists(st.one_of(st.just("+"), _level), min_size=1, max_size=5),
    st.booleans(),
)
pids = st.integers(1, 65535)
payloads = st.binary(max_size=600)
wills = st.none() | st.tuples(topics, st.binary(max_size=50), st.integers(0, 2), st.booleans())


@st.composite
def packets(draw):
    """(encoded bytes, {field: expected decoded value}) for every packet type."""
    kind = draw(st.integers(1, 14))
    if kind == c.CONNECT:
        clean = draw(st.booleans())
        cid = draw(st.text(_chars, min_size=0 if clean else 1, max_size=30))
        user = draw(st.none() | st.text(_chars, max_size=20))
        pw = draw(st.none() | st.binary(max_size=20)) if user is not None else None
        will = draw(wills)
        ka = draw(st.integers(0, 65535))
        expect = dict(
            client_id=cid, clean_session=clean, username=user, password=pw, will=will, keepalive=ka
        )
        return c.encode_connect(cid, ka, clean, user, pw, will), expect
    if kind == c.CONNACK:
        sp, rc = draw(st.booleans()), draw(st.integers(0, 255))
        return s.encode_connack(rc, sp), dict(session_present=sp, return_code=rc)
    if kind == c.PUBLISH:
        topic, payload, qos = draw(topics), draw(payloads), draw(st.integers(0, 1))
        retain = draw(st.booleans())
        dup = draw(st.booleans()) if qos else False
        pid = draw(pids) if qos else None
        expect = dict(topic=topic, payload=payload, qos=qos, retain=retain, dup=dup, pid=pid)
        return s.encode_publish(topic, payload, qos, retain, dup, pid), expect
    if kind in (c.PUBACK, c.PUBREC, c.PUBREL, c.PUBCOMP, c.UNSUBACK):
        pid = draw(pids)
        return s.encode_pid_ack(kind, pid), dict(pid=pid)
    if kind == c.SUBSCRIBE:
        pid = draw(pids)
        filters = draw(
            st.lists(st.tuples(topic_filters, st.integers(0, 2)), min_size=1, max_size=4)
        )
        return c.encode_subscribe(pid, filters), dict(pid=pid, filters=filters)
    if kind == c.SUBACK:
        pid = draw(pids)
        granted = draw(st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=5))
        return s.encode_suback(pid, granted), dict(pid=pid, granted=granted)
    if kind == c.UNSUBSCRIBE:
        pid = draw(pids)
        filters = draw(st.lists(topic_filters, min_size=1, max_size=4))
        return c.encode_unsubscribe(pid, filters), dict(pid=pid, filters=filters)
    fixed = {
        c.PINGREQ: c.PINGREQ_BYTES,
        c.PINGRESP: s.PINGRESP_BYTES,
        c.DISCONNECT: c.DISCONNECT_BYTES,
    }
    return fixed[kind], {}


# 2.2.1 Table 2.1: what a server sends a client. The device's Parser decodes only these; the
# broker's ServerParser (firmware/tests/mqtt_server_codec.py) decodes every type.
SENT_BY_A_SERVER = {c.CONNACK, c.PUBLISH, c.PUBACK, c.PUBREC, c.PUBREL, c.PUBCOMP, c.SUBACK,
                    c.UNSUBACK, c.PINGRESP}  # fmt: skip


def parse_stream(chunks, max_packet=16384, parser=ServerParser):
    p = parser(max_packet)
    out = []
    for chunk in chunks:
        p.feed(chunk)
        while (pkt := p.next_packet()) is not None:
            out.append(pkt)
    return out, p


# ---- round trips --------------------------------------------------------------------------


@FAST
@given(packets())
def test_every_packet_type_round_trips(case):
    data, expect = case
    (pkt,), p = parse_stream([data])
    assert pkt.type == data[0] >> 4 and p.buffered() == 0
    for field, value in expect.items():
        assert getattr(pkt, field) == value, field
    device = Parser()
    device.feed(data)
    if pkt.type in SENT_BY_A_SERVER:  # the device decodes it exactly as the broker side does
        assert fields(device.next_packet()) == fields(pkt) and device.buffered() == 0
    else:
        with pytest.raises(MqttProtocolError, match="is not sent to a client"):
            device.next_packet()


def test_broker_side_codec_stays_off_the_device():
    on_device = {dev for dev, _host in img.firmware_files()}
    assert "tracker/uplink/mqtt_codec.py" in on_device
    assert not any("mqtt_server_codec" in dev for dev in on_device)
    # Issue 7: what only a broker needs lives in mqtt_server_codec, not in the device's codec.
    for name in ("encode_connack", "encode_suback", "encode_publish", "encode_pid_ack"):
        assert not hasattr(c, name) and hasattr(s, name), name


@FAST
@given(st.lists(packets(), min_size=1, max_size=8), st.data())
def test_packet_streams_survive_arbitrary_splits(cases, data):
    stream = b"".join(d for d, _ in cases)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    got, p = parse_stream(chunks)
    assert [pkt.type for pkt in got] == [d[0] >> 4 for d, _ in cases]
    assert [fields(q) for q in got] == [fields(q) for q in parse_stream([stream])[0]]
    assert p.buffered() == 0


@FAST
@given(st.lists(packets(), min_size=1, max_size=5), st.data())
def test_truncated_stream_only_asks_for_more_bytes(cases, data):
    stream = b"".join(d for d, _ in cases)
    cut = data.draw(st.integers(0, len(stream) - 1))
    got, p = parse_stream([stream[:cut]])
    complete = count = 0
    for d, _ in cases:  # the packets that fit entirely before the cut
        if complete + len(d) > cut:
            break
        complete += len(d)
        count += 1
    assert [pkt.type for pkt in got] == [d[0] >> 4 for d, _ in cases[:count]]
    assert p.buffered() == cut - complete
    assert p.next_packet() is None


@FAST
@given(topics, st.integers(1, 268435455 - 2 - 2 - 4 * 40))
def test_publish_header_length_matches_the_packet(topic, payload_len):
    header = c.publish_header(topic, payload_len, qos=1, pid=1)
    p = Parser(max_packet=len(header) + payload_len)
    p.feed(header)
    assert p.next_packet() is None  # the length is exactly what we said, so it waits
    small = Parser(max_packet=len(header) + payload_len - 1)
    small.feed(header)
    with pytest.raises(MqttProtocolError):
        small.next_packet()


def test_field_length_limit():
    c.publish_header("a" * 65535, 0)
    with pytest.raises(MqttProtocolError):
        c.publish_header("a" * 65536, 0)
    with pytest.raises(MqttProtocolError):
        c.encode_connect("id", 60, True, "u", b"x" * 65536)


# ---- fuzzing ------------------------------------------------------------------------------


def fuzz(chunks, max_packet):
    """Only packets, 'need more bytes' or MqttProtocolError; memory stays bounded. For the
    device's Parser and the broker-side ServerParser alike."""
    for parser in (Parser, ServerParser):
        p = parser(max_packet)
        try:
            for chunk in chunks:
                p.feed(chunk)
                while p.next_packet() is not None:
                    pass
                assert p.buffered() < max_packet  # at most one incomplete packet is held
        except MqttProtocolError:
            with pytest.raises(MqttProtocolError):  # and it stays refused
                p.next_packet()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=20), st.integers(8, 300))
def test_garbage_never_breaks_the_parser(chunks, max_packet):
    fuzz(chunks, max_packet)


@settings(max_examples=400, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=4), st.data())
def test_mutated_packets_never_break_the_parser(cases, data):
    stream = bytearray(b"".join(d for d, _ in cases))
    for _ in range(data.draw(st.integers(1, 4))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(stream)))
    fuzz([bytes(stream[:cut]), bytes(stream[cut:])], 1024)


# ---- interop with paho-mqtt, both directions ----------------------------------------------


def _recv_packet(conn: socket.socket, parser: Parser, deadline: float) -> c.Packet:
    while (pkt := parser.next_packet()) is None:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        data = conn.recv(4096)
        if not data:
            raise AssertionError("paho closed the connection")
        parser.feed(data)
    return pkt


def test_paho_client_and_our_codec_understand_each_other():
    """We play the broker with our encoders (mqtt_server_codec); paho plays the client. paho's
    bytes are decoded by our ServerParser and paho's callbacks show how it decoded ours."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    events: queue.Queue = queue.Queue()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="paho-1", protocol=paho.MQTTv311
    )
    client.username_pw_set("user", "pw")
    client.will_set("w/t", b"bye", qos=1, retain=True)
    client.on_connect = lambda cl, ud, flags, rc, props: events.put(
        ("connack", rc.value, flags.session_present)
    )
    client.on_subscribe = lambda cl, ud, mid, rcs, props: events.put(
        ("suback", [r.value for r in rcs])
    )
    client.on_message = lambda cl, ud, m: events.put(("msg", m.topic, m.payload, m.qos, m.retain))
    client.on_publish = lambda cl, ud, mid, rc, props: events.put(("puback", mid))
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        conn, _ = server.accept()
        deadline = time.monotonic() + WAIT_S
        parser = ServerParser()
        pkt = _recv_packet(conn, parser, deadline)
        assert (pkt.type, pkt.client_id, pkt.keepalive, pkt.clean_session) == (
            c.CONNECT,
            "paho-1",
            30,
            True,
        )
        assert (pkt.username, pkt.password, pkt.will) == ("user", b"pw", ("w/t", b"bye", 1, True))
        conn.sendall(s.encode_connack(0, session_present=False))
        assert events.get(timeout=WAIT_S) == ("connack", 0, False)

        client.subscribe([("a/+", 1), ("b/#", 0)])
        pkt = _recv_packet(conn, parser, deadline)
        assert pkt.type == c.SUBSCRIBE and pkt.filters == [("a/+", 1), ("b/#", 0)]
        conn.sendall(s.encode_suback(pkt.pid, [1, 0x80]))
        assert events.get(timeout=WAIT_S) == ("suback", [1, 128])

        info = client.publish("p/q", b"hello", qos=1, retain=True)
        pkt = _recv_packet(conn, parser, deadline)
        assert (pkt.type, pkt.topic, pkt.payload, pkt.qos, pkt.retain) == (
            c.PUBLISH,
            "p/q",
            b"hello",
            1,
            True,
        )
        conn.sendall(c.encode_puback(pkt.pid))
        assert events.get(timeout=WAIT_S) == ("puback", info.mid)

        conn.sendall(s.encode_publish("a/x", b"\x00data", qos=1, retain=True, pid=9))
        assert events.get(timeout=WAIT_S) == ("msg", "a/x", b"\x00data", 1, True)
        pkt = _recv_packet(conn, parser, deadline)
        assert (pkt.type, pkt.pid) == (c.PUBACK, 9)

        client.disconnect()
        assert _recv_packet(conn, parser, deadline).type == c.DISCONNECT
        conn.close()
    finally:
        client.loop_stop()
        server.close()


# ---- the client against a real broker -----------------------------------------------------


class StreamAdapter:
    """CPython's (StreamReader, StreamWriter) as the one stream object the client expects."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, n: int) -> bytes:
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        await self.writer.wait_closed()


class PahoWatcher:
    """A paho subscriber that queues (topic, payload, retain) of everything it receives."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: queue.Queue = queue.Queue()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda cl, ud, m: self.messages.put(
            (m.topic, m.payload, m.retain)
        )
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), "paho watcher could not subscribe"

    def next(self) -> tuple[str, bytes, bool]:
        return self.messages.get(timeout=WAIT_S)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def mosquitto():
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    with start_broker(prefer="mosquitto") as broker:
        yield broker


def test_client_against_mosquitto(mosquitto):
    host, port = "127.0.0.1", int(mosquitto.url.rsplit(":", 1)[1])
    base = f"albatross/test-{uuid.uuid4().hex[:8]}"
    watcher = PahoWatcher(host, port, base + "/#")

    async def open_client(name: str, **kw) -> tuple[MqttClient, StreamAdapter]:
        client = MqttClient(name, keepalive_s=30, timeout_ms=5000, **kw)
        stream = StreamAdapter(*await asyncio.open_connection(host, port))
        await client.connect(stream)
        return client, stream

    async def main() -> None:
        got: asyncio.Queue = asyncio.Queue()
        status = base + "/status"
        a, a_stream = await open_client(
            "a-" + base[-8:],
            will=(status, b"offline", 1, True),
            on_message=lambda t, p, r: got.put_nowait((t, p, r)),
        )
        assert await a.subscribe(base + "/echo", qos=1) == 1
        pid = await a.publish(base + "/echo", b"retained", qos=1, retain=True)
        assert pid == 2  # the SUBSCRIBE used 1
        # Live delivery to an existing subscription carries retain=0 (3.3.1.3).
        assert await asyncio.wait_for(got.get(), WAIT_S) == (base + "/echo", b"retained", False)
        assert watcher.next() == (base + "/echo", b"retained", False)
        assert await a.publish(base + "/q0", b"fire and forget") is None
        assert watcher.next() == (base + "/q0", b"fire and forget", False)
        # A new subscription gets the retained message with retain=1.
        assert await a.subscribe(base + "/echo") == 0
        assert await asyncio.wait_for(got.get(), WAIT_S) == (base + "/echo", b"retained", True)

        # A clean DISCONNECT discards the will ...
        b, _ = await open_client("b-" + base[-8:], will=(base + "/b-will", b"x", 0, False))
        await b.disconnect()
        # ... a dropped connection publishes it.
        a_stream.writer.transport.abort()
        assert "EOF" in await asyncio.wait_for(a.wait_dead(), WAIT_S)
        assert watcher.next() == (status, b"offline", False)
        await a.disconnect()

        # The will was retained: a fresh subscriber sees it with retain=1.
        c2, _ = await open_client(
            "c-" + base[-8:], on_message=lambda t, p, r: got.put_nowait((t, p, r))
        )
        await c2.subscribe(status)
        assert await asyncio.wait_for(got.get(), WAIT_S) == (status, b"offline", True)
        await c2.publish(status, b"", qos=1, retain=True)  # clear the retained messages
        await c2.publish(base + "/echo", b"", qos=1, retain=True)
        await c2.disconnect()

    try:
        asyncio.run(main())
        # B's will, had it been sent, would have arrived before A's offline message.
        assert all(m[0] != base + "/b-will" for m in list(watcher.messages.queue))
    finally:
        watcher.stop()
