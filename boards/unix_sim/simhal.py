# The virtual board's peripherals: machine.I2C and machine.ADC look-alikes whose
# transactions go to the simulated bench (host_tools/vboard/bench.py) over an AF_UNIX
# socket named by the environment variable ALBATROSS_BENCH. Only the unix_sim board uses
# this file; drivers get these objects and cannot tell them from the ESP32's.
#
# Errors are raised as the ESP32 port raises them: OSError(19) ENODEV when a device does
# not ACK, OSError(116) ETIMEDOUT when the bus is stuck. 116 is newlib's (the chip's)
# number; the Unix port's own errno.ETIMEDOUT is 110, so compare with 116, not with it.
#
# Wire protocol (version 1, integers big-endian), documented in full in bench.py:
#   request  = op u8, length u16, payload      response = status u8, length u16, payload
#   status 0 = ok, otherwise an ESP32 errno.
#   0x01 HELLO     ()                                 -> version u8 + b"albatross-bench"
#   0x10 I2C_WRITE bus u8, addr u8, flags u8, data    -> ()          flags bit 0 = STOP
#   0x11 I2C_READ  bus u8, addr u8, flags u8, n u16   -> data[n]
#   0x12 I2C_SCAN  bus u8                             -> one byte per ACKing address
#   0x20 ADC_READ  channel name (UTF-8)               -> microvolts u32, read_u16 u16
#
# Calls block until the bench answers (microseconds over a local socket), as machine.I2C
# blocks on the chip. A lost connection (bench restarted) is re-opened once per call.
import os
import socket
import struct

OP_HELLO = 0x01
OP_I2C_WRITE = 0x10
OP_I2C_READ = 0x11
OP_I2C_SCAN = 0x12
OP_ADC_READ = 0x20
FLAG_STOP = 0x01

ENODEV = 19
EINVAL = 22
ETIMEDOUT = 116  # ESP32 value (see above)

ENV_VAR = "ALBATROSS_BENCH"
# A bench that does not answer within this is gone (it answers in microseconds).
LINK_TIMEOUT_S = 5


# MicroPython takes errno from a lone argument (OSError(19).errno == 19), which is exactly
# what the ESP32 port raises; CPython needs (errno, text) to set .errno.
_LONE_ERRNO = OSError(ENODEV).errno == ENODEV
_NAMES = {ENODEV: "ENODEV", EINVAL: "EINVAL", ETIMEDOUT: "ETIMEDOUT"}


def _oserror(code):
    return OSError(code) if _LONE_ERRNO else OSError(code, _NAMES.get(code, "bench error"))


class BenchUnavailable(OSError):
    """The bench cannot be reached (ALBATROSS_BENCH unset, socket gone, no answer)."""


def _sockaddr_candidates(path):
    # CPython's connect() takes the path. The MicroPython Unix port's takes a raw struct
    # sockaddr_un (it rejects a str with EINVAL): Linux lays it out as a host-endian u16
    # family then the NUL-terminated path; BSD/macOS as a length byte, a family byte, path.
    p = path.encode() if isinstance(path, str) else path
    return (
        path,
        struct.pack("H", socket.AF_UNIX) + p + b"\0",
        bytes((len(p) + 3, socket.AF_UNIX)) + p + b"\0",
    )


