# SIMCom SIM7600 / A76xx driver against scripted fake UARTs: power by PWRKEY, PDP with the
# +NETOPEN URC, a full socket session through CIPOPEN/CIPSEND/CIPRXGET, PDP loss and errors.
# Runs under CPython (pytest) and the Unix port (run_mp.py).
# ruff: noqa: I001 -- tracker.modem.base first: on the Unix port it is compiled from source, the
# biggest compile of the suite, best done while the heap is emptiest.
from tracker.modem.base import ModemNotResponding, PdpError, SocketClosed, SocketError
from tracker.modem.simcom import A76xx, Sim7600

from mptest import raises
from modem_kit import OK, PoweredModemUart, answer, session, written

from tracker import log
from tracker.aio import asyncio, sleep_ms, ticks_diff, ticks_ms

HOST = "broker.example"


def powered(ton_ms, banner):
    # SIMCom power-off by PWRKEY needs >= 2.5 s (check); shrunk here with the driver's.
    return PoweredModemUart(
        ton_ms=ton_ms,
        toff_ms=150,
        banner=banner,
        down_urc="NORMAL POWER DOWN",
        down_cmd="AT+CPOWD=1",  # answers the URC and no OK
    )


def power_on_case(cls, ton_ms, banner):
    u = powered(ton_ms, banner)
    answer(u, "AT\r")

    async def t(m, u):
        assert await m.power_on() is True
        assert u.on and u.boots == 1
        widths = u.pwrkey.presses(1)
        assert len(widths) == 1 and widths[0] >= ton_ms  # long enough for the datasheet
        # the first AT after boot vanished, and the driver asked again
        assert u.dropped[-1] == b"AT\r" and u.writes[-1] == b"AT\r"
        assert m.counters["power_ons"] == 1
        assert await m.power_on() is False  # already on: no second press (it could turn it off)
        assert len(u.pwrkey.presses(1)) == 1

    session(cls, t, uart=u, pwrkey=u.pwrkey)


def test_sim7600_power_on_by_pwrkey():
    power_on_case(Sim7600, 500, "RDY")  # SIM7600 Ton typ. 500 ms (hardware design)


def test_a7670_power_on_by_pwrkey():
    power_on_case(A76xx, 50, "*ATREADY: 1")  # A76xx Ton >= 50 ms (hardware design)


def test_power_on_through_an_inverting_transistor_and_status_pin():
    # pwrkey_active=0: the MCU drives its pin LOW to press the key.
    u = PoweredModemUart(
        ton_ms=100, toff_ms=150, banner="RDY", down_urc="NORMAL POWER DOWN", active=0
    )
    answer(u, "AT\r")

    async def t(m, u):
        assert u.pwrkey.level == 1  # released from the start
        await m.power_on()
        assert u.on and len(u.pwrkey.presses(0)) == 1
        # STATUS (low) is only a hint: one short AT probe confirmed the modem was off before
        # the press; then the first AT after boot was lost, as usual.
        assert u.dropped == [b"AT\r", b"AT\r"]
        assert m.counters["status_pin_mismatch"] == 0

    session(Sim7600, t, uart=u, pwrkey=u.pwrkey, pwrkey_active=0, status=u.status,
            pwrkey_on_ms=100)  # fmt: skip


def test_power_on_gives_up_when_the_modem_never_answers():
    u = powered(5000, "RDY")  # the key is too short for this modem: it stays off

    async def t(m, u):
        with raises(ModemNotResponding):
            await m.power_on()
        assert not u.on

    session(A76xx, t, uart=u, pwrkey=u.pwrkey, boot_ms=200)


def test_power_on_with_status_up_waits_for_at_before_it_presses():
    u = powered(50, "RDY")
    answer(u, "AT\r")

    async def t(m, u):
        u.on = True  # STATUS is up: booting, or on already
        u.lost = 3  # the first probes vanish, as while the UART is not ready
        assert await m.power_on() is False
        assert u.pwrkey.presses(1) == []  # booting: waited for AT, no press
        u.hung = True  # on but deaf: boot_ms of silence, then one short press (AT decides)
        t0 = ticks_ms()
        with raises(ModemNotResponding):
            await m.power_on()
        presses = u.pwrkey.presses(1)
        assert len(presses) == 1 and presses[0] < 150  # shorter than a power-off press
        assert ticks_diff(ticks_ms(), t0) >= 2 * 300  # boot_ms before and after the press
        assert u.on  # the short press did not turn the hung modem off
        # STATUS up while AT is silent proves nothing against the pin (hung or booting)
        assert m.counters["status_pin_mismatch"] == 0

    session(Sim7600, t, uart=u, pwrkey=u.pwrkey, status=u.status, boot_ms=300,
            pwrkey_on_ms=50)  # fmt: skip


