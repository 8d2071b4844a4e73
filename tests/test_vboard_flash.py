"""The virtual board's flash: littlefs on a block device that counts wear and can lose power
during any chosen program or erase, tearing it as a brown-out would (rom/_vblockdev.py)."""

from __future__ import annotations

import importlib.util
import random
import sys
import time
import types
from pathlib import Path

import pytest

from host_tools import image as img
from host_tools.vboard.runner import VirtualBoard

pytestmark = pytest.mark.e2e

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
    assert "power cut in flash operation 25" in (vb.workdir / "vboard.log").read_text()
    # After the cut the count resumed from what littlefs had committed (a torn write never
    # shows as a half-written number) and the loop finished.
    assert status["boots"] == 3  # first boot, the cycle into the cut, the boot after it
    assert out.count("main: done 30") == 1
    assert img.read_file(tmp_path / "flash.img", "count.txt") == b"30"


# ---- the torn-write model (rom/_vblockdev.py), on CPython with a stand-in supervisor ------

ROM = Path(__file__).resolve().parents[1] / "host_tools" / "vboard" / "rom" / "_vblockdev.py"
BLOCK = 4096


class _PowerGone(Exception):
    """The supervisor killed the process: here, the stand-in _vctl.request raises."""


def _rom_blockdev(monkeypatch: pytest.MonkeyPatch, cut_after: int, seed: int):
    sent: list[bytes] = []

    def request(msg: bytes) -> None:
        sent.append(msg)
        raise _PowerGone(msg)

    vctl = types.ModuleType("_vctl")
    vctl.send = sent.append  # type: ignore[attr-defined]
    vctl.request = request  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_vctl", vctl)
    monkeypatch.setenv("ALBATROSS_CUT_AFTER", str(cut_after))
    monkeypatch.setenv("ALBATROSS_CUT_SEED", str(seed))
    monkeypatch.delenv("ALBATROSS_FLASH_TAGS", raising=False)  # would wrap builtins.open
    spec = importlib.util.spec_from_file_location("_vblockdev_under_test", ROM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, sent


def _old_image(path: Path, blocks: int = 4) -> bytes:
    data = random.Random(7).randbytes(BLOCK * blocks)
    path.write_bytes(data)
    return data


def test_a_cut_program_leaves_a_prefix_of_the_new_bytes_and_the_rest_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "flash.img"
    old = _old_image(image)
    bd, sent = _rom_blockdev(monkeypatch, cut_after=2, seed=1234)
    dev = bd.FileBlockDevice(str(image), BLOCK)
    first = b"\x11" * 64
    dev.writeblocks(1, first, 0)  # operation 1: whole
    new = bytes(range(200, 256)) * 4  # 224 bytes, none equal to what is there
    with pytest.raises(_PowerGone):
        dev.writeblocks(2, new, 512)  # operation 2: the power goes during it
    after = image.read_bytes()
    at = 2 * BLOCK + 512
    k = next(i for i in range(len(new)) if after[at + i] != new[i])
    assert 1 <= k < len(new), "a torn program writes some of its bytes, not none or all"
    assert after[at : at + k] == new[:k]
    assert after[at + k : at + len(new)] == old[at + k : at + len(new)]
    # Nothing else moved: operation 1 landed whole, every other byte is the old one.
    assert after[BLOCK : BLOCK + 64] == first
    expect = bytearray(old)
    expect[BLOCK : BLOCK + 64] = first
    expect[at : at + k] = new[:k]
    assert after == bytes(expect)
    assert sent[-1] == b"Xp 2 512 %d %d -" % (len(new), k)


def test_a_cut_erase_leaves_the_block_partly_erased(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "flash.img"
    old = _old_image(image)
    bd, sent = _rom_blockdev(monkeypatch, cut_after=1, seed=99)
    dev = bd.FileBlockDevice(str(image), BLOCK)
    with pytest.raises(_PowerGone):
        dev.ioctl(bd.BP_IOCTL_BLK_ERASE, 3)
    after = image.read_bytes()
    assert after[: 3 * BLOCK] == old[: 3 * BLOCK]
    pages = [after[3 * BLOCK + i : 3 * BLOCK + i + bd.PAGE] for i in range(0, BLOCK, bd.PAGE)]
    olds = [old[3 * BLOCK + i : 3 * BLOCK + i + bd.PAGE] for i in range(0, BLOCK, bd.PAGE)]
    erased = [p == b"\xff" * bd.PAGE for p in pages]
    assert all(e or p == o for e, p, o in zip(erased, pages, olds, strict=True))
    assert 0 < sum(erased) < len(pages), "a torn erase leaves some pages erased, not none or all"
    assert sent[-1] == b"Xe 3 0 %d %d -" % (BLOCK, sum(erased) * bd.PAGE)


def test_a_tear_is_reproduced_by_its_seed_and_seeds_tear_differently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def torn(seed: int) -> bytes:
        image = tmp_path / f"flash{seed}.img"
        _old_image(image)
        bd, sent = _rom_blockdev(monkeypatch, cut_after=1, seed=seed)
        with pytest.raises(_PowerGone):
            bd.FileBlockDevice(str(image), BLOCK).writeblocks(0, b"\0" * 256, 0)
        return sent[-1]

    assert torn(5) == torn(5)
    lengths = {int(torn(s).split()[4]) for s in range(40)}
    assert len(lengths) >= 20 and min(lengths) >= 1 and max(lengths) <= 255


def test_a_cut_on_the_board_tears_the_operation_and_records_it(tmp_path: Path) -> None:
    """On the virtual board itself: the board stays off after the cut, and the flash holds
    the torn program as the supervisor recorded it (written prefix, still-erased rest)."""
    with _board(tmp_path) as vb:
        assert vb.supervisor is not None
        vb.supervisor.cut_after = 25
        vb.supervisor.cut_seed = 4242
        vb.supervisor.cut_off_s = 3600  # stays off: the flash as the cut left it
        vb.supervisor.power_cut(0.05)
        deadline = time.monotonic() + 20
        while not vb.supervisor.status()["cuts"]:
            assert time.monotonic() < deadline, f"no cut; see {vb.workdir / 'vboard.log'}"
            time.sleep(0.05)
        cut = vb.supervisor.status()["cuts"][0]
        flash = (tmp_path / "flash.img").read_bytes()
    assert cut["kind"] == "program" and cut["seed"] == 4242 and cut["op"] == 25
    assert cut["tag"].endswith("count.tmp")  # the writer's file, seen through open()
    assert 1 <= cut["bytes_torn"] < cut["length"]
    at = cut["block"] * BLOCK + cut["offset"]
    written = flash[at : at + cut["bytes_torn"]]
    rest = flash[at + cut["bytes_torn"] : at + cut["length"]]
    # littlefs programs erased flash only: the part the cut stopped is still 0xFF, and the
    # part it let through is not (had the operation been skipped, all of it would be).
    assert rest == b"\xff" * len(rest)
    assert written != b"\xff" * len(written)
    log = (vb.workdir / "vboard.log").read_text()
    assert (
        f"power cut in flash operation 25: program of block {cut['block']} offset "
        f"{cut['offset']}, {cut['bytes_torn']} of {cut['length']} new bytes written (seed 4242"
    ) in log
