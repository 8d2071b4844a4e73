"""The firmware's config schema and its oldest supported MicroPython, loaded from
firmware/tracker/config.py and compat.py themselves so the host tools and the device can
never disagree about keys, types, ranges, secrets or versions."""

from __future__ import annotations

import sys
from functools import cache
from types import ModuleType

from host_tools.image import FIRMWARE_DIR


def _firmware_on_path() -> None:
    path = str(FIRMWARE_DIR)
    if path not in sys.path:
        sys.path.insert(0, path)


@cache
def firmware_config() -> ModuleType:
    _firmware_on_path()
    from tracker import config

    return config


@cache
def firmware_compat() -> ModuleType:
    """The firmware's tracker/compat.py: MIN_MICROPYTHON, the oldest MicroPython it runs on,
    which the image builder and the virtual board check against."""
    _firmware_on_path()
    from tracker import compat

    return compat
