# MqttClient against an in-process fake broker. Runs under pytest (CPython) and
# firmware/tests/run_mp.py (MicroPython Unix port), so only asyncio features both have.
import mqtt_server_codec as s
from mptest import raises, run

from tracker import log
from tracker.aio import asyncio, sleep_ms, ticks_diff, ticks_ms, wait_for_ms
from tracker.uplink import mqtt_codec as c
from tracker.uplink.mqtt import (
    MqttClient,
    MqttConnectRefused,
    MqttLinkDead,
    MqttSubscribeRefused,
    MqttTimeout,
)

log.echo = False  # the link-death warnings are expected here


class FakeBroker:
    """The broker end of an in-memory link, and the client's stream at the same time.

    What the client writes is decoded with the broker's half of the codec (ServerParser) and
    answered the way a broker would; knobs let a test hold PUBACKs, ignore pings, hang up or
    send raw bytes.
    """

    def __init__(
        self, connack_code=0, answer_connect=True, answer_pings=True, hold_pubacks=False, refuse=()
    ):
        self.connack_code = connack_code
        self.answer_connect = answer_connect
        self.answer_pings = answer_pings
        self.hold_pubacks = hold_pubacks
        self.refuse = refuse  # filters answered with SUBACK failure 0x80
        self.parser = s.ServerParser()
        self.received = []  # every packet the client sent, decoded
        self.held = []  # pids of PUBLISHes whose PUBACK is held back
        self.closed = False
        self._out = bytearray()
        self._eof = False
        self._ev = asyncio.Event()

    # -- the stream interface the client uses --

    async def read(self, n):
        while not self._out and not self._eof:
            if self.closed:
                raise OSError(9, "read on closed stream")
            self._ev.clear()
            await self._ev.wait()
        data = bytes(self._out[:n])
        self._out[:n] = b""
        return data

    def write(self, data):
        if self.closed:
            raise OSError(9, "write on closed stream")
        self.parser.feed(data)
        while True:
            pkt = self.parser.next_packet()
            if pkt is None:
                return
            self.received.append(pkt)
            self._answer(pkt)

    async def drain(self):
        pass

    def close(self):
        self.closed = True
        self._ev.set()

    # -- the broker's side --

    def _answer(self, pkt):
        t = pkt.type
        if t == c.CONNECT and self.answer_connect:
            self.send(s.encode_connack(self.connack_code))
        elif t == c.PUBLISH and pkt.qos == 1:
            if self.hold_pubacks:
                self.held.append(pkt.pid)
            else:
                self.send(c.encode_puback(pkt.pid))
        elif t == c.SUBSCRIBE:
            granted = [0x80 if f in self.refuse else q for f, q in pkt.filters]
            self.send(s.encode_suback(pkt.pid, granted))
        elif t == c.UNSUBSCRIBE:
            self.send(s.encode_pid_ack(c.UNSUBACK, pkt.pid))
        elif t == c.PINGREQ and self.answer_pings:
            self.send(s.PINGRESP_BYTES)

    def send(self, data):
        self._out += data
        self._ev.set()

    def hang_up(self):
        self._eof = True
        self._ev.set()

    def sent(self, ptype):
        return [p for p in self.received if p.type == ptype]


async def until(cond, ms=2000):
    """Let the event loop run until cond() holds; fail the test after ms."""
    start = ticks_ms()
    while not cond():
        if ticks_diff(ticks_ms(), start) > ms:
            raise AssertionError("condition not met within %d ms" % ms)
        await sleep_ms(5)


async def connected(broker=None, **kw):
    broker = broker or FakeBroker()
    kw.setdefault("timeout_ms", 2000)
    client = MqttClient("dev-1", **kw)
    await client.connect(broker)
    return client, broker


def test_connect_sends_connect_and_disconnect_closes_cleanly():
    async def main():
        will = ("albatross/dev-1/status", b"offline", 1, True)
        client, broker = await connected(keepalive_s=30, will=will, username="u", password="p")
        assert not client.dead and client.dead_reason is None
        con = broker.received[0]
        assert con.type == c.CONNECT and con.client_id == "dev-1" and con.keepalive == 30
        assert con.will == will and con.username == "u" and con.password == b"p"
        await client.disconnect()
        assert broker.received[-1].type == c.DISCONNECT and broker.closed
        assert client.dead and client.dead_reason == "disconnected"
        assert await wait_for_ms(client.wait_dead(), 100) == "disconnected"
        assert client.counters["link_deaths"] == 0
        with raises(MqttLinkDead):
            await client.publish("a", b"x")

    run(main())


