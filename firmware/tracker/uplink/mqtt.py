# MQTT 3.1.1 client over any stream: a TCP socket from asyncio.open_connection today, a
# cellular modem socket later. The stream needs `await read(n)` (b"" at EOF), `write(data)`,
# `await drain()`, `close()` and, optionally, `await wait_closed()`.
#
# The client keeps no retry loops (STYLE.md 7): every failure is a typed error, and when the
# link dies the client closes the stream, wakes every waiter with MqttLinkDead and sets
# `dead`, so the supervisor in `cloud` decides about reconnects and backoff.
from tracker import log
from tracker.aio import TimeoutError, asyncio, sleep_ms, ticks_diff, ticks_ms, wait_for_ms
from tracker.uplink import mqtt_codec as codec
from tracker.uplink.mqtt_codec import MqttError, MqttProtocolError  # also the client's errors

_TAG = "mqtt"
_READ_CHUNK = 512

# 3.2.2.3, Table 3.1
CONNACK_MEANING = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MqttTimeout(MqttError):
    """No answer to `what` within `ms` milliseconds."""

    def __init__(self, what, ms):
        super().__init__("%s: no answer within %d ms" % (what, ms))
        self.what = what
        self.ms = ms


class MqttConnectRefused(MqttError):
    """The broker answered CONNECT with a non-zero CONNACK return code."""

    def __init__(self, code):
        self.code = code
        self.meaning = CONNACK_MEANING.get(code, "reserved code")
        super().__init__("connection refused, code %d: %s" % (code, self.meaning))


