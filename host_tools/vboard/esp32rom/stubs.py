"""Recognising esptool's flasher stub among the RAM images a host uploads.

The simulator cannot run Xtensa code, so when MEM_END starts an uploaded image it checks
whether the image is one of the ESP32 flasher stubs the installed esptool ships
(esptool/targets/stub_flasher/{1,2}/esp32.json: text, text_start, entry) and, if so, behaves
as that stub; any other image "runs" and the loader falls silent, as a chip running unknown
code would."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class StubImage:
    version: str  # the stub_flasher subdirectory: "1" legacy, "2" esp-flasher-stub
    entry: int
    text_start: int
    text_md5: str


@cache
def known_stubs(chip_json: str = "esp32.json") -> tuple[StubImage, ...]:
    # Imported, not looked up with find_spec: in a process started from a console script
    # (`albatross vboard`) sys.path[0] is the venv's bin/, where esptool's esptool.py shim
    # lives; find_spec would name the shim, and no stub would ever be recognised.
    import esptool

    root = Path(esptool.__file__).parent / "targets" / "stub_flasher"
    stubs = []
    for path in sorted(root.glob(f"*/{chip_json}")):
        stub = json.loads(path.read_text())
        text = base64.b64decode(stub["text"])
        stubs.append(
            StubImage(
                version=path.parent.name,
                entry=stub["entry"],
                text_start=stub["text_start"],
                text_md5=hashlib.md5(text).hexdigest(),
            )
        )
    return tuple(stubs)


def identify(entry: int, segments: dict[int, bytes]) -> StubImage | None:
    """The stub whose code was uploaded (its text segment byte for byte) and is started at
    its entry point, or None."""
    for stub in known_stubs():
        text = segments.get(stub.text_start)
        if entry == stub.entry and text is not None:
            if hashlib.md5(text).hexdigest() == stub.text_md5:
                return stub
    return None
