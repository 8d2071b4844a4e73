"""Resets as an ESP32 does them, and the firmware's own recovery (tracker/watchdog.py).

An exception out of main.py leaves the board in the REPL; only machine.reset(), a machine.WDT
timeout, power and the bench reset it. The tracker's guard turns an app crash into a crash
record and a hard reset, a hung task into a watchdog reset, five failures in a row into safe
mode, and a MemoryError into a counted, reported, survived event.

Faults come from test-only files put onto the flash beside the firmware (a main.py that
imports a hook first): the hook patches the sampling task to hang, block, raise or run out
of memory, as a firmware bug would.
"""

from __future__ import annotations

import time

import pytest
import serial

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.helpers import online_status_of, telemetry_of
from host_tools import image as img
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = pytest.mark.hil
REPORT_S = 30
WATCHDOG_S = 5  # config watchdog_s: short, so a test waits seconds
# The app's sampling stall limit at interval 1 s: 2 intervals + SAMPLE_SLACK_MS (app.py).
SAMPLING_STALL_S = 2 * 1 + 10

APP_MAIN = b"import tracker.app\ntracker.app.run()\n"


def _hooked(hook: bytes) -> list[tuple[str, bytes]]:
    """Flash files: the hook module, and a main.py that imports it before the app."""
    return [("hil_hook.py", hook), ("main.py", b"import hil_hook\n" + APP_MAIN)]


def _sampling_hook(body: str) -> bytes:
    """A hook running `body` at the start of every Sensors.sample() call; `n` counts the
    calls of this boot."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return (
        "import asyncio, os, time\n"
        "import tracker.sensing.sensors as _s\n"
        "_orig = _s.Sensors.sample\n"
        "_calls = [0]\n"
        "async def sample(self):\n"
        "    _calls[0] += 1\n"
        "    n = _calls[0]\n"
        f"{indented}\n"
        "    return await _orig(self)\n"
        "_s.Sensors.sample = sample\n"
    ).encode()


def _resets(vb: VirtualBoard) -> dict[str, int]:
    assert vb.supervisor is not None
    return vb.supervisor.status()["resets"]


def _wait_resets(vb: VirtualBoard, kind: str, count: int, timeout: float) -> float:
    """Seconds until the supervisor counted `count` resets of `kind`."""
    start = time.monotonic()
    while _resets(vb).get(kind, 0) < count:
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"no {kind} reset #{count} within {timeout} s ({_resets(vb)}); see {logs_of(vb)}"
            )
        time.sleep(0.05)
    return time.monotonic() - start


def _repl(vb: VirtualBoard, line: str, timeout: float = 10) -> str:
    """Type one line at the friendly REPL; what it printed up to the next prompt."""
    with serial.serial_for_url(vb.console_path, baudrate=115200, timeout=timeout) as port:
        port.write(line.encode() + b"\r")
        out = port.read_until(b">>> ")
    assert out.endswith(b">>> "), f"REPL did not answer {line!r}: {out!r}; see {logs_of(vb)}"
    return out.decode(errors="replace")


def _back_after_watchdog(vb: VirtualBoard, mqtt: MqttWatch, mark: int, last_crash: str) -> None:
    """After a watchdog reset the board reports again, saying why it reset: the reset cause,
    one crash in the record and what it was, then telemetry."""
    dev = vb.device_id
    back = mqtt.wait_for(
        online_status_of(dev),
        REPORT_S,
        what="status after the reset",
        after=mark,
        logs=logs_of(vb),
    )
    assert back.json["reset_cause"] == "watchdog" and back.json["crashes"] == 1
    assert back.json["last_crash"].startswith(last_crash), back.json["last_crash"]
    mqtt.wait_for(telemetry_of(dev), REPORT_S, what="telemetry after the reset", after=mark)


@pytest.mark.bench
@pytest.mark.slow
def test_a_hung_task_ends_in_a_watchdog_reset(vboard: VboardFactory, mqtt: MqttWatch) -> None:
    hook = _sampling_hook(
        """
if n == 4:
    print("hil: sampling hangs now")
    await asyncio.Event().wait()  # the event loop runs on; only this task is stuck
