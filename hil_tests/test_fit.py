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
        config={"status_interval_s": 20},
    )
    dev = vb.device_id  # type: ignore[attr-defined]
    mqtt.wait_for(online_status_of(dev), FIRST_S, what="birth through the modem", logs=logs_of(vb))
    assert vb.bench is not None and vb.supervisor is not None and vb.modem_sim is not None
    slot = MINUTES * 60 / (len(FAULTS) + 1)
    started = time.monotonic()
    for n, (fault, params, on_s) in enumerate(FAULTS, start=1):
        time.sleep(max(0.0, started + n * slot - time.monotonic()))
        vb.bench.fault(fault, True, **params)
        if on_s:
            time.sleep(on_s)
            vb.bench.fault(fault, False)
    time.sleep(max(0.0, started + MINUTES * 60 - time.monotonic()))
    # Every reading taken in the run reaches the broker once the last fault is over.
    last = max(r["seq"] for r in mqtt.telemetry(dev))
    deadline = time.monotonic() + RECOVERY_S
    while True:
        seqs = {r["seq"] for r in mqtt.telemetry(dev)}
        missing = sorted(set(range(min(seqs), last + 1)) - seqs)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    # The faults happened: the firmware saw them and the modem was power-cycled (the status
    # message after the last fault says so).
    status = mqtt.wait_for(
        lambda m: online_status_of(dev)(m) and m.json["link"]["ladder"]["power_cycle"] >= 1,
        RECOVERY_S,
        what="a status reporting the modem's power cycle",
        logs=logs_of(vb),
    ).json
    console = vb.console_text()
    assert status["sensors"]["crc_errors"] >= 1, (status["sensors"], logs_of(vb))
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
    assert last >= MINUTES * 60 * 0.5, f"only {last} readings in {MINUTES} min"
    print(
        f"fit: {MINUTES} min at {heap} B, {last + 1} readings, live heap high-water "
        f"{status['heap']['used_max']} B"
    )
