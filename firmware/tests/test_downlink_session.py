# The downlink over MQTT: an oversized message skipped unread by the codec and the client,
# and an Uplink session that subscribes, applies a retained request and keeps sending
# telemetry. Runs under pytest and firmware/tests/run_mp.py (on a ~110 KB heap there, so a
# 100 KB payload that were buffered would be a MemoryError).
import json

import mqtt_server_codec as s
from mptest import TempDir, run
from test_mqtt_client import FakeBroker, until

from tracker import log
from tracker.aio import asyncio, sleep_ms
from tracker.config import Config
from tracker.settings import Settings
from tracker.uplink import mqtt_codec as c
from tracker.uplink.delivery import Uplink
from tracker.uplink.downlink import MAX_PACKET, Downlink
from tracker.uplink.mqtt import MqttClient

log.echo = False

BIG = 100000
PREFIX = "albatross/dev-1/"


def test_parser_skips_a_big_publish_without_buffering_it():
    header = c.publish_header(PREFIX + "config/set", BIG, qos=1, retain=True, pid=7)
    after = s.PINGRESP_BYTES
    for cut in range(1, len(header) + 1):  # the header split anywhere
        p = c.Parser(MAX_PACKET, skip_big=True)
        got = []
        p.feed(header[:cut])
        pkt = p.next_packet()
        p.feed(header[cut:])
        pkt = pkt or p.next_packet()
        assert pkt.topic == PREFIX + "config/set" and pkt.pid == 7 and pkt.retain
        assert pkt.payload is None and pkt.size == BIG
        chunk = b"x" * 512
        for _ in range(BIG // 512):
            p.feed(chunk)
            assert p.next_packet() is None and p.buffered() == 0
        p.feed(b"x" * (BIG % 512) + after)
        got.append(p.next_packet())
        assert got[0].type == c.PINGRESP and p.buffered() == 0


def test_without_skip_big_an_oversized_publish_is_still_a_protocol_error():
    p = c.Parser(MAX_PACKET)
    p.feed(c.publish_header(PREFIX + "cmd", BIG))
    try:
        p.next_packet()
        raise AssertionError("accepted")
    except c.MqttProtocolError:
        pass


class StreamingBroker(FakeBroker):
    """A FakeBroker that can stream a huge message without holding it: `script` is served
    before anything else, bytes as they are, an int as that many filler bytes."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.script = []

    def stream(self, *items):
        self.script += items
        self._ev.set()

    async def read(self, n):
        while not self.script and not self._out and not self._eof and not self.closed:
            self._ev.clear()
            await self._ev.wait()
        while self.script:
            item = self.script[0]
            if isinstance(item, int):
                k = min(n, item)
                if item > k:
                    self.script[0] = item - k
                else:
                    self.script.pop(0)
                return b"y" * k
            self.script.pop(0)
            return item
        return await super().read(n)


def test_client_skips_a_100kb_retained_message_and_keeps_the_link():
    async def main():
        broker = StreamingBroker()
        got = []
        client = MqttClient(
            "dev-1",
            timeout_ms=2000,
            on_message=lambda t, p, r: got.append((t, p, r)),
            max_packet=MAX_PACKET,
            skip_big=True,
        )
        await client.connect(broker)
        topic = PREFIX + "config/set"
        broker.stream(
            c.publish_header(topic, BIG, qos=1, retain=True, pid=3),
            BIG,
            s.encode_publish(PREFIX + "cmd", b'{"id": "x"}', qos=1, pid=4),
        )
        await until(lambda: len(got) == 2)
        assert got == [(topic, None, True), (PREFIX + "cmd", b'{"id": "x"}', False)]
        await until(lambda: len(broker.sent(c.PUBACK)) == 2)
        assert [p.pid for p in broker.sent(c.PUBACK)] == [3, 4]
        assert not client.dead and client.counters["oversized"] == 1
        await client.disconnect()

    run(main())


class RetainingBroker(StreamingBroker):
    """Hands over retained messages on SUBSCRIBE, as a broker does."""

    def __init__(self, retained):
        super().__init__()
        self.retained = retained  # topic -> payload

    def _answer(self, pkt):
        super()._answer(pkt)
        if pkt.type == c.SUBSCRIBE:
            for flt, _q in pkt.filters:
                if flt in self.retained:
                    self.send(s.encode_publish(flt, self.retained[flt], 1, True, pid=100))

    def published(self, suffix):
        return [p for p in self.sent(c.PUBLISH) if p.topic == PREFIX + suffix]


class FakeLink:
    def __init__(self, broker):
        self.broker = broker
        self.up = 0

    async def open_stream(self, host, port):
        return self.broker

    def session_up(self):
        self.up += 1

    def session_failed(self, reason):
        pass

    async def backoff(self):
        await sleep_ms(10000)

    def status(self):
        return {}


class FakeStore:
    def __init__(self, n):
        self.records = [(i, b'{"seq": %d}' % i) for i in range(1, n + 1)]

    def read_batch(self, max_records, max_bytes):
        return self.records[:max_records]

    def ack(self, seq):
        self.records = [r for r in self.records if r[0] > seq]


def test_uplink_session_applies_a_retained_request_answers_commands_and_sends_telemetry():
    async def main(path):
        cfg = Config()
        cfg.set("batch_size", 2)
        rebooted = []

        async def run_command(name, args):
            return {"after_ack": lambda: rebooted.append(1)} if name == "reboot" else {}

        settings = Settings(cfg, path + "/config.json")
        dl = Downlink(settings, run_command, path + "/downlink.json")
        request = json.dumps({"id": "r9", "set": {"interval_s": 30}}).encode()
        broker = RetainingBroker({PREFIX + "config/set": request})
        store = FakeStore(6)
        up = Uplink(FakeLink(broker), cfg, "dev-1", store, lambda: {}, downlink=dl)
        task = asyncio.create_task(up._session())
        await until(lambda: broker.published("config/reported"))
        subs = [(f, q) for p in broker.sent(c.SUBSCRIBE) for f, q in p.filters]
        assert subs == [(PREFIX + "config/set", 1), (PREFIX + "cmd", 1)]
        [reported] = broker.published("config/reported")
        assert reported.retain and reported.qos == 1
        answer = json.loads(reported.payload)
        assert answer["id"] == "r9" and answer["ok"] and cfg["interval_s"] == 30.0
        await until(lambda: not store.records)  # telemetry flowed meanwhile
        assert len(broker.published("telemetry")) == 3
        broker.send(s.encode_publish(PREFIX + "cmd", b'{"id": "b", "cmd": "reboot"}', 1, pid=9))
        await until(lambda: rebooted)
        [ack] = broker.published("cmd/ack")
        assert json.loads(ack.payload)["ok"] and not ack.retain
        up.status_changed()
        await until(lambda: len(broker.published("status")) == 2)
        status = json.loads(broker.published("status")[-1].payload)
        assert status["downlink"]["applied"] == 2 and status["downlink"]["received"] == 2
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    with TempDir() as path:
        run(main(path))


def test_uplink_without_downlink_subscribes_to_nothing():
    async def main():
        broker = RetainingBroker({})
        store = FakeStore(1)
        up = Uplink(FakeLink(broker), Config(), "dev-1", store, lambda: {})
        task = asyncio.create_task(up._session())
        await until(lambda: not store.records)
        assert broker.sent(c.SUBSCRIBE) == []
        assert "downlink" not in json.loads(broker.published("status")[0].payload)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    run(main())
