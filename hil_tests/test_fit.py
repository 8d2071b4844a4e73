"""The firmware fits an ESP32 without PSRAM: the standard scenario (tracker through a simulated
SIM7600 whose GNSS follows a route, 1 s interval) on the ESP32-faithful runtime at the heap
MicroPython gets on an ESP32-WROOM (boards/esp32_generic_sim7600: 111,936 B), with the app
frozen in as a production build has it, through a fault of each kind: no MemoryError, no
reboot, every reading delivered.

`make test` runs it for 3 minutes; ALBATROSS_FIT_MINUTES=30 (`make soak`) for the full run.
The same firmware as .mpy from littlefs does not fit that heap yet: `make bench` measures the
smallest heap it needs (benchmark_ram.py) and the issue note quotes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.helpers import online_status_of
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard import runtime as rt
from host_tools.vboard.gnss import GnssTimings
from host_tools.vboard.runner import parse_heap

pytestmark = [pytest.mark.hil, pytest.mark.bench, pytest.mark.slow]
PSRAM_LESS = "esp32_generic_sim7600"
MINUTES = float(os.environ.get("ALBATROSS_FIT_MINUTES") or 3)
FIRST_S = 60
RECOVERY_S = 120
# (bench fault, params, seconds on; 0 = a one-shot fault that needs no switching off)
FAULTS = [
    ("i2c_crc", {"count": 3}, 0),
    ("modem_peer_close", {}, 0),
    ("i2c_nack", {}, 3),
    ("modem_pdp_drop", {}, 0),
    ("modem_hang", {}, 0),  # silent until the firmware power-cycles it
    ("modem_slow", {"delay_ms": 300}, 4),
    ("modem_garbage", {"rate": 0.3}, 4),
    ("modem_deregister", {}, 4),
    ("modem_urc_storm", {"interval_ms": 100}, 4),
]
# What shows that each fault acted: a count in the firmware's status (or, for a slow modem,
# the simulator's ledger of answers it delayed), and how much it must grow.
EVIDENCE: dict[str, tuple[Callable[[dict, dict], float], float]] = {
    "i2c_crc": (lambda st, sim: st["sensors"]["crc_errors"], 1),
    "modem_peer_close": (lambda st, sim: st["link"]["modem"]["peer_closes"], 1),
    "i2c_nack": (lambda st, sim: st["sensors"]["bus_errors"], 1),
    "modem_pdp_drop": (lambda st, sim: st["link"]["modem"]["pdp_losses"], 1),
    "modem_hang": (lambda st, sim: st["link"]["ladder"]["power_cycle"], 1),
    "modem_slow": (lambda st, sim: sim["delays"].get("slow", 0), 0.3),
    "modem_garbage": (lambda st, sim: st["link"]["at"]["garbage_lines"], 1),
    "modem_deregister": (lambda st, sim: st["link"]["modem"]["registration_changes"], 1),
    "modem_urc_storm": (lambda st, sim: st["link"]["at"]["urcs"], 20),  # 40 in its 4 s
}


def _latest_status(mqtt: MqttWatch, dev: str) -> dict:
    return [m for m in list(mqtt.messages) if online_status_of(dev)(m)][-1].json


def test_standard_scenario_fits_a_psram_less_esp32_frozen(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    try:
        runtime = rt.resolve("esp32-frozen", board="unix_sim")
    except rt.RuntimeUnavailable as e:
        pytest.skip(f"no frozen faithful runtime here: {e}")
    heap = parse_heap(PSRAM_LESS)
    assert heap is not None and heap < 112 * 1024
    # With the modem's GNSS tracking the default route: the board's whole job.
    vb = vboard(
        modem="sim7600",
        gnss="modem",
        gnss_timings=GnssTimings.fast(),
        runtime=runtime,
        heap=heap,
        config={"status_interval_s": 10},  # the shortest: each fault's evidence comes soon
    )
    dev = vb.device_id  # type: ignore[attr-defined]
    mqtt.wait_for(online_status_of(dev), FIRST_S, what="birth through the modem", logs=logs_of(vb))
    assert vb.bench is not None and vb.supervisor is not None and vb.modem_sim is not None
    slot = MINUTES * 60 / (len(FAULTS) + 1)
    started = time.monotonic()
    first_seq = max((r["seq"] for r in mqtt.telemetry(dev)), default=-1)
    sim = vb.modem_sim
    for n, (fault, params, on_s) in enumerate(FAULTS, start=1):
        time.sleep(max(0.0, started + n * slot - time.monotonic()))
        count, grows_by = EVIDENCE[fault]
        before = count(_latest_status(mqtt, dev), sim.snapshot())
        mark = mqtt.mark()
        vb.bench.fault(fault, True, **params)
        if on_s:
            time.sleep(on_s)
            vb.bench.fault(fault, False)
        # Evidence that the fault acted, in the next status the firmware could send.
        mqtt.wait_for(
            lambda m, count=count, before=before, grows_by=grows_by: (
                online_status_of(dev)(m) and count(m.json, sim.snapshot()) >= before + grows_by
            ),
            RECOVERY_S,
            what=f"a status showing that {fault} happened (from {before})",
            after=mark,
            logs=logs_of(vb),
        )
    time.sleep(max(0.0, started + MINUTES * 60 - time.monotonic()))
    run_s = time.monotonic() - started
    # Every reading taken in the run reaches the broker once the last fault is over.
    last = max(r["seq"] for r in mqtt.telemetry(dev))
    deadline = time.monotonic() + RECOVERY_S
    while True:
        seqs = {r["seq"] for r in mqtt.telemetry(dev)}
        missing = sorted(set(range(min(seqs), last + 1)) - seqs)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    # The faults happened (each showed in a status above), the modem's power cycle included.
    status = _latest_status(mqtt, dev)
    console = vb.console_text()
    assert status["link"]["ladder"]["power_cycle"] >= 1, (status["link"], logs_of(vb))
    # GNSS kept working through it, and came back after the power cycle switched it off.
    assert any("lat" in r for r in mqtt.telemetry(dev) if r["seq"] >= last - 5), logs_of(vb)
    mqtt.wait_for(
        lambda m: (
            online_status_of(dev)(m)
            and m.json["gnss"]["state"] == "tracking"
            and m.json["gnss"]["fixes"] > status["gnss"]["fixes"]
        ),
        RECOVERY_S,
        what="a status with GNSS tracking again after the faults",
        logs=logs_of(vb),
    )
    # ...and it fitted: one boot, no MemoryError, nothing lost.
    assert vb.supervisor.status()["boots"] == 1, logs_of(vb)
    assert "MemoryError" not in console, logs_of(vb)
    assert not missing, f"readings {missing[:20]} never arrived; logs: {logs_of(vb)}"
    # Readings all along: as many as the board's own clock says the run lasted (one a second,
    # half of them at least on a loaded machine), and its clock saw the whole run.
    run = [r for r in mqtt.telemetry(dev) if r["seq"] > first_seq]
    seqs_in_run = {r["seq"] for r in run}
    board_span_s = max(r["ts"] for r in run) - min(r["ts"] for r in run)
    assert board_span_s >= 0.8 * run_s, (board_span_s, run_s)
    assert len(seqs_in_run) >= 0.5 * board_span_s, (len(seqs_in_run), board_span_s)
    print(
        f"fit: {MINUTES} min at {heap} B, {last + 1} readings, live heap high-water "
        f"{status['heap']['used_max']} B"
    )
