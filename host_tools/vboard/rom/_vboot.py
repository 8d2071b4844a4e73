# The virtual board's ROM: what MicroPython's ESP32 port does between reset and the REPL.
# Mount the littlefs2 flash at "/", run boot.py, then main.py (only after a reset into the
# friendly REPL, as pyexec does), then the REPL; report resets to the supervisor. An
# exception out of main.py is printed and the board stays in the REPL, as on the chip.
import os
import sys

import _vblockdev
import _vctl
import _vhost  # noqa: F401 - stays in sys.modules for boards/unix_sim
import _vmachine
import _vmicropython
import _vrepl
import _vtime
import vfs

sys.modules["machine"] = _vmachine
sys.modules["micropython"] = _vmicropython  # kbd_intr() as the ESP32's UART has it
sys.modules["time"] = _vtime  # its wall clock is the one machine.RTC sets

VERSION = "%d.%d.%d" % sys.implementation.version[:3]


def mount_flash():
    image = os.getenv("ALBATROSS_IMAGE")
    bdev = _vblockdev.FileBlockDevice(image, int(os.getenv("ALBATROSS_BLOCK_SIZE") or 4096))
    vfs.umount("/")
    vfs.mount(vfs.VfsLfs2(bdev), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]  # as on ESP32: asyncio etc. are frozen
    return bdev


def run_file(path, g):
    """Run boot.py or main.py. Returns the exception it ended with, or None."""
    if not _vblockdev.exists(path):
        return None
    with open(path) as f:
        src = f.read()
    return _vrepl.run_code(src, path, "exec", g)


def main():
    _vctl.open_channels()  # before the host filesystem disappears from "/"
    mount_flash()
    g = {"__name__": "__main__"}
    mode = os.getenv("ALBATROSS_BOOT_MODE") or "friendly"
    err = run_file("boot.py", g)
    if isinstance(err, SystemExit):
        mode = "friendly"  # pyexec: a forced exit in boot.py skips main.py
    elif err is not None:
        _vrepl.print_exception(err)
    elif mode == "friendly":
        err = run_file("main.py", g)
        if isinstance(err, SystemExit):
            _vrepl.write("MPY: soft reboot\r\n")
            _vctl.request(b"S")
        elif err is not None:
            # As pyexec on the ESP32: print it and stay in the REPL. Only machine.reset(), a
            # machine.WDT timeout, a power cut or the bench restart the board.
            _vrepl.print_exception(err)
    while True:
        if mode == "raw":
            mode = _vrepl.raw_repl(g)
            if mode == _vrepl.SOFT_RESET_RAW:
                _vrepl.write("MPY: soft reboot\r\n")
                _vctl.request(b"s")
        else:
            mode = _vrepl.friendly_repl(g, VERSION)
            if mode == _vrepl.SOFT_RESET:
                _vrepl.write("MPY: soft reboot\r\n")
                _vctl.request(b"S")


main()
