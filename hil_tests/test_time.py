"""Time as an ESP32 keeps it, on the 32-bit runtime: ticks_ms() wraps at 2^30 ms (12.4 days)
and ticks_diff() tells apart only 2^29 ms (6.2 days), so the boards here start their counter
just before the wrap or half a period in; the RTC starts at 2000-01-01 after power-on until
the network's time sets it."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = pytest.mark.hil
WRAP_MS = 1 << 30
REPORT_S = 30  # first reading over host TCP; generous for a loaded machine
MODEM_S = 90  # power-on, registration, network time and PDP through the simulated modem
ESP32_EPOCH = 946684800  # 2000-01-01, where an ESP32's RTC starts after power-on


def _wrap_window(vb: VirtualBoard, below_s: float) -> tuple[float, float]:
    """When the board's tick counter, started `below_s` below the wrap, wraps: the earliest
    and latest moment on the host's monotonic clock. The supervisor's event log stamps the
    process's spawn to the second (what the test saw of vboard() is later, by how much a
    loaded machine decides); the runtime sets its counter a moment after the spawn."""
    log = vb.workdir / "vboard.log"
    deadline = time.monotonic() + 10
    while " boot #1 " not in (text := log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"no boot in {log}"
        time.sleep(0.1)
    line = next(ln for ln in text.splitlines() if " boot #1 " in ln)
    spawned = time.mktime(time.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S"))  # local time
    to_monotonic = time.monotonic() - time.time()
    return spawned + below_s + to_monotonic, spawned + 1 + below_s + 1 + to_monotonic


def _faithful(vb: VirtualBoard) -> None:
    if not vb.runtime.faithful:  # the 64-bit PyPI port counts from 0 on the host's clock
        pytest.skip("needs the ESP32-faithful runtime, whose ticks and clock start anywhere")


def _readings(mqtt: MqttWatch, dev: str) -> list[tuple[int, float, int]]:
    """(seq, arrival at the broker's subscriber, ts) of each reading, first arrivals only."""
    topic = f"albatross/{dev}/telemetry"
    first: dict[int, tuple[float, int]] = {}
    for m in list(mqtt.messages):
        if m.topic == topic:
            for r in m.records:
                first.setdefault(r["seq"], (m.at, r["ts"]))
    return [(seq, at, ts) for seq, (at, ts) in sorted(first.items())]


def _statuses(mqtt: MqttWatch, dev: str) -> list[tuple[float, int]]:
    """(arrival, uptime_s) of each online status message, in arrival order."""
    topic = f"albatross/{dev}/status"
    out = []
    for m in list(mqtt.messages):
        if m.topic == topic and m.json.get("state") == "online":
            out.append((m.at, m.json["uptime_s"]))
    return out


def _assert_uptime_counts_with_the_host(statuses: list[tuple[float, int]], logs: str) -> None:
    assert len(statuses) >= 2, f"{statuses}; logs: {logs}"
    at0, up0 = statuses[0]
    for at, up in statuses:
        assert up >= 0, f"negative uptime in {statuses}; logs: {logs}"
        # Whole seconds, taken a moment before publishing: within 2 s of the host's count.
        assert abs((up - up0) - (at - at0)) <= 2, f"uptime drifts: {statuses}; logs: {logs}"
    ups = [up for _, up in statuses]
    assert ups == sorted(ups) and ups[-1] > ups[0], f"{statuses}; logs: {logs}"


@pytest.mark.slow
def test_readings_keep_their_interval_across_the_tick_wrap(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard(interval=1, ticks_start_ms=WRAP_MS - 15000, config={"status_interval_s": 10})
    dev = vb.device_id  # type: ignore[attr-defined]
    _faithful(vb)
    logs = logs_of(vb)
    wrap_from, wrap_to = _wrap_window(vb, 15)
    mqtt.wait_for(
        lambda m: m.topic == f"albatross/{dev}/telemetry" and m.at > wrap_to + 12,
        wrap_to + 12 + REPORT_S - time.monotonic(),
        what="readings 12 s past the tick wrap",
        logs=logs,
    )
    readings = _readings(mqtt, dev)
    seqs = [seq for seq, _, _ in readings]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"readings lost: {seqs}; logs: {logs}"
    arrivals = [at for _, at, _ in readings]
    # The counter wrapped in the middle of the readings: some arrived (so were taken) before
    # the earliest moment it could wrap, some were taken after the latest (12 s of readings
    # at one a second, no gap above 3 s: checked below).
    assert arrivals[0] < wrap_from - 3, f"no readings well before the wrap; logs: {logs}"
    assert arrivals[-1] > wrap_to + 12, f"no readings well after the wrap; logs: {logs}"
    wrap_at = (wrap_from + wrap_to) / 2
    gaps = [round(b - a, 2) for a, b in pairwise(arrivals)]
    print(f"arrival gaps (s), the wrap ~{wrap_at - arrivals[0]:.1f} s after the first: {gaps}")
    # One reading a second on both sides of the wrap: no stall (the misread deadline of a
    # long int is days away) and no burst (or one that is in the past: catch-up readings).
    assert max(gaps) <= 3, f"a stall in the readings' arrival gaps {gaps}; logs: {logs}"
    assert min(gaps) >= 0.3, f"a burst in the readings' arrival gaps {gaps}; logs: {logs}"
    span = arrivals[-1] - arrivals[0]
    assert abs(len(arrivals) - 1 - span) <= 2, f"{len(arrivals)} readings in {span:.1f} s"
    statuses = _statuses(mqtt, dev)
    assert any(at > wrap_to + 1 for at, _ in statuses), f"{statuses}; logs: {logs}"
    _assert_uptime_counts_with_the_host(statuses, logs)


def test_a_board_half_a_tick_period_into_its_run_reports_a_sensible_uptime(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    # Started with ticks_ms() at 2^29 + 1.5 s ("6.2 days" into the counter): the uptime
    # counts from the app's start, and ticks_diff() from 0 would read it as negative.
    booted = time.monotonic()
    vb = vboard(interval=1, ticks_start_ms=(1 << 29) + 1500, config={"status_interval_s": 10})
    dev = vb.device_id  # type: ignore[attr-defined]
    _faithful(vb)
    logs = logs_of(vb)
    topic = f"albatross/{dev}/status"
    first = mqtt.wait_for(
        lambda m: m.topic == topic and m.json["state"] == "online",
        REPORT_S,
        what="birth",
        logs=logs,
    )
    mqtt.wait_for(
        lambda m: m.topic == topic and m.at > first.at + 5 and m.json["state"] == "online",
        REPORT_S,
        what="the periodic status",
        logs=logs,
    )
    statuses = _statuses(mqtt, dev)
    for at, up in statuses:
        assert 0 <= up <= at - booted + 1, f"uptime {up} s at {at - booted:.1f} s after boot"
    _assert_uptime_counts_with_the_host(statuses, logs)


def _on_time(ts: int) -> bool:
    return abs(ts - time.time()) <= 120  # readings may wait a little for the link


@pytest.mark.bench
@pytest.mark.slow
def test_timestamps_follow_the_network_clock_and_survive_a_reset(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb: VirtualBoard = vboard(interval=1, modem="sim7600", clock_start=ESP32_EPOCH)
    dev = vb.device_id  # type: ignore[attr-defined]
    _faithful(vb)
    logs = logs_of(vb)
    topic = f"albatross/{dev}/telemetry"
    mqtt.wait_for(
        lambda m: m.topic == topic and abs(m.last["ts"] - time.time()) <= 5,
        MODEM_S,
        what="a reading stamped with the network's time",
        logs=logs,
    )
    readings = _readings(mqtt, dev)
    # Until registration brought the network's time, the RTC said 2000: those readings keep
    # that stamp (they were stored with it); every reading after the first right one is right.
    early = [ts for _, _, ts in readings if ts < ESP32_EPOCH + 3600]
    assert early, f"no reading before network time: the RTC did not start at 2000; {logs}"
    first_ok = next(i for i, (_, _, ts) in enumerate(readings) if _on_time(ts))
    late = [ts for _, _, ts in readings[first_ok:]]
    assert all(_on_time(ts) for ts in late), f"timestamps went back: {late}; logs: {logs}"
    assert vb.console_text().count("clock set from the network") == 1

    # A hard reset restarts the CPU, not the RTC: the readings of the next boot are right
    # from the first, before the modem is up again.
    last_seq = readings[-1][0]
    vb.supervisor.reset("hard")  # type: ignore[union-attr]
    mqtt.wait_for(
        lambda m: m.topic == topic and m.last["seq"] > last_seq + 5,
        MODEM_S,
        what="readings after the reset",
        logs=logs,
    )
    after = [(seq, ts) for seq, _, ts in _readings(mqtt, dev) if seq > last_seq]
    assert all(_on_time(ts) for _, ts in after), f"after the reset: {after}; logs: {logs}"
    # ...so the network's time, when it comes again, finds nothing to correct.
    assert vb.console_text().count("clock set from the network") == 1
