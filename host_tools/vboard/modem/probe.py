"""A minimal host-side AT client, to drive a (simulated or real) modem port in tests.

It plays the MCU: writes bytes, keeps everything the modem sends in one buffer, and waits
for patterns with a deadline. Nothing is thrown away between calls, so URCs that arrive
between commands stay visible to the next `expect`.

    probe = AtProbe(sim.uart_path)
    probe.expect(rb"RDY\\r\\n", timeout=5)
    text = probe.cmd("AT+CSQ")           # "AT+CSQ\\r\\r\\n+CSQ: 20,99\\r\\n\\r\\nOK\\r\\n"
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import serial

if TYPE_CHECKING:
    from .sim import ModemSimulator

# A final result code line (V.250 / 27.007 / the socket dialects).
FINAL = re.compile(
    rb"\r\n(OK|ERROR|SEND OK|SEND FAIL|NO CARRIER|\+CME ERROR: [^\r\n]*|NORMAL POWER DOWN)\r\n"
)


class ProbeTimeout(AssertionError):
    """What was awaited did not arrive in time; the message shows what did arrive."""

    def __init__(self, what: str, seconds: float, got: bytes) -> None:
        super().__init__(f"no {what} within {seconds:.1f} s; received {bytes(got)!r}")
        self.got = bytes(got)


class AtProbe:
    def __init__(self, port: str, *, baud: int = 115200) -> None:
        self.ser = serial.serial_for_url(port, baudrate=baud, timeout=0.02)
        self.buf = bytearray()
        self.consumed = b""  # what the last expect() consumed

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> AtProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, data: bytes | str) -> None:
        self.ser.write(data.encode("latin-1") if isinstance(data, str) else data)
        self.ser.flush()

    def pump(self) -> int:
        """Move what has arrived into the buffer; returns how many bytes came."""
        waiting = self.ser.in_waiting
        chunk = self.ser.read(waiting or 1)
        self.buf += chunk
        return len(chunk)

    def read_for(self, seconds: float) -> bytes:
        """Everything that arrives within `seconds` (plus what was already buffered)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()
        return self.take(len(self.buf))

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float = 5.0) -> re.Match:
        """Wait for `pattern` (regex) in the received bytes; consume through its end."""
        regex = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        end = time.monotonic() + timeout
        while True:
            match = regex.search(bytes(self.buf))  # a copy: the buffer shrinks below
            if match:
                self.consumed = self.take(match.end())
                return match
            if time.monotonic() > end:
                raise ProbeTimeout(repr(regex.pattern), timeout, self.buf)
            self.pump()

    def read_exact(self, n: int, timeout: float = 5.0) -> bytes:
        end = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > end:
                raise ProbeTimeout(f"{n} bytes", timeout, self.buf)
            self.pump()
        return self.take(n)

    def cmd(self, text: str, timeout: float = 5.0) -> str:
        """Send a command line, wait for its final result; return all text up to it."""
        self.write(text + "\r")
        self.expect(FINAL, timeout)
        return self.consumed.decode("latin-1")


# The last boot banner of each dialect: once it is in, the modem has finished booting.
LAST_BANNER = {
    "sim7600": rb"\r\nPB DONE\r\n",
    "a7670": rb"\r\nPB DONE\r\n",
    "bg96": rb"\r\n\+QIND: PB DONE\r\n",
}


def power_on(
    sim: ModemSimulator, probe: AtProbe, *, hold_s: float | None = None, timeout: float = 10.0
) -> bytes:
    """Press PWRKEY long enough, wait for the last banner; returns the banner bytes."""
    on_s, _off_s = sim.pwrkey_timing
    sim.pulse_pwrkey(hold_s if hold_s is not None else on_s + 0.02)
    probe.expect(LAST_BANNER[sim.dialect], timeout)
    return probe.consumed


def wait_registered(probe: AtProbe, timeout: float = 5.0) -> None:
    """Poll AT+CEREG? until the modem reports home (1) or roaming (5)."""
    end = time.monotonic() + timeout
    while True:
        text = probe.cmd("AT+CEREG?")
        if re.search(r"\+CEREG: \d,[15]", text):
            return
        if time.monotonic() > end:
            raise ProbeTimeout("registration", timeout, text.encode("latin-1"))
        time.sleep(0.01)
