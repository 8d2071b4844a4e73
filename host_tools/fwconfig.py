"""The firmware's config schema, loaded from firmware/tracker/config.py itself so the host
tools and the device can never disagree about keys, types, ranges or secrets."""

from __future__ import annotations

import sys
from functools import cache
from types import ModuleType

from host_tools.image import FIRMWARE_DIR


@cache
def firmware_config() -> ModuleType:
    path = str(FIRMWARE_DIR)
    if path not in sys.path:
        sys.path.insert(0, path)
    from tracker import config

    return config
