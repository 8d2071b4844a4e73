"""`albatross build-image`: everything one board's flash needs, in one folder.

- `littlefs.img`: the app (compiled with the mpy-cross that matches the board's MicroPython),
  the board's files and config.json, in a littlefs2 image exactly the size of the board's
  vfs partition (host_tools/flash_layout.py), to be written at its offset;
- `manifest.json`: board, firmware and MicroPython versions, the flash layout, and every
  file on the filesystem with its size and SHA-256;
- with a firmware (the user's stock MicroPython build for the board, the combined .bin that
  is written at 0x1000): `flash.bin`, one image of the whole flash (bootloader, partition
  table, app, filesystem) to write at 0x0 -- what the virtual board boots as a chip would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from host_tools import flash_layout as fl
from host_tools import image as img

LITTLEFS_NAME = "littlefs.img"
FLASH_NAME = "flash.bin"
MANIFEST_NAME = "manifest.json"


def firmware_version() -> str:
    """The app's VERSION (firmware/tracker/__init__.py), read without importing it."""
    text = (img.FIRMWARE_DIR / "tracker" / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("VERSION"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise img.ImageError("firmware/tracker/__init__.py states no VERSION")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(
    board: str,
    out_dir: Path,
    *,
    config: dict | None = None,
    firmware: Path | None = None,
) -> dict:
    """Build the folder; return the manifest (also written as manifest.json).
    Raises ImageError / LayoutError (one line each) for a board without a flash layout,
    a firmware that is not a MicroPython ESP32 build, or an app that does not fit."""
    info = img.board_info(board)
    layout = fl.board_layout(info)
    if layout is None:
        raise img.ImageError(f"board {board}: board.json states no flash.size")
    fw = None
    if firmware is not None:
        fw = fl.split_firmware(Path(firmware).read_bytes(), source=str(firmware))
        # The firmware's own partition table decides where the filesystem goes.
        layout = fl.FlashLayout(layout.flash_size, tuple(fw.partitions))
    vfs = layout.vfs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lfs_path = img.build_image(
        out_dir / LITTLEFS_NAME, board=board, config=config, size=vfs.size, compiled=True
    )
    lfs = lfs_path.read_bytes()
    manifest: dict = {
        "board": board,
        "firmware_version": firmware_version(),
        "micropython_version": (info.get("micropython") or {}).get("version"),
        "layout": layout.to_json(),
        "littlefs": {
            "file": LITTLEFS_NAME,
            "offset": vfs.offset,
            "size": len(lfs),
            "sha256": _sha256(lfs),
        },
        "files": img.file_digests(lfs_path),
    }
    if fw is not None:
        flash = fl.merge_flash(fw, lfs, layout.flash_size)
        (out_dir / FLASH_NAME).write_bytes(flash)
        desc = fw.app_info.app_desc
        manifest["firmware"] = {
            "file": Path(firmware).name if firmware else None,
            "sha256": _sha256(Path(firmware).read_bytes()) if firmware else None,
            "project_name": desc.project_name if desc else None,
            "app_version": desc.version if desc else None,
            "idf_version": desc.idf_ver if desc else None,
        }
        manifest["flash_image"] = {
            "file": FLASH_NAME,
            "offset": 0,
            "size": len(flash),
            "sha256": _sha256(flash),
        }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def summary(manifest: dict, out_dir: Path) -> list[str]:
    """The lines the CLI prints."""
    lfs = manifest["littlefs"]
    lines = [
        f"build-image: board {manifest['board']}, firmware {manifest['firmware_version']}, "
        f"MicroPython {manifest['micropython_version']}",
        f"  {out_dir / LITTLEFS_NAME}: {len(manifest['files'])} files, {lfs['size']} bytes "
        f"for vfs at 0x{lfs['offset']:x}",
    ]
    if "flash_image" in manifest:
        fw = manifest["firmware"]
        lines.append(
            f"  {out_dir / FLASH_NAME}: full flash ({manifest['flash_image']['size']} bytes, "
            f"write at 0x0), app {fw['project_name']} {fw['app_version']}"
        )
    lines.append(f"  {out_dir / MANIFEST_NAME}")
    return lines
