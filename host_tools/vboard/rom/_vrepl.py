# The console REPL of the virtual board, byte-compatible with MicroPython's pyexec: the
# friendly REPL (">>> ", Ctrl-A/B/C/D/E) and the raw REPL that mpremote, pyboard.py and the
# HIL serial target drive (Ctrl-A, code, Ctrl-D -> "OK" output \x04 error \x04 ">").
import gc
import io
import sys

import _vctl

_in = sys.stdin.buffer
_out = sys.stdout

CTRL_A = 1
CTRL_B = 2
CTRL_C = 3
CTRL_D = 4
CTRL_E = 5

SOFT_RESET = "soft"
SOFT_RESET_RAW = "soft_raw"

BANNER = (
    "MicroPython v%s on vboard; Albatross virtual board (unix port)\r\n"
    'Type "help()" for more information.\r\n'
)


def _getc():
    while True:
        try:
            b = _in.read(1)
        except KeyboardInterrupt:
            return CTRL_C  # a Ctrl-C that raced the interrupt-char switch
        if not b:
            raise SystemExit(0)  # console closed: the supervisor is gone
        return b[0]


def write(s):
    _out.write(s)


def print_exception(err):
    """Print a traceback as the board would: without the ROM's own frames (named _v*.py,
    frozen or from host_tools/vboard/rom/). An ESP32 prints it from C without touching the
    heap; here a full heap (the MemoryError being reported, often) leaves no room to filter,
    so the traceback then goes out whole."""
    try:
        buf = io.StringIO()
        sys.print_exception(err, buf)
        text = buf.getvalue()
    except MemoryError:
        buf = text = None
        gc.collect()
        sys.print_exception(err, _out)
        return
    for line in text.split("\n"):
        if line and 'File "_v' not in line and "/rom/_v" not in line:
            _out.write(line + "\n")


def run_code(src, filename, mode, g):
    """Compile and run with Ctrl-C armed. Returns None, or the exception it raised."""
    if isinstance(src, (bytes, bytearray)):
        src = str(src, "utf-8")
    _vctl.interrupt_char(True)
    try:
        exec(compile(src, filename, mode), g)
        err = None
    except BaseException as e:  # noqa: B036 - the REPL reports everything, even SystemExit
        err = e
    try:
        _vctl.interrupt_char(False)
    except BaseException as e:  # noqa: B036
        err = err or e
    return err


def raw_repl(g):
    """Returns SOFT_RESET_RAW or "friendly" (Ctrl-B)."""
    while True:
        write("raw REPL; CTRL-B to exit\r\n")
        again = _raw_session(g)
        if again is not None:
            return again


def _raw_session(g):
    while True:
        write(">")
        line = bytearray()
        while True:
            c = _getc()
            if c == CTRL_A:
                if line == b"\x05A":
                    # Raw-paste request: understood but not supported here; mpremote then
                    # falls back to the plain raw REPL without a new banner.
                    write("R\x00")
                    line = bytearray()
                    continue
                return None  # re-enter: print the banner again
            if c == CTRL_B:
                write("\r\n")
                return "friendly"
            if c == CTRL_C:
                line = bytearray()
            elif c == CTRL_D:
                break
            else:
                line.append(c)
        write("OK")
        if not line:
            write("\r\n")
            return SOFT_RESET_RAW
        err = run_code(line, "<stdin>", "exec", g)
        write("\x04")
        if isinstance(err, SystemExit):
            write("\x04")
            return SOFT_RESET_RAW
        if err is not None:
            print_exception(err)
        write("\x04")


def _needs_more(text):
    lines = text.split("\n")
    last = lines[-1]
    if last.rstrip().endswith(":") or last.rstrip().endswith("\\"):
        return True
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    if depth > 0:
        return True
    # inside a block: keep reading until an empty line
    return len(lines) > 1 and last.strip() != ""


def _readline(prompt):
    """Returns the line, or one of the control codes CTRL_A..CTRL_E as an int."""
    write(prompt)
    buf = bytearray()
    while True:
        c = _getc()
        if c in (CTRL_A, CTRL_B, CTRL_C, CTRL_E):
            return c
        if c == CTRL_D:
            if not buf:
                return CTRL_D
            continue
        if c == 13:
            write("\r\n")
            return str(buf, "utf-8")
        if c == 10:
            continue  # terminals send CR; a CRLF's LF is not a second Enter
        if c in (8, 127):
            if buf:
                buf = buf[:-1]
                write("\b \b")
            continue
        if c == 27 or c < 32:
            continue  # no line history or cursor keys in this REPL
        buf.append(c)
        if c < 128:
            _out.write(chr(c))


def _paste_mode(g):
    write("\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    buf = bytearray()
    while True:
        c = _getc()
        if c == CTRL_C:
            write("\r\n")
            return None
        if c == CTRL_D:
            write("\r\n")
            return run_code(buf, "<stdin>", "exec", g)
        buf.append(c)
        if c == 13:
            write("\r\n=== ")
        elif 32 <= c < 128:
            _out.write(chr(c))


def friendly_repl(g, version):
    """Returns SOFT_RESET or "raw" (Ctrl-A)."""
    write(BANNER % version)
    while True:
        line = _readline(">>> ")
        if line == CTRL_A:
            write("\r\n")
            return "raw"
        if line == CTRL_B:
            write("\r\n" + BANNER % version)
            continue
        if line == CTRL_C:
            write("\r\n")
            continue
        if line == CTRL_D:
            write("\r\n")
            return SOFT_RESET
        if line == CTRL_E:
            err = _paste_mode(g)
        else:
            if not line.strip():
                continue
            text = line
            while _needs_more(text):
                more = _readline("... ")
                if more == CTRL_C:
                    write("\r\n")
                    text = None
                    break
                if not isinstance(more, str):
                    continue
                if more.strip() == "" and not text.rstrip().endswith(("(", "[", "{", ",")):
                    break
                text += "\n" + more
            if text is None:
                continue
            err = run_code(text + "\n", "<stdin>", "single", g)
        if isinstance(err, SystemExit):
            return SOFT_RESET
        if err is not None:
            print_exception(err)
