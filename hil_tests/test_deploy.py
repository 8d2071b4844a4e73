"""albatross deploy on a virtual board's console: a one-file change sends only that file and
the app restarts and reports; a deploy killed after its journal leaves a board that boots
the whole new app after a reset, and a rerun finishes it; a second deploy sends nothing.

The vboards here run without a modem, so the board.json on their flash says so, unlike the
tree's (which names the board's modem): every deploy keeps it (--keep board.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hil_tests.conftest import VboardFactory, logs_of
from hil_tests.helpers import telemetry_of
from host_tools import deploy as d
from host_tools import image as img
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.runner import VirtualBoard

pytestmark = pytest.mark.hil
BOOT_S = 30
STORED = "I app: stored seq"
KEEP = ["board.json"]
HARD_BOOT = "reset cause hard"  # the app's first line after a hard reset
TOUCH = "tracker/log.py"


def _variant(stamp: str) -> tuple[str, bytes]:
    """tracker/log.mpy compiled from a changed source, as after a developer's edit."""
    source = (img.FIRMWARE_DIR / TOUCH).read_bytes() + f"\n_DEPLOY_TEST = {stamp!r}\n".encode()
    return img.compile_mpy(TOUCH, source)


def _albatross_deploy(vb: VirtualBoard, *extra: str, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "host_tools.cli", "deploy", "--port", vb.console_path]
        + ["--keep", "board.json", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def _stored_after(vb: VirtualBoard, mark: int, boot: str = "soft reboot") -> None:
    """The app stored a record after the last `boot` line that follows console offset `mark`
    (the console's length before the deploy): it restarted and runs. A record stored before
    the deploy stopped the app does not count."""
    deadline = time.monotonic() + BOOT_S
    while time.monotonic() < deadline:
        after = vb.console_text()[mark:]
        at = after.rfind(boot)
        if at >= 0 and STORED in after[at:]:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {STORED!r} after {boot!r} on the console; see {logs_of(vb)}")


def _on_board(vb: VirtualBoard, code: str) -> str:
    """Run code in the raw REPL without a soft reset (which would run boot.py first)."""
    t = d.open_transport(vb.console_path)
    try:
        t.enter_raw_repl(soft_reset=False)
        return d.Device(t).exec(code)
    finally:
        t.close()


def test_a_one_file_change_sends_only_that_file_and_the_app_restarts(
    vboard: VboardFactory, mqtt: MqttWatch
) -> None:
    vb = vboard()
    dev = vb.device_id  # type: ignore[attr-defined]
    vb.wait_console(STORED, BOOT_S)
    files = d.app_files("unix_sim")
    changed_path, changed = _variant("one-file")
    files = [(p, changed if p == changed_path else data) for p, data in files]
    mark, console = mqtt.mark(), len(vb.console_text())
    report = d.run(vb.console_path, keep=KEEP, files=files)
    print(f"\ndeploy of a one-file change: {report.summary()}")
    assert report.sent == ["tracker/log.mpy"], logs_of(vb)
    assert report.sent_bytes == len(changed)
    assert report.deleted == [] and report.skipped == report.checked - 2  # sent + kept
    assert report.board == "unix_sim"  # from the board's own board.json
    _stored_after(vb, console)
    mqtt.wait_for(
        telemetry_of(dev), BOOT_S, what="telemetry after the deploy", after=mark, logs=logs_of(vb)
    )
    # The board runs the new module: the line the change added is there.
    assert "one-file" in _on_board(vb, "import tracker.log as m\nprint(m._DEPLOY_TEST)")


def test_deploying_twice_sends_nothing_the_second_time(vboard: VboardFactory) -> None:
    # A board with an older log.mpy and a module the app no longer has.
    vb = vboard(files=[_variant("older"), ("tracker/gone.mpy", b"M\x06\x00\x1f")])
    vb.wait_console(STORED, BOOT_S)
    console = len(vb.console_text())
    first = _albatross_deploy(vb)
    assert first.returncode == 0, first.stderr + logs_of(vb)
    one = json.loads(first.stdout)
    assert one["sent"] == ["tracker/log.mpy"] and one["deleted"] == ["tracker/gone.mpy"]
    _stored_after(vb, console)
    console = len(vb.console_text())
    second = _albatross_deploy(vb)
    assert second.returncode == 0, second.stderr + logs_of(vb)
    two = json.loads(second.stdout)
    print(
        f"\nfirst deploy {one['seconds']:.2f} s, second (nothing to send) {two['seconds']:.2f} s"
    )
    assert (two["sent"], two["sent_bytes"], two["deleted"]) == ([], 0, [])
    assert two["skipped"] == two["checked"] - 1  # all but the kept board.json
    _stored_after(vb, console)


def _check_new_app_whole(vb: VirtualBoard) -> None:
    out = _on_board(
        vb,
        "import os\nprint(sorted(os.listdir('tracker')))\nprint(sorted(os.listdir()))",
    )
    tracker, root = (eval(line) for line in out.strip().splitlines())  # noqa: S307
    assert "gone.mpy" not in tracker and not any(n.endswith(".new") for n in tracker), tracker
    assert d.JOURNAL not in root and not any(n.endswith(".new") for n in root), root


def test_a_deploy_killed_after_its_journal_boots_the_new_app_after_a_reset(
    vboard: VboardFactory,
) -> None:
    vb = vboard(files=[_variant("older"), ("tracker/gone.mpy", b"M\x06\x00\x1f")])
    vb.wait_console(STORED, BOOT_S)
    stopped = _albatross_deploy(vb, env={"ALBATROSS_DEPLOY_STOP": "before-renames"})
    assert stopped.returncode == 3, stopped.stderr + logs_of(vb)
    # The journal and the .new are on the board, nothing renamed yet.
    out = _on_board(vb, "import os\nprint(sorted(os.listdir('tracker')), os.listdir())")
    assert "log.mpy.new" in out and "gone.mpy" in out and d.JOURNAL in out, out
    assert vb.supervisor is not None
    console = len(vb.console_text())
    vb.supervisor.reset("hard")  # boot.py finishes the journal before main.py imports the app
    _stored_after(vb, console, boot=HARD_BOOT)
    _check_new_app_whole(vb)
    rerun = _albatross_deploy(vb)
    assert rerun.returncode == 0, rerun.stderr + logs_of(vb)
    report = json.loads(rerun.stdout)
    assert (report["sent"], report["deleted"], report["resumed"]) == ([], [], False)


def test_a_rerun_finishes_a_killed_deploy_on_a_board_whose_boot_py_cannot(
    vboard: VboardFactory,
) -> None:
    # boot.py without the journal steps (as before them): only the rerun can finish.
    vb = vboard(
        files=[_variant("older"), ("tracker/gone.mpy", b"M\x06\x00\x1f"), ("boot.py", b"")]
    )
    vb.wait_console(STORED, BOOT_S)
    stopped = _albatross_deploy(vb, env={"ALBATROSS_DEPLOY_STOP": "before-renames"})
    assert stopped.returncode == 3, stopped.stderr + logs_of(vb)
    console = len(vb.console_text())
    rerun = _albatross_deploy(vb)
    assert rerun.returncode == 0, rerun.stderr + logs_of(vb)
    report = json.loads(rerun.stdout)
    assert report["resumed"] is True
    assert (report["sent"], report["deleted"]) == ([], []), report
    _stored_after(vb, console)
    _check_new_app_whole(vb)
    boot_py = (img.FIRMWARE_DIR / "boot.py").read_text()
    assert _on_board(vb, f"print(open('boot.py').read() == {boot_py!r})").strip() == "True"


def test_measure_deploy_against_mpremote_cp(vboard: VboardFactory) -> None:
    """The figures for the note: a one-file change by deploy vs `mpremote fs cp -r` of the
    app, the same change on the same board (printed; run with -s to see them)."""
    vb = vboard()
    vb.wait_console(STORED, BOOT_S)
    console = len(vb.console_text())
    figures = d.measure(vb.console_path, board="unix_sim", keep=KEEP)
    print("\n" + "\n".join(d.measure_lines(figures)))
    assert figures["deploy_sent"] == ["tracker/log.mpy"]
    assert figures["deploy_s"] < figures["mpremote_cp_force_s"]
    _stored_after(vb, console)
