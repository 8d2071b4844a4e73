"""The simulated modem's state machine: power, boot, the AT engine, registration, PDP, sockets.

Runs entirely on the simulator's loop thread, under its lock (see sim.py). It talks to the
outside through a `Host` (the simulator): a paced UART writer, timers and socket watching.
Dialect specifics (command tables, banners, URC texts) are in simcom.py / quectel.py.

Behaviour taken from the corpus transcripts (/work/shared/corpus/at-transcripts):
- nothing is answered until the first banner (sim7600-boot-mqtt-certdown: ten unanswered AT
  before RDY; a7670-boot-sim-failure: sixteen before *ATREADY: 1);
- between the first banner and +CPIN: READY, AT+CPIN? answers "+CME ERROR: SIM busy";
- echo is on after boot and echoes each byte as it arrives, CR included ("AT\\r\\r\\nOK\\r\\n"
  in bg96-init-mqttcfg-qiact-escaped);
- URCs are whole lines and may land between an echo and its answer (a7670 "PB DONE").
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .commands import CmeError, Command, CommandError, Reply, cme_line, frame_final, parse_line
from .network import REGISTERED, Network
from .sockets import HostLink

if TYPE_CHECKING:
    from host_tools.vboard.gnss.model import GnssSim

    from .common import Dialect

OFF = "off"
BOOTING = "booting"
ON = "on"
POWERING_DOWN = "powering_down"

# What each fault did, counted in Modem.effects (the bench's `modem` snapshot: "fault_effects"),
# so a test can tell a fault that acted from one that was switched on and did nothing.
EFFECTS = (
    "peer_closes",  # peer_close: links whose peer closed (+IPCLOSE / +QIURC "closed" sent)
    "pdp_drops",  # pdp_drop: data contexts (or socket services) dropped while up
    "deregistrations",  # deregister: registrations taken away (registered -> 2 or 0)
    "hung_rx_bytes",  # hang: bytes from the MCU a hung modem ignored
    "hung_frames",  # hang: answers and URCs a hung modem did not send
    "delayed_answers",  # slow: final answers sent late
    "garbage_bursts",  # garbage: bursts of invalid bytes put between frames
    "garbage_bytes",  # garbage: their bytes
    "storm_urcs",  # urc_storm: URCs the storm sent
    "sim_removals",  # no_sim: a ready SIM pulled from a running modem (+ boots without it)
    "sim_absent_answers",  # no_sim: commands answered +CME ERROR: 10 (SIM not inserted)
    "cme_answers",  # cme: commands answered with the rule's +CME ERROR
    "registration_denials",  # registration: +CxREG? answers "denied" (the MCU asked again)
)

# Handler results besides None (= go on, OK at the end).
PENDING = object()  # the handler answers later through Modem.resume()
NO_FINAL = object()  # the answer has no final result code (SIMCom NORMAL POWER DOWN)

# Input line length a modem keeps; V.250 asks for at least 40 characters, SIMCom manuals
# state 556 (check). Longer lines are cut, as a real buffer would.
MAX_LINE = 1024
# SIMCom's RTC starts at the GPS epoch until network time arrives ("80/01/06,00:00:xx").
RTC_EPOCH = dt.datetime(1980, 1, 6, tzinfo=dt.UTC)


class Host(Protocol):
    def now(self) -> float: ...
    def uart_write(self, data: bytes) -> None: ...
    def uart_flush(self) -> None: ...
    def uart_drained_at(self) -> float: ...
    def call_later(self, delay: float, fn: Callable[[], None]) -> None: ...
    def watch_link(self, link: HostLink) -> None: ...
    def unwatch_link(self, link: HostLink) -> None: ...
    def post(self, fn: Callable[[], None]) -> None: ...


@dataclass
class Timings:
    """Every delay the simulator imposes, in seconds. `Timings.fast()` for tests.

    None means "the dialect's default" (data in simcom.py / quectel.py, with sources).
    """

    boot_s: float | None = None  # PWRKEY accepted -> first banner (RDY / *ATREADY: 1)
    banner_scale: float = 1.0  # multiplies the dialect's gaps between boot banners
    registration_s: float = 2.0  # search -> registered (the network's registration delay)
    pdp_s: float = 1.0  # AT+NETOPEN -> +NETOPEN: 0, AT+QIACT=1 -> OK, AT+CGACT=1,1 -> OK
    socket_open_s: float = 0.2  # simulated share of AT+CIPOPEN/QIOPEN, on top of the real connect
    power_down_s: float = 2.0  # power-down URC -> STATUS low (modelling choice, see README)
    reset_s: float = 1.0  # AT+CFUN=1,1 / AT+CRESET: OK -> boot starts again
    connect_timeout_s: float = 10.0  # the real TCP connect on the host
    attach_timeout_s: float = 75.0  # AT+CGATT=1 gives up (MODEMS.md: up to 75 s, check)
    pwrkey_on_s: float | None = None  # LOW pulse that powers on (dialect datasheet minimum)
    pwrkey_off_s: float | None = None  # LOW pulse that powers off

    @classmethod
    def fast(cls, **overrides: float) -> Timings:
        """Short delays for tests: the protocol is the same, only the waits shrink."""
        values = dict(
            boot_s=0.05,
            banner_scale=0.01,
            registration_s=0.05,
            pdp_s=0.05,
            socket_open_s=0.01,
            power_down_s=0.05,
            reset_s=0.05,
            connect_timeout_s=2.0,
            attach_timeout_s=1.0,
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class Settings:
    """What AT commands set; lost at every boot (nothing is saved with AT&W here)."""

    echo: bool = True
    verbose: bool = True
    cmee: int = 1
    cfun: int = 1
    reg_n: dict[str, int] = field(default_factory=lambda: {"+CREG": 0, "+CGREG": 0, "+CEREG": 0})
    cops_format: int = 0
    cnmp: int = 2  # SIMCom RAT preference: 2 = automatic
    qcfg: dict[str, str] = field(default_factory=dict)
    cpsms: str = "0"
    cgdcont: dict[int, tuple[str, str]] = field(default_factory=lambda: {1: ("IP", "")})
    qicsgp: dict[int, tuple[int, str, str, str, int]] = field(default_factory=dict)
    ciprxget: int = 0  # SIMCom: 0 = data pushed with +RECEIVE, 1 = kept for AT+CIPRXGET
    qisde: int = 1  # Quectel: echo AT+QISEND payloads while echo is on (AT+QISDE, default 1)
    stored: dict[str, str] = field(default_factory=dict)  # accepted-and-stored settings


@dataclass
class DataSink:
    """Collects the raw payload after a '>' prompt."""

    length: int
    done: Callable[[bytes], None]
    prompt_at: float  # when the prompt is fully on the wire
    echo: bool = False
    data: bytearray = field(default_factory=bytearray)


class Modem:
    def __init__(self, dialect: Dialect, network: Network, timings: Timings, host: Host) -> None:
        self.dialect = dialect
        self.network = network
        self.timings = timings
        self.host = host
        dialect.bind(self)
        # Power
        self.rail = True
        self.power = OFF
        self.pwrkey = 1
        self._press_start = 0.0
        self._press_while_on = False
        self._press_gen = 0
        self.epoch = 0  # bumped at every power-off and boot; stale timers check it
        self.boots = 0
        self.power_offs: Counter[str] = Counter()
        self._on_since: float | None = None
        self._awake_s = 0.0
        # Faults (name -> params) and their state
        self.faults: dict[str, dict] = {}
        self.cme_rules: dict[str, int | str] = {}
        self.rng = random.Random(0)
        # Counters
        self.commands: Counter[str] = Counter()
        self.effects: Counter[str] = Counter(dict.fromkeys(EFFECTS, 0))
        self.gnss: GnssSim | None = None  # the module's GNSS (modem/gnss_at.py), if any
        self._reset_state()

    # -- state ---------------------------------------------------------------------------

    def _reset_state(self) -> None:
        if self.gnss is not None:
            self.gnss.set_power(False)  # the GNSS is off after every boot and power-off
        self.settings = Settings(cmee=self.dialect.default_cmee)
        self.sim = "busy"  # "busy" until the SIM banner, then "ready" or "absent"
        self.stat = 0
        self.ps_detached = False
        self.pdp_active = False
        self.netopen = "closed"  # SIMCom socket service: closed | opening | open
        self.links: dict[int, HostLink] = {}
        self.clock_base: tuple[float, dt.datetime] | None = None  # (monotonic, utc) once set
        self.booted_at = self.host.now()
        self.busy = False
        self.sink: DataSink | None = None
        self.line = bytearray()
        self.pending_lines: deque[str] = deque()
        self._cmds: deque[Command] = deque()
        self._reply = Reply()
        self._reg_gen = 0
        self._reg_started = 0.0
        self._attach_waiters: list[Callable[[bool], None]] = []

    @property
    def hung(self) -> bool:
        return "hang" in self.faults

    @property
    def registered(self) -> bool:
        return self.stat in REGISTERED

    @property
    def attached(self) -> bool:
        return self.registered and self.settings.cfun == 1 and not self.ps_detached

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run fn after delay unless the modem lost power or rebooted meanwhile."""
        epoch = self.epoch

        def guarded() -> None:
            if self.epoch == epoch:
                fn()

        self.host.call_later(max(0.0, delay), guarded)

    def awake_s(self) -> float:
        extra = self.host.now() - self._on_since if self._on_since is not None else 0.0
        return self._awake_s + extra

    # -- output --------------------------------------------------------------------------

    def can_talk(self) -> bool:
        return self.power != OFF and not self.hung

    def send_frame(self, data: bytes) -> None:
        """A whole answer or URC; garbage (fault) may only appear between such frames."""
        if not self.can_talk():
            if self.power != OFF:
                self.effects["hung_frames"] += 1
            return
        garbage = self.faults.get("garbage")
        if garbage and self.rng.random() < garbage["rate"]:
            count = self.rng.randint(1, garbage["max_len"])
            self.effects["garbage_bursts"] += 1
            self.effects["garbage_bytes"] += count
            # Lone continuation bytes and 0xF8..0xFF are never valid UTF-8.
            pool = list(range(0x80, 0xC0)) + list(range(0xF8, 0x100))
            self.host.uart_write(bytes(self.rng.choice(pool) for _ in range(count)))
        self.host.uart_write(data)

    def urc(self, *lines: str) -> None:
        for line in lines:
            if self.settings.verbose:
                self.send_frame(b"\r\n" + line.encode("latin-1") + b"\r\n")
            else:
                self.send_frame(line.encode("latin-1") + b"\r\n")

    # -- power ---------------------------------------------------------------------------

    def set_rail(self, on: bool) -> None:
        if not on:
            if self.power != OFF:
                self._off("cut")
            self.rail = False
            return
        if self.rail:
            return
        self.rail = True
        if self.pwrkey == 0:  # the key was already held when power came
            self._press(self.host.now())

    def set_pwrkey(self, level: int) -> None:
        level = 1 if level else 0
        if level == self.pwrkey:
            return
        self.pwrkey = level
        now = self.host.now()
        if level == 0:
            self._press(now)
            return
        held = now - self._press_start
        if (
            self.rail
            and self._press_while_on
            and self.power in (BOOTING, ON)
            and held >= self.pwrkey_off_s
        ):
            self.power_down("pwrkey", self.dialect.power_down_urc)

    @property
    def pwrkey_on_s(self) -> float:
        t = self.timings.pwrkey_on_s
        return self.dialect.pwrkey_on_s if t is None else t

    @property
    def pwrkey_off_s(self) -> float:
        t = self.timings.pwrkey_off_s
        return self.dialect.pwrkey_off_s if t is None else t

    def _press(self, now: float) -> None:
        self._press_start = now
        self._press_while_on = self.power != OFF
        self._press_gen += 1
        gen = self._press_gen
        if self.power == OFF and self.rail:
            # Modules start once the key has been low for Ton, whether or not it is released
            # (they are specified with STATUS rising while the key may still be held).
            def check() -> None:
                if gen == self._press_gen and self.pwrkey == 0 and self.power == OFF:
                    if self.rail:
                        self.boot()

            self.host.call_later(self.pwrkey_on_s, check)

    def boot(self) -> None:
        self.epoch += 1
        self._reset_state()
        self.power = BOOTING
        self.boots += 1
        self._on_since = self.host.now()
        boot_s = self.dialect.boot_s if self.timings.boot_s is None else self.timings.boot_s
        self.network.ledger.add("boot", boot_s)
        self.later(boot_s, self._uart_ready)

    def _uart_ready(self) -> None:
        self.power = ON
        for offset, line, tag in self.dialect.banners:
            self.later(
                offset * self.timings.banner_scale, lambda ln=line, t=tag: self._banner(ln, t)
            )

    def _banner(self, line: str, tag: str | None) -> None:
        if tag == "sim":
            if self.network.sim_present and "no_sim" not in self.faults:
                self.sim = "ready"
                self.urc(line)
                self.start_registration()
            else:
                self.sim = "absent"
                if "no_sim" in self.faults:
                    self.effects["sim_removals"] += 1
                if self.dialect.no_sim_urc:
                    self.urc(self.dialect.no_sim_urc)
            return
        if tag == "sim_ok" and self.sim != "ready":
            return  # SMS DONE / PB DONE need a SIM
        self.urc(line)

    def power_down(self, kind: str, urc: str | None) -> None:
        """Orderly power down (PWRKEY, AT+CPOWD/QPOWD): URC, then STATUS low."""
        if self.power in (OFF, POWERING_DOWN):
            return
        if urc:
            self.urc(urc)
        self._drop_links()
        self.power = POWERING_DOWN
        self.busy = True
        self.later(self.timings.power_down_s, lambda: self._off(kind))

    def shutdown(self) -> None:
        """The simulator stops: the modem goes dark (not counted as a power-off)."""
        if self.power != OFF:
            self._off("stop", flush=True)
            self.power_offs["stop"] -= 1
            if not self.power_offs["stop"]:
                del self.power_offs["stop"]

    def reset(self, lines: list[str]) -> None:
        """AT+CFUN=1,1 / AT+CRESET: print `lines`, go dark, boot again after reset_s."""
        self.urc(*lines)
        self._off("reset", flush=False)
        self.later(self.timings.reset_s, self.boot)

    def _off(self, kind: str, *, flush: bool | None = None) -> None:
        if self._on_since is not None:
            self._awake_s += self.host.now() - self._on_since
            self._on_since = None
        self.epoch += 1
        self.power = OFF
        if flush if flush is not None else kind == "cut":
            self.host.uart_flush()
        self._drop_links()
        self.faults.pop("hang", None)  # a power cycle is what cures a hung modem
        for waiter in self._attach_waiters:
            waiter(False)
        self._attach_waiters.clear()
        self.power_offs[kind] += 1
        self._reset_state()

    def _drop_links(self) -> None:
        for link in list(self.links.values()):
            self.host.unwatch_link(link)
            link.close()
        self.links.clear()

    # -- input ---------------------------------------------------------------------------

    def on_rx(self, data: bytes) -> None:
        if self.power != ON or self.hung:
            if self.hung and self.power != OFF:
                self.effects["hung_rx_bytes"] += len(data)
            return  # booting, powering down or hung: bytes are lost
        for b in data:
            if self.power != ON or self.hung:
                return
            sink = self.sink
            if sink is not None:
                self._sink_byte(sink, b)
                continue
            if self.settings.echo:
                self.host.uart_write(bytes((b,)))
            if b == 0x0D:
                line = self.line.decode("latin-1")
                self.line.clear()
                self._line_done(line)
            elif b in (0x08, 0x7F):
                del self.line[-1:]
            elif b not in (0x0A, 0x00) and len(self.line) < MAX_LINE:
                self.line.append(b)

    def _sink_byte(self, sink: DataSink, b: int) -> None:
        # An LF right behind the command's CR reaches the modem before it has even sent the
        # prompt; the command-line editor drops it (drivers that end lines with CR LF work).
        if not sink.data and b == 0x0A and self.host.now() < sink.prompt_at:
            return
        sink.data.append(b)
        if sink.echo:
            self.host.uart_write(bytes((b,)))
        if len(sink.data) >= sink.length:
            self.sink = None
            sink.done(bytes(sink.data))

    def _line_done(self, line: str) -> None:
        idx = line.upper().find("AT")
        if idx < 0:
            return  # not a command line: real modems stay silent
        body = line[idx + 2 :]
        if self.busy:
            self.pending_lines.append(body)
        else:
            self._execute(body)

    def _execute(self, body: str) -> None:
        self.busy = True
        self._reply = Reply(self.settings.verbose)
        try:
            self._cmds = deque(parse_line(body))
        except CommandError:
            self._cmds = deque()
            self.commands["AT?"] += 1
            self._complete("ERROR")
            return
        if not self._cmds:
            self.commands["AT"] += 1
        self._run_cmds()

    def _run_cmds(self) -> None:
        while self._cmds:
            cmd = self._cmds.popleft()
            self.commands[cmd.at_name] += 1
            rule = self.cme_rules.get(cmd.at_name)
            if rule is not None:
                self.effects["cme_answers"] += 1
                self._complete(cme_line(rule, max(1, self.settings.cmee)))
                return
            handler = self.dialect.handler(cmd.name)
            if handler is None:
                self._complete("ERROR")
                return
            try:
                result = handler(cmd, self._reply)
            except CmeError as exc:
                self._complete(cme_line(exc.code, self.settings.cmee))
                return
            except CommandError:
                self._complete("ERROR")
                return
            if result is PENDING:
                return
            if result is NO_FINAL:
                self._complete(None)
                return
            if isinstance(result, str):
                self._complete(result)
                return
        self._complete("OK")

    def resume(self, final: str | None = None, error: int | str | None = None) -> None:
        """Finish a PENDING command: go on with the line (final None), or end it."""
        if not self.busy or self.power != ON:
            return
        if error is not None:
            self._complete(cme_line(error, self.settings.cmee))
        elif final is not None:
            self._complete(final)
        else:
            self._run_cmds()

    def _complete(self, final: str | None) -> None:
        reply = self._reply
        data = bytes(reply.body) if final is None else reply.final(final)
        self._cmds.clear()
        slow = self.faults.get("slow")
        delay = slow["delay_ms"] / 1000 if slow else 0.0

        def emit() -> None:
            self.send_frame(data)
            self.busy = False
            while self.pending_lines and not self.busy and self.power == ON:
                self._execute(self.pending_lines.popleft())

        if delay > 0:
            self.effects["delayed_answers"] += 1
            self.network.ledger.add("slow", delay)
            self.later(delay, emit)
        else:
            emit()

    def prompt(self, text: bytes, length: int, done: Callable[[bytes], None], echo: bool) -> None:
        """Send a data prompt ('>' without a line end) and collect `length` raw bytes."""
        self.send_frame(text)
        self.sink = DataSink(length, done, self.host.uart_drained_at(), echo=echo)

    def final_only(self, code: str) -> bytes:
        return frame_final(code, self.settings.verbose)

    # -- network -------------------------------------------------------------------------

    def start_registration(self) -> None:
        """Search for the network (after the SIM is ready, on CFUN=1, when a fault ends)."""
        if self.power != ON or self.settings.cfun != 1 or self.sim != "ready":
            return
        self._reg_gen += 1
        gen = self._reg_gen
        self._reg_started = self.host.now()
        self.set_stat(2)
        self.later(self.network.registration_delay_s, lambda: self._registration_done(gen))

    def _registration_done(self, gen: int) -> None:
        if gen != self._reg_gen or "deregister" in self.faults:
            return
        self.network.ledger.add("registration", self.host.now() - self._reg_started)
        self.set_stat(self.network.registration if self.network.sim_present else 0)

    def cancel_registration(self) -> None:
        self._reg_gen += 1

    def set_stat(self, stat: int) -> None:
        if stat == self.stat:
            return
        was_registered = self.registered
        self.stat = stat
        for name, n in self.settings.reg_n.items():
            if n >= 1:
                self.urc(self.dialect.reg_line(name, n, urc=True))
        if self.registered and not was_registered:
            utc = self.network.utc_now()
            if utc is not None:
                self.clock_base = (self.host.now(), utc)
            self.dialect.on_registered()
            waiters, self._attach_waiters = self._attach_waiters, []
            for waiter in waiters:
                waiter(True)
        elif was_registered and not self.registered:
            self.lose_pdp()

    def wait_attach(self, done: Callable[[bool], None]) -> None:
        self._attach_waiters.append(done)

        def give_up() -> None:
            if done in self._attach_waiters:
                self._attach_waiters.remove(done)
                done(False)

        self.later(self.timings.attach_timeout_s, give_up)

    def lose_pdp(self) -> None:
        """The data context is gone (network side): the dialect's URCs, sockets dead."""
        if not self.pdp_active and not self.links and self.netopen == "closed":
            return
        self.dialect.pdp_lost()
        self.pdp_active = False
        self.netopen = "closed"
        self._drop_links()

    def clock_now(self) -> tuple[dt.datetime, int]:
        """(UTC now as the modem believes it, zone in quarter hours)."""
        now = self.host.now()
        if self.clock_base is None:
            return RTC_EPOCH + dt.timedelta(seconds=int(now - self.booted_at)), 0
        mono, utc = self.clock_base
        return utc + dt.timedelta(seconds=int(now - mono)), self.network.tz_quarters

    # -- sockets -------------------------------------------------------------------------

    def open_link(
        self, link: HostLink, done: Callable[[HostLink, str], None], extra_delay: float
    ) -> None:
        """Connect `link` on the host; `done(link, outcome)` runs on the loop thread after
        the connect and at least `extra_delay` seconds (the simulated share)."""
        self.links[link.link_id] = link
        started = self.host.now()
        epoch = self.epoch

        def finished(lk: HostLink, outcome: str, sock: object) -> None:
            def on_loop() -> None:
                stale = self.epoch != epoch or self.links.get(lk.link_id) is not lk
                if stale:
                    if sock is not None:
                        sock.close()  # type: ignore[attr-defined]
                    return
                if sock is not None:
                    lk.attach(sock)  # type: ignore[arg-type]
                    self.host.watch_link(lk)
                else:
                    lk.state = "closed"
                    del self.links[lk.link_id]
                remaining = extra_delay - (self.host.now() - started)
                self.network.ledger.add("socket_open", extra_delay)
                self.later(remaining, lambda: self._report_open(lk, outcome, done))

            self.host.post(on_loop)

        link.connect_async(self.timings.connect_timeout_s, finished)

    def _report_open(self, link: HostLink, outcome: str, done: Callable) -> None:
        if outcome == "ok" and self.links.get(link.link_id) is not link:
            return  # closed meanwhile
        done(link, outcome)

    def on_link_readable(self, link: HostLink) -> None:
        if self.links.get(link.link_id) is not link:
            self.host.unwatch_link(link)
            link.close()
            return
        had = len(link.rx)
        alive = link.pump()
        if len(link.rx) > had:
            self.dialect.data_arrived(link, had)
        if not alive:
            self.host.unwatch_link(link)
            link.close()
            link.state = "peer_closed"
            self.dialect.peer_closed(link)

    def close_link(self, link: HostLink) -> None:
        self.host.unwatch_link(link)
        link.close()
        if self.links.get(link.link_id) is link:
            del self.links[link.link_id]
