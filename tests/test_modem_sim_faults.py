"""Each fault of the modem simulator has the effect a firmware would see on a real modem, and
counts what it did (snapshot()["fault_effects"]), so a HIL test can tell a fault that acted
from one that was switched on and did nothing."""

from __future__ import annotations

import re
import socket
import threading
import time
from functools import partial
from types import SimpleNamespace

import pytest

from host_tools.vboard.modem.probe import AtProbe, power_on
from tests.modem_sim_fixtures import modem_sims


@pytest.fixture
def server():
    """A TCP server on 127.0.0.1 that holds connections: `.port`, `.eof` once one closes."""
    sock = socket.create_server(("127.0.0.1", 0))
    eof = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            while conn.recv(4096):
                pass
            eof.set()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield SimpleNamespace(port=sock.getsockname()[1], eof=eof)
    sock.close()


@pytest.fixture
def make(tmp_path):
    """make(dialect, *, boot=True, **timings) -> (sim, probe); booted means registered, echo
    off and numeric +CME errors."""
    with modem_sims(tmp_path) as sims:
        yield partial(sims.start, boot=True, setup=("ATE0", "AT+CMEE=1"))


def open_socket(dialect: str, probe: AtProbe, port: int) -> None:
    if dialect == "bg96":
        assert probe.cmd("AT+QIACT=1") == "\r\nOK\r\n"
        probe.cmd(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{port},0,0')
        probe.expect(rb"\+QIOPEN: 0,0\r\n")
    else:
        probe.cmd("AT+CIPRXGET=1")
        probe.cmd("AT+NETOPEN")
        probe.expect(rb"\+NETOPEN: 0\r\n")
        probe.cmd(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}')
        probe.expect(rb"\+CIPOPEN: 0,0\r\n")


def effects(sim) -> dict[str, int]:
    """The fault effects counted so far, without the zeros."""
    return {k: n for k, n in sim.snapshot()["fault_effects"].items() if n}


PDP_LOST = {
    "sim7600": rb"\r\n\+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY\r\n\r\n\+IPCLOSE: 0,2\r\n",
    "bg96": rb'\r\n\+QIURC: "pdpdeact",1\r\n',
}


@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
def test_deregister_drops_registration_pdp_and_sockets(make, server, dialect):
    sim, probe = make(dialect, registration_s=0.1)
    probe.cmd("AT+CEREG=1")
    open_socket(dialect, probe, server.port)
    sim.fault("deregister")
    probe.expect(rb"\r\n\+CEREG: 2\r\n")
    probe.expect(PDP_LOST[dialect])
    assert server.eof.wait(2)  # the host connection went with the PDP context
    assert effects(sim) == {"deregistrations": 1}
    assert "+CEREG: 1,2" in probe.cmd("AT+CEREG?")
    assert "deregister" in sim.faults()
    time.sleep(0.2)  # longer than the registration delay: still out while the fault lasts
    assert "+CEREG: 1,2" in probe.cmd("AT+CEREG?")
    sim.fault("deregister", on=False)
    probe.expect(rb"\r\n\+CEREG: 1\r\n", timeout=2)
    assert sim.faults() == {}


def test_deregister_for_a_while_comes_back_by_itself(make):
    sim, probe = make("a7670", registration_s=0.05)
    probe.cmd("AT+CEREG=1")
    sim.fault("deregister", stat=0, duration_s=0.1)
    probe.expect(rb"\r\n\+CEREG: 0\r\n")
    probe.expect(rb"\r\n\+CEREG: 2\r\n")
    probe.expect(rb"\r\n\+CEREG: 1\r\n")


@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
def test_pdp_drop_sends_the_dialect_urc_and_kills_sockets(make, server, dialect):
    sim, probe = make(dialect)
    open_socket(dialect, probe, server.port)
    sim.fault("pdp_drop")
    probe.expect(PDP_LOST[dialect])
    assert server.eof.wait(2)
    assert sim.faults() == {}  # one-shot
    assert effects(sim) == {"pdp_drops": 1}
    if dialect == "bg96":
        assert probe.cmd("AT+QIACT?") == "\r\nOK\r\n"
        sim.fault("pdp_drop", persist=True)
        assert probe.cmd("AT+QIACT=1") == "\r\nERROR\r\n"
        sim.fault("pdp_drop", on=False)
        assert probe.cmd("AT+QIACT=1") == "\r\nOK\r\n"
    else:
        assert "+NETOPEN: 0" in probe.cmd("AT+NETOPEN?")
        probe.cmd("AT+NETOPEN")  # the recovery the firmware must do
        probe.expect(rb"\r\n\+NETOPEN: 0\r\n")


@pytest.mark.parametrize(
    "dialect,urc", [("a7670", rb"\r\n\+IPCLOSE: 0,1\r\n"), ("bg96", rb'\+QIURC: "closed",0\r\n')]
)
def test_peer_close_fault(make, server, dialect, urc):
    sim, probe = make(dialect)
    open_socket(dialect, probe, server.port)
    sim.fault("peer_close")
    probe.expect(urc)
    assert server.eof.wait(2)
    assert effects(sim) == {"peer_closes": 1}
    sim.fault("peer_close")  # nothing open any more: nothing to close
    assert effects(sim) == {"peer_closes": 1}


def test_hang_survives_at_but_not_a_pwrkey_power_cycle(make):
    sim, probe = make("sim7600", pwrkey_off_s=0.1)
    probe.cmd("ATE1")  # a hung modem does not even echo
    sim.fault("hang")
    for _ in range(3):
        probe.write("AT\r")
        assert probe.read_for(0.1) == b""  # no echo, no answer
    assert effects(sim) == {"hung_rx_bytes": 9}
    assert sim.status_pin() == 1  # it looks on
    sim.pulse_pwrkey(0.03)  # a short tap does nothing either
    assert probe.read_for(0.1) == b""
    sim.pulse_pwrkey(0.12)  # long press: power off (silently: it is hung)
    time.sleep(0.1)
    assert sim.status_pin() == 0
    assert sim.faults() == {}
    power_on(sim, probe)
    assert probe.cmd("AT") == "AT\r\r\nOK\r\n"


def test_hang_cured_by_the_power_switch(make):
    sim, probe = make("bg96")
    sim.fault("hang")
    probe.write("AT\r")
    assert probe.read_for(0.1) == b""
    sim.set_power(False)
    sim.set_power(True)
    power_on(sim, probe)
    assert "OK" in probe.cmd("AT")


def test_slow_delays_every_answer(make):
    sim, probe = make("bg96")
    sim.fault("slow", delay_ms=250)
    probe.write("AT\r")
    assert probe.read_for(0.15) == b""
    probe.expect(rb"\r\nOK\r\n", timeout=1)
    sim.fault("slow", on=False)
    assert probe.cmd("AT", timeout=0.2) == "\r\nOK\r\n"
    assert effects(sim) == {"delayed_answers": 1}
    assert sim.imposed_delays()["slow"] == pytest.approx(0.25)


def test_garbage_between_lines(make):
    sim, probe = make("sim7600")
    sim.fault("garbage", rate=1.0, max_len=4, seed=1)
    probe.write("AT+CSQ\r")
    probe.expect(rb"\r\nOK\r\n")
    raw = probe.consumed
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    # Garbage sits between frames (each run is followed by a frame's CR LF); the lines
    # themselves are intact.
    runs = list(re.finditer(rb"[\x80-\xff]+", raw))
    assert runs
    assert all(raw[r.end() : r.end() + 2] == b"\r\n" for r in runs)
    cleaned = bytes(b for b in raw if b < 0x80)
    assert cleaned == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    # Counted as sent: every run, every byte.
    sent = sum(r.end() - r.start() for r in runs)
    assert effects(sim) == {"garbage_bursts": len(runs), "garbage_bytes": sent}


def test_urc_storm_while_commands_still_work(make):
    sim, probe = make("sim7600")
    sim.fault("urc_storm", interval_ms=10, burst=3)
    time.sleep(0.15)
    text = probe.cmd("AT+CSQ")
    assert "+CSQ: 20,99\r\n\r\nOK\r\n" in text
    got = text + probe.read_for(0.1).decode("latin-1")
    urcs = re.findall(r"\r\n(\+CEREG: 1|\+CSQ: 20,99|\+CGEV: ME PDN ACT 8)\r\n", got)
    assert len(urcs) >= 6
    sim.fault("urc_storm", on=False)
    got += probe.read_for(0.05).decode("latin-1")
    assert probe.read_for(0.1) == b""
    stormed = re.findall(r"\r\n(\+CEREG: 1|\+CSQ: 20,99|\+CGEV: ME PDN ACT 8)\r\n", got)
    # Every URC the storm sent was received (one +CSQ line is the command's own answer).
    assert effects(sim) == {"storm_urcs": len(stormed) - 1}


def test_cme_answers_the_chosen_command(make):
    sim, probe = make("sim7600")
    sim.fault("cme", command="AT+CIPOPEN", code=3)
    assert probe.cmd('AT+CIPOPEN=0,"TCP","127.0.0.1",1883') == "\r\n+CME ERROR: 3\r\n"
    assert probe.cmd("AT+CSQ").endswith("OK\r\n")
    assert effects(sim) == {"cme_answers": 1}
    assert sim.faults() == {"cme": {"rules": {"AT+CIPOPEN": 3}}}
    sim.fault("cme", on=False, command="AT+CIPOPEN")
    assert probe.cmd('AT+CIPOPEN=0,"TCP","127.0.0.1",1883') != "\r\n+CME ERROR: 3\r\n"


def test_no_sim(make):
    sim, probe = make("a7670")
    probe.cmd("AT+CEREG=1")
    sim.fault("no_sim")
    probe.expect(rb"\r\n\+CPIN: SIM REMOVED\r\n")  # a7670-gnss-cgnssinfo-nofix-then-fix
    probe.expect(rb"\r\n\+CEREG: 0\r\n")
    assert probe.cmd("AT+CPIN?") == "\r\n+CME ERROR: 10\r\n"
    assert probe.cmd("AT+CEREG?") == "\r\n+CEREG: 1,0\r\n\r\nOK\r\n"
    assert effects(sim) == {"sim_removals": 1, "sim_absent_answers": 1}
    sim.fault("no_sim", on=False)
    probe.expect(rb"\r\n\+CPIN: READY\r\n")
    probe.expect(rb"\r\n\+CEREG: 1\r\n", timeout=2)


def test_no_sim_at_boot_skips_the_sim_banners(make):
    sim, probe = make("bg96", boot=False)
    sim.fault("no_sim")
    sim.pulse_pwrkey(0.03)
    probe.expect(rb"APP RDY\r\n")
    got = probe.read_for(0.2)
    assert b"SMS DONE" not in got and b"+CPIN: READY" not in got
    assert probe.cmd("AT+CPIN?").endswith("+CME ERROR: 10\r\n")
    assert "+CEREG: 0,0" in probe.cmd("AT+CEREG?")
    assert effects(sim) == {"sim_removals": 1, "sim_absent_answers": 1}  # booted without it


def test_registration_fault_sets_the_state(make):
    sim, probe = make("bg96")
    probe.cmd("AT+CEREG=1")
    sim.fault("registration", state="denied")
    probe.expect(rb"\r\n\+CEREG: 3\r\n")
    assert sim.faults() == {"registration": {"state": "denied"}}
    assert "+CGATT: 0" in probe.cmd("AT+CGATT?")
    assert effects(sim) == {}  # the URC told it, the MCU did not ask yet
    assert "+CEREG: 1,3" in probe.cmd("AT+CEREG?")
    assert effects(sim) == {"registration_denials": 1}
    sim.fault("registration", on=False)
    probe.expect(rb"\r\n\+CEREG: 1\r\n")
    assert sim.faults() == {}


@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
def test_faults_with_nothing_to_act_on_count_nothing(make, dialect):
    """Switched on, these faults find nothing to do: no socket to close, no data context to
    drop, a powered-off modem to storm or to hang, no answer to garble or delay."""
    sim, probe = make(dialect)
    sim.fault("peer_close")
    sim.fault("pdp_drop")
    sim.fault("garbage", rate=0.0)
    sim.fault("slow", delay_ms=200)
    assert probe.read_for(0.1) == b""  # no command: nothing to delay
    sim.fault("slow", on=False)
    assert "OK" in probe.cmd("AT+CSQ")
    sim.set_power(False)
    sim.fault("urc_storm", interval_ms=10)
    sim.fault("hang")
    time.sleep(0.1)
    probe.write("AT\r")  # to a modem without power: lost, but not to a hang
    assert probe.read_for(0.1) == b""
    assert effects(sim) == {}
