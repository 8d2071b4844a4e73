# A flash chip for littlefs: a file-backed block device with the extended block protocol
# (readblocks/writeblocks with an offset, ioctl erase) that MicroPython's VfsLfs2 drives on
# an ESP32. Every program and erase is reported to the supervisor (flash wear, per block),
# and the power can be cut during the N-th of them (ALBATROSS_CUT_AFTER=N, counted from boot),
# leaving what a brown-out in the middle of that operation leaves on NOR flash:
#
# - a program (page program, SPI 0x02) writes its bytes in order, so a cut leaves a random
#   prefix of the new bytes written and the rest of the range as it was: k of n bytes,
#   k uniform in 1..n-1 (0 when n is 1), never none and never all;
# - an erase (sector erase, 0x20) is cut part-way: of the block's 256-byte pages a random
#   non-empty, non-full subset reads 0xFF and the others keep their old bytes (a chip erases
#   a sector as a whole, so which cells are already erased when the supply drops is not in
#   address order; any mix of erased and old pages can be read back afterwards).
#
# The randomness comes from ALBATROSS_CUT_SEED (an integer, from the supervisor) through a
# xorshift32 generator of its own, so a cut is reproduced by its seed and the firmware's
# `random` is untouched. After the torn write reaches the image the process asks to be killed
# ("X<kind> <block> <offset> <length> <bytes torn> <tag>"): the supervisor records the cut and
# powers the board up again.
#
# The tag says which file operation the flash operation belonged to (ALBATROSS_FLASH_TAGS=1,
# set for a boot with a cut armed): "open:<path>", "write:<path>", "flush:<path>",
# "close:<path>" for files opened to write (open() is wrapped, so the firmware's own writes
# are seen), "rename:<old>>" + new, "remove:<path>", "mkdir:<path>" (the `os` module the
# firmware imports is wrapped); "-" outside any of them. Each op's message carries its tag.
import os
import sys

import _vctl

BP_IOCTL_INIT = 1
BP_IOCTL_DEINIT = 2
BP_IOCTL_SYNC = 3
BP_IOCTL_BLK_COUNT = 4
BP_IOCTL_BLK_SIZE = 5
BP_IOCTL_BLK_ERASE = 6

PAGE = 256  # NOR flash page: the unit an interrupted erase leaves erased or not
_tag = b"-"


class Xorshift32:
    """Marsaglia's xorshift32: the same sequence in MicroPython and CPython (the tests)."""

    def __init__(self, seed):
        self.x = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def below(self, n):
        """Uniform enough in 0..n-1 (n far below 2**32)."""
        return self.next() % n


def torn_program_length(rng, n):
    """Bytes of an n-byte program that reach the flash before the cut."""
    return 1 + rng.below(n - 1) if n > 1 else 0


def torn_erase_pages(rng, pages):
    """Which pages of a block a cut erase leaves erased: a bit mask, neither none nor all
    (a one-page block: none)."""
    if pages < 2:
        return 0
    return 1 + rng.below((1 << pages) - 2)


