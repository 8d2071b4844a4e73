# socket_ms: how long the modem's socket commands take (a modem grown slow shows here), and
# the retained status's link section, which carries it with the counters that show a field
# modem's faults from afar (hil_tests/test_modem.py reads them as evidence of each fault).
from modem_kit import OK, session

from tracker.aio import sleep_ms
from tracker.modem.link import ModemLink
from tracker.modem.simcom import Sim7600

SLOW_MS = 40


def test_socket_commands_count_their_time_and_the_status_reports_it():
    async def t(m, u):
        u.when("AT+CIPRXGET=1", OK)
        u.when("AT+NETOPEN\r", OK, "\r\n+NETOPEN: 0\r\n")
        u.when('AT+CIPOPEN=0,"TCP","h",1883', OK, "\r\n+CIPOPEN: 0,0\r\n")
        await m.activate_pdp()
        sock = await m.open_socket("h", 1883)
        assert m.counters["socket_ms"] == 0  # opening is not a send or a read

        async def slow_send(link, data):  # a modem that takes SLOW_MS to take the bytes
            await sleep_ms(SLOW_MS)

        m._send = slow_send
        for _ in range(2):
            sock.write(b"x")
            await sock.drain()
        assert m.counters["sends"] == 2
        assert m.counters["socket_ms"] >= 2 * SLOW_MS
        status = ModemLink(m).status()
        assert status["modem"]["socket_ms"] == m.counters["socket_ms"]
        assert status["modem"]["sends"] == 2 and status["modem"]["peer_closes"] == 0
        for key in ("garbage_lines", "unknown_urcs", "timeouts"):
            assert status["at"][key] == m.at.counters[key]

    session(Sim7600, t)