def test_wrong_polarity_status_on_an_off_modem_is_caught_and_then_ignored():
    # The breakout inverts STATUS (it reads 1 while the modem is off), board.json says
    # active 1: the pin claims "on". AT is asked first and believed.
    u = PoweredModemUart(ton_ms=50, toff_ms=150, banner="RDY", down_urc="NORMAL POWER DOWN",
                         down_cmd="AT+CPOWD=1", status_active=0)  # fmt: skip
    answer(u, "AT\r")
    warnings = log.counts[log.WARNING]

    async def t(m, u):
        assert u.status.value() == 1 and not u.on
        assert await m.power_on() is True  # silent for boot_ms despite STATUS: pressed
        assert u.on and u.boots == 1
        # the press brought the boot banner: the modem was off while STATUS said on
        assert m.counters["status_pin_mismatch"] == 1
        await m.power_off()  # AT answers while STATUS reads "off": counted, AT believed
        assert not u.on and b"AT+CPOWD=1\r" in u.writes
        assert m.counters["status_pin_mismatch"] == 2 and m.counters["forced_offs"] == 0
        t0 = ticks_ms()
        assert await m.power_on() is True  # the pin is no longer asked: no boot_ms wait
        assert ticks_diff(ticks_ms(), t0) < 300 and u.on and u.boots == 2
        assert len(u.pwrkey.presses(1)) == 2  # one press per power-on, never a toggle

    session(Sim7600, t, uart=u, pwrkey=u.pwrkey, status=u.status, boot_ms=300,
            pwrkey_on_ms=50)  # fmt: skip
    # one warning for the pin (said once), one for the boot_ms wait it caused
    assert log.counts[log.WARNING] - warnings == 2


def test_wrong_polarity_status_on_a_running_modem_never_presses_the_key():
    # After an MCU reset the modem is still on; the inverted STATUS reads "off". Trusting it
    # would press PWRKEY, and a press can turn a running modem off.
    u = PoweredModemUart(ton_ms=50, toff_ms=150, banner="RDY", down_urc="NORMAL POWER DOWN",
                         down_cmd="AT+CPOWD=1", status_active=0)  # fmt: skip
    answer(u, "AT\r")
    u.on = True

    async def t(m, u):
        assert u.status.value() == 0
        assert await m.power_on() is False
        assert u.on and u.pwrkey.presses(1) == [] and m.counters["power_ons"] == 0
        assert m.counters["status_pin_mismatch"] == 1
        await m.power_cycle()  # soft power down (AT answers), then on by a press
        assert u.on and u.boots == 1 and len(u.pwrkey.presses(1)) == 1
        assert m.counters["forced_offs"] == 0 and m.counters["power_offs"] == 1

    session(Sim7600, t, uart=u, pwrkey=u.pwrkey, status=u.status, boot_ms=300,
            pwrkey_on_ms=50)  # fmt: skip


def test_power_off_by_command_and_by_long_press():
    u = powered(50, "RDY")
    answer(u, "AT\r")

    async def t(m, u):
        await m.power_on()
        await m.power_off()
        assert not u.on and b"AT+CPOWD=1\r" in u.writes
        assert m.counters["power_offs"] == 1 and m.counters["forced_offs"] == 0
        assert m.counters["unexpected_resets"] == 0  # our own power-down is not a crash
        await m.power_on()
        u.hung = True  # deaf: the command goes nowhere, the long press does it
        await m.power_off()
        assert not u.on and m.counters["forced_offs"] == 1
        assert u.pwrkey.presses(1)[-1] >= 150
        assert m.counters["status_pin_mismatch"] == 0  # a correct pin is never doubted

    session(Sim7600, t, uart=u, pwrkey=u.pwrkey, status=u.status, pwrkey_on_ms=50,
            pwrkey_off_ms=200)  # fmt: skip


def test_power_cycle_of_a_hung_modem_goes_straight_to_the_long_press():
    u = powered(50, "RDY")
    answer(u, "AT\r")

    async def t(m, u):
        await m.power_on()
        u.hung = True
        before = len(u.writes)
        await m.power_cycle()
        assert u.on and not u.hung and u.boots == 2
        assert b"AT+CPOWD=1\r" not in u.writes[before:]  # no time lost on the command
        assert m.counters["power_cycles"] == 1 and m.counters["forced_offs"] == 1

    session(Sim7600, t, uart=u, pwrkey=u.pwrkey, pwrkey_on_ms=50, pwrkey_off_ms=200)


