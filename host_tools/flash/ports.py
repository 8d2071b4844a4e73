"""Opening the board's serial port for esptool: locked, with errors that say missing or busy.

An rfc2217:// port (a virtual board's USB, or a board on another host's esp_rfc2217_server)
is opened with `Rfc2217Port`: pyserial's RFC 2217 client renegotiates baud rate, data bits,
parity and stop bits with the server, and sleeps at least 50 ms waiting for the answer,
whenever the *read timeout* changes (serialutil.SerialBase.timeout calls
_reconfigure_port), although a timeout is the client's own business and never crosses the
wire. esptool sets the timeout before every command, so each command cost ~0.2 s: reading
the flash chip's id alone took 11 s. Rfc2217Port keeps timeouts local."""

from __future__ import annotations

import errno

import serial
from serial import rfc2217

from host_tools.flash import errors as fe

ROM_BAUD = 115200


class Rfc2217Port(rfc2217.Serial):
    """pyserial's RFC 2217 client whose read timeout changes stay on this side."""

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @timeout.setter
    def timeout(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"not a valid timeout: {timeout!r}")
        self._timeout = timeout


def open_port(url: str, baud: int = ROM_BAUD) -> serial.SerialBase:
    """The port, opened and locked; PortError saying missing or busy."""
    try:
        if url.startswith("rfc2217://"):
            port: serial.SerialBase = Rfc2217Port(None, exclusive=True)
            port.port = url
        else:
            port = serial.serial_for_url(url, exclusive=True, do_not_open=True)
        port.baudrate = baud
        port.open()
        return port
    except (serial.SerialException, ValueError, OSError) as e:
        raise fe.PortError(f"cannot open {url}: {port_problem(e, url)}") from None


def port_problem(e: Exception, url: str = "") -> str:
    text = str(e)
    code = getattr(e, "errno", None)
    hung_up = code in (errno.EPIPE, errno.ECONNRESET) or "does not seem to support" in text
    if url.startswith("rfc2217:") and hung_up:
        # An RFC 2217 server hangs up at once on a second host (one at a time, like a local
        # port); pyserial then reports a broken pipe or a missing RFC 2217 answer.
        return (
            "the server hung up (the port is busy: another program has it open; or "
            "nothing there serves RFC 2217)"
        )
    if "exclusively lock" in text or code == errno.EBUSY or "busy" in text.lower():
        return "the port is busy (another program has it open: albatross console, mpremote?)"
    if code == errno.ENOENT or "No such file" in text or "Errno 2" in text:
        return "no such port (is the board plugged in?)"
    if "refused" in text.lower() or code == errno.ECONNREFUSED:
        return "connection refused (nothing serves that port)"
    if code == errno.EACCES or "Permission denied" in text:
        return "permission denied (add yourself to the dialout group)"
    return text
