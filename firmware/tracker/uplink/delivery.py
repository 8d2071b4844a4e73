# The MQTT session supervisor: owns reconnects, backoff and what is said on connect. The
# MQTT client itself keeps no retry loops (STYLE.md, rule 7): it raises, and this decides.
import json

from tracker import log
from tracker.aio import asyncio, ticks_ms, wait_for_ms
from tracker.errors import ModemError
from tracker.uplink.mqtt import MqttClient, MqttError, MqttSubscribeRefused

_TAG = "uplink"
OPEN_TIMEOUT_MS = 300000  # a modem bring-up (power on, register, PDP) may take minutes
MAX_MESSAGE_BYTES = 4096  # of records per message: the modem sends it in three prompts


class Uplink:
    def __init__(self, link, cfg, device_id, store, status, alarms=None, downlink=None):
        """link: tracker.uplink.tcp.TcpLink or tracker.modem.link.ModemLink (streams, recovery and
        backoff); store: tracker.store.Store of encoded records; status() -> dict; alarms: the
        priority lane, a second Store drained first onto the `alarm` topic (or None);
        downlink: tracker.uplink.downlink.Downlink for config/set and cmd (or None)."""
        self.link = link
        self._cfg = cfg
        self.device_id = device_id
        self._store = store
        self._alarms = alarms
        self._work = asyncio.Event()  # a reading was stored, or the link died
        self._status = status
        self.topic_telemetry = "albatross/%s/telemetry" % device_id
        self.topic_status = "albatross/%s/status" % device_id
        self.topic_alarm = "albatross/%s/alarm" % device_id
        self._downlink = downlink
        self._prefix = "albatross/%s/" % device_id
        if downlink is not None:
            downlink.wake = self._work.set
        self._head = ('{"device_id": %s, "records": [' % json.dumps(device_id)).encode()
        self.counters = {
            "connects": 0,
            "connect_failures": 0,
            "link_losses": 0,
            "sent": 0,
            "messages": 0,
            "alarms_sent": 0,
        }
        self.last_error = None
        self.last_publish = None  # ticks_ms() of the last PUBACK for telemetry
        self.connected = False
        self._status_dirty = False
        # Liveness for the watchdog's feeder: progress changes with every turn of the loops;
        # idle while waiting for a reading to send is this task's normal state.
        self.progress = 0
        self.idle = False

    def _beat(self):
        self.progress = (self.progress + 1) & 0x3FFFFFFF

    def status_changed(self):
        """Ask for a fresh retained status message at the next chance."""
        self._status_dirty = True
        self._work.set()

    def wake(self):
        """A reading was stored: send it if the link is up."""
        self._work.set()

    async def run(self):
        while True:
            self._beat()
            try:
                await self._session()
            except (MqttError, ModemError, OSError, asyncio.TimeoutError) as e:
                self.last_error = "%s: %s" % (type(e).__name__, e)
                log.w(_TAG, self.last_error)
            self.connected = False
            self.link.session_failed(self.last_error)
            await self.link.backoff()

    def _client(self):
        cfg = self._cfg
        offline = json.dumps({"state": "offline", "device_id": self.device_id})
        client = MqttClient(
            self.device_id,
            keepalive_s=cfg["mqtt_keepalive_s"],
            username=cfg["mqtt_user"] or None,
            password=cfg["mqtt_password"] or None,
            clean_session=True,
            will=(self.topic_status, offline.encode(), 1, True),
        )
        if self._downlink is not None:
            from tracker.uplink.downlink import MAX_PACKET

            client.on_message = self._on_message
            client.max_packet = MAX_PACKET  # a bigger PUBLISH is skipped unread
            client.skip_big = True
        return client

    def _on_message(self, topic, payload, retain):
        if topic.startswith(self._prefix):
            self._downlink.receive(topic[len(self._prefix) :], payload, retain)

    async def _session(self):
        host, port = self._cfg["broker_host"], self._cfg["broker_port"]
        client = self._client()
        try:
            stream = await wait_for_ms(self.link.open_stream(host, port), OPEN_TIMEOUT_MS)
            await client.connect(stream)
        except BaseException:
            self.counters["connect_failures"] += 1
            await client.disconnect()
            raise
        self.counters["connects"] += 1
        self.connected = True
        self.last_error = None
        log.i(_TAG, "connected to %s:%d" % (host, port))
        waker = asyncio.create_task(self._wake_on_death(client))
        try:
            publish = await self._subscribe(client)
            self._status_dirty = True
            proved = False
            while True:
                self._beat()
                if client.dead:
                    self.counters["link_losses"] += 1
                    raise MqttError("link lost: %s" % client.dead_reason)
                if self._status_dirty:
                    self._status_dirty = False
                    await self._publish_status(client)
                    if not proved:
                        proved = True
                        self.link.session_up()  # a PUBACK came back: the path works
                if self._alarms is not None:
                    # The priority lane first, every turn: an alarm waits at most for the one
                    # telemetry message in flight, never for a backlog.
                    batch = self._alarms.read_batch(self._cfg["batch_size"], MAX_MESSAGE_BYTES)
                    if batch:
                        await client.publish(self.topic_alarm, self._message(batch), qos=1)
                        self._alarms.ack(batch[-1][0])
                        self.counters["alarms_sent"] += len(batch)
                        continue
                if publish is not None and self._downlink.pending():
                    # One request (or answer) per turn: telemetry keeps every other turn.
                    await self._downlink.process(publish)
                batch = self._store.read_batch(self._cfg["batch_size"], MAX_MESSAGE_BYTES)
                if not batch:
                    self._work.clear()
                    if publish is not None and self._downlink.pending():
                        continue
                    self.idle = True
                    try:
                        await self._work.wait()
                    finally:
                        self.idle = False
                    continue
                await client.publish(self.topic_telemetry, self._message(batch), qos=1)
                # Only a PUBACK releases records (SEND OK or a written socket proves nothing).
                self._store.ack(batch[-1][0])
                self.last_publish = ticks_ms()
                self.counters["sent"] += len(batch)
                self.counters["messages"] += 1
        finally:
            waker.cancel()
            await client.disconnect()

    def _message(self, batch):
        # The stored records are JSON already: sent as they are, one after the other (no
        # decoding, no re-encoding, no 4 KB block to find on a fragmented heap).
        parts = [self._head]
        for i, (_seq, payload) in enumerate(batch):
            if i:
                parts.append(b",")
            parts.append(payload)
        parts.append(b"]}")
        return parts

    async def _subscribe(self, client):
        """Subscribe to the downlink topics; the function publishing its answers, or None."""
        if self._downlink is None:
            return None
        from tracker.uplink.downlink import TOPICS

        try:
            for suffix in TOPICS:
                await client.subscribe(self._prefix + suffix, 1)
        except MqttSubscribeRefused as e:  # e.g. the broker's ACL: telemetry still flows
            log.w(_TAG, str(e))
            return None

        async def publish(suffix, payload, retain):
            await client.publish(self._prefix + suffix, payload, qos=1, retain=retain)

        return publish

    async def _wake_on_death(self, client):
        await client.wait_dead()
        self._work.set()

    async def _publish_status(self, client):
        body = {"state": "online", "device_id": self.device_id}
        body.update(self._status())
        body["uplink"] = self.counters
        body["mqtt"] = client.counters
        body["link"] = self.link.status()
        if self._downlink is not None:
            body["downlink"] = self._downlink.counters
        await client.publish(self.topic_status, json_parts(body), qos=1, retain=True)


_PART = 192  # bytes: the pieces json_parts() joins small values into


def json_parts(obj):
    """The JSON of the dict `obj` as a list of pieces of about _PART bytes (nested dicts
    walked key by key): the status message is 2-3 KB, and json.dumps() of it whole, or of
    one of its sections, needs that in one block (and a copy while it grows) on a heap a
    long run has fragmented; a piece per value would make the list itself a big block."""
    parts = [b""]
    _dict_parts(obj, parts)
    return parts


def _add(parts, piece):
    if len(parts[-1]) + len(piece) <= _PART:
        parts[-1] += piece
    else:
        parts.append(piece)


def _dict_parts(obj, parts):
    sep = b"{"
    for k in obj:
        v = obj[k]
        _add(parts, sep + json.dumps(k).encode() + b": ")
        if isinstance(v, dict) and v:
            _dict_parts(v, parts)
        else:
            _add(parts, json.dumps(v).encode())
        sep = b", "
    _add(parts, b"}" if sep == b", " else b"{}")
