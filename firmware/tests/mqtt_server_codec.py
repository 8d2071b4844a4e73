# The broker's half of the MQTT 3.1.1 codec, for tests and fake brokers: decoding the packets
# only a client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT) and encoding the
# ones only a server sends. It runs on CPython and the MicroPython Unix port like the tests, and
# never goes onto the device: host_tools/image.py and the boards' frozen manifests take
# firmware/boot.py, main.py and tracker/ only. Section numbers are MQTT 3.1.1's.
from tracker.uplink.mqtt_codec import (
    _FLAGS,
    CONNACK,
    CONNECT,
    DISCONNECT,
    NAMES,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBACK_FAILURE,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    MqttProtocolError,
    Packet,
    Parser,
    _filter,
    _get_bin,
    _get_pid,
    _get_str,
    _packet,
    _pid,
    publish_header,
)

PINGRESP_BYTES = b"\xd0\x00"  # 3.13


# ---- encoding what a server sends --------------------------------------------------------


def encode_connack(return_code, session_present=False):
    return bytes((CONNACK << 4, 2, 1 if session_present else 0, return_code & 0xFF))  # 3.2


def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=None):
    """A whole PUBLISH (3.3), payload included (the client writes publish_header + payload)."""
    if isinstance(payload, str):
        payload = payload.encode()
    buf = publish_header(topic, len(payload), qos, retain, dup, pid)
    buf += payload
    return bytes(buf)


def encode_pid_ack(ptype, pid):
    """PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK: fixed header plus packet id."""
    if ptype not in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        raise MqttProtocolError("type %r takes more than a packet id" % (ptype,))
    return bytes((ptype << 4 | _FLAGS.get(ptype, 0), 2)) + _pid(pid)


def encode_suback(pid, granted):
    for g in granted:
        if g not in (0, 1, 2, SUBACK_FAILURE):  # 3.9.3
            raise MqttProtocolError("SUBACK return code %r invalid" % (g,))
    if not granted:
        raise MqttProtocolError("SUBACK needs at least one return code")
    return bytes(_packet(SUBACK << 4, (_pid(pid), bytes(granted))))


# ---- decoding what a client sends ----------------------------------------------------------


class ServerParser(Parser):
    """The device's Parser plus the packets only a client sends, as a broker decodes them.

    CONNECT sets client_id, keepalive, clean_session, username, password and will (topic,
    payload, qos, retain); SUBSCRIBE sets filters to [(filter, qos)], UNSUBSCRIBE to [filter].
    """

    def _decode(self, ptype, flags, mv, pos, end):
        if ptype == CONNECT:
            p = Packet(ptype)
            pos = _decode_connect(p, mv, pos, end)
        elif ptype == SUBSCRIBE or ptype == UNSUBSCRIBE:
            p = Packet(ptype)
            pos = _decode_filters(p, mv, pos, end)
        elif ptype == PINGREQ or ptype == DISCONNECT:
            return Packet(ptype)  # next_packet checked that the body is empty
        else:
            return super()._decode(ptype, flags, mv, pos, end)
        if pos != end:
            raise MqttProtocolError("%s has %d stray bytes" % (NAMES[ptype], end - pos))
        return p


def _decode_connect(p, mv, pos, end):
    name, pos = _get_bin(mv, pos, end, "protocol name")
    if name != b"MQTT" or pos + 4 > end or mv[pos] != 4:  # 3.1.2.1, 3.1.2.2
        raise MqttProtocolError("not an MQTT 3.1.1 CONNECT")
    flags = mv[pos + 1]
    wqos = (flags >> 3) & 3
    # 3.1.2.3 reserved bit; 3.1.2.11 will QoS/retain only with a will; 3.1.2.9
    if flags & 1 or wqos == 3 or (not flags & 4 and flags & 0x38) or flags & 0xC0 == 0x40:
        raise MqttProtocolError("CONNECT flags 0x%02x invalid" % flags)
    p.clean_session = bool(flags & 0x02)
    p.keepalive = mv[pos + 2] << 8 | mv[pos + 3]
    p.client_id, pos = _get_str(mv, pos + 4, end, "client id")
    p.will = p.username = p.password = None
    if flags & 0x04:
        wtopic, pos = _get_str(mv, pos, end, "will topic")
        wpayload, pos = _get_bin(mv, pos, end, "will payload")
        p.will = (wtopic, wpayload, wqos, bool(flags & 0x20))
    if flags & 0x80:
        p.username, pos = _get_str(mv, pos, end, "username")
    if flags & 0x40:
        p.password, pos = _get_bin(mv, pos, end, "password")
    return pos


def _decode_filters(p, mv, pos, end):
    """SUBSCRIBE (3.8.3) or UNSUBSCRIBE (3.10.3): packet id, then at least one topic filter."""
    p.pid, pos = _get_pid(mv, pos, end)
    if pos == end:
        raise MqttProtocolError("%s without topic filters" % NAMES[p.type])
    p.filters = []
    while pos < end:
        flt, pos = _get_str(mv, pos, end, "topic filter")
        _filter(flt)
        if p.type == SUBSCRIBE:
            if pos >= end or mv[pos] > 2:  # 3.8.3.1: reserved bits zero, QoS 0..2
                raise MqttProtocolError("SUBSCRIBE filter %r without a valid QoS byte" % flt)
            flt = (flt, mv[pos])
            pos += 1
        p.filters.append(flt)
    return pos


# ---- comparing packets -----------------------------------------------------------------------


def fields(pkt):
    """A packet's decoded fields (type included) as a dict, for tests that compare packets:
    the device's Packet has no __eq__, since the client never compares two."""
    return dict(pkt.__dict__)
