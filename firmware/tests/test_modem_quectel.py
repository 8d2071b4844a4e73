# Quectel BG96 / BG95 / EC25 driver against scripted fake UARTs: power by PWRKEY and
# AT+QPOWD, PDP with AT+QIACT, a full socket session through QIOPEN/QISEND/QIRD, PDP loss
# ("pdpdeact") and errors. Runs under CPython (pytest) and the Unix port (run_mp.py).
from modem_kit import OK, PoweredModemUart, answer, session, written
from mptest import raises

from tracker.aio import asyncio, sleep_ms
from tracker.modem.base import PdpError, SocketClosed, SocketError
from tracker.modem.quectel import Bg95, Bg96, Ec25

HOST = "broker.example"


def powered():
    # BG96 hardware design: PWRKEY low >= 500 ms turns it on, >= 650 ms turns it off.
    return PoweredModemUart(
        ton_ms=500,
        toff_ms=650,
        banner="RDY",
        down_urc="POWERED DOWN",
        down_cmd="AT+QPOWD=1",
        down_ok=True,
    )


def test_bg96_power_on_and_off():
    u = powered()
    answer(u, "AT\r")

    async def t(m, u):
        assert await m.power_on() is True
        widths = u.pwrkey.presses(1)
        assert len(widths) == 1 and widths[0] >= 500
        assert u.dropped[-1] == b"AT\r" and u.on  # the first AT after boot was lost
        await m.power_off()  # AT+QPOWD=1 -> OK, POWERED DOWN
        assert not u.on and len(u.pwrkey.presses(1)) == 1  # no long press needed
        assert m.counters["power_offs"] == 1 and m.counters["unexpected_resets"] == 0

    session(Bg96, t, uart=u, pwrkey=u.pwrkey, status=u.status)


def test_rail_cycle_needs_a_power_pin():
    u = powered()
    answer(u, "AT\r")

    async def t(m, u):
        from tracker.modem.base import NotSupported

        with raises(NotSupported):
            await m.rail_cycle()

    session(Ec25, t, uart=u, pwrkey=u.pwrkey)


def test_rail_cycle_cuts_the_power_then_presses_the_key():
    u = powered()
    answer(u, "AT\r")
    levels = []

    class Rail:
        def value(self, v=None):
            levels.append(v)
            if v == 0:
                u.on = False  # no power, no modem

    async def t(m, u):
        await m.rail_cycle()
        assert levels[:2] == [0, 1] and u.on and u.boots == 1
        assert m.counters["rail_cycles"] == 1

    session(Bg95, t, uart=u, pwrkey=u.pwrkey, power=Rail(), pwrkey_on_ms=500)


# ---- PDP -------------------------------------------------------------------------------


def qiact_script(u):
    answer(u, 'AT+QICSGP=1,1,"iot.example","","",1')
    answer(u, "AT+QIACT=1")


def test_pdp_activation_and_already_active():
    async def t(m, u):
        qiact_script(u)
        await m.activate_pdp()
        assert m.pdp_active
        assert written(u) == ['AT+QICSGP=1,1,"iot.example","","",1', "AT+QIACT=1"]
        u.rules = []
        answer(u, 'AT+QICSGP=1,1,"iot.example","","",1')
        answer(u, "AT+QIACT?", '+QIACT: 1,1,1,"10.22.245.74"')
        answer(u, "AT+QIACT=1", final="ERROR")  # active already
        await m.activate_pdp()
        assert m.pdp_active and m.counters["pdp_activations"] == 2

    session(Bg96, t, apn="iot.example")


def test_pdp_refused():
    async def t(m, u):
        answer(u, "AT+QIACT?")  # bare OK: no context (corpus bg96-init-mqttcfg-qiact)
        answer(u, "AT+QIACT=1", final="+CME ERROR: 30")
        with raises(PdpError) as e:
            await m.activate_pdp()
        assert e.value.code == 30 and not m.pdp_active

    session(Ec25, t)  # no APN configured: QICSGP left as the SIM/network set it