"""
    )
    vb = vboard(config={"watchdog_s": WATCHDOG_S}, files=_hooked(hook))
    dev = vb.device_id
    first = mqtt.wait_for(online_status_of(dev), REPORT_S, what="birth message", logs=logs_of(vb))
    assert first.json["reset_cause"] == "power_on" and first.json["crashes"] == 0
    vb.wait_console("hil: sampling hangs now", REPORT_S)
    mark = mqtt.mark()
    hung_for = _wait_resets(vb, "watchdog", 1, SAMPLING_STALL_S + WATCHDOG_S + 15)
    # Evidence: the feeder named the stalled task, stopped feeding, and the WDT fired.
    out = vb.console_text()
    said = out.index("sampling made no progress for")
    assert said < out.index("task_wdt: Task watchdog got triggered")
    assert _resets(vb) == {"power_on": 1, "watchdog": 1}
    # The stall limit, then the WDT's timeout: no earlier (fed while the rest was alive),
    # no much later.
    assert SAMPLING_STALL_S + WATCHDOG_S - 2 < hung_for < SAMPLING_STALL_S + WATCHDOG_S + 5
    print(f"hang -> watchdog reset: {hung_for:.1f} s")
    # Recovery: the board is back and says why it reset.
    _back_after_watchdog(vb, mqtt, mark, "hung: sampling made no progress for")


@pytest.mark.bench
def test_a_blocked_event_loop_ends_in_a_watchdog_reset(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    hook = _sampling_hook(
        """
if n == 3 and "hil_blocked" not in os.listdir():
    open("hil_blocked", "w").close()
    print("hil: blocking the event loop")
    time.sleep(3600)  # nothing else runs, the feeder included
"""
    )
    vb = vboard(config={"watchdog_s": WATCHDOG_S}, files=_hooked(hook))
    dev = vb.device_id
    mqtt.wait_for(online_status_of(dev), REPORT_S, what="birth message", logs=logs_of(vb))
    vb.wait_console("hil: blocking the event loop", REPORT_S)
    mark = mqtt.mark()
    blocked_for = _wait_resets(vb, "watchdog", 1, WATCHDOG_S + 10)
    assert WATCHDOG_S - 1.5 < blocked_for < WATCHDOG_S + 3
    print(f"blocked loop -> watchdog reset: {blocked_for:.1f} s")
    assert "made no progress" not in vb.console_text()  # the feeder never ran again
    _back_after_watchdog(vb, mqtt, mark, "WDT_RESET:")


@pytest.mark.bench
def test_an_exception_in_the_app_is_recorded_and_resets_the_board(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    hook = _sampling_hook(
        """
if n == 3 and "hil_crashed" not in os.listdir():
    open("hil_crashed", "w").close()
    raise RuntimeError("injected by the HIL test")