class MqttLinkDead(MqttError):
    """The connection is gone (EOF, keepalive expired, protocol error, I/O error)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class MqttSubscribeRefused(MqttError):
    """SUBACK carried the failure code 0x80 (3.9.3) for this filter."""

    def __init__(self, topic):
        super().__init__("subscription to %r refused" % topic)
        self.topic = topic


class MqttClient:
    def __init__(
        self,
        client_id,
        *,
        keepalive_s=60,
        username=None,
        password=None,
        clean_session=True,
        will=None,
        on_message=None,
        timeout_ms=10000,
        max_packet=16384,
        skip_big=False,
    ):
        # Encode once now, so a bad id/will/credential fails at construction, not at connect.
        self._connect_bytes = codec.encode_connect(
            client_id, keepalive_s, clean_session, username, password, will
        )
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.on_message = on_message
        self.timeout_ms = timeout_ms
        self.max_packet = max_packet
        # A PUBLISH over max_packet: False drops the link (protocol error); True reads past
        # its payload and hands on_message None for it (mqtt_codec.Parser, skip_big).
        self.skip_big = skip_big
        self.session_present = False
        self.counters = {
            "pings": 0,
            "pingresp": 0,
            "published": 0,
            "received": 0,
            "puback_timeouts": 0,
            "unexpected_acks": 0,
            "protocol_errors": 0,
            "link_deaths": 0,
            "oversized": 0,
        }
        self._ids = codec.PacketIds()
        self._stream = None
        self._reader = self._pinger = None
        self._waiting = {}  # pid -> [Event, expected packet type, answer packet or None]
        self._dead = "not connected"
        self._dead_ev = asyncio.Event()
        self._dead_ev.set()

    # ---- state the supervisor reads ----------------------------------------------------

    @property
    def dead(self):
        """True unless the link is up (also before connect and after disconnect)."""
        return self._dead is not None

    @property
    def dead_reason(self):
        return self._dead

    async def wait_dead(self):
        """Returns the reason once the link is down; the supervisor's own deadline applies."""
        await self._dead_ev.wait()
        return self._dead

    def in_flight(self):
        return self._ids.in_flight()

    # ---- connection --------------------------------------------------------------------

    async def connect(self, stream):
        """Send CONNECT, wait for CONNACK, start the reader and keepalive tasks."""
        if self._dead is None:
            raise MqttError("already connected")
        await self._stop_tasks()
        self._stream = stream
        # Packet ids of requests from a dead link stay taken until their tasks have run and
        # released them, so a late wake-up can never release an id a new request uses.
        self._parser = codec.Parser(self.max_packet, self.skip_big)
        self._connack = None
        self._connack_ev = asyncio.Event()
        self._rx_ev = asyncio.Event()
        self._dead_ev = asyncio.Event()
        self._wlock = asyncio.Lock()
        self._last_tx = self._last_rx = ticks_ms()
        self._dead = None
        self._pinger = None
        self._reader = asyncio.create_task(self._read_loop())
        try:
            await self._send(self._connect_bytes)
            try:
                await wait_for_ms(self._connack_ev.wait(), self.timeout_ms)
            except TimeoutError:
                raise MqttTimeout("CONNACK", self.timeout_ms)
            if self._connack is None:  # woken because the link died meanwhile
                raise MqttLinkDead(self._dead)
            if self._connack.return_code:
                raise MqttConnectRefused(self._connack.return_code)
        except BaseException as e:  # also cancellation: never leave a half-open link behind
            self._kill("connect failed: %s" % (e,), count=False)
            await self._stop_tasks()
            raise
        self.session_present = self._connack.session_present
        if self.keepalive_s:
            self._pinger = asyncio.create_task(self._keepalive())
        log.i(_TAG, "connected as %s" % self.client_id)

    async def disconnect(self):
        """Send DISCONNECT (so the broker drops the will), close the stream, stop the tasks."""
        if self._stream is None:
            return
        if self._dead is None:
            try:
                await self._send(codec.DISCONNECT_BYTES)
            except MqttError:
                pass  # dying anyway; _send already closed the link
            self._kill("disconnected", count=False)
        await self._stop_tasks()
        wait_closed = getattr(self._stream, "wait_closed", None)
        if wait_closed is not None:
            try:
                await wait_for_ms(wait_closed(), self.timeout_ms)
            except (TimeoutError, OSError):
                pass  # the stream is closed on our side; nothing more to wait for

    # ---- requests ----------------------------------------------------------------------

    async def publish(self, topic, payload, qos=0, retain=False):
        """Publish; for QoS 1 wait for the PUBACK and return the packet id (None for QoS 0).

        MqttTimeout means no PUBACK in time: the message may or may not have arrived, and
        retrying is the caller's decision (with dedupe downstream that is always safe).
        `payload` may be a list of bytes, sent one after the other: a large message then
        never needs one contiguous block of heap, which a fragmented ESP32 heap may not have.
        """
        if isinstance(payload, str):
            payload = payload.encode()
        if self._dead is not None:
            raise MqttLinkDead(self._dead)
        size = _size(payload)
        if not qos:
            await self._send(codec.publish_header(topic, size, 0, retain), payload)
            self.counters["published"] += 1
            return None
        pid = self._ids.allocate()
        try:
            header = codec.publish_header(topic, size, qos, retain, False, pid)
            try:
                await self._request(
                    pid, codec.PUBACK, "PUBACK for packet id %d" % pid, header, payload
                )
            except MqttTimeout:
                self.counters["puback_timeouts"] += 1
                raise
        finally:
            # A late PUBACK for this id only meets a new request after 65534 more ids.
            self._ids.release(pid)
        self.counters["published"] += 1
        return pid

    async def subscribe(self, topic, qos=0):
        """Subscribe to one filter and return the granted QoS."""
        if qos not in (0, 1):  # QoS 2 deliveries would need a PUBREC/PUBREL flow we lack
            raise MqttProtocolError("subscribe QoS %r not supported (0 or 1)" % (qos,))
        pid = self._ids.allocate()
        try:
            data = codec.encode_subscribe(pid, [(topic, qos)])
            ack = await self._request(pid, codec.SUBACK, "SUBACK for " + topic, data)
        finally:
            self._ids.release(pid)
        if len(ack.granted) != 1:
            err = MqttProtocolError("SUBACK has %d codes for 1 filter" % len(ack.granted))
            self._protocol_error(err)
            raise err
        if ack.granted[0] == codec.SUBACK_FAILURE:
            raise MqttSubscribeRefused(topic)
        return ack.granted[0]

    async def unsubscribe(self, topic):
        pid = self._ids.allocate()
        try:
            data = codec.encode_unsubscribe(pid, [topic])
            await self._request(pid, codec.UNSUBACK, "UNSUBACK for " + topic, data)
        finally:
            self._ids.release(pid)

    async def _request(self, pid, answer_type, what, data, payload=None):
        """Send a packet carrying `pid` and return the matching answer packet."""
        if self._dead is not None:
            raise MqttLinkDead(self._dead)
        # Registered before sending: the answer may arrive while we are still draining.
        waiter = [asyncio.Event(), answer_type, None]
        self._waiting[pid] = waiter
        try:
            await self._send(data, payload)
            try:
                await wait_for_ms(waiter[0].wait(), self.timeout_ms)
            except TimeoutError:
                raise MqttTimeout(what, self.timeout_ms)
        finally:
            if self._waiting.get(pid) is waiter:  # _kill may have emptied the table already
                del self._waiting[pid]
        if waiter[2] is None:  # woken by _kill
            raise MqttLinkDead(self._dead)
        return waiter[2]

    # ---- I/O ---------------------------------------------------------------------------

    async def _send(self, data, payload=None):
        # One writer at a time: interleaved packets would corrupt the stream, and
        # MicroPython's Stream.drain() must not run twice at once on one socket.
        async with self._wlock:
            if self._dead is not None:
                raise MqttLinkDead(self._dead)
            stream = self._stream
            try:
                stream.write(data)
                if isinstance(payload, list):
                    for part in payload:
                        stream.write(part)
                elif payload:
                    stream.write(payload)
                await wait_for_ms(stream.drain(), self.timeout_ms)
            except TimeoutError:
                # Part of a packet may be out: the stream cannot be trusted any more.
                self._kill("send stalled for %d ms" % self.timeout_ms)
                raise MqttTimeout("send", self.timeout_ms)
            except OSError as e:
                self._kill("send failed: %s" % (e,))
                raise MqttLinkDead(self._dead)
            self._last_tx = ticks_ms()

    async def _read_loop(self):
        parser = self._parser
        try:
            while True:
                data = await self._stream.read(_READ_CHUNK)
                if not data:
                    self._kill("EOF from broker")
                    return
                parser.feed(data)
                while True:
                    pkt = parser.next_packet()
                    if pkt is None:
                        break
                    await self._handle(pkt)
        except MqttProtocolError as e:
            self._protocol_error(e)
        except MqttError as e:  # from _send (PUBACK): the link is already marked dead
            self._kill(str(e))
        except Exception as e:  # OSError from the socket, or a bug: either way the link is over
            self._kill("read failed: %s: %s" % (type(e).__name__, e))

    async def _handle(self, pkt):
        self._last_rx = ticks_ms()
        self._rx_ev.set()  # any packet proves the link alive to a pending keepalive check
        t = pkt.type
        if self._connack is None:
            if t != codec.CONNACK:  # 3.2: CONNACK is the first packet from the server
                raise MqttProtocolError("%s before CONNACK" % codec.NAMES[t])
            self._connack = pkt
            self._connack_ev.set()
        elif t == codec.PUBLISH:
            if pkt.qos == 2:
                raise MqttProtocolError("QoS 2 PUBLISH, but we never subscribe with QoS 2")
            self.counters["received"] += 1
            if pkt.payload is None:
                self.counters["oversized"] += 1
                log.w(_TAG, "%d byte message on %s skipped unread" % (pkt.size, pkt.topic))
            if self.on_message is not None:
                try:
                    self.on_message(pkt.topic, pkt.payload, pkt.retain)
                except Exception as e:  # a handler bug must not take the link down
                    log.exc(_TAG, e)
            if pkt.qos == 1:  # acked after the handler ran: at-least-once delivery
                await self._send(codec.encode_puback(pkt.pid))
        elif t in (codec.PUBACK, codec.SUBACK, codec.UNSUBACK):
            waiter = self._waiting.get(pkt.pid)
            if waiter is None or waiter[1] != t:
                # Typically an answer that came after its request timed out: harmless.
                self.counters["unexpected_acks"] += 1
                log.w(_TAG, "unexpected %s for packet id %d" % (codec.NAMES[t], pkt.pid))
                return
            waiter[2] = pkt
            waiter[0].set()
        elif t == codec.PINGRESP:
            self.counters["pingresp"] += 1
        else:
            raise MqttProtocolError("unexpected %s from broker" % codec.NAMES[t])

    async def _keepalive(self):
        # 3.1.2.10: a control packet at least every keepalive_s. We also ping when nothing
        # was *received* for that long, so a half-open link is found even while we only send
        # QoS 0 (TCP would accept those writes into a dead connection for minutes).
        period = self.keepalive_s * 1000
        try:
            while True:
                now = ticks_ms()
                idle = max(ticks_diff(now, self._last_tx), ticks_diff(now, self._last_rx))
                if idle < period:
                    await sleep_ms(period - idle)
                    continue
                self._rx_ev.clear()
                await self._send(codec.PINGREQ_BYTES)
                self.counters["pings"] += 1
                try:
                    await wait_for_ms(self._rx_ev.wait(), self.timeout_ms)
                except TimeoutError:
                    self._kill("no PINGRESP within %d ms" % self.timeout_ms)
                    return
        except MqttError:
            pass  # _send has already declared the link dead
        except Exception as e:
            self._kill("keepalive failed: %s: %s" % (type(e).__name__, e))

    def _protocol_error(self, err):
        self.counters["protocol_errors"] += 1
        self._kill("protocol error: %s" % (err,))

    def _kill(self, reason, count=True):
        """Declare the link dead: close the stream, stop the tasks, wake every waiter."""
        if self._dead is not None:
            return
        self._dead = reason
        if count:
            self.counters["link_deaths"] += 1
            log.w(_TAG, "link dead: " + reason)
        else:
            log.i(_TAG, reason)
        me = asyncio.current_task()
        for task in (self._reader, self._pinger):
            if task is not None and task is not me:
                task.cancel()  # cancelled first, so no task is left polling a closed socket
        try:
            self._stream.close()
        except Exception as e:  # closing a broken socket may fail; it is gone either way
            log.d(_TAG, "close: %s" % (e,))
        for waiter in self._waiting.values():
            waiter[0].set()  # answer still None: the waiter raises MqttLinkDead
        self._waiting = {}  # nothing from a later connection may complete these
        self._connack_ev.set()
        self._dead_ev.set()

    async def _stop_tasks(self):
        me = asyncio.current_task()
        for task in (self._reader, self._pinger):
            if task is not None and task is not me:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:  # the tasks end in nothing else: they catch all
                    pass
        self._reader = self._pinger = None


def _size(payload):
    if isinstance(payload, list):
        n = 0
        for part in payload:
            n += len(part)
        return n
    return len(payload)
