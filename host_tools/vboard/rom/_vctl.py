# The virtual board's side channel to its supervisor: one-byte-led messages on a pipe
# (fd ALBATROSS_CTL_FD) and acknowledgements on another (ALBATROSS_ACK_FD). The console
# itself stays a plain byte stream on stdin/stdout, exactly as a UART.
import os
import time

_ctl = None
_ack = None


def open_channels():
    global _ctl, _ack
    if _ctl is None:
        _ctl = open("/dev/fd/" + (os.getenv("ALBATROSS_CTL_FD") or "3"), "wb")
        _ack = open("/dev/fd/" + (os.getenv("ALBATROSS_ACK_FD") or "4"), "rb")


def send(msg):
    open_channels()
    _ctl.write(msg + b"\n")


_FEED = b"f\n"


def feed():
    """machine.WDT.feed(): one write of a constant, so feeding allocates nothing."""
    _ctl.write(_FEED)


def request(msg):
    """Ask for a reset-like action and wait to be stopped: the supervisor kills the process."""
    send(msg)
    while True:
        time.sleep_ms(1000)


def interrupt_char(enabled):
    """Like mp_hal_set_interrupt_char(): while enabled, a Ctrl-C on the console raises
    KeyboardInterrupt (the supervisor signals SIGINT) instead of arriving as a byte.
    Disabling waits for the supervisor's acknowledgement so that every Ctrl-C before it was
    turned into a signal and every later one is a byte on stdin; a signal that raced with
    the switch is absorbed here, as pyexec does when execution ends."""
    open_channels()
    if enabled:
        _ctl.write(b"I1\n")
        return
    _ctl.write(b"I0\n")
    while True:
        try:
            _ack.read(1)  # b"" only if the supervisor is gone: nothing left to wait for
            for _ in range(4):  # backward jumps: a pending KeyboardInterrupt surfaces here
                pass
            time.sleep_ms(1)
            return
        except KeyboardInterrupt:
            pass