# ---- sockets ---------------------------------------------------------------------------


async def connected(m, u):
    qiact_script(u)
    await m.activate_pdp()
    u.when('AT+QIOPEN=1,0,"TCP","%s",1883,0,0' % HOST, OK, "\r\n+QIOPEN: 0,0\r\n")
    return await m.open_socket(HOST, 1883)


def test_socket_session():
    async def t(m, u):
        sock = await connected(m, u)
        sock.write(b"hel")
        sock.write(b"lo")
        # the prompt "> " has no line end; a URC comes before SEND OK
        u.when("AT+QISEND=0,5", "\r\n> ")
        u.when(b"hello", '\r\n+QIURC: "recv",0\r\n', "\r\nSEND OK\r\n")
        await sock.drain()
        assert u.writes[-2:] == [b"AT+QISEND=0,5\r", b"hello"]
        payload = b"\x30\x05\r\nOK\r\n"
        u.when(
            "AT+QIRD=0,1460",
            b"\r\n+QIRD: %d\r\n" % len(payload) + payload + b"\r\n\r\nOK\r\n",
        )
        assert await sock.read(100) == payload
        # nothing more waits: the next read sleeps until the modem says so
        reader = asyncio.create_task(sock.read(100))
        await sleep_ms(20)
        assert not reader.done()
        answer(u, "AT+QIRD=0,1460", "+QIRD: 0")
        u.inject('\r\n+QIURC: "closed",0\r\n')
        assert await reader == b""
        answer(u, "AT+QICLOSE=0")
        await sock.wait_closed()
        assert "AT+QICLOSE=0" in written(u)  # the id is freed inside the modem too
        assert m.counters["bytes_received"] == len(payload) and not m._socks

    session(Bg96, t, apn="iot.example")


def test_pdp_loss_closes_every_socket_and_reactivation_deactivates_first():
    async def t(m, u):
        sock = await connected(m, u)
        reader = asyncio.create_task(sock.read(100))
        await sleep_ms(5)
        u.inject('\r\n+QIURC: "pdpdeact",1\r\n')
        assert await reader == b""
        assert not m.pdp_active and m.counters["pdp_losses"] == 1
        sock.write(b"x")
        with raises(SocketClosed):
            await sock.drain()
        answer(u, "AT+QICLOSE=0")
        await sock.wait_closed()
        answer(u, "AT+QIDEACT=1")
        await m.activate_pdp()
        cmds = written(u)
        assert cmds.index("AT+QIDEACT=1") < len(cmds) - 1 and cmds[-1] == "AT+QIACT=1"

    session(Bg96, t, apn="iot.example")


def test_open_errors_raise_socket_error():
    async def t(m, u):
        qiact_script(u)
        await m.activate_pdp()
        u.when('AT+QIOPEN=1,0,"TCP","%s",1883,0,0' % HOST, OK, "\r\n+QIOPEN: 0,566\r\n")
        with raises(SocketError) as e:
            await m.open_socket(HOST, 1883)
        assert e.value.code == 566  # socket connect failed
        u.when('AT+QIOPEN=1,0,"TCP","%s",1883,0,0' % HOST, "\r\n+CME ERROR: 50\r\n")
        with raises(SocketError) as e:
            await m.open_socket(HOST, 1883)
        assert e.value.code == 50 and m.counters["socket_failures"] == 2

    session(Bg96, t, apn="iot.example")


def test_send_fail_breaks_the_stream():
    async def t(m, u):
        sock = await connected(m, u)
        u.when("AT+QISEND=0,3", "\r\n> ")
        u.when(b"abc", "\r\nSEND FAIL\r\n")
        sock.write(b"abc")
        with raises(OSError):
            await sock.drain()

    session(Bg96, t, apn="iot.example")
