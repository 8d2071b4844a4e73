"""Sockets through the simulated modem reach real TCP servers on the host.

SIMCom (SIM7600, A7670): NETOPEN / CIPOPEN / CIPSEND / CIPRXGET / CIPCLOSE.
Quectel (BG96): QICSGP / QIACT / QIOPEN / QISEND / QIRD / QICLOSE.
Formats from MODEMS.md and the corpus transcripts; each test asserts the exact bytes a
firmware parser would see.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from functools import partial

import pytest

from host_tools import broker as broker_mod
from host_tools.vboard.modem.probe import AtProbe
from tests.modem_sim_fixtures import modem_sims

# MQTT 3.1.1 CONNECT, clean session, keepalive 60 s, client id "sim-test" (MQTT 3.1.1 §3.1).
CONNECT = bytes([0x10, 20]) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x08sim-test"
CONNACK_OK = b"\x20\x02\x00\x00"


class EchoServer:
    """A TCP server on 127.0.0.1 that echoes, and closes a connection on b"bye"."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.closed_by_client = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    self.closed_by_client.set()
                    return
                self.received += data
                if data == b"bye":
                    return  # closing: the modem sees the peer go
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def make(tmp_path):
    """make(dialect, **timings) -> (sim, probe), registered and with echo off."""
    with modem_sims(tmp_path) as sims:
        yield partial(sims.start, boot=True, setup=("ATE0",))


def simcom_open(probe: AtProbe, port: int, link: int = 0) -> None:
    assert probe.cmd("AT+CIPRXGET=1") == "\r\nOK\r\n"
    assert probe.cmd("AT+NETOPEN") == "\r\nOK\r\n"
    probe.expect(rb"\r\n\+NETOPEN: 0\r\n")
    assert probe.cmd(f'AT+CIPOPEN={link},"TCP","127.0.0.1",{port}') == "\r\nOK\r\n"
    probe.expect(rf"\r\n\+CIPOPEN: {link},0\r\n".encode())


def prompted_send(
    probe: AtProbe, command: str, prompt: bytes, data: bytes, *answers: bytes
) -> None:
    """Send `command`, wait for its data `prompt`, write `data`, then expect each answer."""
    probe.write(f"{command}\r")
    probe.expect(prompt)
    probe.write(data)
    for answer in answers:
        probe.expect(answer)


def simcom_send(probe: AtProbe, data: bytes, link: int = 0) -> None:
    n = len(data)
    confirmed = rf"\r\n\+CIPSEND: {link},{n},{n}\r\n".encode()
    prompted_send(probe, f"AT+CIPSEND={link},{n}", rb"\r\n>", data, rb"\r\nOK\r\n", confirmed)


def quectel_open(probe: AtProbe, port: int, sock_id: int = 0) -> None:
    assert probe.cmd('AT+QICSGP=1,1,"internet","","",1') == "\r\nOK\r\n"
    assert probe.cmd("AT+QIACT=1") == "\r\nOK\r\n"
    assert probe.cmd(f'AT+QIOPEN=1,{sock_id},"TCP","127.0.0.1",{port},0,0') == "\r\nOK\r\n"
    probe.expect(rf"\r\n\+QIOPEN: {sock_id},0\r\n".encode())


def quectel_send(probe: AtProbe, data: bytes, sock_id: int = 0) -> None:
    command = f"AT+QISEND={sock_id},{len(data)}"
    prompted_send(probe, command, rb"\r\n> ", data, rb"\r\nSEND OK\r\n")