class BenchLink:
    """One connection to the bench, opened on first use and re-opened after a loss."""

    def __init__(self, path=None):
        self.path = path
        self._sock = None
        self._hdr = bytearray(3)
        self.reconnects = 0

    def _connect(self):
        path = self.path or os.getenv(ENV_VAR)
        if not path:
            raise BenchUnavailable(ENODEV, "no bench: %s is not set" % ENV_VAR)
        last = None
        for addr in _sockaddr_candidates(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(addr)
            except (OSError, TypeError) as e:
                s.close()
                last = e
                # Only a malformed address is worth another layout; a missing or refused
                # socket fails the same way whatever the layout.
                if isinstance(e, OSError) and e.args and e.args[0] != EINVAL:
                    break
                continue
            if hasattr(s, "settimeout"):
                s.settimeout(LINK_TIMEOUT_S)
            self._sock = s
            self._readinto = getattr(s, "recv_into", None) or s.readinto
            return
        raise BenchUnavailable(ENODEV, "no bench at %s: %r" % (path, last))

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _send_all(self, data):
        # socket.sendall is not in every build of the Unix port (the 32-bit faithful one
        # lacks it): send until the whole frame is out.
        mv = memoryview(data)
        while mv:
            n = self._sock.send(mv)
            if not n:
                raise OSError(104, "bench closed the connection")  # ECONNRESET
            mv = mv[n:]

    def _read_exact(self, buf):
        mv = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self._readinto(mv[got:])
            if not n:
                raise OSError(104, "bench closed the connection")  # ECONNRESET
            got += n

    def request(self, op, payload=b""):
        """Send one request; return the reply payload, or raise OSError(status)."""
        frame = struct.pack(">BH", op, len(payload)) + payload
        for attempt in (0, 1):
            try:
                if self._sock is None:
                    self._connect()
                self._send_all(frame)
                self._read_exact(self._hdr)
                status, length = struct.unpack(">BH", self._hdr)
                body = bytearray(length)
                if length:
                    self._read_exact(body)
                break
            except BenchUnavailable:
                raise
            except OSError as e:
                # The bench went away (restarted) between calls: reconnect once. A resent
                # command is harmless: the sensor just restarts its conversion.
                self.close()
                if attempt:
                    raise BenchUnavailable(ENODEV, "bench connection lost: %r" % (e,))
                self.reconnects += 1
        if status:
            raise _oserror(status)
        return bytes(body)

    def hello(self):
        """(protocol version, banner) of the bench; raises BenchUnavailable."""
        reply = self.request(OP_HELLO)
        return reply[0], reply[1:].decode()


_link = None


def link():
    """The process-wide link to the bench named by ALBATROSS_BENCH."""
    global _link
    if _link is None:
        _link = BenchLink()
    return _link


class I2C:
    """machine.I2C's controller API over the bench. `scl`, `sda`, `freq` and `timeout`
    are accepted (and kept) for source compatibility; the bench has no electrical timing."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000, link=None):
        if not 0 <= id <= 255:
            raise ValueError("I2C(%d) doesn't exist" % id)
        self.id = id
        self.scl = scl
        self.sda = sda
        self.freq = freq
        self.timeout = timeout
        self._link = link

    def _request(self, op, payload):
        return (self._link or link()).request(op, payload)

    def scan(self):
        return list(self._request(OP_I2C_SCAN, bytes((self.id,))))

    def writeto(self, addr, buf, stop=True):
        flags = FLAG_STOP if stop else 0
        self._request(OP_I2C_WRITE, bytes((self.id, addr, flags)) + bytes(buf))
        return len(buf)  # the ESP32 port returns the number of bytes ACKed

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(b) for b in vector)
        return self.writeto(addr, data, stop)

    def readfrom(self, addr, nbytes, stop=True):
        flags = FLAG_STOP if stop else 0
        return self._request(OP_I2C_READ, struct.pack(">BBBH", self.id, addr, flags, nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        for i in range(len(data)):
            buf[i] = data[i]

    @staticmethod
    def _memaddr(memaddr, addrsize):
        if addrsize not in (8, 16, 24, 32):
            raise ValueError("addrsize must be 8, 16, 24 or 32")
        n = addrsize // 8
        return bytes((memaddr >> (8 * (n - 1 - i))) & 0xFF for i in range(n))

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, self._memaddr(memaddr, addrsize) + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        # Register address, then a repeated START (no STOP) and the read, as machine.I2C does.
        self.writeto(addr, self._memaddr(memaddr, addrsize), False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        data = self.readfrom_mem(addr, memaddr, len(buf), addrsize=addrsize)
        for i in range(len(data)):
            buf[i] = data[i]


class ADC:
    """machine.ADC for an ESP32 pin at 11 dB attenuation, read from a named bench channel
    ("battery": the battery through the board's divider)."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, channel="battery", *, atten=ATTN_11DB, link=None):
        self.channel = channel
        self._name = channel.encode() if isinstance(channel, str) else bytes(channel)
        self._link = link
        self.atten(atten)

    def atten(self, atten):
        # Only 11 dB is modelled (the range a battery divider needs); a different setting
        # would silently read wrong numbers, so refuse it.
        if atten != self.ATTN_11DB:
            raise ValueError("simhal: only ADC.ATTN_11DB is modelled")
        self._atten = atten

    def _read(self):
        reply = (self._link or link()).request(OP_ADC_READ, self._name)
        return struct.unpack(">IH", reply)

    def read_uv(self):
        """Microvolts at the pin (ESP32: calibrated; here exact, clamped to 0..3.1 V)."""
        return self._read()[0]

    def read_u16(self):
        """0..65535 over the 11 dB range (linear model of the ESP32's raw reading)."""
        return self._read()[1]

    def read(self):
        """12-bit raw reading, as the ESP32 port's legacy ADC.read()."""
        return self._read()[1] >> 4


OP_PIN_WRITE = 0x30
OP_PIN_READ = 0x31


class Pin:
    """machine.Pin's output/input API for a named bench line (e.g. "modem_pwrkey"): what the
    MCU drives reaches the simulated part at once, as a GPIO does."""

    OUT = 1
    IN = 0
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, name, mode=OUT, value=None, *, link=None):
        self.name = name
        self._link = link
        self._value = 0
        if value is not None:
            self.value(value)

    def _request(self, op, payload):
        return (self._link or link()).request(op, payload)

    def value(self, v=None):
        name = self.name.encode()
        if v is None:
            return self._request(OP_PIN_READ, name)[0]
        self._value = 1 if v else 0
        self._request(OP_PIN_WRITE, bytes((self._value,)) + name)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, v=None):
        return self.value(v)
