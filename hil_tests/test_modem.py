"""Telemetry through the simulated cellular modem, for every dialect, and recovery from what
field modems do. Each fault first has to show that it happened -- in the simulator's own
counters of what the fault did and in what the device reports about its link -- and only then
counts the recovery: the tracker reports again by itself, and every reading taken during the
fault is delivered afterwards (from RAM for now). A board run without any fault fails every
one of those evidence checks, so a fault injection that did nothing cannot pass.

Recovery times go into the compatibility report (hil_tests/compat_report.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.helpers import online_status_of, telemetry_of
from host_tools import remote
from host_tools.broker import Broker
from host_tools.mqtt_watch import Message, MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = [pytest.mark.hil, pytest.mark.bench]
DIALECTS = ["sim7600", "a7670", "bg96"]
FIRST_S = 60  # power-on, boot, registration and PDP (fast timings), then MQTT
# The longest any wait for the device may last: a deadline so a broken board fails instead of
# hanging the suite, not an expectation (the ladder climbs one rung per STEP_TRIES failures
# with backoff capped at 60 s; the measured recovery times are in the compatibility report).
WAIT_S = 120
FAULT_S = 4  # how long a fault the test switches off stays on

# When a fault ends (recovery time counts from there):
AT_ONCE = "at_once"  # a one-shot fault: it is over once injected
SWITCHED_OFF = "switched_off"  # the test switches it off after FAULT_S
POWER_CYCLE = "power_cycle"  # only a power cycle ends it: the device's ladder must get there
FAULTS = [
    # (bench fault, params, how it ends)
    ("modem_peer_close", {}, AT_ONCE),
    ("modem_pdp_drop", {}, AT_ONCE),
    ("modem_deregister", {}, SWITCHED_OFF),
    ("modem_hang", {}, POWER_CYCLE),
    ("modem_slow", {"delay_ms": 300}, SWITCHED_OFF),
    ("modem_garbage", {"rate": 0.3}, SWITCHED_OFF),
    ("modem_urc_storm", {"interval_ms": 100}, SWITCHED_OFF),
    ("modem_no_sim", {}, SWITCHED_OFF),
]
# Faults the device keeps reporting through: its status is read while they are still on, so
# what it measured covers the fault alone.
LIVE = {"modem_slow"}
WRAPPING = {"modem.socket_ms"}  # device counters that wrap at 2**30 (the rest never do)


# -- what the simulator and the device counted ------------------------------------------------


@dataclass
class Counts:
    """The simulator's fault effects (bench `modem` snapshot) and the device's `link` status,
    around one fault or the same span of time without one."""

    sim_before: dict  # fault_effects when the fault went on
    sim_after: dict  # ... when it ended
    fw_before: dict  # the device's status["link"] before the fault
    fw_during: dict  # ... read while a LIVE fault was still on
    fw_after: dict  # ... once it had recovered

    def sim(self, key: str) -> int:
        return self.sim_after[key] - self.sim_before[key]

    def fw(self, path: str, *, during: bool = False) -> int:
        """How much the device's counter `path` ("modem.peer_closes") grew."""
        after = _dig(self.fw_during if during else self.fw_after, path)
        before = _dig(self.fw_before, path)
        if path in WRAPPING:
            return (after - before) % (1 << 30)
        return after - before  # negative if the device restarted: no evidence then

    def keep(self, vb: VirtualBoard) -> Path:
        """Written beside the board's logs (evidence.json), for a failure to be read."""
        path = vb.workdir / "evidence.json"
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        return path


def _dig(link: dict, path: str) -> int:
    value: object = link
    for key in path.split("."):
        value = value[key]  # type: ignore[index]
    return int(value)  # type: ignore[call-overload]


def _ladder_steps(c: Counts) -> int:
    """Recovery ladder rungs the device climbed (any step)."""
    ladder = c.fw_after["ladder"]
    return sum(c.fw(f"ladder.{step}") for step in ladder if step != "sessions")


def _mean_socket_ms(c: Counts) -> float:
    """The device's mean time per socket command (send or read) while the fault was on."""
    commands = c.fw("modem.sends", during=True) + c.fw("modem.reads", during=True)
    assert commands, f"the device ran no socket command while the fault was on: {c.fw_during}"
    return c.fw("modem.socket_ms", during=True) / commands


def _check(what: str, ok: bool, c: Counts) -> None:
    if not ok:
        sim = {k: c.sim(k) for k in c.sim_after if c.sim(k)}
        raise AssertionError(
            f"no evidence that {what}; simulator effects {sim or 'none'}; the counters of the "
            "simulator and the device are in evidence.json beside the board's logs"
        )


Check = Callable[[Counts, dict], None]