"""
    )
    vb = vboard(files=_hooked(hook))
    dev = vb.device_id
    mqtt.wait_for(online_status_of(dev), REPORT_S, what="birth message", logs=logs_of(vb))
    mark = mqtt.mark()
    _wait_resets(vb, "hard", 1, REPORT_S)
    out = vb.console_text()
    # The traceback, then the guard's line, then the reset.
    assert out.index("RuntimeError: injected by the HIL test") < out.index(
        "crash: RuntimeError: injected by the HIL test; resetting"
    )
    assert "watchdog" not in _resets(vb)
    back = mqtt.wait_for(
        online_status_of(dev),
        REPORT_S,
        what="status after the crash reset",
        after=mark,
        logs=logs_of(vb),
    )
    assert back.json["reset_cause"] == "hard" and back.json["crashes"] == 1
    assert back.json["last_crash"] == "RuntimeError: injected by the HIL test"
    seq_before = max(r["seq"] for r in mqtt.telemetry(dev))
    mqtt.wait_for(
        lambda m: telemetry_of(dev)(m) and m.last["seq"] > seq_before,
        REPORT_S,
        what="new telemetry after the crash reset",
        after=mark,
        logs=logs_of(vb),
    )
    vb.stop()  # the record on flash, as the next boot read it
    record = img.read_file(vb.image, "crash.json")
    assert b'"error": "RuntimeError"' in record and b'"count": 1' in record
    assert b'"pending": false' in record


@pytest.mark.bench
@pytest.mark.slow
def test_five_failures_in_a_row_mean_safe_mode_with_the_repl_free(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    hook = _sampling_hook('raise RuntimeError("crash at every boot")')
    vb = vboard(files=_hooked(hook))
    dev = vb.device_id
    out = vb.wait_console("safe mode:", 120)
    # Evidence: five crash resets, then a boot that did not start the app.
    assert _resets(vb) == {"power_on": 1, "hard": 5}, _resets(vb)
    assert out.count("crash: RuntimeError: crash at every boot; resetting") == 5
    line = out[out.index("safe mode:") :].splitlines()[0]
    assert "5 crash/watchdog resets in a row" in line and "app not started" in line
    assert "crash at every boot" in line
    time.sleep(2)
    assert ", reset cause " not in vb.console_text()[out.index("safe mode:") :]  # no app
    assert _resets(vb) == {"power_on": 1, "hard": 5}  # and nothing resets it
    assert "42" in _repl(vb, "6 * 7")
    # Recovery, as a technician does it: fix main.py from the REPL, machine.reset().
    mark = mqtt.mark()
    _repl(vb, f"f = open('main.py', 'w'); f.write({APP_MAIN.decode()!r}); f.close()")
    with serial.serial_for_url(vb.console_path, baudrate=115200, timeout=5) as port:
        port.write(b"import machine; machine.reset()\r")
    back = mqtt.wait_for(
        online_status_of(dev), REPORT_S, what="status after the fix", after=mark, logs=logs_of(vb)
    )
    assert back.json["reset_cause"] == "hard"
    assert back.json["crashes"] == 0  # safe mode started the count over
    mqtt.wait_for(telemetry_of(dev), REPORT_S, what="telemetry after the fix", after=mark)


@pytest.mark.bench
def test_an_exception_out_of_main_py_leaves_the_repl(vboard: VboardFactory) -> None:
    main = b'print("main: starting")\nraise ValueError("boom from main.py")\n'
    vb = vboard(files=[("main.py", main)])
    out = vb.wait_console(">>> ", REPORT_S)
    assert 'File "main.py", line 2' in out and "ValueError: boom from main.py" in out
    time.sleep(3)  # the old virtual ROM rebooted after 2 s; an ESP32 never does
    assert vb.supervisor is not None
    st = vb.supervisor.status()
    assert st["boots"] == 1 and st["resets"] == {"power_on": 1}, st
    assert vb.console_text().count("main: starting") == 1
    assert "42" in _repl(vb, "6 * 7")


@pytest.mark.bench
def test_memory_errors_are_counted_and_reported_and_never_fatal(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    hook = _sampling_hook(
        """
if n in (3, 5):
    print("hil: allocating 64 MiB")
    bytearray(64 << 20)  # a real MemoryError: more than any ESP32's heap, PSRAM included
"""
    )
    vb = vboard(config={"status_interval_s": 10}, files=_hooked(hook))
    dev = vb.device_id
    first = mqtt.wait_for(online_status_of(dev), REPORT_S, what="birth message", logs=logs_of(vb))
    assert first.json["memory_errors"] == 0
    out = vb.wait_console("sampling: MemoryError, collected and restarted", REPORT_S, count=2)
    assert out.count("hil: allocating 64 MiB") == 2
    mark = mqtt.mark()
    status = mqtt.wait_for(
        online_status_of(dev, lambda b: b["memory_errors"] >= 2),
        REPORT_S,
        what="status reporting two MemoryErrors",
        logs=logs_of(vb),
    )
    assert status.json["memory_errors"] == 2 and status.json["reset_cause"] == "power_on"
    # Never fatal: the same boot keeps sampling and sending.
    seq_before = max(r["seq"] for r in mqtt.telemetry(dev))
    mqtt.wait_for(
        lambda m: telemetry_of(dev)(m) and m.last["seq"] > seq_before + 2,
        REPORT_S,
        what="telemetry after the MemoryErrors",
        after=mark,
        logs=logs_of(vb),
    )
    assert _resets(vb) == {"power_on": 1}
