# What one MQTT QoS 1 publish of a 150-byte payload costs on the modem's UART, per family:
# AT commands and bytes each way, PUBACK included, counted by the AT engine while the
# ModemSocket carries the packets exactly as the MQTT client sends them (fixed header and
# topic in one write, the payload in another, then drain; the PUBACK read back). The modem
# side is scripted with the answers the manuals and the corpus show; `pytest -s` prints the
# numbers. (The packets are built here rather than by tracker.uplink.mqtt: on the Unix port the
# whole suite shares one heap, and the MQTT modules are not needed to count AT traffic.)
from modem_kit import OK, answer, session

from tracker.modem.quectel import Bg96
from tracker.modem.simcom import A76xx, Sim7600

TOPIC = b"albatross/dev-0001/telemetry"
PAYLOAD = b"x" * 150
PUBACK = b"\x40\x02\x00\x01"


def publish_header(pid=1):
    # MQTT 3.1.1 section 3.3: PUBLISH, QoS 1; remaining length as a variable-length integer
    n = 2 + len(TOPIC) + 2 + len(PAYLOAD)
    rl = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        rl.append(b | 0x80 if n else b)
        if not n:
            break
    return b"\x32" + bytes(rl) + bytes((0, len(TOPIC))) + TOPIC + bytes((pid >> 8, pid & 255))


def simcom_script(u, pkt, reply):
    u.when("AT+CIPRXGET=1", OK)
    u.when("AT+NETOPEN\r", OK, "\r\n+NETOPEN: 0\r\n")
    u.when('AT+CIPOPEN=0,"TCP","h",1883', OK, "\r\n+CIPOPEN: 0,0\r\n")
    u.when("AT+CIPSEND=0,%d" % len(pkt), "\r\n>")
    n = len(pkt)
    u.when(pkt[:8], OK, "\r\n+CIPSEND: 0,%d,%d\r\n" % (n, n), "\r\n+CIPRXGET: 1,0\r\n")
    u.when(
        "AT+CIPRXGET=2,0,1460", b"\r\n+CIPRXGET: 2,0,%d,0\r\n%s\r\nOK\r\n" % (len(reply), reply)
    )


def quectel_script(u, pkt, reply):
    answer(u, "AT+QIACT=1")
    u.when('AT+QIOPEN=1,0,"TCP","h",1883,0,0', OK, "\r\n+QIOPEN: 0,0\r\n")
    u.when("AT+QISEND=0,%d" % len(pkt), "\r\n> ")
    u.when(pkt[:8], "\r\nSEND OK\r\n", '\r\n+QIURC: "recv",0\r\n')
    u.when("AT+QIRD=0,1460", b"\r\n+QIRD: %d\r\n%s\r\n\r\nOK\r\n" % (len(reply), reply))


def cost(cls, script):
    header = publish_header()
    out = {"packet": len(header) + len(PAYLOAD)}

    async def t(m, u):
        script(u, header + PAYLOAD, PUBACK)
        await m.activate_pdp()
        sock = await m.open_socket("h", 1883)
        before = dict(m.at.counters)
        sock.write(header)
        sock.write(PAYLOAD)
        await sock.drain()
        assert await sock.read(512) == PUBACK
        for k in ("commands", "bytes_tx", "bytes_rx"):
            out[k] = m.at.counters[k] - before[k]

    session(cls, t)
    print("%s: one QoS 1 publish of 150 B: %r" % (cls.family, out))
    return out


def test_simcom_publish_is_one_send_and_one_read():
    for cls in (Sim7600, A76xx):
        c = cost(cls, simcom_script)
        assert c["packet"] == 185
        assert c["commands"] == 2  # AT+CIPSEND with header and payload together, AT+CIPRXGET
        send = "AT+CIPSEND=0,%d\r" % c["packet"]
        assert c["bytes_tx"] == len(send) + c["packet"] + len("AT+CIPRXGET=2,0,1460\r")


def test_quectel_publish_is_one_send_and_one_read():
    c = cost(Bg96, quectel_script)
    assert c["commands"] == 2  # AT+QISEND, AT+QIRD
    send = "AT+QISEND=0,%d\r" % c["packet"]
    assert c["bytes_tx"] == len(send) + c["packet"] + len("AT+QIRD=0,1460\r")