# Evidence per fault: (the simulator's side, the device's side). Each raises AssertionError
# unless its own counters show the fault acting; a board without the fault fails both
# (test_evidence_checks_fail_without_a_fault).
#
# The simulator's side: the counter of its fault_effects that the fault moves, and what that
# shows.
SIM_EFFECT = {
    "modem_peer_close": ("peer_closes", "the simulator closed a link from the peer"),
    "modem_pdp_drop": ("pdp_drops", "the simulator dropped an active data context"),
    "modem_deregister": ("deregistrations", "the simulator took the registration away"),
    "modem_hang": ("hung_rx_bytes", "the hung simulator ignored what the device sent"),
    "modem_slow": ("delayed_answers", "the simulator delayed its answers"),
    "modem_garbage": ("garbage_bursts", "the simulator sent garbage bytes"),
    "modem_urc_storm": ("storm_urcs", "the simulator stormed URCs"),
    "modem_no_sim": ("sim_removals", "the simulator pulled the SIM"),
}


def _sim_effect(fault: str) -> Check:
    counter, what = SIM_EFFECT[fault]

    def check(c: Counts, p: dict) -> None:
        _check(what, c.sim(counter) >= 1, c)

    return check


# The device's side: what its link status counted, one check per fault.
def _fw_peer_close(c: Counts, p: dict) -> None:
    _check(
        "the device saw the peer close and opened a new session",
        c.fw("modem.peer_closes") >= 1 and c.fw("ladder.reconnect") >= 1,
        c,
    )


def _fw_pdp_drop(c: Counts, p: dict) -> None:
    _check(
        "the device lost its data context and recovered",
        c.fw("modem.pdp_losses") >= 1 and _ladder_steps(c) >= 1,
        c,
    )


def _fw_deregister(c: Counts, p: dict) -> None:
    # Out of service and back: two registration changes at least, and a link that failed.
    _check(
        "the device saw its registration go and come back",
        c.fw("modem.registration_changes") >= 2 and _ladder_steps(c) >= 1,
        c,
    )


def _fw_hang(c: Counts, p: dict) -> None:
    _check(
        "the device's commands timed out and it power-cycled the modem",
        c.fw("at.timeouts") >= 1
        and c.fw("ladder.power_cycle") >= 1
        and c.fw("modem.power_cycles") >= 1,
        c,
    )


def _fw_slow(c: Counts, p: dict) -> None:
    # Every final answer came delay_ms late, and each socket send or read waits for at least
    # one (measured: 324-326 ms a command with 300 ms, 24-25 ms without the fault).
    mean = _mean_socket_ms(c)
    _check(
        f"the device's socket commands slowed down (mean {mean:.0f} ms per command)",
        mean >= p["delay_ms"] / 2,
        c,
    )


