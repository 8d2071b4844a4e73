# MQTT 3.1.1 codec: spec byte vectors, round trips, boundaries and malformed input, for the
# device's client half (tracker.uplink.mqtt_codec) and the tests' broker half (mqtt_server_codec).
# Runs under pytest (CPython) and firmware/tests/run_mp.py (MicroPython Unix port).
import mqtt_server_codec as s
from mptest import raises
from mqtt_server_codec import ServerParser, fields

from tracker.uplink import mqtt_codec as c
from tracker.uplink.mqtt_codec import MqttProtocolError, Packet, Parser


def parse_all(data, max_packet=16384, parser=Parser):
    """Every packet in data, decoded by the device's Parser unless told otherwise."""
    p = parser(max_packet)
    p.feed(data)
    out = []
    while True:
        pkt = p.next_packet()
        if pkt is None:
            assert p.buffered() == 0, "trailing bytes left in the parser"
            return out
        out.append(pkt)


def parse_one(data, max_packet=16384, parser=Parser):
    pkts = parse_all(data, max_packet, parser)
    assert len(pkts) == 1, [fields(p) for p in pkts]
    return pkts[0]


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


# ---- spec byte vectors --------------------------------------------------------------------

# 3.1.2.10 non-normative example: flags 0xCE (user, password, will QoS 1, will, clean
# session) and keepalive 10; the payload fields follow in the order of 3.1.3.
CONNECT_VECTOR = h(
    "10 1b 0004 4d515454 04 ce 000a  0001 63  0001 77  0003 627965  0001 75  0001 70"
)


def test_connect_matches_spec_example():
    data = c.encode_connect("c", 10, True, "u", b"p", ("w", b"bye", 1, False))
    assert data == CONNECT_VECTOR
    p = parse_one(data, parser=ServerParser)
    assert p.type == c.CONNECT and p.client_id == "c" and p.keepalive == 10
    assert p.clean_session and p.username == "u" and p.password == b"p"
    assert p.will == ("w", b"bye", 1, False)


def test_publish_matches_spec_example():
    # 3.3.2.3: topic "a/b", packet id 10
    data = s.encode_publish("a/b", b"hi", qos=1, pid=10)
    assert data == h("32 09 0003 612f62 000a 6869")
    p = parse_one(data)
    assert (p.topic, p.payload, p.qos, p.pid) == ("a/b", b"hi", 1, 10)
    assert not p.retain and not p.dup


def test_subscribe_matches_spec_example():
    # 3.8.2 / 3.8.3: packet id 10, "a/b" QoS 1, "c/d" QoS 2; fixed header flags 0b0010
    data = c.encode_subscribe(10, [("a/b", 1), ("c/d", 2)])
    assert data == h("82 0e 000a 0003 612f62 01 0003 632f64 02")
    assert parse_one(data, parser=ServerParser).filters == [("a/b", 1), ("c/d", 2)]


def test_suback_example_with_failure_code():
    # 3.9.3: granted 0, 1, 2 and failure 0x80
    p = parse_one(h("90 06 000a 00 01 02 80"))
    assert p.type == c.SUBACK and p.pid == 10 and p.granted == [0, 1, 2, 0x80]
    assert s.encode_suback(10, [0, 1, 2, 0x80]) == h("90 06 000a 00 01 02 80")


def test_utf8_example_from_spec():
    # 1.5.3.1: "A" + U+2A6D4 encodes as 00 05 41 F0 AA 9B 94
    topic = "A\U0002a6d4"
    data = s.encode_publish(topic, b"")
    assert data == h("30 07 0005 41f0aa9b94")
    assert parse_one(data).topic == topic


def test_fixed_two_byte_packets():
    assert c.PINGREQ_BYTES == h("c0 00")
    assert c.DISCONNECT_BYTES == h("e0 00")
    assert s.PINGRESP_BYTES == h("d0 00")
    assert s.encode_connack(0) == h("20 02 00 00")
    assert s.encode_connack(0, session_present=True) == h("20 02 01 00")
    assert c.encode_puback(0x1234) == h("40 02 1234")
    assert s.encode_pid_ack(c.PUBACK, 0x1234) == h("40 02 1234")
    assert s.encode_pid_ack(c.PUBREL, 1) == h("62 02 0001")
    assert parse_one(h("d0 00")).type == c.PINGRESP
    assert [p.type for p in parse_all(h("c0 00 d0 00 e0 00"), parser=ServerParser)] == [
        c.PINGREQ,
        c.PINGRESP,
        c.DISCONNECT,
    ]


# ---- remaining length ---------------------------------------------------------------------

