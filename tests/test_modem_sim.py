"""The modem simulator looks like a real SIM7600 / A7670 / BG96 from the MCU's side of the UART.

Every test drives the pty with pyserial, as the firmware will: pins through the bench API,
bytes on the wire, nothing else. Expected texts come from the corpus transcripts
(../shared/corpus/at-transcripts beside the repo) and MODEMS.md; comments name the file.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest

from host_tools.vboard.modem import ModemSimError, ModemSimulator, Timings, read_transcript
from host_tools.vboard.modem.network import luhn_valid
from host_tools.vboard.modem.probe import AtProbe, power_on, wait_registered
from tests.modem_sim_fixtures import modem_sims

DIALECTS = ("sim7600", "a7670", "bg96")
# Beside the repo, as CI checks it out; missing, the corpus tests fail (a skip would hide it).
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "at-transcripts"

# Boot banners in order (corpus): sim7600-no-response-then-reboot-hexdump and
# sim7600-boot-netopen-error; a7670-boot-gnss-cgnsinf-error; bg96-boot-app-rdy-cme-error
# (RDY, APP RDY) plus the +CPIN/+QIND lines MODEMS.md and the brief name.
BANNERS = {
    "sim7600": ["RDY", "+CPIN: READY", "SMS DONE", "PB DONE"],
    "a7670": ["*ATREADY: 1", "+CPIN: READY", "SMS DONE", "PB DONE"],
    "bg96": ["RDY", "APP RDY", "+CPIN: READY", "+QIND: SMS DONE", "+QIND: PB DONE"],
}


@pytest.fixture
def make(tmp_path):
    """make(dialect, *, baud=115200, **timings) -> (sim, probe), powered off; fast timings,
    a 20 ms PWRKEY threshold."""
    with modem_sims(tmp_path) as sims:
        yield sims.start


def powered_down(sim: ModemSimulator, within_s: float = 5.0) -> bool:
    """The STATUS pin went low within `within_s` (the power-down takes power_down_s; a
    loaded machine takes longer)."""
    deadline = time.monotonic() + within_s
    while sim.status_pin() != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def lines_of(data: bytes) -> list[str]:
    return [ln for ln in data.decode("latin-1").split("\r\n") if ln]


# -- power and boot --------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_boot_banners_are_the_real_modems(make, dialect):
    sim, probe = make(dialect)
    assert sim.status_pin() == 0
    banner = power_on(sim, probe)
    got = [ln for ln in lines_of(banner) if not ln.startswith("+CGEV")]
    assert got == BANNERS[dialect]
    # Framed like the hexdump in sim7600-no-response-then-reboot: "\r\nRDY\r\n\r\n+CPIN: ..."
    first = BANNERS[dialect][0].encode()
    assert banner.startswith(b"\r\n" + first + b"\r\n\r\n")
    assert sim.status_pin() == 1


@pytest.mark.parametrize(
    "dialect, sample",
    [
        ("sim7600", "sim7600-boot-netopen-error-1.txt"),
        ("a7670", "a7670-boot-gnss-cgnsinf-error-1.txt"),
        ("bg96", "bg96-boot-app-rdy-cme-error-1.txt"),
    ],
)
def test_expected_banners_occur_in_the_corpus(dialect, sample):
    assert CORPUS.is_dir(), f"AT transcript corpus missing: expected it at {CORPUS}"
    text = (CORPUS / sample).read_text(encoding="utf-8")
    lines = [re.sub(r"^\d\d:\d\d:\d\d\.\d+ -> ", "", ln).strip() for ln in text.splitlines()]
    corpus_banners = [ln for ln in lines if ln in BANNERS[dialect]]
    # Every banner the corpus shows appears in our list, in the same order.
    assert corpus_banners
    ours = [b for b in BANNERS[dialect] if b in corpus_banners]
    assert corpus_banners[: len(ours)] == ours


@pytest.mark.parametrize("dialect", DIALECTS)
def test_bytes_before_boot_completes_are_lost(make, dialect):
    sim, probe = make(dialect, boot_s=0.25)
    probe.write("AT\r")  # modem off: nothing
    assert probe.read_for(0.1) == b""
    sim.pulse_pwrkey(0.03)
    probe.write("AT\r")  # booting: nothing either (ten unanswered AT in the corpus)
    assert probe.read_for(0.1) == b""
    assert sim.state == "booting"
    probe.expect(re.escape(BANNERS[dialect][0].encode()))
    assert "OK" in probe.cmd("AT")


def test_sim7600_needs_the_datasheet_pwrkey_pulse(make):
    # SIM7600: 0.5 s LOW (MODEMS.md "about 0.5 s"); a 0.3 s tap does nothing.
    sim, probe = make("sim7600", pwrkey_on_s=None)
    assert sim.pwrkey_timing == (0.5, 2.5)
    sim.pulse_pwrkey(0.3)
    assert probe.read_for(0.3) == b""
    assert sim.state == "off"
    power_on(sim, probe, hold_s=0.55)
    assert sim.status_pin() == 1


def test_bg96_pwrkey_short_press_keeps_it_on_long_press_powers_down(make):
    # BG96: >= 500 ms on, >= 650 ms off (Quectel BG95&BG96 compatible design).
    sim, probe = make("bg96", pwrkey_on_s=None)
    assert sim.pwrkey_timing == (0.5, 0.65)
    power_on(sim, probe, hold_s=0.55)
    sim.pulse_pwrkey(0.3)
    assert "OK" in probe.cmd("AT")
    sim.pulse_pwrkey(0.7)
    probe.expect(rb"\r\nPOWERED DOWN\r\n")
    assert powered_down(sim)  # power_down_s = 0.05 in fast timings
    probe.write("AT\r")
    assert probe.read_for(0.15) == b""
    assert sim.snapshot()["power_offs"] == {"pwrkey": 1}


def test_sim7600_long_press_powers_down_with_normal_power_down(make):
    sim, probe = make("sim7600", pwrkey_off_s=0.2)
    power_on(sim, probe)
    sim.pulse_pwrkey(0.1)  # shorter than Toff: nothing
    assert "OK" in probe.cmd("AT")
    sim.pulse_pwrkey(0.25)
    probe.expect(rb"\r\nNORMAL POWER DOWN\r\n")
    assert powered_down(sim)


def test_power_switch_kills_the_modem_at_once_and_pwrkey_revives_it(make):
    sim, probe = make("sim7600", baud=9600)
    power_on(sim, probe, timeout=10)
    probe.write("ATI\r")  # ~100 bytes: more than 0.1 s on the wire at 9600 baud
    time.sleep(0.03)
    sim.set_power(False)
    assert sim.status_pin() == 0
    got = probe.read_for(0.2)
    assert b"OK" not in got  # the answer was cut off with the power
    sim.pulse_pwrkey(0.05)  # no supply: no boot
    assert probe.read_for(0.2) == b""
    sim.set_power(True)
    power_on(sim, probe)
    assert "OK" in probe.cmd("AT")
    snap = sim.snapshot()
    assert snap["power_cycles"] == 2
    assert snap["power_offs"] == {"cut": 1}


@pytest.mark.parametrize("dialect,command", [("sim7600", "AT+CPOWD=1"), ("bg96", "AT+QPOWD=1")])
def test_power_down_commands(make, dialect, command):
    sim, probe = make(dialect)
    power_on(sim, probe)
    probe.write(command + "\r")
    if dialect == "sim7600":
        m = probe.expect(rb"\r\nNORMAL POWER DOWN\r\n")
        assert b"OK" not in probe.consumed
    else:
        m = probe.expect(rb"\r\nOK\r\n\r\nPOWERED DOWN\r\n")
    assert m
    assert powered_down(sim)


# -- AT engine ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_echo_is_on_until_ate0(make, dialect):
    sim, probe = make(dialect)
    power_on(sim, probe)
    wait_registered(probe)  # A7670 announces its bearer (+CGEV) on registration
    assert probe.cmd("AT") == "AT\r\r\nOK\r\n"  # bg96-init-mqttcfg-qiact-escaped
    assert probe.cmd("ATE0") == "ATE0\r\r\nOK\r\n"
    assert probe.cmd("AT") == "\r\nOK\r\n"
    assert probe.cmd("AT+CSQ") == "\r\n+CSQ: 20,99\r\n\r\nOK\r\n"


def test_command_split_across_writes_and_lowercase(make):
    # bg96-init-mqttcfg-qiact-escaped sends "AT+CFUN=", "1", "\r" in three writes;
    # sim7600-boot-netopen-error types lowercase commands.
    sim, probe = make("bg96")
    power_on(sim, probe)
    for part in ("AT+CFUN=", "1", "\r"):
        probe.write(part)
        time.sleep(0.01)
    probe.expect(rb"AT\+CFUN=1\r\r\nOK\r\n")
    assert "+CFUN: 1" in probe.cmd("at+cfun?")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unknown_commands_and_basic_chains(make, dialect):
    sim, probe = make(dialect)
    power_on(sim, probe)
    wait_registered(probe)  # A7670 announces its bearer (+CGEV) on registration
    probe.cmd("ATE0")
    assert probe.cmd("AT+NOSUCH") == "\r\nERROR\r\n"
    assert probe.cmd("AT&FZE0") == "\r\nOK\r\n"  # bg96-reset-powered-down-pdpdeact
    assert probe.cmd("ATE0Q0V1") == "\r\nOK\r\n"  # ec25-ril-init-cpin-cme13
    assert probe.cmd("AT+CSQ;+CFUN?") == "\r\n+CSQ: 20,99\r\n\r\n+CFUN: 1\r\n\r\nOK\r\n"


@pytest.mark.parametrize(
    "dialect,default",
    [("sim7600", "operation not allowed"), ("a7670", "operation not allowed"), ("bg96", "3")],
)
def test_cmee_numeric_or_verbose(make, dialect, default):
    sim, probe = make(dialect)
    power_on(sim, probe)
    wait_registered(probe)  # A7670 announces its bearer (+CGEV) on registration
    probe.cmd("ATE0")
    # SIMCom's default is verbose (corpus: "+CME ERROR: SIM busy" before any AT+CMEE).
    assert probe.cmd("AT+CPIN=1234") == f"\r\n+CME ERROR: {default}\r\n"
    probe.cmd("AT+CMEE=0")
    assert probe.cmd("AT+CPIN=1234") == "\r\nERROR\r\n"
    probe.cmd("AT+CMEE=1")
    assert probe.cmd("AT+CPIN=1234") == "\r\n+CME ERROR: 3\r\n"
    probe.cmd("AT+CMEE=2")
    assert probe.cmd("AT+CPIN=1234") == "\r\n+CME ERROR: operation not allowed\r\n"
    assert probe.cmd("AT+CMEE?") == "\r\n+CMEE: 2\r\n\r\nOK\r\n"


def test_sim_busy_between_rdy_and_cpin_ready(make):
    # sim7600-boot-mqtt-certdown: RDY, AT+CPIN? -> "+CME ERROR: SIM busy", then +CPIN: READY.
    sim, probe = make("sim7600", banner_scale=1.0)
    sim.pulse_pwrkey(0.03)
    probe.expect(rb"\r\nRDY\r\n")
    assert "+CME ERROR: SIM busy" in probe.cmd("AT+CPIN?")
    probe.expect(rb"\r\n\+CPIN: READY\r\n")
    assert "+CPIN: READY\r\n\r\nOK" in probe.cmd("AT+CPIN?")


@pytest.mark.parametrize(
    "dialect,command,pattern",
    [
        ("sim7600", "AT+CICCID", r"\+ICCID: (\d{19})\r\n"),
        ("sim7600", "AT+CCID", r"\r\n(\d{19})\r\n"),
        ("a7670", "AT+CICCID", r"\+ICCID: (\d{19})\r\n"),
        ("bg96", "AT+QCCID", r"\+QCCID: (\d{19})F\r\n"),  # bg96-boot-app-rdy-cme-error
    ],
)
def test_identity(make, dialect, command, pattern):
    sim, probe = make(dialect)
    power_on(sim, probe)
    imei = re.search(r"\r\n(\d+)\r\n", probe.cmd("AT+CGSN")).group(1)
    assert len(imei) == 15 and luhn_valid(imei)
    assert imei == sim.imei
    assert imei in probe.cmd("AT+GSN")
    iccid = re.search(pattern, probe.cmd(command)).group(1)
    assert luhn_valid(iccid) and iccid == sim.iccid
    assert sim.snapshot()["commands"]["AT+CGSN"] == 1


def test_imei_is_stable_per_workdir_and_differs_between_boards(tmp_path):
    a1 = ModemSimulator("bg96", tmp_path / "a").imei
    a2 = ModemSimulator("bg96", tmp_path / "a").imei
    b = ModemSimulator("bg96", tmp_path / "b").imei
    assert a1 == a2 and a1 != b


def test_identity_texts(make):
    sim, probe = make("bg96")
    power_on(sim, probe)
    probe.cmd("ATE0")
    # bg96-boot-app-rdy-cme-error
    assert probe.cmd("ATI") == "\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n"
    assert "BG96MAR02A07M1G_01.019.01.019" in probe.cmd("AT+QGMR")
    sim2, probe2 = make("sim7600")
    power_on(sim2, probe2)
    text = probe2.cmd("ATI")
    assert "Model: SIMCOM_SIM7600G-H\r\nRevision: LE20B04SIM7600G22" in text
    assert "+CGMR: LE20B04SIM7600G22" in probe2.cmd("AT+CGMR")


# -- network ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect,act", [("sim7600", 7), ("a7670", 7), ("bg96", 8)])
def test_registration_reported_and_announced(make, dialect, act):
    sim, probe = make(dialect, registration_s=0.3)
    power_on(sim, probe)  # all banners in (the search started at +CPIN: READY)
    probe.cmd("ATE0")
    assert probe.cmd("AT+CEREG?") == "\r\n+CEREG: 0,2\r\n\r\nOK\r\n"
    assert probe.cmd("AT+COPS?") == "\r\n+COPS: 0\r\n\r\nOK\r\n"
    probe.cmd("AT+CEREG=2")
    probe.cmd("AT+CREG=1")
    # One state change, one URC per enabled command (+CREG first, then +CEREG).
    probe.expect(rf'\r\n\+CREG: 1\r\n\r\n\+CEREG: 1,"1A2B","01A2D001",{act}\r\n'.encode())
    if dialect == "a7670":  # a7670-boot-gnss-cgnsinf-error: the default bearer comes up
        probe.expect(rb"\r\n\+CGEV: EPS PDN ACT 1\r\n")
    assert probe.cmd("AT+CEREG?") == f'\r\n+CEREG: 2,1,"1A2B","01A2D001",{act}\r\n\r\nOK\r\n'
    assert probe.cmd("AT+CGREG?") == "\r\n+CGREG: 0,1\r\n\r\nOK\r\n"
    assert probe.cmd("AT+COPS?") == f'\r\n+COPS: 0,0,"Albatross Sim",{act}\r\n\r\nOK\r\n'
    assert probe.cmd("AT+CGATT?") == "\r\n+CGATT: 1\r\n\r\nOK\r\n"
    sim.set_registration("roaming")
    probe.expect(rb'\r\n\+CEREG: 5,"1A2B"')
    sim.set_registration("denied")
    probe.expect(rb"\r\n\+CEREG: 3\r\n")
    assert probe.cmd("AT+COPS?") == "\r\n+COPS: 0\r\n\r\nOK\r\n"
    delays = sim.imposed_delays()
    assert delays["registration"] >= 0.3


def test_signal_is_settable(make):
    sim, probe = make("sim7600")
    power_on(sim, probe)
    wait_registered(probe)
    sim.set_signal(rssi=7, ber=0, rsrp=30, rsrq=10)
    assert "+CSQ: 7,0\r\n" in probe.cmd("AT+CSQ")
    assert "+CESQ: 99,99,255,255,10,30\r\n" in probe.cmd("AT+CESQ")
    with pytest.raises(ModemSimError):
        sim.set_signal(rssi=40)
    assert "+CSQ: 7,0\r\n" in probe.cmd("AT+CSQ")


@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
def test_cfun0_deregisters_and_cfun1_registers_again(make, dialect):
    sim, probe = make(dialect, registration_s=0.2)
    power_on(sim, probe)
    wait_registered(probe)
    probe.cmd("ATE0")
    probe.cmd("AT+CEREG=1")
    assert probe.cmd("AT+CFUN=0") == "\r\nOK\r\n"
    probe.expect(rb"\r\n\+CEREG: 0\r\n")
    assert "+CSQ: 99,99" in probe.cmd("AT+CSQ")
    assert "+CFUN: 0" in probe.cmd("AT+CFUN?")
    assert "+COPS: 0\r\n" in probe.cmd("AT+COPS?")
    probe.cmd("AT+CFUN=1")
    probe.expect(rb"\r\n\+CEREG: 2\r\n")
    probe.expect(rb"\r\n\+CEREG: 1\r\n", timeout=2)


def test_bg96_cfun_reset_reboots_like_the_transcript(make):
    # bg96-reset-powered-down-pdpdeact-rdy: OK, POWERED DOWN, +QIURC "pdpdeact", ..., RDY.
    sim, probe = make("bg96")
    power_on(sim, probe)
    wait_registered(probe)
    probe.cmd("AT+QIACT=1")
    probe.write("AT+CFUN=1,1\r")
    probe.expect(rb'\r\nOK\r\n\r\nPOWERED DOWN\r\n\r\n\+QIURC: "pdpdeact",1\r\n')
    probe.expect(rb"\r\nRDY\r\n")
    assert sim.snapshot()["power_cycles"] == 2


def test_network_time(make):
    sim, probe = make("sim7600", registration_s=0.3)
    sim.network.tz_quarters = 8  # UTC+2
    sim.pulse_pwrkey(0.03)
    probe.expect(rb"RDY\r\n")
    # Before NITZ: SIMCom's RTC counts from the GPS epoch.
    assert re.search(r'\+CCLK: "80/01/06,00:00:0\d\+00"', probe.cmd("AT+CCLK?"))
    wait_registered(probe)
    text = probe.cmd("AT+CCLK?")
    m = re.search(r'\+CCLK: "(\d\d/\d\d/\d\d,\d\d:\d\d:\d\d)\+08"', text)
    assert m, text
    local = dt.datetime.strptime(m.group(1), "%y/%m/%d,%H:%M:%S")
    utc_now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert abs((local - dt.timedelta(hours=2) - utc_now).total_seconds()) < 5


def test_stored_settings(make):
    sim, probe = make("sim7600")
    power_on(sim, probe)
    probe.cmd("ATE0")
    assert "+CNMP: 2" in probe.cmd("AT+CNMP?")
    probe.cmd("AT+CNMP=38")
    assert "+CNMP: 38" in probe.cmd("AT+CNMP?")
    probe.cmd('AT+CPSMS=1,,,"00100001","00000011"')
    assert '+CPSMS: 1,,,"00100001","00000011"' in probe.cmd("AT+CPSMS?")
    probe.cmd('AT+CGDCONT=1,"IP","internet"')
    assert '+CGDCONT: 1,"IP","internet"' in probe.cmd("AT+CGDCONT?")
    sim2, probe2 = make("bg96")
    power_on(sim2, probe2)
    wait_registered(probe2)
    probe2.cmd("ATE0")
    assert '+QCFG: "nwscanseq",020301' in probe2.cmd('AT+QCFG="nwscanseq"')
    probe2.cmd('AT+QCFG="iotopmode",1,1')
    assert '+QCFG: "iotopmode",1' in probe2.cmd('AT+QCFG="iotopmode"')
    assert ',"Albatross Sim",9' in probe2.cmd("AT+COPS?")  # NB-IoT now


# -- wire --------------------------------------------------------------------------------


def test_bytes_leave_at_the_baud_rate(make):
    # 11 520 bytes at 115200 baud, 10 bits a byte: 1.0 s on the wire, whatever the host.
    sim, probe = make("bg96")
    power_on(sim, probe)
    payload = b"x" * 11520  # no CR: the modem only echoes
    start = time.monotonic()
    probe.write(payload)
    echoed = probe.read_exact(len(payload), timeout=10)
    elapsed = time.monotonic() - start
    assert echoed == payload
    assert elapsed >= 0.9


def test_bytes_from_the_mcu_arrive_at_the_baud_rate(make):
    # The MCU's direction is a wire too: 5 760 bytes take 0.5 s to reach the modem, so the
    # answer to a command sent after them cannot come sooner (a pty alone would be instant).
    sim, probe = make("sim7600")
    power_on(sim, probe)
    probe.cmd("ATE0")
    start = time.monotonic()
    probe.write(b"x" * 5757 + b"\r")  # not a command: ignored once it has arrived
    probe.write(b"AT\r")
    probe.expect(rb"\r\nOK\r\n", timeout=10)
    assert time.monotonic() - start >= 0.45


def test_transcript_has_both_directions(make, tmp_path):
    sim, probe = make("sim7600")
    power_on(sim, probe)
    probe.cmd("AT+CSQ")
    probe.write(b"\xff\xfe junk\r")  # not a command line: the modem stays silent
    probe.cmd("AT")
    # The log line is written just after the bytes reach the pty: wait for the last answer.
    deadline = time.monotonic() + 5
    while not read_transcript(sim.transcript_path)[-1]["data"].endswith("AT\r\r\nOK\r\n"):
        assert time.monotonic() < deadline, read_transcript(sim.transcript_path)[-3:]
        time.sleep(0.01)
    entries = read_transcript(sim.transcript_path)
    assert sim.transcript_path == tmp_path / "sim7600" / "at-sim7600.jsonl"
    assert {e["dir"] for e in entries} == {"rx", "tx"}
    times = [e["t"] for e in entries]
    assert times == sorted(times)
    # Directions are the MCU's view: tx = MCU -> modem, rx = modem -> MCU.
    tx = "".join(e["data"] for e in entries if e["dir"] == "tx").encode("latin-1")
    rx = "".join(e["data"] for e in entries if e["dir"] == "rx").encode("latin-1")
    assert b"AT+CSQ\r" in tx and b"\xff\xfe junk\r" in tx
    assert rx.startswith(b"\r\nRDY\r\n") and b"+CSQ: 20,99" in rx
    snap = sim.snapshot()
    assert snap["bytes_rx"] == len(tx) and snap["bytes_tx"] == len(rx)  # the modem's counters
    assert snap["baud"] == snap["line_baud"] == 115200  # pyserial set the pty's speed


def test_snapshot_counts_commands_and_awake_time(make):
    sim, probe = make("a7670")
    power_on(sim, probe)
    for _ in range(3):
        probe.cmd("AT+CSQ")
    probe.cmd("AT")
    snap = sim.snapshot()
    assert snap["commands"]["AT+CSQ"] == 3 and snap["commands"]["AT"] == 1
    assert snap["power_cycles"] == 1 and snap["state"] == "on"
    sim.set_power(False)
    awake = sim.snapshot()["awake_s"]
    time.sleep(0.1)
    assert sim.snapshot()["awake_s"] == awake > 0


def test_a_stopped_simulator_starts_again_as_a_fresh_board(tmp_path):
    sim = ModemSimulator("bg96", tmp_path, timings=Timings.fast(pwrkey_on_s=0.02))
    for _ in range(2):
        sim.start()
        with AtProbe(sim.uart_path) as probe:
            power_on(sim, probe)
            assert "OK" in probe.cmd("AT")
        sim.stop()
        assert sim.state == "off"
    assert sim.snapshot()["power_cycles"] == 2
    assert not sim.internal_errors


def test_bad_arguments_are_typed_errors(tmp_path):
    with pytest.raises(ModemSimError, match="unknown modem"):
        ModemSimulator("sim900", tmp_path)
    sim = ModemSimulator("bg96", tmp_path)
    with pytest.raises(ModemSimError, match="unknown fault"):
        sim.fault("meteor")
    with pytest.raises(ModemSimError, match="no parameter"):
        sim.fault("slow", delay=3)
    with pytest.raises(ModemSimError, match="registration state"):
        sim.set_registration("lost")
    with pytest.raises(ModemSimError, match="not started"):
        _ = sim.uart_path