def _fw_garbage(c: Counts, p: dict) -> None:
    # Each burst lands before a frame that starts with CR LF, so it is a garbled line of its
    # own (measured: as many as the bursts); half leaves room for a burst the device missed.
    _check(
        "the device's AT engine met garbled lines",
        c.fw("at.garbage_lines") >= max(1, c.sim("garbage_bursts") // 2),
        c,
    )


def _fw_urc_storm(c: Counts, p: dict) -> None:
    # The storm's +CSQ / +CGEV (SIMCom) and +QIND "csq" (Quectel) lines are URCs the driver
    # has no use for: half of the storm or more (measured: 53-80 of 117), none without it.
    _check(
        "the device's AT engine met the storm's URCs",
        c.fw("at.unknown_urcs") >= max(1, c.sim("storm_urcs") // 4),
        c,
    )


def _fw_no_sim(c: Counts, p: dict) -> None:
    _check(
        "the device lost registration without a SIM and got it back",
        c.fw("modem.registration_changes") >= 2 and _ladder_steps(c) >= 1,
        c,
    )


EVIDENCE: dict[str, tuple[Check, Check]] = {
    "modem_peer_close": (_sim_effect("modem_peer_close"), _fw_peer_close),
    "modem_pdp_drop": (_sim_effect("modem_pdp_drop"), _fw_pdp_drop),
    "modem_deregister": (_sim_effect("modem_deregister"), _fw_deregister),
    "modem_hang": (_sim_effect("modem_hang"), _fw_hang),
    "modem_slow": (_sim_effect("modem_slow"), _fw_slow),
    "modem_garbage": (_sim_effect("modem_garbage"), _fw_garbage),
    "modem_urc_storm": (_sim_effect("modem_urc_storm"), _fw_urc_storm),
    "modem_no_sim": (_sim_effect("modem_no_sim"), _fw_no_sim),
}


# -- the board ---------------------------------------------------------------------------------


def _start(vboard: VboardFactory, mqtt: MqttWatch, dialect: str) -> tuple[VirtualBoard, dict]:
    vb = vboard(modem=dialect)
    dev = vb.device_id  # type: ignore[attr-defined]
    status = mqtt.wait_for(
        online_status_of(dev), FIRST_S, what="birth through the modem", logs=logs_of(vb)
    )
    mqtt.wait_for(telemetry_of(dev), FIRST_S, what="first telemetry", logs=logs_of(vb))
    return vb, status.json


def _effects(vb: VirtualBoard) -> dict:
    """What the simulator's faults did so far (the bench's `modem` snapshot)."""
    assert vb.bench is not None
    return vb.bench.handle_request({"cmd": "modem"})["fault_effects"]


def _link_status(vb: VirtualBoard, mqtt: MqttWatch, broker: Broker) -> dict:
    """The device's link counters now: a remote report-now, then its fresh retained status."""
    dev = vb.device_id  # type: ignore[attr-defined]
    mark = mqtt.mark()
    remote.send_command(broker.url, dev, "report-now", timeout=WAIT_S)
    status = mqtt.wait_for(
        online_status_of(dev), WAIT_S, after=mark, what="status after report-now", logs=logs_of(vb)
    )
    return status.json["link"]


def _two_reports_after(vb: VirtualBoard, mqtt: MqttWatch, mark: int, what: str) -> Message:
    """The second telemetry message after `mark` (a fresh reading, then one more)."""
    dev = vb.device_id  # type: ignore[attr-defined]
    fresh = mqtt.wait_for(
        telemetry_of(dev), WAIT_S, after=mark, what=f"telemetry after {what}", logs=logs_of(vb)
    )
    return mqtt.wait_for(
        lambda m: telemetry_of(dev)(m) and m.last["seq"] > fresh.last["seq"],
        WAIT_S,
        after=mark,
        what=f"a second report after {what}",
        logs=logs_of(vb),
    )


def _assert_no_reading_lost(mqtt: MqttWatch, dev: str, vb: VirtualBoard, upto_seq: int) -> None:
    """Every seq from the first report to upto_seq reached the broker (duplicates allowed)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        seqs = {r["seq"] for r in mqtt.telemetry(dev)}
        missing = sorted(set(range(min(seqs), upto_seq + 1)) - seqs)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"readings {missing[:20]} never arrived; logs: {logs_of(vb)}")
        time.sleep(0.5)


def _wait_until(what: str, cond: Callable[[], bool], vb: VirtualBoard) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {WAIT_S} s; logs: {logs_of(vb)}")
        time.sleep(0.2)


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_telemetry_through_each_modem(
    vboard: VboardFactory, mqtt: MqttWatch, dialect: str
) -> None:
    vb, status = _start(vboard, mqtt, dialect)
    link = status["link"]
    family = {"a7670": "a76xx"}.get(dialect, dialect)  # the driver covers the A76xx line
    assert link["kind"] == "modem" and link["family"] == family
    assert link["registration"] in ("home", "roaming") and link["pdp_active"]
    assert vb.modem_sim is not None
    assert link["info"]["imei"] == vb.modem_sim.imei
    # The AT transcript of the session is kept with the logs, both directions.
    transcript = (vb.workdir / f"at-{dialect}.jsonl").read_text()
    assert '"dir": "rx"' in transcript and '"dir": "tx"' in transcript


@pytest.mark.slow
@pytest.mark.compat
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fault,params,ends", FAULTS, ids=[f[0] for f in FAULTS])
def test_recovers_from_fault_without_losing_readings(
    vboard: VboardFactory,
    mqtt: MqttWatch,
    broker: Broker,
    record_property: Callable[[str, object], None],
    dialect: str,
    fault: str,
    params: dict,
    ends: str,
) -> None:
    vb, _ = _start(vboard, mqtt, dialect)
    dev = vb.device_id  # type: ignore[attr-defined]
    assert vb.bench is not None
    fw_before = _link_status(vb, mqtt, broker)
    sim_before = _effects(vb)
    vb.bench.fault(fault, True, **params)
    fw_during = {}
    if ends == SWITCHED_OFF:
        time.sleep(FAULT_S)
        if fault in LIVE:
            fw_during = _link_status(vb, mqtt, broker)
        vb.bench.fault(fault, False)
    elif ends == POWER_CYCLE:
        _wait_until(
            "a power cycle of the hung modem",
            lambda: not vb.bench.faults()[fault]["on"],  # type: ignore[union-attr]
            vb,
        )
    t_off = time.monotonic()
    mark = mqtt.mark()
    sim_check, fw_check = EVIDENCE[fault]
    counts = Counts(sim_before, _effects(vb), fw_before, fw_during, {})
    counts.keep(vb)
    # The fault did what it says, as the simulator counted it...
    sim_check(counts, params)
    # ...the device reports again (a reading taken after the fault, and one more)...
    later = _two_reports_after(vb, mqtt, mark, fault)
    # ...and says what it went through.
    counts.fw_after = _link_status(vb, mqtt, broker)
    counts.keep(vb)
    fw_check(counts, params)
    # Nothing measured during the fault was lost.
    _assert_no_reading_lost(mqtt, dev, vb, later.last["seq"])
    record_property("recovery_s", round(later.at - t_off, 2))


@pytest.mark.slow
@pytest.mark.parametrize("dialect", DIALECTS)
def test_evidence_checks_fail_without_a_fault(
    vboard: VboardFactory, mqtt: MqttWatch, broker: Broker, dialect: str
) -> None:
    """The same steps and times as a fault scenario, with no fault: every fault's evidence,
    the simulator's and the device's alike, must be missing."""
    vb, _ = _start(vboard, mqtt, dialect)
    fw_before = _link_status(vb, mqtt, broker)
    sim_before = _effects(vb)
    time.sleep(FAULT_S)
    fw_during = _link_status(vb, mqtt, broker)
    counts = Counts(sim_before, _effects(vb), fw_before, fw_during, {})
    _two_reports_after(vb, mqtt, mqtt.mark(), "the quiet spell")
    counts.fw_after = _link_status(vb, mqtt, broker)
    counts.keep(vb)
    passed = []
    for fault, params, _ in FAULTS:
        for side, check in zip(("simulator", "device"), EVIDENCE[fault], strict=True):
            try:
                check(counts, params)
            except AssertionError:
                continue
            passed.append(f"{fault} ({side})")
    assert not passed, f"evidence found without any fault: {passed}; logs: {logs_of(vb)}"


# A modem answers +CxREG? for each domain the driver reads (CEREG and CGREG): this many
# "denied" answers mean the device asked at least twice.
DENIED_ANSWERS_FOR_A_RETRY = 4


@pytest.mark.slow
@pytest.mark.compat(fault="modem_registration_denied")
@pytest.mark.parametrize("dialect", DIALECTS)
def test_denied_registration_is_reported_and_retried(
    vboard: VboardFactory,
    mqtt: MqttWatch,
    broker: Broker,
    record_property: Callable[[str, object], None],
    dialect: str,
) -> None:
    vb, _ = _start(vboard, mqtt, dialect)
    dev = vb.device_id  # type: ignore[attr-defined]
    assert vb.bench is not None
    denied_before = _effects(vb)["registration_denials"]
    mark = mqtt.mark()
    vb.bench.fault("modem_registration", True, state="denied")
    vb.bench.fault("modem_deregister", True)
    time.sleep(FAULT_S)
    vb.bench.fault("modem_deregister", False)
    # Denied: the device asks again after its backoff; the network keeps saying no until the
    # simulator has refused it twice.
    _wait_until(
        "two registration attempts answered 'denied'",
        lambda: _effects(vb)["registration_denials"] - denied_before >= DENIED_ANSWERS_FOR_A_RETRY,
        vb,
    )
    vb.bench.fault("modem_registration", False)
    t_off = time.monotonic()
    mark_off = mqtt.mark()  # offline while denied: no report can be on its way
    status = mqtt.wait_for(
        lambda m: online_status_of(dev)(m) and "denied" in str(m.json["link"]["last_error"]),
        WAIT_S,
        after=mark,
        what="status naming the denied registration",
        logs=logs_of(vb),
    )
    # The first status of the new session counts the failed tries that came before it.
    fw_after = status.json["link"]
    assert fw_after["failures"] >= 2, f"the device did not retry while denied: {fw_after}"
    later = _two_reports_after(vb, mqtt, mark_off, "registration")
    record_property("recovery_s", round(later.at - t_off, 2))


def test_mpremote_works_while_the_modem_is_busy(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    vb, _ = _start(vboard, mqtt, "sim7600")
    dev = vb.device_id  # type: ignore[attr-defined]
    mpremote = str(Path(sys.executable).with_name("mpremote"))
    out = subprocess.run(
        [mpremote, "connect", vb.console_path, "exec", "print('alive', 6 * 7)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "alive 42", out.stderr
    before = max(r["seq"] for r in mqtt.telemetry(dev))
    subprocess.run(
        [mpremote, "connect", vb.console_path, "reset"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    mark = mqtt.mark()
    after = mqtt.wait_for(
        telemetry_of(dev),
        FIRST_S,
        after=mark,
        what="telemetry after mpremote reset",
        logs=logs_of(vb),
    )
    assert after.last["seq"] > before
