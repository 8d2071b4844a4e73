# A flash chip for littlefs: a file-backed block device with the extended block protocol
# (readblocks/writeblocks with an offset, ioctl erase) that MicroPython's VfsLfs2 drives on
# an ESP32. Every program and erase is reported to the supervisor (flash wear, per block),
# and the power can be cut at the N-th of them: that operation never reaches the flash and
# the process is killed, as a brown-out would (ALBATROSS_CUT_AFTER=N, counted from boot).
import os

import _vctl

BP_IOCTL_INIT = 1
BP_IOCTL_DEINIT = 2
BP_IOCTL_SYNC = 3
BP_IOCTL_BLK_COUNT = 4
BP_IOCTL_BLK_SIZE = 5
BP_IOCTL_BLK_ERASE = 6


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

    def _operation(self, kind, block):
        """Count one program or erase; cut the power instead of doing the N-th."""
        self._ops += 1
        if self._ops == self._cut_after:
            _vctl.request(b"X%s%d" % (kind, block))  # killed here: the write never happens
        _vctl.send(b"%s%d" % (kind, block))

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
        self._operation(b"p", block)
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
