# Shared fakes for the modem driver tests (no tests of its own): a Pin that records its
# levels with timestamps, a modem UART with a power model behind a PWRKEY pin, fast
# timeouts, and a session runner. Runs under CPython (pytest) and the Unix port.
from fake_uart import FakeUart
from mptest import run

from tracker import log
from tracker.aio import sleep_ms, ticks_diff, ticks_ms
from tracker.modem.at import AtEngine

log.echo = False

# Every driver deadline shrunk, so a test that waits for one is fast (none is asserted).
FAST = {
    "at_poll_ms": 30,
    "probe_ms": 60,
    "sync_settle_ms": 5,
    "sync_ms": 600,
    "sim_ready_ms": 300,
    "sim_retry_ms": 20,
    "boot_ms": 2000,
    "power_down_ms": 300,
    "off_settle_ms": 10,
    "rail_off_ms": 10,
    "cfun_ms": 300,
    "reg_timeout_ms": 400,
    "reg_poll_ms": 100,
    "pdp_timeout_ms": 500,
    "pdp_close_ms": 300,
    "socket_open_ms": 500,
    "socket_send_ms": 500,
    "socket_read_ms": 500,
    "socket_close_ms": 300,
    "socket_poll_ms": 60000,  # tests that want the poll set it
}

OK = "\r\nOK\r\n"


class FakePin:
    """machine.Pin's value() API; remembers every level set, with ticks_ms()."""

    def __init__(self, level=0, on_change=None):
        self.level = level
        self.history = []  # [(ticks_ms, level)]
        self.on_change = on_change

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v
        self.history.append((ticks_ms(), v))
        if self.on_change is not None:
            self.on_change(v)
        return None

    def presses(self, active=1):
        """Widths in ms of the periods the pin spent at `active`."""
        out = []
        start = None
        for t, v in self.history:
            if v == active and start is None:
                start = t
            elif v != active and start is not None:
                out.append(ticks_diff(t, start))
                start = None
        return out


class PoweredModemUart(FakeUart):
    """A FakeUart behind a modem power model: off, every byte from the host is lost; a
    PWRKEY press of at least ton_ms turns it on (banner, then the first `lost` commands
    still vanish, as the first AT after power-on does); a press of at least toff_ms while on
    turns it off with `down_urc`, as does `down_cmd` (after an OK when `down_ok`).
    `hung` = on but deaf. `status` follows the power: `status_active` while on (0: wired
    through an inverting transistor), the other level while off."""

    def __init__(
        self, *, ton_ms, toff_ms, banner, down_urc, down_cmd=None, down_ok=False, lost=1, active=1,
        status_active=1,
    ):  # fmt: skip
        FakeUart.__init__(self)
        self.ton_ms = ton_ms
        self.toff_ms = toff_ms
        self.banner = banner
        self.down_urc = down_urc
        self.down_cmd = down_cmd and down_cmd.encode()
        self.down_ok = down_ok
        self.lost_after_boot = lost
        self.lost = 0
        self.on = False
        self.hung = False
        self.boots = 0
        self.dropped = []  # writes nobody heard
        self.active = active
        self._pressed_at = None
        self.pwrkey = FakePin(1 - active, self._key)
        self.status = _StatusPin(self, status_active)

    def _key(self, level):
        if level == self.active:
            self._pressed_at = ticks_ms()
            return
        if self._pressed_at is None:
            return
        held = ticks_diff(ticks_ms(), self._pressed_at)
        self._pressed_at = None
        if not self.on and held >= self.ton_ms:
            self.on = True
            self.hung = False
            self.boots += 1
            self.lost = self.lost_after_boot
            self.inject("\r\n%s\r\n" % self.banner)
        elif self.on and held >= self.toff_ms:
            self.power_down()

    def power_down(self):
        self.on = False
        self.inject("\r\n%s\r\n" % self.down_urc)

    def write(self, data):
        if not self.on or self.hung or self.lost:
            if self.on and self.lost:
                self.lost -= 1
            self.dropped.append(bytes(data))
            self.writes.append(bytes(data))
            return len(data)
        if self.down_cmd and bytes(data).startswith(self.down_cmd):
            self.writes.append(bytes(data))
            if self.down_ok:
                self.inject(OK)
            self.power_down()
            return len(data)
        return FakeUart.write(self, data)


class _StatusPin:
    def __init__(self, uart, active):
        self._u = uart
        self._active = active

    def value(self, v=None):
        return self._active if self._u.on else 1 - self._active


def answer(uart, cmd, *lines, final="OK", times=-1):
    """The modem answers cmd with information lines and a final, as one piece."""
    body = "".join("\r\n%s\r\n" % x for x in lines)
    uart.when(cmd, body + "\r\n%s\r\n" % final, times=times)


def session(cls, test, uart=None, engine=None, **opts):
    """Run test(modem, uart) with a started engine; the reader is always stopped."""

    async def main():
        u = uart if uart is not None else FakeUart()
        at = AtEngine(u, default_timeout_ms=300, resync_ms=100, **(engine or {}))
        at.start()
        kw = dict(FAST)
        kw.update(opts)
        m = cls(at, **kw)
        try:
            await test(m, u)
        finally:
            at.stop()
            await sleep_ms(0)

    run(main())


def init_script(u, iccid_cmd, iccid_line, fw_line, model, rat_query, rat_answer):
    """A modem that answers init() as a healthy one does."""
    answer(u, "AT\r")
    answer(u, "ATE0")
    answer(u, "AT+CMEE=1")
    answer(u, "AT+CPIN?", "+CPIN: READY")
    answer(u, "AT+CGSN", "867584032113051")
    answer(u, iccid_cmd, iccid_line)
    answer(u, "AT+CGMR", fw_line)
    answer(u, "AT+CGMM", model)
    answer(u, "AT+CEREG=2")
    answer(u, "AT+CGREG=2")
    answer(u, rat_query, rat_answer)


def written(u):
    """Every command line the host wrote, without the CR, as str (payloads skipped)."""
    out = []
    for w in u.writes:
        if w.endswith(b"\r") and w[:2] in (b"AT", b"at"):
            out.append(w[:-1].decode())
    return out
