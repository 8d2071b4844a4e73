# AT engine tests against the scripted fake UART; run under CPython (pytest) and the Unix port.
from fake_uart import FakeUart, ReadOnlyStream
from mptest import raises, run, skip, ticks_after_test, ticks_before_wrap

from tracker import log
from tracker.aio import asyncio, sleep_ms, ticks_diff, ticks_ms, wait_for_ms
from tracker.modem import at_lines
from tracker.modem.at import AtEngine, AtError, AtTimeout, CmeError, CmsError

log.echo = False


def session(test, uart=None, **kw):
    """Run test(engine, uart) with a started engine; the reader is always stopped."""

    async def main():
        u = uart if uart is not None else FakeUart()
        e = AtEngine(u, **kw)
        e.start()
        try:
            await test(e, u)
        finally:
            e.stop()
            await sleep_ms(0)

    run(main())


class Seen:
    """A URC handler that remembers what it got."""

    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)


def qird_len(line):
    return at_lines.params(line)[0]


def ciprxget_len(line):
    return at_lines.params(line)[2]


def test_cmd_returns_its_information_lines_and_final():
    async def t(e, u):
        u.when("AT+CSQ", "\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
        r = await e.cmd("AT+CSQ")
        assert r.lines == ["+CSQ: 20,99"] and r.final == "OK"
        assert u.writes == [b"AT+CSQ\r"]
        assert e.counters["commands"] == 1 and e.pending is None

    session(t)


def test_plain_value_lines_belong_to_the_command():
    async def t(e, u):
        u.when("AT+CGSN", "\r\n862771076818015\r\n\r\nOK\r\n")
        u.when("ATI", "\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n")
        assert (await e.cmd("AT+CGSN")).lines == ["862771076818015"]
        assert (await e.cmd("ATI")).lines == ["Quectel", "BG96", "Revision: BG96MAR02A07M1G"]

    session(t)


def test_every_split_of_an_echoed_answer_with_a_urc_inside():
    reply = (
        'AT+CEREG?\r\r\n+CEREG: 2,1,"1A2B","01C2D3E4",7\r\n'
        "\r\n+CGEV: ME PDN ACT 1\r\n\r\nOK\r\n\r\n+CEREG: 5\r\n"
    )

    async def t(e, u):
        cgev, cereg = Seen(), Seen()
        e.on_urc("+CGEV:", cgev)
        e.on_urc("+CEREG:", cereg)
        for k in range(1, len(reply)):
            u.when("AT+CEREG?", reply[:k], reply[k:])
            r = await e.cmd("AT+CEREG?", timeout_ms=1000)
            assert r.lines == ['+CEREG: 2,1,"1A2B","01C2D3E4",7'], (k, r)
            await u.idle()
            assert len(cgev.lines) == k and len(cereg.lines) == k, k
        assert cereg.lines[0] == "+CEREG: 5"
        assert e.counters["urcs"] == 2 * (len(reply) - 1)

    session(t)


def test_urc_without_leading_line_end_and_glued_to_a_final():
    async def t(e, u):
        seen = Seen()
        e.on_urc("+CIPRXGET: 1", seen)
        e.on_urc("+QIURC:", seen)
        u.when("AT+CSQ", "\r\n+CSQ: 9,0\r\n\r\nOK\r\n+CIPRXGET: 1,0\r\n")
        u.when("AT+QICLOSE=0", 'OK+QIURC: "closed",0\r\n')
        assert (await e.cmd("AT+CSQ")).lines == ["+CSQ: 9,0"]
        assert (await e.cmd("AT+QICLOSE=0")).final == "OK"
        await u.idle()
        assert seen.lines == ["+CIPRXGET: 1,0", '+QIURC: "closed",0']

    session(t)


def test_send_with_prompt_and_a_urc_between_prompt_and_send_ok():
    async def t(e, u):
        seen = Seen()
        e.on_urc("+QIURC:", seen)
        u.when("AT+QISEND=0,5", '\r\n> \r\n+QIURC: "recv",1\r\n')
        u.when("hello", '\r\n+QIURC: "recv",0\r\n', "\r\nSEND OK\r\n")
        r = await e.send_with_prompt("AT+QISEND=0,5", b"hello", timeout_ms=1000)
        assert r.final == "SEND OK"
        assert u.writes == [b"AT+QISEND=0,5\r", b"hello"]
        assert seen.lines == ['+QIURC: "recv",1', '+QIURC: "recv",0']

    session(t)


def test_send_result_urc_registered_before_the_command_is_not_lost():
    async def t(e, u):
        # The late result arrives in the same read as OK, before cmd() returns.
        u.when("AT+CIPSEND=0,5", "\r\n>")
        u.when("hello", "\r\nOK\r\n\r\n+CIPSEND: 0,5,5\r\n")
        u.when("AT+NETOPEN", "\r\nOK\r\n\r\n+NETOPEN: 0\r\n")
        with e.expect_urc("+CIPSEND:") as w:
            await e.send_with_prompt("AT+CIPSEND=0,5", "hello", timeout_ms=1000)
            assert await w.wait(1000) == "+CIPSEND: 0,5,5"
        w = e.expect_urc("+NETOPEN:")
        assert (await e.cmd("AT+NETOPEN")).lines == []
        assert await w.wait(1000) == "+NETOPEN: 0"
        assert e.counters["unknown_urcs"] == 0

    session(t)


def test_error_instead_of_prompt_sends_no_payload():
    async def t(e, u):
        u.when("AT+CIPSEND=0,5", "\r\n+CIPERROR: 4\r\n\r\nERROR\r\n")
        with raises(AtError) as err:
            await e.send_with_prompt("AT+CIPSEND=0,5", b"hello", timeout_ms=500)
        assert err.value.final == "ERROR" and err.value.cmd == "AT+CIPSEND=0,5"
        assert u.writes == [b"AT+CIPSEND=0,5\r"]
        with raises(AtTimeout):  # no prompt at all: no payload either
            await e.send_with_prompt("AT+CIPSEND=0,5", b"hello", timeout_ms=50)
        assert u.writes[-1] == b"AT+CIPSEND=0,5\r"

    session(t)


def test_send_fail_raises():
    async def t(e, u):
        u.when("AT+QISEND=0,2", "\r\n> ")
        u.when("hi", "\r\nSEND FAIL\r\n")
        with raises(AtError) as err:
            await e.send_with_prompt("AT+QISEND=0,2", b"hi", timeout_ms=500)
        assert err.value.final == "SEND FAIL"

    session(t)


PAYLOAD = b"\r\nOK\r\n> \r\n+CIPRXGET: 1,0\r\nERROR\r\n\x00\xff"


def test_ciprxget_payload_with_line_ends_ok_and_prompt_at_every_split():
    reply = (
        ("\r\n+CIPRXGET: 1,0\r\n\r\n+CIPRXGET: 2,0,%d,0\r\n" % len(PAYLOAD)).encode()
        + PAYLOAD
        + b"\r\nOK\r\n"
    )

    async def t(e, u):
        data_waiting = Seen()
        e.on_urc("+CIPRXGET: 1", data_waiting)
        for k in range(1, len(reply)):
            u.when("AT+CIPRXGET=2,0,1460", reply[:k], reply[k:])
            hdr, data = await e.read_payload(
                "AT+CIPRXGET=2,0,1460", "+CIPRXGET: 2,", ciprxget_len, 1000
            )
            assert hdr == "+CIPRXGET: 2,0,%d,0" % len(PAYLOAD), k
            assert bytes(data) == PAYLOAD, k
            assert len(data_waiting.lines) == k, k
        assert e.counters["stray_finals"] == 0 and e.counters["stray_prompts"] == 0

    session(t)


def test_qird_payload_empty_read_and_caller_buffer():
    async def t(e, u):
        u.when("AT+QIRD=0,1500", b"\r\n+QIRD: 13\r\n" + PAYLOAD[:13] + b"\r\n\r\nOK\r\n")
        u.when("AT+QIRD=0,1500", "\r\n+QIRD: 0\r\n\r\nOK\r\n")
        u.when("AT+QIRD=0,8", b"\r\n+QIRD: 8\r\nOK\r\n>>> \r\nOK\r\n")
        hdr, data = await e.read_payload("AT+QIRD=0,1500", "+QIRD:", qird_len, 1000)
        assert hdr == "+QIRD: 13" and bytes(data) == PAYLOAD[:13]
        hdr, data = await e.read_payload("AT+QIRD=0,1500", "+QIRD:", qird_len, 1000)
        assert hdr == "+QIRD: 0" and bytes(data) == b""
        buf = bytearray(64)
        hdr, data = await e.read_payload("AT+QIRD=0,8", "+QIRD:", qird_len, 1000, buf=buf)
        assert bytes(data) == b"OK\r\n>>> " and bytes(buf[:8]) == b"OK\r\n>>> "

    session(t)


def test_timeout_then_late_answer_while_idle_is_discarded():
    async def t(e, u):
        with raises(AtTimeout) as err:
            await e.cmd("AT+CGATT=1", timeout_ms=30)
        assert err.value.cmd == "AT+CGATT=1" and err.value.ms == 30
        u.inject("\r\nERROR\r\n")  # the late answer to AT+CGATT=1
        await u.idle()
        assert e.counters["stray_finals"] == 1 and e.counters["timeouts"] == 1
        u.when("AT+CSQ", "\r\n+CSQ: 5,0\r\n\r\nOK\r\n")
        assert (await e.cmd("AT+CSQ")).lines == ["+CSQ: 5,0"]
        assert b"AT\r" not in u.writes  # the stale answer came: no resync was needed

    session(t)


def test_late_answer_arriving_after_the_next_command_is_not_taken_for_it():
    async def t(e, u):
        with raises(AtTimeout):
            await e.cmd("AT+COPS=?", timeout_ms=30)
        # The modem finishes AT+COPS=? only when the next bytes arrive (a resync probe).
        u.when("AT\r", "\r\n+CME ERROR: 30\r\n", "\r\nOK\r\n")
        u.when("AT+CSQ", "\r\n+CSQ: 7,0\r\n\r\nOK\r\n")
        r = await e.cmd("AT+CSQ")
        assert r.lines == ["+CSQ: 7,0"] and r.final == "OK"
        assert u.writes[-2:] == [b"AT\r", b"AT+CSQ\r"]
        # A stale answer that never comes costs one probe, not a failed command.
        with raises(AtTimeout):
            await e.cmd("AT+CFUN=1", timeout_ms=30)
        u.when("AT\r", "\r\nOK\r\n")
        u.when("AT+CSQ", "\r\n+CSQ: 8,0\r\n\r\nOK\r\n")
        assert (await e.cmd("AT+CSQ")).lines == ["+CSQ: 8,0"]

    session(t)


def test_dead_modem_keeps_raising_timeouts():
    async def t(e, u):
        for _ in range(3):
            with raises(AtTimeout):
                await e.cmd("AT+CSQ", timeout_ms=20)
        assert e.counters["timeouts"] >= 3 and e.pending is None

    session(t, resync_ms=20)


def test_cme_cms_and_error_finals_raise_typed_errors():
    async def t(e, u):
        u.when("AT+CPIN?", "\r\n+CME ERROR: 10\r\n")
        u.when("AT+CPIN?", "\r\n+CME ERROR: SIM failure\r\n\r\n+CPIN: READY\r\n")
        u.when("AT+CMGS", "\r\n+CMS ERROR: 500\r\n")
        u.when("AT+NETOPEN", "\r\nERROR\r\n")
        u.when("ATD", "\r\nNO CARRIER\r\n")
        with raises(CmeError) as err:
            await e.cmd("AT+CPIN?")
        assert err.value.code == 10 and err.value.cmd == "AT+CPIN?"
        cpin = Seen()
        e.on_urc("+CPIN:", cpin)
        with raises(CmeError) as err:
            await e.cmd("AT+CPIN?")
        assert err.value.code == "SIM failure"
        with raises(CmsError) as err:
            await e.cmd('AT+CMGS="123"')
        assert err.value.code == 500 and not isinstance(err.value, CmeError)
        with raises(AtError) as err:
            await e.cmd("AT+NETOPEN")
        assert err.value.final == "ERROR" and not isinstance(err.value, CmeError)
        with raises(AtError) as err:
            await e.cmd("ATD*99#")
        assert err.value.final == "NO CARRIER"
        await u.idle()
        assert cpin.lines == ["+CPIN: READY"]  # after the final: a URC, not the answer
        assert e.counters["errors"] == 5

    session(t)


def test_error_finals_carry_the_lines_the_modem_printed_before_them():
    # Real modems say why before the error final; the caller must get it with the error.
    # corpus: sim7600-http-setup-ip-error ("+IP ERROR: ..." is not AT+IPADDR's own prefix),
    # sim7600-boot-netopen-error (AT+CDNSGIP), bg77-every-command-error (ATI text + ERROR).
    async def t(e, u):
        u.when("AT+IPADDR", "\r\n+IP ERROR: Network not opened\r\n\r\nERROR\r\n")
        u.when("AT+CDNSGIP", "\r\n+CDNSGIP: 0,10\r\n\r\nERROR\r\n")
        u.when("ATI", "\r\nQuectel\r\nBG77\r\nRevision: BG77LAR02A04\r\nERROR\r\n")
        u.when("AT+CPIN?", "\r\n+CPIN: NOT READY\r\n\r\n+CME ERROR: 10\r\n")
        unknown = Seen()
        e.on_unknown = unknown
        with raises(AtError) as err:
            await e.cmd("AT+IPADDR")
        assert err.value.final == "ERROR" and err.value.lines == ["+IP ERROR: Network not opened"]
        with raises(AtError) as err:
            await e.cmd('AT+CDNSGIP="google.com"')
        assert err.value.lines == ["+CDNSGIP: 0,10"]
        with raises(AtError) as err:
            await e.cmd("ATI")
        assert err.value.lines == ["Quectel", "BG77", "Revision: BG77LAR02A04"]
        with raises(CmeError) as err:
            await e.cmd("AT+CPIN?")
        assert err.value.code == 10 and err.value.lines == ["+CPIN: NOT READY"]
        assert unknown.lines == []
        assert CmeError(3, "AT+X").lines == () and AtError("AT+X", "ERROR").lines == ()

    session(t)


def test_simcomati_answer_keeps_its_gcap_line():
    # corpus a7670-gnss-cgnssinfo-nofix-then-fix: AT+SIMCOMATI answers free text like ATI,
    # "+GCAP: ..." included; it never prints "+SIMCOMATI:" lines of its own.
    reply = (
        "\r\nManufacturer: SIMCOM INCORPORATED\r\nModel: A7670E-FASE\r\nIMEI: 1\r\n"
        "+GCAP: +CGSM,+FCLASS,+DS\r\n\r\n+CPIN: READY\r\nDeviceInfo:\r\n\r\nOK\r\n"
    )

    async def t(e, u):
        u.when("AT+SIMCOMATI", reply)
        cpin = Seen()
        e.on_urc("+CPIN:", cpin)
        r = await e.cmd("AT+SIMCOMATI")
        assert r.lines == [
            "Manufacturer: SIMCOM INCORPORATED",
            "Model: A7670E-FASE",
            "IMEI: 1",
            "+GCAP: +CGSM,+FCLASS,+DS",
            "DeviceInfo:",
        ]
        assert cpin.lines == ["+CPIN: READY"]  # a URC inside the answer is still a URC

    session(t)


def test_echo_on_is_dropped():
    async def t(e, u):
        u.when("ATI", "\r\nSIM7000G R1529\r\n\r\nOK\r\n")
        u.when("AT+CGSN", "\r\n862771076818015\r\n\r\nOK\r\n")
        u.when("ATE0", "\r\nOK\r\n")
        assert (await e.cmd("ATI")).lines == ["SIM7000G R1529"]
        assert (await e.cmd("AT+CGSN")).lines == ["862771076818015"]
        assert (await e.cmd("ATE0")).lines == []
        assert e.counters["echoes"] == 3

    session(t, FakeUart(echo=True))


def test_known_urc_without_handler_is_not_a_value_line_and_is_counted():
    async def t(e, u):
        unknown = Seen()
        e.on_unknown = unknown
        u.when("AT+CGSN", "\r\nRDY\r\n\r\n862771076818015\r\n\r\n+XYZ: 1\r\n\r\nOK\r\n")
        assert (await e.cmd("AT+CGSN")).lines == ["862771076818015"]
        u.inject("\r\nSMS DONE\r\n")
        await u.idle()
        assert unknown.lines == ["RDY", "+XYZ: 1", "SMS DONE"]
        assert e.counters["unknown_urcs"] == 3 and e.counters["urcs"] == 0

    session(t)


def test_garbage_and_overlong_lines_are_counted_and_harmless():
    async def t(e, u):
        rdy = Seen()
        e.on_urc("RDY", rdy)
        u.inject(b"\x00\xff\xfe\x80garbage\xff\r\n", b"+X: " + b"7" * 2000 + b"\r\n", b"RDY\r\n")
        u.when("AT", "\r\nOK\r\n")
        assert (await e.cmd("AT")).final == "OK"
        assert rdy.lines == ["RDY"]
        assert e.counters["garbage_lines"] == 1 and e.counters["overlong_lines"] == 1

    session(t, max_line=64)


def test_a_failing_handler_does_not_stop_the_reader():
    async def t(e, u):
        def boom(line):
            raise ValueError(line)

        e.on_urc("+CMTI:", boom)
        u.inject('\r\n+CMTI: "SM",4\r\n')
        u.when("AT", "\r\nOK\r\n")
        assert (await e.cmd("AT")).final == "OK"
        assert e.counters["handler_errors"] == 1

    session(t)


def test_cancelled_command_leaves_the_engine_usable():
    async def t(e, u):
        task = asyncio.create_task(e.cmd("AT+CGATT=1", timeout_ms=5000))
        while e.pending is None:
            await sleep_ms(0)
        task.cancel()
        with raises(asyncio.CancelledError):
            await task
        u.when("AT\r", "\r\nOK\r\n", "\r\nOK\r\n")  # the cancelled one's answer, the probe's
        u.when("AT+CSQ", "\r\n+CSQ: 3,0\r\n\r\nOK\r\n")
        assert (await e.cmd("AT+CSQ")).lines == ["+CSQ: 3,0"]

    session(t)


def test_concurrent_commands_run_one_at_a_time():
    async def t(e, u):
        u.when("AT+CSQ", "\r\n+CSQ: 1,0\r\n", "\r\nOK\r\n")
        u.when("AT+CREG?", "\r\n+CREG: 0,1\r\n", "\r\nOK\r\n")
        a = asyncio.create_task(e.cmd("AT+CSQ"))
        b = asyncio.create_task(e.cmd("AT+CREG?"))
        ra = await a
        rb = await b
        assert ra.lines == ["+CSQ: 1,0"] and rb.lines == ["+CREG: 0,1"]
        assert u.writes == [b"AT+CSQ\r", b"AT+CREG?\r"]

    session(t)


def test_wait_urc_times_out_with_the_prefix():
    async def t(e, u):
        with raises(AtTimeout) as err:
            await e.wait_urc("+QIOPEN:", 20)
        assert err.value.cmd == "+QIOPEN:" and e._waiters == []
        u.inject("\r\n+QIOPEN: 0,0\r\n")
        await u.idle()
        assert e.counters["unknown_urcs"] == 1  # nobody waits any more

    session(t)


def test_read_only_stream_plain_writer_recorder_and_byte_counters():
    log_ = []
    sent = []

    async def t(e, u):
        u.when("AT+CSQ", "\r\n+CSQ: 2,0\r\n", "\r\nOK\r\n")
        assert (await e.cmd("AT+CSQ")).lines == ["+CSQ: 2,0"]
        rx = b"".join(d for k, d in log_ if k == "rx")
        tx = b"".join(d for k, d in log_ if k == "tx")
        assert tx == b"AT+CSQ\r" and sent == [b"AT+CSQ\r"]
        assert rx == b"\r\n+CSQ: 2,0\r\n\r\nOK\r\n"
        assert e.counters["bytes_tx"] == 7 and e.counters["bytes_rx"] == len(rx)

    uart = ReadOnlyStream(piece=3)

    def write(data):
        sent.append(bytes(data))
        uart.write(data)

    session(t, uart, write=write, recorder=lambda k, d: log_.append((k, d)))


def test_expect_selects_lines_of_another_prefix():
    async def t(e, u):
        u.when("AT+CSUB", "\r\nSubEdition: V02\r\n+CVERSION: x\r\n\r\nOK\r\n")
        r = await e.cmd("AT+CSUB;+CVERSION", expect=("SubEdition", "+CVERSION"))
        assert r.lines == ["SubEdition: V02", "+CVERSION: x"]

    session(t)


def test_one_byte_reads():
    async def t(e, u):
        u.when("AT+QISEND=0,2", "\r\n> ")
        u.when("hi", "\r\nSEND OK\r\n")
        u.when("AT+QIRD=0,9", "\r\n+QIRD: 4\r\n> \r\n\r\nOK\r\n")
        assert (await e.send_with_prompt("AT+QISEND=0,2", b"hi")).final == "SEND OK"
        hdr, data = await e.read_payload("AT+QIRD=0,9", "+QIRD:", qird_len)
        assert bytes(data) == b"> \r\n"
        assert e.counters["stray_prompts"] == 0

    session(t, read_size=1)


def test_a_deadline_past_the_tick_wrap_holds():
    # ticks_ms() wraps at 2^30 ms on the device: the whole exchange's deadline lies beyond it.
    if not ticks_before_wrap(150):
        # A MicroPython whose counter is far from the wrap: tests/test_firmware_on_unix_port.py
        # runs this module again with the counter started just below it.
        skip("ticks_ms() is far from its wrap and cannot be set here")
    times = []

    async def late_prompt(u):
        await sleep_ms(250)  # after the wrap; then SEND OK never comes
        u.inject("\r\n>")

    async def t(e, u):
        prompt = asyncio.create_task(late_prompt(u))
        times.append(ticks_ms())
        with raises(AtTimeout):
            # The outer limit only stops a wrong deadline (days away) from hanging the test.
            await wait_for_ms(e.send_with_prompt("AT+CIPSEND=0,5", b"hi", timeout_ms=400), 3000)
        times.append(ticks_ms())
        await prompt

    try:
        session(t)
    finally:
        ticks_after_test()
    t0, t1 = times
    assert t0 > (1 << 30) - 1000 and t1 < 1000, times  # the deadline was past the wrap
    assert 350 <= ticks_diff(t1, t0) <= 1000, times
