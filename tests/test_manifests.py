"""Each board's frozen-build manifest freezes exactly the app and board files the board's
filesystem would otherwise carry, and the manifests stay off the device."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_tools import image as img

BOARDS = sorted(p.parent.name for p in img.BOARDS_DIR.glob("*/manifest.py"))


def _frozen(manifest: Path) -> tuple[set[str], list[str]]:
    """Device paths a manifest freezes (package/module calls) and what it includes."""
    frozen: set[str] = set()
    includes: list[str] = []

    def package(name: str, base_path: str = ".", files=None, opt=None) -> None:
        root = (manifest.parent / base_path).resolve()
        for path in (root / name).rglob("*.py"):
            frozen.add(path.relative_to(root).as_posix())

    def module(name: str, base_path: str = ".", opt=None) -> None:
        assert (manifest.parent / base_path / name).is_file(), f"{manifest}: no {name}"
        frozen.add(name)

    def include(path: str, **kw: object) -> None:
        includes.append(path)

    code = compile(manifest.read_text(), str(manifest), "exec")
    exec(code, {"package": package, "module": module, "include": include, "freeze": include})
    return frozen, includes


def test_every_board_with_hardware_has_a_manifest() -> None:
    assert set(BOARDS) >= {"unix_sim", "esp32_generic_sim7600", "lilygo_t_sim7600"}


@pytest.mark.parametrize("board", BOARDS)
def test_manifest_freezes_every_module_the_filesystem_would_carry(board: str) -> None:
    frozen, includes = _frozen(img.BOARDS_DIR / board / "manifest.py")
    device = {
        dev
        for dev, _ in list(img.firmware_files()) + list(img.board_files(board))
        if dev.endswith(".py") and dev not in img.SOURCE_ONLY
    }
    assert device == frozen

    # asyncio comes with what the manifest includes: the ESP32 port's stock manifest (it
    # freezes asyncio), or a manifest of ours that includes it.
    def brings_asyncio(include: str) -> bool:
        if include == "$(PORT_DIR)/boards/manifest.py":
            return True
        path = img.BOARDS_DIR / board / include
        return path.is_file() and '"$(MPY_DIR)/extmod/asyncio"' in path.read_text()

    assert any(brings_asyncio(i) for i in includes), includes


@pytest.mark.parametrize("board", BOARDS)
def test_manifest_is_not_a_device_file(board: str) -> None:
    assert "manifest.py" not in {dev for dev, _ in img.board_files(board)}
