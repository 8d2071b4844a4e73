# The two GNSS receivers against scripted fakes: NMEA bytes on a UART arriving in odd pieces
# (expected values from gpsd's report of the same sentences, corpus ac12.log.chk), and the
# modem's GNSS over a real AT engine in the Quectel and SIMCom dialects. Runs on CPython and
# the Unix port.
from fake_uart import FakeUart
from modem_kit import FakePin, answer
from mptest import run

from tracker import log
from tracker.aio import sleep_ms
from tracker.location.receivers import SILENT_MS, ModemReceiver, UartReceiver
from tracker.modem.at import AtEngine

log.echo = False

# gpsd 3.x on these: lat 20.628798333 lon -87.068080000 (RMC), altMSL -30.4 (GGA), track
# 201.8, speed 0.051 m/s (0.1 kn).
GGA = b"$GPGGA,193221.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,*7D\r\n"
RMC = b"$GPRMC,193221.00,A,2037.7279,N,08704.0848,W,00.1,201.8,231207,01,W,A*2D\r\n"


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def test_uart_receiver_assembles_sentences_from_pieces_and_reports_the_epoch():
    async def t():
        u = FakeUart()
        pin = FakePin(0)
        r = UartReceiver(u, pin, 1)
        clock = Clock()
        assert pin.level == 0  # off until asked
        await r.power(True, clock())
        assert pin.level == 1
        task = asyncio_task(r.run(clock))
        # Noise, an overlong line and a bad checksum first: none of them is a fix.
        data = b"\x00\xff$GPGGA,garbage\r\n" + b"$" + b"x" * 300 + b"\r\n"
        data += GGA.replace(b"*7D", b"*7E") + GGA + RMC
        u.inject_split(data, 3, 17, 40, 200, 333, 390, 420)
        await u.idle()
        fix = await r.poll(clock())
        assert fix is not None and r.reason is None
        assert (fix.lat, fix.lon) == (20628798, -87068080)  # RMC's, as gpsd reports
        assert fix.alt == -30.4 and abs(fix.heading - 201.8) < 1e-3
        assert abs(fix.speed - 0.0514) < 1e-3 and fix.sats == 4 and fix.hdop == 1.7
        assert fix.ts == 1198438341  # 2007-12-23T19:32:21Z
        assert r.counters["overlong"] == 1
        assert await r.poll(clock()) is None  # one report per epoch
        task.cancel()

    run(t())


def test_uart_receiver_says_when_the_receiver_is_silent():
    async def t():
        u = FakeUart()
        r = UartReceiver(u)
        clock = Clock()
        task = asyncio_task(r.run(clock))
        await r.power(True, clock())
        clock.t = SILENT_MS - 1
        assert await r.poll(clock()) is None and r.reason == "searching"
        clock.t = SILENT_MS
        assert await r.poll(clock()) is None and r.reason == "no_data"
        task.cancel()

    run(t())


def asyncio_task(coro):
    from tracker.aio import asyncio

    return asyncio.create_task(coro)


class FakeModem:
    """What ModemReceiver reads of a modem driver."""

    def __init__(self, family, at):
        self.family = family
        self.at = at
        self.powered = True
        self.changing_power = False
        self.counters = {"power_ons": 1, "unexpected_resets": 0}

    def off(self):
        return not self.powered


def modem_session(family, test):
    async def main():
        u = FakeUart()
        at = AtEngine(u, default_timeout_ms=300, resync_ms=100)
        at.start()
        try:
            await test(ModemReceiver(FakeModem(family, at)), u)
        finally:
            at.stop()
            await sleep_ms(0)

    run(main())


def test_quectel_no_fix_then_fix_then_modem_reboot():
    async def t(r, u):
        answer(u, "AT+QGPS=1", times=1)
        u.when("AT+QGPSLOC=2", "\r\n+CME ERROR: 516\r\n", times=1)
        answer(u, "AT+QGPSLOC=2", "+QGPSLOC: 113355.0,44.74770,-85.56527,1.2,192.0,3,277.11,"
               "3.6,1.9,250420,10", times=1)  # fmt: skip
        await r.power(True)
        assert await r.poll(0) is None and r.reason == "searching"
        fix = await r.poll(5)
        assert (fix.lat, fix.lon, fix.at) == (44747700, -85565270, 5)
        assert abs(fix.speed - 1.0) < 1e-3  # 3.6 km/h
        # The modem rebooted (its GNSS is off again): switched on before the next query.
        r.modem.counters["unexpected_resets"] = 1
        u.when("AT+QGPS=1", "\r\n+CME ERROR: 504\r\n", times=1)  # or already on: fine
        u.when("AT+QGPSLOC=2", "\r\n+CME ERROR: 516\r\n", times=1)
        assert await r.poll(6) is None
        assert r.counters["restarts"] == 1 and r.counters["errors"] == 0
        sent = [w for w in u.writes if w.startswith(b"AT+QGPS=1")]
        assert len(sent) == 2, u.writes
        answer(u, "AT+QGPSEND", times=1)
        await r.power(False)
        assert u.writes[-1] == b"AT+QGPSEND\r" and not r.on

    modem_session("bg96", t)


def test_modem_off_or_garbled_answers_are_reasons_not_fixes():
    async def t(r, u):
        answer(u, "AT+CGNSSPWR=1", times=1)
        answer(u, "AT+CGNSSINFO", "+CGNSSINFO: 3,07,,03,00,22.65x,N,114.0598297,E,291124,"
               "023114.00,118.4,0.679,,3.43,2.74,2.06,06", times=1)  # fmt: skip
        await r.power(True)
        assert await r.poll(0) is None and r.reason == "bad_answer"
        r.modem.powered = False
        assert await r.poll(1) is None and r.reason == "modem_off"

    modem_session("a76xx", t)


def test_old_sim7600_firmware_falls_back_to_cgpsinfo():
    async def t(r, u):
        answer(u, "AT+CGPS=1", times=1)
        u.when("AT+CGNSSINFO", "\r\nERROR\r\n", times=1)
        answer(u, "AT+CGPSINFO", "+CGPSINFO: 3113.343286,N,12121.234064,E,250311,072809.3,"
               "44.1,0.0,0", times=1)  # fmt: skip
        await r.power(True)
        assert await r.poll(0) is None
        fix = await r.poll(1)
        assert (fix.lat, fix.lon, fix.alt) == (31222388, 121353901, 44.1)

    modem_session("sim7600", t)
