# machine.UART look-alike of the virtual board: the UART's wires are a host pty whose other
# end is a simulated peripheral (the modem simulator). The pty is opened through the ROM's
# host-file module, set raw, and given VMIN=0/VTIME=0 so that a read returns what has arrived
# instead of waiting for the whole request -- which is how machine.UART.read behaves.
# The baud rate is set on the pty like on a UART; the simulator paces its bytes at the
# board.json baud rate and reports a mismatch.
import os
import termios

# termios speed constants by baud rate (those the Unix port exposes).
_SPEEDS = {9600: "B9600", 57600: "B57600", 115200: "B115200", 230400: "B230400",
           460800: "B460800", 921600: "B921600"}  # fmt: skip
_VMIN = 6
_VTIME = 5


def _host_open(path):
    try:
        import _vhost  # ROM module on the virtual board: the host filesystem is not mounted

        return _vhost.open(path, "r+b")
    except ImportError:  # plain micropython/CPython (tests): the host filesystem is "/"
        return open(path, "r+b", buffering=0) if _is_cpython() else open(path, "r+b")


def _is_cpython():
    import sys

    return sys.implementation.name == "cpython"


class UART:
    def __init__(self, id, baudrate=115200, *, tx=None, rx=None, rxbuf=256, txbuf=256,
                 path=None, timeout=0):  # fmt: skip
        # rxbuf/txbuf: machine.UART's driver ring buffers (ESP32 default 256 each), accepted so
        # board.json's modem.uart keys work here too, and ignored: the pty's kernel buffers
        # stand in, and a write here never stalls the loop as a full ESP32 TX ring does.
        self.id = id
        self.rxbuf = rxbuf
        self.txbuf = txbuf
        self.path = path or os.getenv("ALBATROSS_UART%d" % id)
        if not self.path:
            raise OSError(19)  # ENODEV: no simulated peripheral on this UART
        self._f = _host_open(self.path)
        self.init(baudrate)

    def init(self, baudrate=115200, **_kw):
        speed = getattr(termios, _SPEEDS.get(baudrate, ""), None)
        if speed is None:
            raise ValueError("unsupported baud rate %d" % baudrate)
        fd = self._f.fileno()
        termios.setraw(fd)
        attr = termios.tcgetattr(fd)
        attr[4] = attr[5] = speed
        attr[6][_VMIN] = 0
        attr[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attr)
        self.baudrate = baudrate

    def read(self, n=-1):
        data = self._f.read(n if n > 0 else 4096)
        return data or None  # machine.UART returns None when nothing arrived

    def readinto(self, buf, n=-1):
        got = self._f.readinto(buf if n < 0 else memoryview(buf)[:n])
        return got or None

    def write(self, data):
        return self._f.write(data)

    def stream(self):
        """The file object itself, for asyncio.StreamReader/StreamWriter (it polls)."""
        return self._f

    def deinit(self):
        self._f.close()