# ---- PDP -------------------------------------------------------------------------------


def netopen_script(u, urc="+NETOPEN: 0"):
    answer(u, 'AT+CGDCONT=1,"IP","iot.example"')
    answer(u, "AT+CIPRXGET=1")
    u.when("AT+NETOPEN\r", OK, "\r\n%s\r\n" % urc)


def test_pdp_activation_waits_for_the_netopen_urc():
    async def t(m, u):
        netopen_script(u)
        await m.activate_pdp()
        assert m.pdp_active and m.counters["pdp_activations"] == 1
        cmds = written(u)
        # manual receive is set before the network opens
        assert cmds == ['AT+CGDCONT=1,"IP","iot.example"', "AT+CIPRXGET=1", "AT+NETOPEN"]

    session(Sim7600, t, apn="iot.example")


def test_pdp_already_opened_counts_as_success():
    async def t(m, u):
        netopen_script(u)
        u.rules = u.rules[:2]
        answer(u, "AT+NETOPEN?", "+NETOPEN: 1")
        answer(u, "AT+NETOPEN", "+IP ERROR: Network is already opened", final="ERROR")
        await m.activate_pdp()
        assert m.pdp_active

    session(A76xx, t, apn="iot.example")


def test_pdp_refused_raises_pdp_error():
    async def t(m, u):
        netopen_script(u, urc="+NETOPEN: 1")
        with raises(PdpError) as e:
            await m.activate_pdp()
        assert e.value.code == 1 and not m.pdp_active
        assert m.counters["pdp_failures"] == 1

    session(Sim7600, t, apn="iot.example")


# ---- sockets ---------------------------------------------------------------------------


async def connected(m, u, link=0):
    netopen_script(u)
    await m.activate_pdp()
    u.when('AT+CIPOPEN=%d,"TCP","%s",1883' % (link, HOST), OK, "\r\n+CIPOPEN: %d,0\r\n" % link)
    return await m.open_socket(HOST, 1883)


def test_socket_session():
    async def t(m, u):
        sock = await connected(m, u)
        assert sock.link == 0
        sock.write(b"hel")
        sock.write(bytearray(b"lo"))
        # a data-waiting URC between the prompt and the confirmation
        u.when("AT+CIPSEND=0,5", "\r\n>")
        u.when(b"hello", "\r\n+CIPRXGET: 1,0\r\n", OK, "\r\n+CIPSEND: 0,5,5\r\n")
        await sock.drain()
        assert b"AT+CIPSEND=0,5\r" in u.writes and u.writes[-1] == b"hello"  # one send
        payload = b"\x20\x02\r\nOK\r\n>x"  # bytes that look like AT lines
        u.when(
            "AT+CIPRXGET=2,0,1460",
            b"\r\n+CIPRXGET: 2,0,%d,0\r\n" % len(payload) + payload + b"\r\nOK\r\n",
        )
        assert await sock.read(4) == payload[:4]  # one modem read, served in pieces
        assert await sock.read(100) == payload[4:]
        assert written(u).count("AT+CIPRXGET=2,0,1460") == 1
        # the peer closes: what the modem held is read, then EOF
        u.inject("\r\n+IPCLOSE: 0,1\r\n")
        answer(u, "AT+CIPRXGET=2,0", "+IP ERROR: No data", final="ERROR")
        assert await sock.read(100) == b""
        with raises(SocketClosed):
            sock.write(b"x")
            await sock.drain()
        answer(u, "AT+CIPCLOSE=0", "+CIPCLOSE: 0,4", final="ERROR")  # gone already
        await sock.wait_closed()
        assert m.counters["bytes_sent"] == 5 and m.counters["bytes_received"] == len(payload)
        assert m.counters["peer_closes"] == 1 and m.counters["socket_closes"] == 1
        u.when('AT+CIPOPEN=0,"TCP","%s",1883' % HOST, OK, "\r\n+CIPOPEN: 0,0\r\n")
        again = await m.open_socket(HOST, 1883)
        assert again.link == 0  # the link was freed
        # ... and its buffers serve the new socket: no fresh 1.5 KB blocks at a reconnect.
        assert again._rx is sock._rx and again._tx is sock._tx
        assert await sock.read(10) == b""  # the old socket has nothing left to read

    session(Sim7600, t, apn="iot.example")


