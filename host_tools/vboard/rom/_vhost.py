# Host files for the virtual board's own peripherals (the UART ptys): the host filesystem
# is unmounted from "/" (littlefs is there, as on the chip), so boards/unix_sim reaches
# its ptys through this POSIX VFS object, made before the unmount.
import vfs

_posix = vfs.VfsPosix()


def open(path, mode="rb"):  # noqa: A001 - mirrors the builtin on purpose
    return _posix.open(path, mode)