@pytest.mark.parametrize("dialect", ["sim7600", "a7670"])
def test_simcom_socket_session_with_a_real_tcp_server(make, echo, dialect):
    sim, probe = make(dialect)
    assert "+IP ERROR: Network not opened" in probe.cmd("AT+IPADDR")
    simcom_open(probe, echo.port)
    text = probe.cmd("AT+NETOPEN")
    assert text == "\r\n+IP ERROR: Network is already opened\r\n\r\nERROR\r\n"
    assert re.fullmatch(r"\r\n\+IPADDR: [\d.]+\r\n\r\nOK\r\n", probe.cmd("AT+IPADDR"))

    # The prompt is '>' with no line end: nothing follows it until the payload is sent.
    probe.write("AT+CIPSEND=0,5\r")
    assert probe.read_exact(3, timeout=5) == b"\r\n>"
    assert probe.read_for(0.1) == b""
    probe.write(b"hello")
    probe.expect(rb"\r\nOK\r\n\r\n\+CIPSEND: 0,5,5\r\n")
    probe.expect(rb"\r\n\+CIPRXGET: 1,0\r\n")  # the echo came back from the server
    assert bytes(echo.received) == b"hello"
    assert probe.cmd("AT+CIPRXGET=4,0") == "\r\n+CIPRXGET: 4,0,5\r\n\r\nOK\r\n"
    assert probe.cmd("AT+CIPRXGET=2,0,3") == "\r\n+CIPRXGET: 2,0,3,2\r\nhel\r\nOK\r\n"
    assert probe.cmd("AT+CIPRXGET=2,0,100") == "\r\n+CIPRXGET: 2,0,2,0\r\nlo\r\nOK\r\n"
    assert probe.cmd("AT+CIPRXGET=2,0") == "\r\n+IP ERROR: No data\r\n\r\nERROR\r\n"

    assert probe.cmd("AT+CIPCLOSE=0") == "\r\nOK\r\n"
    probe.expect(rb"\r\n\+CIPCLOSE: 0,0\r\n")
    assert echo.closed_by_client.wait(2)
    assert probe.cmd("AT+NETCLOSE") == "\r\nOK\r\n"
    probe.expect(rb"\r\n\+NETCLOSE: 0\r\n")
    counts = sim.snapshot()["commands"]
    assert counts["AT+CIPRXGET"] == 5 and counts["AT+CIPSEND"] == 1


@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
def test_send_command_ended_with_cr_lf(make, echo, dialect):
    # Drivers that end every line with CR LF (TinyGSM) work on real modems: the LF that
    # follows the CR is not taken as the first payload byte.
    sim, probe = make(dialect)
    if dialect == "bg96":
        quectel_open(probe, echo.port)
        probe.write("AT+QISEND=0,5\r\n")
    else:
        simcom_open(probe, echo.port)
        probe.write("AT+CIPSEND=0,5\r\n")
    probe.expect(rb">")
    probe.write(b"hello")
    probe.expect(rb"\r\n(SEND )?OK\r\n")
    deadline = time.monotonic() + 5  # the server's thread takes the bytes a moment later
    while len(echo.received) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bytes(echo.received) == b"hello"


def test_simcom_binary_payload_round_trips(make, echo):
    sim, probe = make("sim7600")
    simcom_open(probe, echo.port)
    payload = bytes(range(256)) * 4  # CR, LF, '>' and 0x1A included
    simcom_send(probe, payload)
    probe.expect(rb"\+CIPRXGET: 1,0\r\n")
    got = b""
    deadline = time.monotonic() + 3
    while len(got) < len(payload) and time.monotonic() < deadline:
        probe.write("AT+CIPRXGET=2,0,1500\r")
        m = probe.expect(rb"\r\n\+CIPRXGET: 2,0,(\d+),(\d+)\r\n|\r\n\+IP ERROR: No data\r\n")
        if m.group(1) is None:
            probe.expect(rb"ERROR\r\n")
            time.sleep(0.02)
            continue
        got += probe.read_exact(int(m.group(1)))
        probe.expect(rb"\r\nOK\r\n")
    assert got == payload


def test_simcom_cipopen_needs_netopen_and_reports_refused(make):
    sim, probe = make("sim7600")
    assert probe.cmd('AT+CIPOPEN=0,"TCP","127.0.0.1",1') == "\r\n+CIPOPEN: 0,2\r\n\r\nERROR\r\n"
    probe.cmd("AT+NETOPEN")
    probe.expect(rb"\+NETOPEN: 0\r\n")
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    assert probe.cmd(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}') == "\r\nOK\r\n"
    probe.expect(rb"\r\n\+CIPOPEN: 0,1\r\n")


def test_netopen_without_service_fails_with_netopen_1(make):
    sim, probe = make("a7670")
    sim.set_registration("denied")
    assert probe.cmd("AT+NETOPEN") == "\r\nOK\r\n"
    probe.expect(rb"\r\n\+NETOPEN: 1\r\n")
    sim.set_registration("home")
    probe.cmd("AT+NETOPEN")
    probe.expect(rb"\r\n\+NETOPEN: 0\r\n")