def test_read_waits_without_blocking_other_commands_and_polls_for_lost_urcs():
    async def t(m, u):
        sock = await connected(m, u)
        reader = asyncio.create_task(sock.read(100))
        await sleep_ms(10)
        answer(u, "AT+CSQ", "+CSQ: 17,99")
        answer(u, "AT+CESQ", "+CESQ: 99,99,255,255,20,45")
        assert (await m.signal())["csq"] == 17  # the waiting read holds no AT lock
        assert not reader.done()
        # data arrives but its URC is lost: the poll fetches it anyway
        u.when("AT+CIPRXGET=2,0,1460", "\r\n+CIPRXGET: 2,0,2,0\r\nhi\r\nOK\r\n")
        assert await reader == b"hi"
        assert m.counters["polls"] >= 1

    session(Sim7600, t, apn="iot.example", socket_poll_ms=80)


def test_long_writes_go_out_in_chunks_and_a_full_read_reads_again():
    async def t(m, u):
        sock = await connected(m, u)
        data = bytes(range(256)) * 8  # 2048 bytes
        u.when("AT+CIPSEND=0,1460", "\r\n>")
        u.when("AT+CIPSEND=0,588", "\r\n>")
        u.when(data[:16], OK, "\r\n+CIPSEND: 0,1460,1460\r\n")
        u.when(data[1460:1476], OK, "\r\n+CIPSEND: 0,588,588\r\n")
        sock.write(data)
        await sock.drain()
        assert b"".join(w for w in u.writes if w in (data[:1460], data[1460:])) == data
        u.when("AT+CIPRXGET=2,0,1460", b"\r\n+CIPRXGET: 2,0,3,2\r\nabc\r\nOK\r\n")
        u.when("AT+CIPRXGET=2,0,1460", b"\r\n+CIPRXGET: 2,0,2,0\r\nde\r\nOK\r\n")
        u.inject("\r\n+CIPRXGET: 1,0\r\n")
        assert await sock.read(10) == b"abc"
        assert await sock.read(10) == b"de"  # <left> said 2 more: no URC needed

    session(Sim7600, t, apn="iot.example")


def test_pdp_loss_closes_every_socket():
    async def t(m, u):
        sock = await connected(m, u)
        reader = asyncio.create_task(sock.read(100))
        await sleep_ms(5)
        u.inject("\r\n+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY\r\n", "\r\n+IPCLOSE: 0,2\r\n")
        assert await reader == b""
        assert not m.pdp_active and m.counters["pdp_losses"] == 1
        sock.write(b"x")
        with raises(SocketClosed):
            await sock.drain()
        before = len(u.writes)
        await sock.wait_closed()
        assert u.writes[before:] == []  # nothing to close inside the modem any more
        with raises(SocketError):
            await m.open_socket(HOST, 1883)  # no data context: no pointless CIPOPEN

    session(A76xx, t, apn="iot.example")


def test_open_errors_raise_socket_error_and_free_the_link():
    async def t(m, u):
        netopen_script(u)
        await m.activate_pdp()
        u.when('AT+CIPOPEN=0,"TCP","%s",1883' % HOST, "\r\n+CME ERROR: 100\r\n")
        with raises(SocketError) as e:
            await m.open_socket(HOST, 1883)
        assert e.value.code == 100
        u.when('AT+CIPOPEN=0,"TCP","%s",1883' % HOST, OK, "\r\n+CIPOPEN: 0,11\r\n")
        with raises(SocketError) as e:
            await m.open_socket(HOST, 1883)
        assert e.value.code == 11  # DNS parse failed
        assert m.counters["socket_failures"] == 2 and not m._socks

    session(Sim7600, t, apn="iot.example")


def test_a_send_the_modem_refuses_breaks_the_stream():
    async def t(m, u):
        sock = await connected(m, u)
        u.when("AT+CIPSEND=0,3", "\r\n>")
        u.when(b"abc", OK, "\r\n+CIPSEND: 0,3,-1\r\n")  # -1: the connection is gone
        sock.write(b"abc")
        with raises(OSError):  # what a stream user (MQTT) catches
            await sock.drain()
        with raises(SocketClosed):
            await sock.read(10)

    session(Sim7600, t, apn="iot.example")


def test_a_sim_pulled_from_a_running_modem_is_named_and_counted():
    async def t(m, u):
        await connected(m, u)
        u.inject("\r\n+CPIN: READY\r\n")  # as the modem prints it at boot
        await sleep_ms(5)
        assert m.sim == "ready" and m.counters["sim_removals"] == 0
        u.inject("\r\n+CPIN: SIM REMOVED\r\n")
        await sleep_ms(5)
        assert m.sim == "sim removed" and m.counters["sim_removals"] == 1
        assert m.at.counters["unknown_urcs"] == 0
        u.inject("\r\n+CPIN: READY\r\n")
        await sleep_ms(5)
        assert m.sim == "ready" and m.counters["sim_removals"] == 1

    session(A76xx, t, apn="iot.example")
