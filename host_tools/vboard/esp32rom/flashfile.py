"""The board's SPI NOR flash as one file of the flash's size: byte-exact and persistent.

NOR semantics as on the chip: erasing sets a whole 4 KiB sector to 0xFF, programming can only
clear bits (the cell keeps old AND new), so writing over unerased data corrupts it the way a
real flash does, and verify catches it. The file is read and written unbuffered, so another
process (a test that flips a byte, the virtual board booting from it) sees the same bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SECTOR_SIZE = 0x1000  # the smallest erase unit of SPI NOR flash (sector erase, 0x20)


class FlashRangeError(ValueError):
    """An access outside the flash chip."""

    def __init__(self, offset: int, length: int, size: int) -> None:
        super().__init__(
            f"flash access {offset:#x}+{length:#x} is outside the {size:#x}-byte flash"
        )
        self.offset = offset
        self.length = length
        self.size = size


class FlashFile:
    def __init__(self, path: str | os.PathLike[str], size: int) -> None:
        if size <= 0 or size % SECTOR_SIZE:
            raise ValueError(f"flash size {size:#x} is not a whole number of 4 KiB sectors")
        self.path = Path(path)
        self.size = size
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:  # a new chip comes erased
                chunk = b"\xff" * 0x10000
                for _ in range(0, size, len(chunk)):
                    f.write(chunk[: min(len(chunk), size - f.tell())])
        actual = self.path.stat().st_size
        if actual != size:
            raise ValueError(f"{self.path} holds {actual:#x} bytes, not a {size:#x}-byte flash")
        self._f = open(self.path, "r+b", buffering=0)
        self.bytes_programmed = 0
        self.sectors_erased = 0

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> FlashFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashRangeError(offset, length, self.size)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        self._f.seek(offset)
        data = b""
        while len(data) < length:
            chunk = self._f.read(length - len(data))
            if not chunk:
                raise OSError(f"{self.path} ended at {offset + len(data):#x}")
            data += chunk
        return data

    def _write(self, offset: int, data: bytes) -> None:
        self._f.seek(offset)
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            view = view[n:]

    def erase(self, offset: int, length: int) -> None:
        """Erase every sector [offset, offset+length) touches (both need not be aligned:
        the chip erases whole sectors, as the ROM and the stub do)."""
        self._check(offset, length)
        if length == 0:
            return
        first = offset // SECTOR_SIZE
        last = (offset + length - 1) // SECTOR_SIZE
        self._write(first * SECTOR_SIZE, b"\xff" * ((last - first + 1) * SECTOR_SIZE))
        self.sectors_erased += last - first + 1

    def erase_all(self) -> None:
        self.erase(0, self.size)

    def program(self, offset: int, data: bytes) -> bytes:
        """Program `data` at `offset` with NOR semantics: the flash then holds old AND data.
        Returns what the flash holds afterwards (the ROM reads it back to check the write)."""
        self._check(offset, len(data))
        if not data:
            return b""
        old = self.read(offset, len(data))
        new = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(
            len(data), "little"
        )
        if new != old:
            self._write(offset, new)
        self.bytes_programmed += len(data)
        return new

    def md5(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        h = hashlib.md5()
        pos = offset
        while pos < offset + length:
            n = min(0x10000, offset + length - pos)
            h.update(self.read(pos, n))
            pos += n
        return h.digest()