def test_connack_refusal_codes_raise_with_their_meaning():
    async def main():
        meanings = [
            "",
            "protocol version",
            "identifier rejected",
            "server unavailable",
            "user name or password",
            "not authorized",
        ]
        for code in range(1, 6):
            broker = FakeBroker(connack_code=code)
            with raises(MqttConnectRefused) as e:
                await connected(broker)
            assert e.value.code == code and meanings[code] in str(e.value)
            assert broker.closed

    run(main())


def test_missing_connack_times_out():
    async def main():
        broker = FakeBroker(answer_connect=False)
        with raises(MqttTimeout) as e:
            await connected(broker, timeout_ms=100)
        assert e.value.what == "CONNACK" and e.value.ms == 100
        assert broker.closed

    run(main())


def test_packet_before_connack_is_a_protocol_error():
    async def main():
        broker = FakeBroker(answer_connect=False)
        broker.send(s.PINGRESP_BYTES)
        with raises(MqttLinkDead) as e:
            await connected(broker)
        assert "CONNACK" in str(e.value)

    run(main())


def test_qos1_publishes_complete_on_their_own_pubacks_in_any_order():
    async def main():
        client, broker = await connected(FakeBroker(hold_pubacks=True))
        tasks = [asyncio.create_task(client.publish("t/%d" % i, b"m", qos=1)) for i in range(3)]
        await until(lambda: len(broker.held) == 3)
        pid_of = {p.topic: p.pid for p in broker.sent(c.PUBLISH)}
        assert sorted(pid_of.values()) == sorted(broker.held) and len(set(broker.held)) == 3
        broker.send(c.encode_puback(pid_of["t/2"]))
        await until(lambda: tasks[2].done())
        assert not tasks[0].done() and not tasks[1].done()
        broker.send(c.encode_puback(pid_of["t/0"]) + c.encode_puback(pid_of["t/1"]))
        for i, task in enumerate(tasks):
            assert await wait_for_ms(task, 1000) == pid_of["t/%d" % i]
        assert client.counters["published"] == 3 and client.in_flight() == 0
        await client.disconnect()

    run(main())


def test_puback_timeout_raises_and_keeps_the_link():
    async def main():
        client, broker = await connected(FakeBroker(hold_pubacks=True), timeout_ms=100)
        with raises(MqttTimeout) as e:
            await client.publish("t", b"m", qos=1, retain=True)
        assert "PUBACK" in e.value.what
        assert client.counters["puback_timeouts"] == 1 and client.in_flight() == 0
        assert not client.dead
        broker.send(c.encode_puback(broker.held[0]))  # arrives late: counted, not fatal
        await until(lambda: client.counters["unexpected_acks"] == 1)
        assert not client.dead
        await client.publish("t", b"qos0")
        assert broker.sent(c.PUBLISH)[-1].payload == b"qos0"
        await client.disconnect()

    run(main())


def test_keepalive_pings_and_stays_up_while_answered():
    async def main():
        client, broker = await connected(keepalive_s=1, timeout_ms=300)
        await until(lambda: client.counters["pingresp"] >= 1, 2500)
        assert len(broker.sent(c.PINGREQ)) >= 1 and not client.dead
        await client.disconnect()

    run(main())


def test_keepalive_declares_link_dead_without_pingresp():
    async def main():
        broker = FakeBroker(answer_pings=False)
        client, _ = await connected(broker, keepalive_s=1, timeout_ms=300)
        reason = await wait_for_ms(client.wait_dead(), 3000)
        assert "PINGRESP" in reason and client.dead and broker.closed
        assert client.counters["pings"] == 1 and client.counters["link_deaths"] == 1
        with raises(MqttLinkDead):
            await client.publish("t", b"m", qos=1)
        await client.disconnect()

    run(main())


def test_eof_kills_link_and_wakes_waiting_publisher():
    async def main():
        client, broker = await connected(FakeBroker(hold_pubacks=True), timeout_ms=5000)
        task = asyncio.create_task(client.publish("t", b"m", qos=1))
        await until(lambda: broker.held)
        broker.hang_up()
        with raises(MqttLinkDead) as e:
            await wait_for_ms(task, 1000)  # long before the 5 s PUBACK deadline
        assert "EOF" in e.value.reason
        assert "EOF" in await wait_for_ms(client.wait_dead(), 1000)
        assert broker.closed and client.in_flight() == 0
        await client.disconnect()

    run(main())


