"""The virtual board behaves like a USB-attached MicroPython board on its console: real
mpremote (subprocess, default soft reset) and pyserial drive it; resets, an uncaught exception
(printed, then the REPL) and the heap limit behave as on an ESP32."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from hil_tests.helpers import mpremote
from host_tools import image as img
from host_tools.vboard.runner import VirtualBoard

pytestmark = pytest.mark.e2e

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))

LOOP_MAIN = b"""
import time, machine
print("main: cause", machine.reset_cause())
n = 0
while True:
    n += 1
    time.sleep_ms(100)
"""


def _board(tmp_path: Path, main: bytes, **kw: object) -> VirtualBoard:
    image = img.build_image(tmp_path / "flash.img", board="unix_sim", extra=[("main.py", main)])
    return VirtualBoard(name="t", workdir=tmp_path / "work", image=image, **kw)


def _wait_console(vb: VirtualBoard, text: str, timeout: float = 10.0, count: int = 1) -> str:
    return vb.wait_console(text, timeout, count=count)


def test_mpremote_exec_ls_cp_and_reset_run_new_main(tmp_path: Path) -> None:
    with _board(tmp_path, LOOP_MAIN) as vb:
        _wait_console(vb, "main: cause 1")
        # exec interrupts the running main.py (Ctrl-C), soft-resets in the raw REPL, runs.
        assert mpremote(vb, "exec", "print('sum', 40 + 2)").strip() == "sum 42"
        listing = mpremote(vb, "fs", "ls")
        assert "main.py" in listing and "board.mpy" in listing
        new_main = tmp_path / "main.py"
        new_main.write_text('print("main: the new one")\n')
        mpremote(vb, "fs", "cp", str(new_main), ":main.py")
        assert mpremote(vb, "fs", "cat", ":main.py").strip() == 'print("main: the new one")'
        mpremote(vb, "reset")
        _wait_console(vb, "main: the new one")
    # What was written through the console is on the flash image, for the next boot.
    assert img.read_file(tmp_path / "flash.img", "main.py") == b'print("main: the new one")\n'


def test_ctrl_c_gives_repl_and_ctrl_d_soft_resets_into_main(tmp_path: Path) -> None:
    with _board(tmp_path, LOOP_MAIN) as vb:
        _wait_console(vb, "main: cause 1")
        with serial.serial_for_url(vb.console_path, baudrate=115200, timeout=5) as port:
            port.write(b"\x03")
            banner = port.read_until(b">>> ")
            assert b"KeyboardInterrupt" in banner and banner.endswith(b">>> ")
            port.write(b"6 * 7\r")
            assert b"42" in port.read_until(b">>> ")
            port.write(b"\x04")  # Ctrl-D: soft reset, then boot.py and main.py run again
            assert b"soft reboot" in port.read_until(b"soft reboot\r\n")
        out = _wait_console(vb, "main: cause 5")  # SOFT_RESET
        assert out.count("main: cause") == 2


def test_uncaught_exception_prints_and_stays_in_the_repl(tmp_path: Path) -> None:
    # As on an ESP32: pyexec prints the traceback and the REPL follows; nothing reboots.
    main = (
        b'import machine\nprint("main: cause", machine.reset_cause())\nraise ValueError("boom")\n'
    )
    with _board(tmp_path, main) as vb:
        out = _wait_console(vb, ">>> ")
        assert "ValueError: boom" in out and 'File "main.py", line 3' in out
        assert out.index("ValueError: boom") < out.index(">>> ")
        with serial.serial_for_url(vb.console_path, baudrate=115200, timeout=5) as port:
            port.write(b"6 * 7\r")
            assert b"42" in port.read_until(b">>> ")
        time.sleep(2.5)  # the old virtual ROM rebooted 2 s after the crash
        assert vb.supervisor is not None
        st = vb.supervisor.status()
        assert st["boots"] == 1 and st["resets"] == {"power_on": 1}, st
        assert vb.console_text().count("main: cause") == 1


def test_machine_reset_and_files_persist_across_vboard_restarts(tmp_path: Path) -> None:
    main = b"""
import machine
try:
    n = int(open("boots.txt").read())
except OSError:
    n = 0
with open("boots.txt", "w") as f:  # closed = committed to littlefs, as on an ESP32
    f.write(str(n + 1))
print("main: boot", n + 1, "cause", machine.reset_cause())
if n + 1 < 3:
    machine.reset()
"""
    with _board(tmp_path, main) as vb:
        _wait_console(vb, "main: boot 3 cause 2")
    # A new vboard process on the same image sees what the firmware wrote.
    with VirtualBoard(name="t", workdir=tmp_path / "work2", image=tmp_path / "flash.img") as vb:
        _wait_console(vb, "main: boot 4 cause 1")


def test_heap_limit_is_enforced(tmp_path: Path) -> None:
    main = b"""
import gc
gc.collect()
print("main: free", gc.mem_free())
try:
    blob = bytearray(200 * 1024)
    print("main: allocated")
except MemoryError:
    print("main: MemoryError")
"""
    with _board(tmp_path, main, heap=96 * 1024) as vb:
        out = _wait_console(vb, "main: MemoryError")
        free = int(out.split("main: free")[1].split()[0])
        assert free < 96 * 1024


@pytest.mark.parametrize("heap", ["abc", "-5"])
def test_bad_heap_option_is_one_clear_error(heap: str) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("albatross")),
            "vboard",
            "--heap",
            heap,
            "--seconds",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("albatross: bad size")
    assert "Traceback" not in result.stderr


def test_mpremote_run_and_soft_reset_commands(tmp_path: Path) -> None:
    with _board(tmp_path, LOOP_MAIN) as vb:
        _wait_console(vb, "main: cause 1")
        script = tmp_path / "hello.py"
        script.write_text("import machine\nprint('run:', machine.reset_cause())\n")
        # `run` executes a host file after mpremote's soft reset: cause 5 (SOFT_RESET).
        assert mpremote(vb, "run", str(script)).strip() == "run: 5"
        mpremote(vb, "soft-reset")
        assert vb.supervisor is not None
        assert vb.supervisor.status()["resets"]["soft"] >= 2
        # machine.soft_reset() from code restarts the interpreter too (in the raw REPL it
        # stays there, as on an ESP32, so main.py does not run; the board still answers).
        before = vb.supervisor.status()["resets"]["soft"]
        mpremote(vb, "exec", "import machine; machine.soft_reset()")
        assert vb.supervisor.status()["resets"]["soft"] == before + 2  # mpremote's + ours
        assert mpremote(vb, "exec", "print(6 * 7)").strip() == "42"
