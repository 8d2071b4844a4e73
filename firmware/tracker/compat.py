# The oldest MicroPython this firmware runs on, and the check tracker.app.run() makes first.
# The host tools read MIN_MICROPYTHON from this file (host_tools/fwconfig.py): the image
# builder refuses a board that declares an older one, the virtual board an older runtime.
#
# Why v1.22.0 (micropython/micropython releases; docs/ of the vendored v1.28.0 source):
# - The flash image: the host tools write littlefs on-disk format 2.1 (littlefs-python 0.19,
#   littlefs 2.11). MicroPython bundles a littlefs that reads 2.1 (2.8.1, commit 7ad84e0,
#   PR #12731) from v1.22.0; v1.21 and older (littlefs 2.5) cannot mount the image.
# - Module names: `import asyncio`, `json`, `os`, `struct`, `binascii` without the u-prefix
#   work from v1.21.0 (uasyncio was renamed asyncio there).
# - .mpy: the tracker ships as mpy-cross bytecode, format 6, loaded by v1.19 and later
#   (docs/reference/mpyfiles.rst; bytecode-only files carry no sub-version).
# - Everything else relied on is older than that: asyncio v3 (create_task, Event, Lock,
#   wait_for_ms, sleep_ms, current_task, StreamReader over machine.UART, open_connection:
#   v1.13), struct.pack_into/unpack_from, binascii.crc32 (with a fallback), os.ilistdir,
#   os.stat/rename/remove, time.ticks_ms/ticks_diff/ticks_add, time.gmtime, gc.mem_alloc,
#   machine.UART(rxbuf=)/I2C/ADC.atten/Pin/RTC/reset_cause/unique_id, str(buf, "ascii").
#
# Newer behaviour the firmware deliberately does NOT rely on, so that v1.22-v1.25 work:
# - str.startswith/endswith with a tuple, and endswith with start/end, exist from v1.25
#   (PR #16812): the AT engine matches prefix tuples with at_lines.starts_any().
# - json.loads returns the part it read of a truncated object before v1.26, and every
#   version skips "," and ":" like spaces and takes "]" for "}": config.py checks a file's
#   structure itself before parsing it.
# - sys.implementation.version has 3 items before v1.22, 4 after: only [:3] is compared.
import sys

MIN_MICROPYTHON = (1, 22, 0)


def version_text(version):
    return "%d.%d.%d" % tuple(version[:3])


def problem(version=None, name=None):
    """Why this MicroPython cannot run the app (one line), or None when it can.

    version/name default to sys.implementation's; CPython (the firmware's pure logic under
    pytest, the host tools importing the schema) is not a MicroPython and has no problem."""
    impl = sys.implementation
    if name is None:
        name = impl.name
    if name != "micropython":
        return None
    if version is None:
        version = impl.version
    if tuple(version[:3]) >= MIN_MICROPYTHON:
        return None
    return (
        "MicroPython %s is older than %s, the oldest this firmware supports: app not started;"
        " flash MicroPython %s or newer"
        % (version_text(version), version_text(MIN_MICROPYTHON), version_text(MIN_MICROPYTHON))
    )
