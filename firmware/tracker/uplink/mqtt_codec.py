# MQTT 3.1.1 packet codec, the client's half: pure logic, bytes in and out, no I/O.
# Section numbers (e.g. 2.2.3) refer to the OASIS MQTT Version 3.1.1 specification.
# It encodes only what a client sends and decodes only what a server sends; the broker's half
# (CONNECT and (UN)SUBSCRIBE decoding, CONNACK/SUBACK/PUBLISH encoders) is test support in
# firmware/tests/mqtt_server_codec.py, so it takes no RAM on the device.
from tracker.aio import const

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

MAX_REMAINING = const(268435455)  # 2.2.3: four varint bytes of seven bits
SUBACK_FAILURE = const(0x80)  # 3.9.3

NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
    PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT",
}  # fmt: skip

# 2.2.2: the flag nibble every type but PUBLISH must carry.
_FLAGS = {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}
# Bodies that are only a packet id (2 bytes) or empty (0 bytes).
_BODY_LEN = {CONNACK: 2, PUBACK: 2, PUBREC: 2, PUBREL: 2, PUBCOMP: 2, UNSUBACK: 2,
             PINGREQ: 0, PINGRESP: 0, DISCONNECT: 0}  # fmt: skip

# Packets only a client sends (2.2.1 Table 2.1; 3.1, 3.8, 3.10, 3.12, 3.14): the device's Parser
# refuses them, a server sending one is out of step.
_TO_SERVER_ONLY = (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT)

PINGREQ_BYTES = b"\xc0\x00"  # 3.12
DISCONNECT_BYTES = b"\xe0\x00"  # 3.14


class MqttError(Exception):
    """Base of every MQTT error."""


class MqttProtocolError(MqttError):
    """Bytes that break the MQTT 3.1.1 rules, or arguments that would produce them."""

    # Not also a ValueError: MicroPython refuses two built-in exception bases in one class
    # ("multiple bases have instance lay-out conflict"), and MqttError must be the base.


class Packet:
    """One decoded packet. Only the fields its type uses are set; the rest keep these defaults."""

    pid = topic = payload = return_code = None
    granted = None  # SUBACK: list of granted QoS or SUBACK_FAILURE
    qos = 0
    retain = dup = session_present = False
    size = None  # PUBLISH skipped unread (Parser skip_big): its payload length; payload None

    def __init__(self, ptype):
        self.type = ptype


# ---- encoding ------------------------------------------------------------------------------
# Encoders build from a few small parts: they run once per connection or per publish, and the
# payload of a PUBLISH is never copied (publish_header).

_Err = MqttProtocolError


def _u16(n):
    return bytes((n >> 8, n & 0xFF))


def _packet(first, parts, extra=0):
    """Fixed header (2.2) + parts; `extra` counts payload bytes the caller writes itself."""
    body = b"".join(parts)
    rl = len(body) + extra
    if rl > MAX_REMAINING:
        raise _Err("remaining length %d over %d" % (rl, MAX_REMAINING))
    out = bytearray((first,))
    while True:  # 2.2.3: seven bits per byte, least significant first
        b = rl & 0x7F
        rl >>= 7
        out.append(b | 0x80 if rl else b)
        if not rl:
            out += body
            return out


