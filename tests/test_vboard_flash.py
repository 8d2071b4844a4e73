"""The virtual board's flash: littlefs on a block device that counts wear and can lose power
at any chosen write, as a brown-out would."""

from __future__ import annotations

from pathlib import Path

from host_tools import image as img
from host_tools.vboard.runner import VirtualBoard

WRITER = b"""
import machine, os
print("main: cause", machine.reset_cause())
try:
    n = int(open("count.txt").read())
except (OSError, ValueError):
    n = 0
while n < 30:
    n += 1
    with open("count.tmp", "w") as f:
        f.write(str(n))
    os.rename("count.tmp", "count.txt")
print("main: done", n)
"""


def _wait(vb: VirtualBoard, text: str, timeout: float = 20) -> str:
    return vb.wait_console(text, timeout)


def _board(tmp_path: Path) -> VirtualBoard:
    image = img.build_image(tmp_path / "flash.img", board="unix_sim", extra=[("main.py", WRITER)])
    return VirtualBoard(name="f", workdir=tmp_path / "work", image=image, modem="none")


def test_flash_wear_is_counted(tmp_path: Path) -> None:
    with _board(tmp_path) as vb:
        _wait(vb, "main: done 30")
        assert vb.supervisor is not None
        flash = vb.supervisor.status()["flash"]
    # 30 renamed files: littlefs programs at least one page per file write and per rename.
    assert flash["programs"] >= 60
    assert flash["erases"] >= 1 and flash["max_erases_per_block"] >= 1


def test_power_cut_at_the_nth_write_reboots_and_the_filesystem_survives(tmp_path: Path) -> None:
    with _board(tmp_path) as vb:
        assert vb.supervisor is not None
        # Power-cycle into a boot whose 25th flash operation loses the power: mid-way
        # through the writes (each file write and rename programs a few pages).
        vb.supervisor.cut_after = 25
        vb.supervisor.power_cut(0.05)
        out = _wait(vb, "main: done 30")
        status = vb.supervisor.status()
    assert status["power_cuts"] == 1
    assert status["resets"]["power_on"] == 3
    assert "power cut at flash operation" in (vb.workdir / "vboard.log").read_text()
    # After the cut the count resumed from what littlefs had committed (a torn write never
    # shows as a half-written number) and the loop finished.
    assert status["boots"] == 3  # first boot, the cycle into the cut, the boot after it
    assert out.count("main: done 30") == 1
    assert img.read_file(tmp_path / "flash.img", "count.txt") == b"30"