RL_VECTORS = [  # 2.2.3 Table 2.4 and the boundaries on either side
    (0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
    (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f"),
]  # fmt: skip


def test_remaining_length_encoding_boundaries():
    for rl, enc in RL_VECTORS:
        if rl < 3:
            continue  # a PUBLISH body is at least a 2-byte length plus a 1-byte topic
        header = c.publish_header("t", rl - 3)
        assert bytes(header[1:-3]) == h(enc), (rl, bytes(header))


def test_remaining_length_decoding_boundaries():
    for rl in (127, 128):
        p = parse_one(s.encode_publish("t", bytes(rl - 3)))
        assert len(p.payload) == rl - 3
    # For big sizes only the header is fed (the test heap is small): a parser whose limit is
    # exactly the packet's total size waits for the body, one byte less refuses it, which
    # pins the decoded length to the exact value.
    for rl, enc in RL_VECTORS[2:]:
        header = h("30" + enc)
        total = len(header) + rl
        p = Parser(max_packet=total)
        p.feed(header)
        assert p.next_packet() is None
        p = Parser(max_packet=total - 1)
        p.feed(header)
        with raises(MqttProtocolError):
            p.next_packet()


def test_remaining_length_over_limit_is_refused():
    c.publish_header("t", 268435455 - 3)  # the largest legal packet: fine
    with raises(MqttProtocolError):
        c.publish_header("t", 268435455 - 2)
    p = Parser()
    p.feed(h("30 ff ff ff ff 7f"))  # a fifth length byte
    with raises(MqttProtocolError) as e:
        p.next_packet()
    assert "4 bytes" in str(e.value)


# ---- round trips and splitting ------------------------------------------------------------


def sample_packets():
    """Every packet type, in type order; the server-only ones from mqtt_server_codec."""
    return [
        c.encode_connect("dev-1", 60),
        c.encode_connect("", 0, True, None, None, ("s/t", b"", 2, True)),
        c.encode_connect("x" * 300, 65535, False, "user", "pass"),
        s.encode_connack(5),
        s.encode_publish("albatross/d1/up", b"\x00\xff" * 200, qos=1, retain=True, pid=65535),
        s.encode_publish("a", "text", dup=False),
        s.encode_publish("a", b"", qos=1, dup=True, pid=1),
        c.encode_puback(7),
        s.encode_pid_ack(c.PUBREC, 8),
        s.encode_pid_ack(c.PUBREL, 9),
        s.encode_pid_ack(c.PUBCOMP, 10),
        c.encode_subscribe(3, [("a/+/c", 0), ("#", 1), ("+", 2)]),
        s.encode_suback(3, [0, 0x80, 2]),
        c.encode_unsubscribe(4, ["a/#", "b"]),
        s.encode_pid_ack(c.UNSUBACK, 4),
        c.PINGREQ_BYTES,
        s.PINGRESP_BYTES,
        c.DISCONNECT_BYTES,
    ]


# 2.2.1 Table 2.1: the rest (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT) only a
# client sends, and only the broker's ServerParser decodes them.
SENT_BY_A_SERVER = (c.CONNACK, c.PUBLISH, c.PUBACK, c.PUBREC, c.PUBREL, c.PUBCOMP, c.SUBACK,
                    c.UNSUBACK, c.PINGRESP)  # fmt: skip


def server_sent_packets():
    return [d for d in sample_packets() if d[0] >> 4 in SENT_BY_A_SERVER]


def test_every_packet_type_round_trips_through_the_server_parser():
    got = parse_all(b"".join(sample_packets()), parser=ServerParser)
    types = [p.type for p in got]
    assert types == [1, 1, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert got[1].will == ("s/t", b"", 2, True) and got[1].client_id == ""
    assert got[2].client_id == "x" * 300 and not got[2].clean_session
    assert got[2].password == b"pass" and got[2].keepalive == 65535
    assert got[3].return_code == 5 and not got[3].session_present
    assert got[4].retain and got[4].pid == 65535 and got[4].payload == b"\x00\xff" * 200
    assert got[5].payload == b"text" and got[5].qos == 0 and got[5].pid is None
    assert got[6].dup and got[6].payload == b""
    assert [p.pid for p in got[7:11]] == [7, 8, 9, 10]
    assert got[11].filters == [("a/+/c", 0), ("#", 1), ("+", 2)]
    assert got[12].granted == [0, 0x80, 2]
    assert got[13].filters == ["a/#", "b"] and got[14].pid == 4


def test_device_parser_decodes_every_packet_a_server_sends():
    got = parse_all(b"".join(server_sent_packets()))
    assert [p.type for p in got] == [2, 3, 3, 3, 4, 5, 6, 7, 9, 11, 13]
    assert got[0].return_code == 5 and not got[0].session_present
    assert got[1].retain and got[1].pid == 65535 and got[1].payload == b"\x00\xff" * 200
    assert got[2].payload == b"text" and got[2].qos == 0 and got[2].pid is None
    assert got[3].dup and got[3].payload == b""
    assert [p.pid for p in got[4:8]] == [7, 8, 9, 10]
    assert got[8].pid == 3 and got[8].granted == [0, 0x80, 2]
    assert got[9].pid == 4


def test_device_parser_refuses_packets_only_a_client_sends():
    only_from_clients = [
        c.encode_connect("dev-1", 60),
        c.encode_subscribe(1, [("a/b", 1)]),
        c.encode_unsubscribe(2, ["a/b"]),
        c.PINGREQ_BYTES,
        c.DISCONNECT_BYTES,
    ]
    for data in only_from_clients:
        ptype = data[0] >> 4
        p = Parser()
        p.feed(s.PINGRESP_BYTES + data)
        assert p.next_packet().type == c.PINGRESP  # what came before is still delivered
        with raises(MqttProtocolError) as e:
            p.next_packet()
        assert str(e.value) == "%s is not sent to a client" % c.NAMES[ptype]
        with raises(MqttProtocolError):  # and the stream stays refused
            p.next_packet()
        assert parse_one(data, parser=ServerParser).type == ptype  # a broker takes it


def test_parser_reassembles_byte_by_byte_feeds():
    for parser, packets in ((Parser, server_sent_packets()), (ServerParser, sample_packets())):
        stream = b"".join(packets)
        whole = parse_all(stream, parser=parser)
        assert len(whole) == len(packets)
        p = parser()
        got = []
        for i in range(len(stream)):
            p.feed(stream[i : i + 1])
            pkt = p.next_packet()
            while pkt is not None:
                got.append(pkt)
                pkt = p.next_packet()
        assert [fields(p) for p in got] == [fields(p) for p in whole]


def test_packet_fields_tell_packets_apart():
    a = parse_one(c.encode_puback(1))
    assert fields(a) == {"type": c.PUBACK, "pid": 1}
    assert fields(a) == fields(parse_one(c.encode_puback(1)))
    assert fields(a) != fields(parse_one(c.encode_puback(2)))
    assert fields(a) != fields(Packet(c.PUBACK))


# ---- malformed input ----------------------------------------------------------------------

MALFORMED = [
    ("00 00", "reserved type 0"),
    ("f0 00", "reserved type 15"),
    ("41 02 0001", "PUBACK with flags"),
    ("80 06 0001 0001 61 00", "SUBSCRIBE without flag 0b0010"),
    ("36 05 0001 61 0001", "PUBLISH QoS 3"),
    ("38 03 0001 61", "DUP on QoS 0"),
    ("20 03 000000", "CONNACK too long"),
    ("d0 01 00", "PINGRESP with a body"),
    ("20 02 02 00", "CONNACK reserved flags"),
    ("40 02 0000", "packet id 0"),
    ("30 03 0005 61", "topic length past the end"),
    ("30 01 00", "truncated topic length"),
    ("30 02 0000", "empty topic"),
    ("30 03 0001 2b", "wildcard in a topic name"),
    ("30 03 0001 ff", "invalid UTF-8"),
    ("30 04 0002 c080", "overlong UTF-8 NUL"),
    ("30 05 0003 eda080", "UTF-16 surrogate in UTF-8"),
    ("30 05 0003 e08080", "overlong three-byte UTF-8"),
    ("30 06 0004 f0808080", "overlong four-byte UTF-8"),
    ("30 06 0004 f4908080", "UTF-8 above U+10FFFF"),
    ("30 06 0004 f5808080", "UTF-8 lead byte F5"),
    ("30 05 0003 e48041", "bad UTF-8 continuation byte"),
    ("30 03 0001 c3", "truncated UTF-8 sequence"),
    ("30 03 0001 00", "U+0000 in a topic"),
    ("32 04 0001 61 00", "QoS 1 PUBLISH without a whole packet id"),
    ("90 02 0001", "SUBACK without codes"),
    ("90 03 0001 03", "SUBACK code 3"),
    ("82 02 0001", "SUBSCRIBE without filters"),
    ("82 05 0001 0001 61", "SUBSCRIBE filter without QoS"),
    ("82 06 0001 0001 61 03", "SUBSCRIBE QoS 3"),
    ("82 08 0001 0003 612361 00", "SUBSCRIBE bad wildcard"),
    ("a2 02 0001", "UNSUBSCRIBE without filters"),
    ("10 0c 0004 4d515454 05 02 003c 0000", "protocol level 5"),
    ("10 0c 0004 4d515458 04 02 003c 0000", "wrong protocol name"),
    ("10 0c 0004 4d515454 04 03 003c 0000", "CONNECT reserved flag"),
    ("10 0c 0004 4d515454 04 42 003c 0000", "password without username"),
    ("10 0c 0004 4d515454 04 22 003c 0000", "will retain without will"),
    ("10 0e 0004 4d515454 04 02 003c 0000 0000", "stray bytes after CONNECT"),
    ("10 0c 0004 4d515454 04 06 003c 0000", "will flag but no will fields"),
]


def test_malformed_packets_raise_protocol_error():
    for parser in (Parser, ServerParser):
        for text, why in MALFORMED:
            p = parser()
            p.feed(h(text))
            try:
                pkt = p.next_packet()
            except MqttProtocolError:
                continue
            raise AssertionError("%s: %s parsed %r" % (why, parser.__name__, fields(pkt)))


def test_parser_stays_broken_after_an_error():
    p = Parser()
    p.feed(h("00 00"))
    with raises(MqttProtocolError):
        p.next_packet()
    with raises(MqttProtocolError):
        p.next_packet()
    with raises(MqttProtocolError):
        p.feed(s.PINGRESP_BYTES)


def test_oversized_packet_is_refused_at_its_header():
    p = Parser(max_packet=100)
    p.feed(c.publish_header("t", 200))  # only the header: the body never needs to arrive
    with raises(MqttProtocolError):
        p.next_packet()
    data = s.encode_publish("t", b"x" * 95)  # exactly 100 bytes: allowed
    assert len(parse_all(data, max_packet=100)[0].payload) == 95


def test_feed_refuses_to_grow_when_nobody_pops():
    p = Parser(max_packet=64)
    for _ in range(32):
        p.feed(s.PINGRESP_BYTES)
    with raises(MqttProtocolError):
        p.feed(s.PINGRESP_BYTES)


def test_incomplete_packet_waits_for_more_bytes():
    p = Parser()
    data = s.encode_publish("a/b", b"payload", qos=1, pid=2)
    p.feed(data[:-1])
    assert p.next_packet() is None
    p.feed(data[-1:])
    assert p.next_packet().payload == b"payload"
    assert p.next_packet() is None


# ---- encoder validation -------------------------------------------------------------------


def test_encoders_reject_invalid_arguments():
    bad = [
        lambda: c.publish_header("", 0),
        lambda: c.publish_header("a/+", 0),
        lambda: c.publish_header("a/#", 0),
        lambda: c.publish_header("a\x00", 0),
        lambda: c.publish_header(b"a", 0),
        lambda: c.publish_header("a", 0, qos=2, pid=1),
        lambda: c.publish_header("a", 0, qos=1),
        lambda: c.publish_header("a", 0, qos=1, pid=0),
        lambda: c.publish_header("a", 0, qos=1, pid=65536),
        lambda: c.publish_header("a", 0, qos=0, pid=5),
        lambda: c.publish_header("a", 0, dup=True),
        lambda: c.encode_puback(0),
        lambda: c.encode_puback(65536),
        lambda: c.encode_connect("id", 70000),
        lambda: c.encode_connect("", 60, clean_session=False),
        lambda: c.encode_connect("id", 60, True, None, b"pw"),
        lambda: c.encode_connect("id", 60, True, None, None, ("w", b"", 3, False)),
        lambda: c.encode_connect("id", 60, True, None, None, ("w/#", b"", 0, False)),
        lambda: c.encode_subscribe(1, []),
        lambda: c.encode_subscribe(1, [("a/#/b", 0)]),
        lambda: c.encode_subscribe(1, [("a+", 0)]),
        lambda: c.encode_subscribe(1, [("a", 3)]),
        lambda: c.encode_subscribe(0, [("a", 0)]),
        lambda: c.encode_unsubscribe(1, [""]),
        lambda: s.encode_suback(1, [3]),
        lambda: s.encode_pid_ack(c.CONNACK, 1),
    ]
    for i, fn in enumerate(bad):
        try:
            fn()
        except MqttProtocolError:
            continue
        raise AssertionError("case %d did not raise" % i)


def test_qos2_publish_error_names_the_problem():
    with raises(MqttProtocolError) as e:
        c.publish_header("a", 0, qos=2, pid=1)
    assert "QoS 2" in str(e.value)


def test_errors_are_mqtt_errors():
    assert issubclass(MqttProtocolError, c.MqttError)


# ---- packet ids ---------------------------------------------------------------------------


def test_packet_ids_wrap_to_one_and_skip_ids_in_flight():
    ids = c.PacketIds()
    assert ids.allocate() == 1
    assert ids.allocate() == 2  # 1 and 2 stay in flight
    pid = 0
    while pid != 65535:
        pid = ids.allocate()
        ids.release(pid)
    assert ids.allocate() == 3  # wrapped past 65535, skipping 1 and 2
    ids.release(1)
    assert ids.allocate() == 4  # sequential, not the first free one
    assert ids.in_flight() == 3  # 2, 3 and 4