class FileBlockDevice:
    # offset/blocks: a partition of a full flash image (MicroPython's "vfs" on an ESP32's
    # flash); without them the whole file is the filesystem (a bare littlefs image).
    def __init__(self, path, block_size, offset=0, blocks=0):
        self._f = open(path, "r+b")
        self._f.seek(0, 2)
        self.block_size = block_size
        self._base = offset
        self.block_count = blocks or (self._f.tell() - offset) // block_size
        self.programs = 0
        self.erases = 0
        self._erased = b"\xff" * block_size
        self._ops = 0
        self._cut_after = int(os.getenv("ALBATROSS_CUT_AFTER") or 0)
        self._seed = int(os.getenv("ALBATROSS_CUT_SEED") or 0)
        if os.getenv("ALBATROSS_FLASH_TAGS"):
            install_tags()

    def _operation(self, kind, block, offset=0, buf=None):
        """Count one program or erase; on the N-th, tear it and cut the power."""
        self._ops += 1
        if self._ops == self._cut_after:
            self._tear(kind, block, offset, buf)
        _vctl.send(b"%s%d %s" % (kind, block, _tag))

    def _tear(self, kind, block, offset, buf):
        rng = Xorshift32(self._seed)
        at = self._base + block * self.block_size
        if kind == b"p":
            n = len(buf)
            done = torn_program_length(rng, n)
            self._f.seek(at + offset)
            self._f.write(memoryview(buf)[:done])
        else:
            n = self.block_size
            mask = torn_erase_pages(rng, n // PAGE)
            done = 0
            page = b"\xff" * PAGE
            for i in range(n // PAGE):
                if mask >> i & 1:
                    self._f.seek(at + i * PAGE)
                    self._f.write(page)
                    done += PAGE
        self._f.flush()
        # Killed here: the rest of the operation never happens.
        _vctl.request(b"X%s %d %d %d %d %s" % (kind, block, offset, n, done, _tag))

    def readblocks(self, block, buf, offset=0):
        self._f.seek(self._base + block * self.block_size + offset)
        n = self._f.readinto(buf)
        if n != len(buf):
            raise OSError(5)  # EIO: the image file is shorter than the flash

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # Simple protocol: whole blocks, erase implied (what FAT would use).
            for i in range(len(buf) // self.block_size):
                self.ioctl(BP_IOCTL_BLK_ERASE, block + i)
            offset = 0
        self._operation(b"p", block, offset, buf)
        self._f.seek(self._base + block * self.block_size + offset)
        self._f.write(buf)
        self._f.flush()
        self.programs += 1

    def ioctl(self, op, arg):
        if op == BP_IOCTL_BLK_COUNT:
            return self.block_count
        if op == BP_IOCTL_BLK_SIZE:
            return self.block_size
        if op == BP_IOCTL_BLK_ERASE:
            self._operation(b"e", arg)
            self._f.seek(self._base + arg * self.block_size)
            self._f.write(self._erased)
            self._f.flush()
            self.erases += 1
            return 0
        if op == BP_IOCTL_SYNC:
            self._f.flush()
            return 0
        if op in (BP_IOCTL_INIT, BP_IOCTL_DEINIT):
            return 0
        return None


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


# ---- tags: which file operation a flash operation belongs to ---------------------------


def _tagged(tag, fn, *args):
    global _tag
    outer = _tag
    _tag = tag
    try:
        return fn(*args)
    finally:
        _tag = outer


def _bytes(path):
    return path.encode() if isinstance(path, str) else bytes(path)


class TaggedFile:
    """A file opened to write: each call tags the flash operations it causes."""

    def __init__(self, f, path):
        self._f = f
        self._path = _bytes(path)

    def write(self, data):
        return _tagged(b"write:" + self._path, self._f.write, data)

    def flush(self):
        return _tagged(b"flush:" + self._path, self._f.flush)

    def close(self):
        return _tagged(b"close:" + self._path, self._f.close)

    def read(self, *args):
        return self._f.read(*args)

    def readinto(self, *args):
        return self._f.readinto(*args)

    def seek(self, *args):
        return self._f.seek(*args)

    def tell(self):
        return self._f.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TaggedOs:
    """The `os` module as the firmware imports it: calls that change the filesystem tag
    their flash operations; everything else is the real module's."""

    def __init__(self, real):
        self._os = real

    def __getattr__(self, name):
        return getattr(self._os, name)

    def rename(self, old, new):
        tag = b"rename:" + _bytes(old) + b">" + _bytes(new)
        return _tagged(tag, self._os.rename, old, new)

    def remove(self, path):
        return _tagged(b"remove:" + _bytes(path), self._os.remove, path)

    def unlink(self, path):
        return self.remove(path)

    def mkdir(self, path):
        return _tagged(b"mkdir:" + _bytes(path), self._os.mkdir, path)

    def rmdir(self, path):
        return _tagged(b"rmdir:" + _bytes(path), self._os.rmdir, path)


def install_tags():
    import builtins

    real_open = builtins.open

    def open(path, mode="r", *args):  # noqa: A001 - it is the builtin, wrapped
        if "w" not in mode and "a" not in mode and "+" not in mode:
            return real_open(path, mode, *args)
        return TaggedFile(_tagged(b"open:" + _bytes(path), real_open, path, mode, *args), path)

    builtins.open = open
    sys.modules["os"] = TaggedOs(os)
