# ROM `micropython` module of the virtual board: the Unix port's, except kbd_intr(). On an
# ESP32 that sets the character the UART turns into KeyboardInterrupt; here the supervisor
# does the turning (Ctrl-C -> SIGINT), so it is told instead. The Unix port's own kbd_intr
# would put SIGINT back to its default action and kill the board.
import _vctl
import micropython as _mp

for _name in dir(_mp):
    if not _name.startswith("__"):
        globals()[_name] = getattr(_mp, _name)


def kbd_intr(chr):  # noqa: A002 - MicroPython's own parameter name
    """3 (Ctrl-C): a Ctrl-C on the console raises KeyboardInterrupt; -1: it is a byte on
    stdin like any other. The REPL sets 3 again before it runs code, as pyexec does."""
    if chr == 3:
        _vctl.interrupt_char(True)
    elif chr == -1:
        _vctl.interrupt_char(False)
    else:
        raise ValueError("the virtual board's interrupt character is 3 (Ctrl-C) or -1")
