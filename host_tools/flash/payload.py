"""What goes onto a board: built once for a tray, provisioned per device.

`build_payload()` runs `albatross build-image` (host_tools/build_image.py) into a work folder:
the littlefs image the size of the board's vfs partition and, with a firmware, the merged
full flash. `Payload.regions(device_id)` then puts that device's config.json (its device id
and any per-device keys) into a copy of the littlefs and returns the (offset, bytes) to
write: the whole flash at 0x0 with a firmware, else only the vfs partition.

`image_sha256` names the build, before any device's config goes in (firmware, app, board
files and the shared config); a fleet report records it so that a rerun can tell a board
that already holds this build from one that needs flashing."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from host_tools import build_image
from host_tools import image as img
from host_tools.console import values
from host_tools.console.protocol import CliError

DEVICE_ID_PREFIX = "alb-"  # firmware/tracker/app.py: "alb-" + board.unique_id()


def device_id_from_mac(mac: bytes) -> str:
    """The id the firmware gives itself when config has none: "alb-" + unique_id(), which
    on an ESP32 is machine.unique_id(), the base MAC from eFuse (MicroPython's esp32 port,
    machine.unique_id: esp_efuse_mac_get_default), as lowercase hex."""
    return DEVICE_ID_PREFIX + bytes(mac).hex()


def check_device_id(device_id: str) -> str:
    """The firmware's own rule for device_id (tracker/config.py), checked on the host."""
    try:
        values.check("device_id", device_id)
    except CliError as e:
        raise ValueError(str(e)) from None
    if not device_id:
        raise ValueError("device_id must not be empty here")
    return device_id


@dataclass
class Payload:
    board: str
    manifest: dict
    lfs: bytes
    flash: bytes | None
    config: dict = field(default_factory=dict)

    @property
    def flash_size(self) -> int:
        return int(self.manifest["layout"]["flash_size"])

    @property
    def vfs_offset(self) -> int:
        return int(self.manifest["littlefs"]["offset"])

    @property
    def image_sha256(self) -> str:
        h = hashlib.sha256(self.flash if self.flash is not None else self.lfs)
        h.update(b"@%x" % (0 if self.flash is not None else self.vfs_offset))
        return h.hexdigest()

    @property
    def app_version(self) -> str:
        return str(self.manifest["firmware_version"])

    @property
    def micropython_version(self) -> str | None:
        """The MicroPython build written (from its app descriptor), or None when only the
        filesystem is written and the board keeps what it runs."""
        fw = self.manifest.get("firmware")
        return fw.get("app_version") if fw else None

    @property
    def write_size(self) -> int:
        return len(self.flash) if self.flash is not None else len(self.lfs)

    def provisioned_lfs(self, device_id: str, extra: dict | None = None) -> bytes:
        with tempfile.TemporaryDirectory(prefix="albatross-provision-") as tmp:
            path = Path(tmp) / build_image.LITTLEFS_NAME
            path.write_bytes(self.lfs)
            # The build wrote config.json from self.config; this device's is that plus its own.
            config = {**self.config, **(extra or {}), "device_id": device_id}
            img.write_file(path, img.CONFIG_FILE, json.dumps(config, sort_keys=True).encode())
            return path.read_bytes()

    def regions(self, device_id: str, extra: dict | None = None) -> list[tuple[int, bytes]]:
        lfs = self.provisioned_lfs(device_id, extra)
        if self.flash is None:
            return [(self.vfs_offset, lfs)]
        at = self.vfs_offset
        return [(0, self.flash[:at] + lfs + self.flash[at + len(lfs) :])]


def build_payload(
    board: str,
    work_dir: Path,
    *,
    firmware: Path | None = None,
    config: dict | None = None,
) -> Payload:
    """Build the board's image once (ImageError / LayoutError / CliError, one line each)."""
    config = dict(config or {})
    manifest = build_image.build(board, work_dir, config=config or None, firmware=firmware)
    lfs = (work_dir / build_image.LITTLEFS_NAME).read_bytes()
    flash = None
    if "flash_image" in manifest:
        flash = (work_dir / build_image.FLASH_NAME).read_bytes()
    return Payload(board, manifest, lfs, flash, config)


def load_config(path: Path | None) -> dict:
    """A device.json / device.toml checked against the firmware's schema, values in the
    types the device stores ("5" for interval_s becomes 5)."""
    table = values.load_file(path) if path else {}
    return {name: values.check(name, value) for name, value in table.items()}