def test_quectel_socket_session_with_a_real_tcp_server(make, echo):
    sim, probe = make("bg96")
    # bg96-init-mqttcfg-qiact-escaped: unset APN, no active context -> bare OK.
    assert probe.cmd("AT+QICSGP=1") == '\r\n+QICSGP: 1,"","","",0\r\n\r\nOK\r\n'
    assert probe.cmd("AT+QIACT?") == "\r\nOK\r\n"
    quectel_open(probe, echo.port)
    assert re.fullmatch(r'\r\n\+QIACT: 1,1,1,"[\d.]+"\r\n\r\nOK\r\n', probe.cmd("AT+QIACT?"))

    probe.write("AT+QISEND=0,5\r")
    assert probe.read_exact(4, timeout=5) == b"\r\n> "
    assert probe.read_for(0.1) == b""
    probe.write(b"hello")
    probe.expect(rb"\r\nSEND OK\r\n")
    probe.expect(rb'\r\n\+QIURC: "recv",0\r\n')
    assert probe.cmd("AT+QIRD=0,0") == "\r\n+QIRD: 5,0,5\r\n\r\nOK\r\n"
    assert probe.cmd("AT+QIRD=0,1500") == "\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n"
    assert probe.cmd("AT+QIRD=0,1500") == "\r\n+QIRD: 0\r\n\r\nOK\r\n"
    assert probe.cmd("AT+QICLOSE=0") == "\r\nOK\r\n"
    assert echo.closed_by_client.wait(2)
    assert probe.cmd("AT+QICLOSE=0") == "\r\nOK\r\n"  # already closed: still OK (transcript)
    assert probe.cmd("AT+QIDEACT=1") == "\r\nOK\r\n"
    assert probe.cmd("AT+QIACT?") == "\r\nOK\r\n"


def test_quectel_echoes_the_payload_until_qisde_0(make, echo):
    sim, probe = make("bg96")
    quectel_open(probe, echo.port)
    probe.cmd("ATE1")
    probe.write("AT+QISEND=0,3\r")
    probe.expect(rb"AT\+QISEND=0,3\r\r\n> ")
    probe.write(b"abc")
    probe.expect(rb"^abc\r\nSEND OK\r\n")  # echoed, as AT+QISDE=1 (default) does
    probe.cmd("AT+QISDE=0")
    probe.write("AT+QISEND=0,3\r")
    probe.expect(rb"AT\+QISEND=0,3\r\r\n> ")
    probe.write(b"xyz")
    probe.expect(rb"^\r\nSEND OK\r\n")


@pytest.mark.parametrize(
    "dialect,closed_urc",
    [("sim7600", rb"\r\n\+IPCLOSE: 0,1\r\n"), ("bg96", rb'\r\n\+QIURC: "closed",0\r\n')],
)
def test_peer_close_becomes_the_dialect_urc(make, echo, dialect, closed_urc):
    sim, probe = make(dialect)
    if dialect == "bg96":
        quectel_open(probe, echo.port)
        quectel_send(probe, b"bye")
    else:
        simcom_open(probe, echo.port)
        simcom_send(probe, b"bye")
    probe.expect(closed_urc)
    assert sim.snapshot()["sockets"].get(0) in (None, "peer_closed")


@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
def test_mqtt_connect_reaches_a_real_broker(make, dialect):
    if "mosquitto" not in broker_mod.available_kinds():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    with broker_mod.start_broker(prefer="mosquitto") as broker:
        sim, probe = make(dialect)
        if dialect == "bg96":
            quectel_open(probe, broker.port)
            quectel_send(probe, CONNECT)
            probe.expect(rb'\+QIURC: "recv",0\r\n')
            assert probe.cmd("AT+QIRD=0,1500").encode() == b"\r\n+QIRD: 4\r\n" + (
                CONNACK_OK + b"\r\n\r\nOK\r\n"
            )
        else:
            simcom_open(probe, broker.port)
            simcom_send(probe, CONNECT)
            probe.expect(rb"\+CIPRXGET: 1,0\r\n")
            assert probe.cmd("AT+CIPRXGET=2,0,1500").encode() == (
                b"\r\n+CIPRXGET: 2,0,4,0\r\n" + CONNACK_OK + b"\r\nOK\r\n"
            )
    delays = sim.imposed_delays()
    assert delays["pdp"] > 0 and delays["socket_open"] > 0 and delays["registration"] > 0
    assert delays["total"] == pytest.approx(sum(v for k, v in delays.items() if k != "total"))