def _field(value, what):
    """A UTF-8 string (1.5.3) or binary (1.5.1) field with its two-byte length prefix."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _Err("%s contains U+0000" % what)
        try:
            value = value.encode()
        except UnicodeError:  # lone surrogates on CPython
            raise _Err("%s is not valid UTF-8" % what)
    elif not isinstance(value, (bytes, bytearray, memoryview)):
        raise _Err("%s must be str or bytes, not %s" % (what, type(value).__name__))
    if len(value) > 65535:
        raise _Err("%s longer than 65535 bytes" % what)
    return _u16(len(value)) + value


def _pid(pid):
    if not isinstance(pid, int) or not 1 <= pid <= 65535:  # 2.3.1: non-zero 16 bit
        raise _Err("packet id %r outside 1..65535" % (pid,))
    return _u16(pid)


def _topic(topic):
    if not isinstance(topic, str) or not topic:
        raise _Err("topic must be a non-empty str")
    if "+" in topic or "#" in topic:  # 3.3.2.1: no wildcards in a topic name
        raise _Err("topic %r contains a wildcard" % topic)
    return _field(topic, "topic")


def _filter(flt):
    if not isinstance(flt, str) or not flt:
        raise _Err("topic filter must be a non-empty str")
    # 4.7.1: '#' only as the whole last level, '+' only as a whole level.
    levels = flt.split("/")
    for i, level in enumerate(levels):
        bad_hash = "#" in level and (level != "#" or i != len(levels) - 1)
        if bad_hash or ("+" in level and level != "+"):
            raise _Err("bad wildcard in topic filter %r" % flt)
    return _field(flt, "topic filter")


def _qos(qos, top, what):
    if not isinstance(qos, int) or isinstance(qos, bool) or not 0 <= qos <= top:
        raise _Err("%s QoS %r not in 0..%d" % (what, qos, top))
    return qos


def encode_connect(
    client_id, keepalive_s=60, clean_session=True, username=None, password=None, will=None
):
    """CONNECT (3.1). will is None or (topic, payload, qos, retain)."""
    if not isinstance(keepalive_s, int) or not 0 <= keepalive_s <= 65535:
        raise _Err("keepalive %r outside 0..65535 s" % (keepalive_s,))
    if not client_id and not clean_session:  # 3.1.3.1
        raise _Err("an empty client id needs clean_session")
    if password is not None and username is None:  # 3.1.2.9
        raise _Err("password without username")
    flags = 0x02 if clean_session else 0
    parts = [b"\x00\x04MQTT\x04", b"", _u16(keepalive_s), _field(client_id, "client id")]
    if will is not None:
        wtopic, wpayload, wqos, wretain = will
        flags |= 0x04 | _qos(wqos, 2, "will") << 3 | (0x20 if wretain else 0)
        parts += (_topic(wtopic), _field(wpayload, "will payload"))
    if username is not None:
        flags |= 0x80
        parts.append(_field(username, "username"))
    if password is not None:
        flags |= 0x40
        parts.append(_field(password, "password"))
    parts[1] = bytes((flags,))
    return bytes(_packet(CONNECT << 4, parts))


def publish_header(topic, payload_len, qos=0, retain=False, dup=False, pid=None):
    """Everything of a PUBLISH (3.3) before its payload, so a big payload is never copied."""
    if qos == 2:  # no PUBREC/PUBREL state machine here: QoS 1 + dedupe is the design
        raise _Err("QoS 2 publish is not supported; use QoS 1")
    _qos(qos, 1, "publish")
    if not qos and (dup or pid is not None):  # 3.3.1.1: DUP and packet id need QoS > 0
        raise _Err("QoS 0 publish takes no dup flag or packet id")
    parts = (_topic(topic), _pid(pid)) if qos else (_topic(topic),)
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    return _packet(first, parts, payload_len)


def encode_puback(pid):
    return bytes((PUBACK << 4, 2)) + _pid(pid)  # 3.4


def encode_subscribe(pid, filters):
    """SUBSCRIBE (3.8); filters is a non-empty list of (filter, qos)."""
    parts = [_pid(pid)]
    for flt, qos in filters:
        parts += (_filter(flt), bytes((_qos(qos, 2, "subscribe"),)))
    if len(parts) < 2:
        raise _Err("SUBSCRIBE needs at least one topic filter")
    return bytes(_packet(SUBSCRIBE << 4 | 2, parts))


def encode_unsubscribe(pid, filters):
    parts = [_pid(pid)] + [_filter(f) for f in filters]
    if len(parts) < 2:
        raise _Err("UNSUBSCRIBE needs at least one topic filter")
    return bytes(_packet(UNSUBSCRIBE << 4 | 2, parts))


# ---- decoding ------------------------------------------------------------------------------


def _valid_utf8(b):
    """What MicroPython's decoder lets through after checking the byte structure: overlong
    forms, UTF-16 surrogates and code points above U+10FFFF (RFC 3629, MQTT 1.5.3)."""
    n = len(b)
    for i in range(n):
        c = b[i]
        if c >= 0xC0:
            nxt = b[i + 1] if i + 1 < n else 0
            if (
                c < 0xC2
                or c > 0xF4
                or (c == 0xE0 and nxt < 0xA0)
                or (c == 0xED and nxt > 0x9F)
                or (c == 0xF0 and nxt < 0x90)
                or (c == 0xF4 and nxt > 0x8F)
            ):
                return False
    return True


def _get16(mv, pos, end, what):
    if pos + 2 > end:
        raise _Err("truncated %s" % what)
    return mv[pos] << 8 | mv[pos + 1], pos + 2


def _get_bin(mv, pos, end, what):
    n, pos = _get16(mv, pos, end, what)
    if pos + n > end:
        raise _Err("%s length %d runs past the packet" % (what, n))
    return bytes(mv[pos : pos + n]), pos + n


def _get_str(mv, pos, end, what):
    raw, pos = _get_bin(mv, pos, end, what)
    try:
        s = raw.decode()
    except UnicodeError:
        s = None
    # The decode alone is enough on CPython; MicroPython's needs _valid_utf8 for non-ASCII.
    if s is None or "\x00" in s or (len(s) != len(raw) and not _valid_utf8(raw)):  # 1.5.3
        raise _Err("%s is not valid MQTT UTF-8" % what)
    return s, pos


def _get_pid(mv, pos, end):
    pid, pos = _get16(mv, pos, end, "packet id")
    if not pid:
        raise _Err("packet id 0")  # 2.3.1
    return pid, pos


class Parser:
    """Incremental decoder: feed() bytes as they arrive, next_packet() until it returns None.

    A packet bigger than max_packet bytes is refused as soon as its header arrives, so memory
    stays bounded by max_packet plus one feed. After a MqttProtocolError the byte stream is
    out of step and the connection must be closed; the parser keeps raising from then on.

    skip_big: a PUBLISH bigger than max_packet is instead returned as soon as its topic (and
    packet id) are in, with payload None and size set, and its payload bytes are dropped as
    they arrive: a retained 100 KB message must not cost the heap, nor the connection (the
    broker would send it again at every connect, so dropping the link would loop forever).
    """

    def __init__(self, max_packet=16384, skip_big=False):
        self.max_packet = max_packet
        self.skip_big = skip_big
        self._skip = 0  # bytes still to drop of a skipped PUBLISH's payload
        self._buf = bytearray()
        self._broken = None

    def feed(self, data):
        if self._broken:
            raise _Err(self._broken)
        if self._skip:
            n = len(data)
            if n <= self._skip:
                self._skip -= n
                return
            data = data[self._skip :]
            self._skip = 0
        # Undrained bytes at the cap mean the caller never pops packets: refuse, not grow.
        if len(self._buf) >= self.max_packet:
            raise self._fail("parser holds %d bytes; pop packets between feeds" % len(self._buf))
        self._buf += data

    def buffered(self):
        return len(self._buf)

    def _decode(self, ptype, flags, mv, pos, end):
        """The packet whose body is mv[pos:end]. Only what a server sends a client; a subclass
        (the tests' ServerParser) overrides this to add the packets only a client sends."""
        p = Packet(ptype)
        if ptype == PUBLISH:
            p.dup = bool(flags & 8)
            p.qos = (flags >> 1) & 3
            p.retain = bool(flags & 1)
            p.topic, pos = _get_str(mv, pos, end, "topic")
            if not p.topic or "+" in p.topic or "#" in p.topic:  # 4.7.3, 3.3.2.1
                raise _Err("invalid topic name %r" % p.topic)
            if p.qos:
                p.pid, pos = _get_pid(mv, pos, end)
            p.payload = bytes(mv[pos:end])
            return p
        if ptype == CONNACK:
            if mv[pos] & 0xFE:  # 3.2.2.1
                raise _Err("CONNACK reserved flag bits set")
            p.session_present = bool(mv[pos])
            p.return_code = mv[pos + 1]
        elif ptype == SUBACK:  # packet id, then at least one return code (3.9.3)
            p.pid, pos = _get_pid(mv, pos, end)
            if pos == end:
                raise _Err("SUBACK without return codes")
            p.granted = list(mv[pos:end])
            for g in p.granted:
                if g > 2 and g != SUBACK_FAILURE:
                    raise _Err("SUBACK return code 0x%02x invalid" % g)
        elif ptype in _TO_SERVER_ONLY:
            raise _Err("%s is not sent to a client" % NAMES[ptype])
        elif end > pos:  # PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK; PINGRESP has no body
            p.pid = _get_pid(mv, pos, end)[0]
        return p

    def _fail(self, msg):
        self._broken = msg
        self._buf = bytearray()  # release the memory; nothing in it is usable any more
        return _Err(msg)

    def next_packet(self):
        """The next complete Packet, or None while more bytes are needed."""
        if self._broken:
            raise _Err(self._broken)
        buf = self._buf
        n = len(buf)
        if not n:
            return None
        first = buf[0]
        ptype = first >> 4
        flags = first & 0x0F
        # Check the first byte at once so garbage fails without waiting for a body (2.2.2).
        if ptype == PUBLISH:
            if flags & 6 == 6 or (flags & 8 and not flags & 6):  # QoS 3; DUP on QoS 0
                raise self._fail("PUBLISH flags 0x%x invalid" % flags)
        elif ptype < CONNECT or ptype > DISCONNECT:
            raise self._fail("reserved packet type %d" % ptype)
        elif flags != _FLAGS.get(ptype, 0):
            raise self._fail("%s flags 0x%x invalid" % (NAMES[ptype], flags))
        rl = 0
        shift = 0
        pos = 1
        while True:
            if pos >= n:
                return None
            b = buf[pos]
            rl |= (b & 0x7F) << shift
            pos += 1
            if not b & 0x80:
                break
            if pos == 5:
                raise self._fail("remaining length longer than 4 bytes")
            shift += 7
        fixed = _BODY_LEN.get(ptype)
        if fixed is not None and rl != fixed:
            raise self._fail("%s remaining length %d, expected %d" % (NAMES[ptype], rl, fixed))
        total = pos + rl
        if total > self.max_packet and ptype == PUBLISH and self.skip_big:
            return self._skipped(flags, pos, rl, n)
        if total > self.max_packet:
            raise self._fail(
                "%s of %d bytes exceeds limit %d" % (NAMES[ptype], total, self.max_packet)
            )
        if n < total:
            return None
        try:
            pkt = self._decode(ptype, flags, memoryview(buf), pos, total)
        except MqttProtocolError as e:
            raise self._fail(str(e))
        buf[0:total] = b""
        return pkt

    def _skipped(self, flags, pos, rl, n):
        """The PUBLISH at the head of the buffer without its payload (see skip_big)."""
        buf = self._buf
        if n < pos + 2:
            return None
        head = 2 + (buf[pos] << 8 | buf[pos + 1]) + (2 if flags & 6 else 0)
        if head > rl or pos + head > self.max_packet:
            raise self._fail("PUBLISH header of %d bytes does not fit" % head)
        if n < pos + head:
            return None
        try:
            pkt = self._decode(PUBLISH, flags, memoryview(buf), pos, pos + head)
        except MqttProtocolError as e:
            raise self._fail(str(e))
        pkt.payload = None
        pkt.size = rl - head
        drop = pos + rl if pos + rl < n else n
        buf[0:drop] = b""
        self._skip = pos + rl - drop
        return pkt


class PacketIds:
    """Packet id allocator (2.3.1): counts 1..65535, wraps to 1, skips ids still in flight."""

    def __init__(self):
        self._last = 0
        self._busy = set()

    def allocate(self):
        if len(self._busy) >= 65535:
            raise MqttError("all 65535 packet ids in flight")
        pid = self._last
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid not in self._busy:
                break
        self._last = pid
        self._busy.add(pid)
        return pid

    def release(self, pid):
        self._busy.discard(pid)

    def in_flight(self):
        return len(self._busy)