def test_garbage_from_broker_is_a_protocol_error():
    async def main():
        client, broker = await connected()
        broker.send(b"\xf0\x00")
        reason = await wait_for_ms(client.wait_dead(), 1000)
        assert "protocol error" in reason and client.counters["protocol_errors"] == 1
        assert broker.closed

    run(main())


def test_packet_only_a_client_sends_is_a_protocol_error():
    async def main():
        for data in (c.encode_connect("broker", 60), c.encode_subscribe(1, [("a", 0)])):
            client, broker = await connected()
            broker.send(data)
            reason = await wait_for_ms(client.wait_dead(), 1000)
            name = c.NAMES[data[0] >> 4]
            assert "%s is not sent to a client" % name in reason, reason
            assert client.counters["protocol_errors"] == 1 and broker.closed

    run(main())


def test_incoming_publish_reaches_on_message_and_qos1_is_acked():
    async def main():
        got = []
        client, broker = await connected(on_message=lambda t, p, r: got.append((t, p, r)))
        assert await client.subscribe("albatross/dev-1/cmd", qos=1) == 1
        broker.send(s.encode_publish("albatross/dev-1/cmd", b'{"x":1}', qos=1, pid=77))
        broker.send(s.encode_publish("albatross/dev-1/cmd", b"q0", retain=True))
        await until(lambda: len(got) == 2)
        assert got == [
            ("albatross/dev-1/cmd", b'{"x":1}', False),
            ("albatross/dev-1/cmd", b"q0", True),
        ]
        await until(lambda: broker.sent(c.PUBACK))
        assert [p.pid for p in broker.sent(c.PUBACK)] == [77]  # none for the QoS 0 message
        assert client.counters["received"] == 2
        await client.disconnect()

    run(main())


def test_on_message_exception_does_not_kill_link():
    async def main():
        def boom(topic, payload, retain):
            raise ValueError("handler bug")

        client, broker = await connected(on_message=boom)
        broker.send(s.encode_publish("a", b"x", qos=1, pid=5))
        await until(lambda: broker.sent(c.PUBACK))
        assert not client.dead
        await client.disconnect()

    run(main())


def test_subscribe_failure_and_unsubscribe():
    async def main():
        client, broker = await connected(FakeBroker(refuse=("secret/#",)))
        with raises(MqttSubscribeRefused) as e:
            await client.subscribe("secret/#")
        assert e.value.topic == "secret/#"
        assert await client.subscribe("ok/+") == 0
        await client.unsubscribe("ok/+")
        assert broker.sent(c.UNSUBSCRIBE)[0].filters == ["ok/+"]
        with raises(c.MqttProtocolError):
            await client.subscribe("x", qos=2)
        await client.disconnect()

    run(main())


def test_reconnect_after_link_death():
    async def main():
        client, broker = await connected()
        broker.hang_up()
        await wait_for_ms(client.wait_dead(), 1000)
        broker2 = FakeBroker()
        await client.connect(broker2)
        assert not client.dead
        assert await client.publish("t", b"again", qos=1) == 1
        await client.disconnect()

    run(main())


def test_a_payload_in_parts_goes_out_as_one_message():
    async def main():
        client, broker = await connected()
        parts = [b'{"device_id": "d", "records": [', b'{"seq": 1}', b",", b'{"seq": 2}', b"]}"]
        await client.publish("t/parts", parts, qos=1)
        (p,) = [p for p in broker.sent(c.PUBLISH) if p.topic == "t/parts"]
        assert p.payload == b"".join(parts)
        await client.disconnect()

    run(main())


def test_the_status_in_parts_is_the_json_of_the_whole():
    import json

    from tracker.uplink.delivery import json_parts

    for obj in ({}, {"a": 1}, {"state": "online", "store": {"pending": 3}, "x": [1, None, "é"]}):
        assert json.loads(b"".join(json_parts(obj))) == obj
    # A status-sized body: no piece much bigger than one value, and few pieces.
    big = {"s%d" % i: {"k%d" % j: j * 1.5 for j in range(12)} for i in range(12)}
    parts = json_parts(big)
    assert json.loads(b"".join(parts)) == big
    assert max(len(p) for p in parts) <= 192 and len(parts) <= 40, [len(p) for p in parts]
