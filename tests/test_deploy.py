"""albatross deploy's plan (which files to send, skip and remove) and its journal, on CPython;
firmware/boot.py finishing a journal on CPython and on the board's MicroPython runtime. The
deploy over a board's REPL is in hil_tests/test_deploy.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from host_tools import deploy as d
from host_tools import image as img
from host_tools.cli import main
from host_tools.vboard import runtime as rt

REPO = Path(__file__).resolve().parents[1]
H = {"boot.py": "b1", "main.py": "m1", "board.mpy": "bd", "tracker/app.mpy": "a1"}


def test_unchanged_files_are_skipped_changed_and_missing_ones_sent() -> None:
    device = {"boot.py": "b1", "main.py": "OLD", "board.mpy": None, "tracker/app.mpy": "a1"}
    plan = d.make_plan(H, device, ["boot.py", "main.py", "tracker/app.mpy"])
    assert plan.send == ["board.mpy", "main.py"]
    assert plan.skip == ["boot.py", "tracker/app.mpy"]
    assert plan.delete == []


def test_only_app_files_the_host_no_longer_has_are_removed() -> None:
    listing = [
        "boot.py",
        "main.py",
        "config.json",  # the device's settings: never the deploy's
        "notes.txt",  # a user's file at the root
        "tracker/app.mpy",
        "tracker/gone.mpy",  # a module the app dropped
        "tracker/uplink/old.mpy",
    ]
    plan = d.make_plan(H, dict.fromkeys(H, "x"), listing)
    assert plan.delete == ["tracker/gone.mpy", "tracker/uplink/old.mpy"]


def test_the_source_form_of_a_shipped_module_is_removed_as_it_would_win_the_import() -> None:
    listing = ["board.py", "board.mpy", "tracker/app.py", "tracker/app.mpy", "main.mpy"]
    plan = d.make_plan(H, dict(H), listing)
    # main.mpy beside the shipped main.py is the other form too; board.py shadows board.mpy.
    assert plan.delete == ["board.py", "main.mpy", "tracker/app.py"]
    assert plan.send == []


def test_new_leftovers_go_unless_that_file_is_sent_again() -> None:
    listing = ["boot.py.new", "main.py.new", "tracker/app.mpy.new", "other.new"]
    plan = d.make_plan(H, dict(H, **{"main.py": "OLD"}), listing)
    assert plan.send == ["main.py"]  # its .new is overwritten
    assert plan.delete == ["boot.py.new", "tracker/app.mpy.new"]


def test_kept_files_are_neither_sent_nor_removed() -> None:
    host = dict(H, **{"board.json": "repo"})
    device = dict(H, **{"board.json": "tailored", "tracker/x.mpy": "x"})
    plan = d.make_plan(
        host, device, ["board.json", "tracker/x.mpy"], keep=["board.json", "tracker/x.mpy"]
    )
    assert "board.json" not in plan.send + plan.skip + plan.delete
    assert plan.delete == []


def test_a_second_plan_after_the_first_is_carried_out_is_empty() -> None:
    device: dict[str, str | None] = {"main.py": "OLD"}
    listing = ["main.py", "tracker/gone.mpy"]
    first = d.make_plan(H, {p: device.get(p) for p in H}, listing)
    after = {p: H[p] for p in first.send + first.skip}
    listing = sorted(set(listing) - set(first.delete) | set(first.send))
    second = d.make_plan(H, after, listing)
    assert (second.send, second.delete) == ([], [])
    assert len(second.skip) == len(H)


def test_journal_lists_the_renames_then_the_removals() -> None:
    text = d.journal_text(["tracker/app.mpy", "boot.py"], ["tracker/gone.mpy"])
    assert text == "tracker/app.mpy\nboot.py\n-tracker/gone.mpy\n"


def test_parents_are_made_outermost_first() -> None:
    assert d.parents(["boot.py", "tracker/a/b/c.mpy", "tracker/x.mpy"]) == [
        "tracker",
        "tracker/a",
        "tracker/a/b",
    ]


def test_the_file_set_is_what_the_image_builder_puts_on_the_flash(tmp_path: Path) -> None:
    files = d.app_files("unix_sim")
    image = img.build_image(tmp_path / "fs.img", board="unix_sim")
    assert sorted(p for p, _ in files) == img.list_files(image)
    assert all(img.read_file(image, p) == data for p, data in files)


def _journal_on(root: Path) -> None:
    (root / "tracker").mkdir()
    (root / "tracker" / "app.mpy").write_bytes(b"old app")
    (root / "tracker" / "app.mpy.new").write_bytes(b"new app")
    (root / "main.py").write_bytes(b"new main")  # renamed already by a finish cut short
    (root / "tracker" / "gone.mpy").write_bytes(b"dropped")
    (root / d.JOURNAL).write_text(
        d.journal_text(["tracker/app.mpy", "main.py"], ["tracker/gone.mpy"])
    )


def _finished(root: Path) -> None:
    assert (root / "tracker" / "app.mpy").read_bytes() == b"new app"
    assert (root / "main.py").read_bytes() == b"new main"
    assert not (root / "tracker" / "gone.mpy").exists()
    assert not (root / "tracker" / "app.mpy.new").exists()
    assert not (root / d.JOURNAL).exists()


BOOT = (REPO / "firmware" / "boot.py").read_text()


def test_boot_py_finishes_a_journal_on_cpython(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _journal_on(tmp_path)
    monkeypatch.chdir(tmp_path)
    exec(compile(BOOT, "boot.py", "exec"), {})
    _finished(tmp_path)
    exec(compile(BOOT, "boot.py", "exec"), {})  # no journal: nothing happens, nothing raised
    _finished(tmp_path)


def test_the_host_side_finish_is_boot_pys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _journal_on(tmp_path)
    monkeypatch.chdir(tmp_path)
    exec(compile(d._FINISH, "finish", "exec"), {})
    _finished(tmp_path)


def test_boot_py_finishes_a_journal_on_micropython(tmp_path: Path) -> None:
    runtime = rt.resolve()
    _journal_on(tmp_path)
    (tmp_path / "boot.py").write_text(BOOT)
    done = subprocess.run(
        [runtime.path, "boot.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    _finished(tmp_path)


def test_boot_py_survives_a_journal_it_cannot_read(tmp_path: Path) -> None:
    runtime = rt.resolve()
    (tmp_path / d.JOURNAL).mkdir()  # open() fails: the boot goes on
    (tmp_path / "boot.py").write_text(BOOT + "\nprint('booted')\n")
    done = subprocess.run(
        [runtime.path, "boot.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "booted", done.stderr


def test_cli_deploy_to_a_missing_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "--port", "/dev/albatross-no-such-port"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("albatross: /dev/albatross-no-such-port:"), err
