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
    block_size = int(os.getenv("ALBATROSS_BLOCK_SIZE") or 4096)
    offset = os.getenv("ALBATROSS_FLASH_OFFSET")  # set: a full flash image, its vfs partition
    blocks = int(os.getenv("ALBATROSS_FLASH_BLOCKS") or 0)
    bdev = _vblockdev.FileBlockDevice(image, block_size, int(offset or 0), blocks)
    vfs.umount("/")
    if offset is None:
        vfs.mount(vfs.VfsLfs2(bdev), "/")
    else:
        try:
            vfs.mount(vfs.VfsLfs2(bdev), "/")  # ports/esp32/modules/_boot.py
        except OSError:
            initial_setup(bdev)
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]  # as on ESP32: asyncio etc. are frozen
    return bdev


def initial_setup(bdev):
    # ports/esp32/modules/inisetup.py: a blank vfs partition is formatted as littlefs2 and
    # given MicroPython's boot.py; one holding something else is reported, forever.
    buf = bytearray(bdev.block_size)
    bdev.readblocks(0, buf)
    if buf != b"\xff" * len(buf):
        import time

        while True:
            _vrepl.write(
                "The filesystem appears to be corrupted. If you had important data there, you\n"
                "may want to make a flash snapshot to try to recover it. Otherwise, perform\n"
                "factory reprogramming of MicroPython firmware (completely erase flash, "
                "followed\nby firmware programming).\n\n"
            )
            time.sleep(3)
    _vrepl.write("Performing initial setup\n")
    vfs.VfsLfs2.mkfs(bdev)
    vfs.mount(vfs.VfsLfs2(bdev), "/")
    with open("/boot.py", "w") as f:
        f.write(
            "# This file is executed on every boot (including wake-boot from deepsleep)\n"
            "#import esp\n#esp.osdebug(None)\n#import webrepl\n#webrepl.start()\n"
        )


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
