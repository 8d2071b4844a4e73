"""What every dialect shares: V.250 basics and the 3GPP TS 27.007 commands.

A dialect (simcom.py, quectel.py) subclasses `Dialect`, sets its data (identity, banners,
PWRKEY timing, defaults) and adds its own commands with the `@at(...)` decorator. Handlers
take the parsed `Command` and the `Reply` being built, and return None (go on; OK at the
end of the line), a final result string ("SEND OK"), core.PENDING (they answer later through
`Modem.resume`) or core.NO_FINAL; they raise CmeError / CommandError to fail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .commands import CmeError, Command, CommandError, Reply
from .core import PENDING, Settings
from .network import REGISTERED, format_cclk, make_iccid, make_imei
from .sockets import CONNECTED, HostLink

if TYPE_CHECKING:
    from .core import Modem

Handler = Callable[[Command, Reply], Any]


def at(*names: str) -> Callable[[Callable], Callable]:
    """Mark a Dialect method as the handler of these command names ("+CSQ", "E", "&F")."""

    def mark(fn: Callable) -> Callable:
        fn._at_names = names  # type: ignore[attr-defined]
        return fn

    return mark


class Dialect:
    # -- data, set by subclasses ---------------------------------------------------------
    name = "generic"
    manufacturer = ""
    model = ""
    revision = ""
    imei_tac = "86000000"
    default_cmee = 1
    pwrkey_on_s = 0.5
    pwrkey_off_s = 2.5
    boot_s = 5.0
    # (seconds after the UART is ready, line, tag): tag "sim" marks the line that says the
    # SIM is ready (registration starts there); "sim_ok" lines only appear with a SIM.
    banners: list[tuple[float, str, str | None]] = []
    no_sim_urc: str | None = None
    power_down_urc: str | None = None
    send_prompt = b"\r\n>"
    # Commands that are accepted and whose value is stored and read back (no behaviour).
    stored_commands: tuple[str, ...] = ()

    def __init__(self, seed: str) -> None:
        self.imei = make_imei(self.imei_tac, seed)
        self.iccid = make_iccid(seed)
        digits = "".join(c for c in self.iccid[-10:] if c.isdigit())
        self.imsi = "00101" + digits.rjust(10, "0")
        self._handlers: dict[str, Handler] = {}

    def bind(self, modem: Modem) -> None:
        self.m = modem
        # Subclasses first: their handler for a name wins over the base class's.
        for klass in type(self).__mro__:
            for attr, fn in vars(klass).items():
                for name in getattr(fn, "_at_names", ()):
                    self._handlers.setdefault(name, getattr(self, attr))
        for name in self.stored_commands:
            self._handlers.setdefault(name, self._stored)

    def handler(self, name: str) -> Handler | None:
        found = self._handlers.get(name)
        if found is None and name[:1] == "S" and name[1:].isdigit():
            return self._s_register
        return found

    # -- hooks for the core and the dialects -----------------------------------------------

    @property
    def act(self) -> int:
        """Access technology for +COPS/+CEREG: 7 = E-UTRAN (LTE)."""
        return 7

    def ati_lines(self) -> list[str]:
        return [self.manufacturer, self.model, f"Revision: {self.revision}"]

    def revision_line(self) -> str:
        return self.revision

    def on_registered(self) -> None:
        pass

    def pdp_lost(self) -> None:
        pass

    def data_arrived(self, link: HostLink, had: int) -> None:
        pass

    def peer_closed(self, link: HostLink) -> None:
        pass

    def storm_urcs(self) -> list[str]:
        return [f"+CEREG: {self.m.stat}"]

    def reg_line(self, name: str, n: int, *, urc: bool = False) -> str:
        """+CREG/+CGREG/+CEREG as an answer to the read command or as a URC."""
        m = self.m
        if m.stat == 3 and not urc:
            m.effects["registration_denials"] += 1
        parts = [str(m.stat)] if urc else [str(n), str(m.stat)]
        if n >= 2 and m.registered:
            net = m.network
            parts += [f'"{net.tac:04X}"', f'"{net.cell_id:08X}"', str(self.act)]
        return f"{name}: " + ",".join(parts)

    # -- V.250 basics ------------------------------------------------------------------

    @at("E")
    def c_echo(self, cmd: Command, reply: Reply) -> None:
        self.m.settings.echo = _flag(cmd.value)

    @at("V")
    def c_verbose(self, cmd: Command, reply: Reply) -> None:
        self.m.settings.verbose = _flag(cmd.value)
        reply.verbose = self.m.settings.verbose

    @at("Q", "&D", "&C", "&W", "&K", "X")
    def c_accept(self, cmd: Command, reply: Reply) -> None:
        pass

    @at("Z", "&F")
    def c_defaults(self, cmd: Command, reply: Reply) -> None:
        s = self.m.settings
        fresh = Settings(cmee=self.default_cmee)
        s.echo, s.verbose, s.cmee = fresh.echo, fresh.verbose, fresh.cmee
        reply.verbose = s.verbose

    @at("I")
    def c_ati(self, cmd: Command, reply: Reply) -> None:
        reply.info(*self.ati_lines())

    def _stored(self, cmd: Command, reply: Reply) -> None:
        stored = self.m.settings.stored
        if cmd.kind == "set":
            stored[cmd.name] = cmd.text.split("=", 1)[1]
        elif cmd.kind == "read":
            reply.info(f"{cmd.name}: {stored.get(cmd.name, '0')}")

    def _s_register(self, cmd: Command, reply: Reply) -> None:
        stored = self.m.settings.stored
        if cmd.kind == "read":
            defaults = {"S3": "013", "S4": "010", "S5": "008"}
            reply.info(stored.get(cmd.name, defaults.get(cmd.name, "000")))
        else:
            stored[cmd.name] = cmd.value.zfill(3)

    # -- identity --------------------------------------------------------------------------

    @at("+CMEE")
    def c_cmee(self, cmd: Command, reply: Reply) -> None:
        if cmd.kind == "read":
            reply.info(f"+CMEE: {self.m.settings.cmee}")
        elif cmd.kind == "test":
            reply.info("+CMEE: (0-2)")
        elif cmd.kind == "set":
            value = cmd.int_arg(0, 0)
            if value not in (0, 1, 2):
                raise CmeError(50)
            self.m.settings.cmee = value
        else:
            self.m.settings.cmee = 0

    @at("+CGMI", "+GMI")
    def c_cgmi(self, cmd: Command, reply: Reply) -> None:
        _exec_only(cmd)
        reply.info(self.manufacturer)

    @at("+CGMM", "+GMM")
    def c_cgmm(self, cmd: Command, reply: Reply) -> None:
        _exec_only(cmd)
        reply.info(self.model)

    @at("+CGMR", "+GMR")
    def c_cgmr(self, cmd: Command, reply: Reply) -> None:
        _exec_only(cmd)
        reply.info(self.revision_line())

    @at("+CGSN", "+GSN")
    def c_cgsn(self, cmd: Command, reply: Reply) -> None:
        if cmd.kind == "test":
            return
        reply.info(self.imei)

    @at("+CIMI")
    def c_cimi(self, cmd: Command, reply: Reply) -> None:
        self._need_sim()
        reply.info(self.imsi)

    def _need_sim(self) -> None:
        if self.m.sim == "busy":
            raise CmeError(14)
        if self.m.sim != "ready":
            if "no_sim" in self.m.faults:
                self.m.effects["sim_absent_answers"] += 1
            raise CmeError(10)

    @at("+CPIN")
    def c_cpin(self, cmd: Command, reply: Reply) -> None:
        if cmd.kind == "test":
            return
        self._need_sim()
        if cmd.kind == "read":
            reply.info("+CPIN: READY")
        else:
            raise CmeError(3)  # no PIN is asked for: entering one is not allowed

    # -- signal and registration -------------------------------------------------------

    @at("+CSQ")
    def c_csq(self, cmd: Command, reply: Reply) -> None:
        if cmd.kind == "test":
            reply.info("+CSQ: (0-31,99),(0-7,99)")
            return
        sig = self.m.network.signal
        if self._radio_hears():
            reply.info(f"+CSQ: {sig.rssi},{sig.ber}")
        else:
            reply.info("+CSQ: 99,99")

    @at("+CESQ")
    def c_cesq(self, cmd: Command, reply: Reply) -> None:
        sig = self.m.network.signal
        if self._radio_hears():
            reply.info(f"+CESQ: 99,99,255,255,{sig.rsrq},{sig.rsrp}")
        else:
            reply.info("+CESQ: 99,99,255,255,255,255")

    def _radio_hears(self) -> bool:
        """A radio that is on measures cells, registered or not (denied included)."""
        return self.m.settings.cfun == 1 and self.m.stat != 0

    @at("+CREG", "+CGREG", "+CEREG")
    def c_reg(self, cmd: Command, reply: Reply) -> None:
        reg_n = self.m.settings.reg_n
        if cmd.kind == "read":
            reply.info(self.reg_line(cmd.name, reg_n[cmd.name]))
        elif cmd.kind == "test":
            top = 5 if cmd.name == "+CEREG" else 2
            reply.info(f"{cmd.name}: (0-{top})")
        elif cmd.kind == "set":
            n = cmd.int_arg(0, 0)
            allowed = (0, 1, 2, 3, 4, 5) if cmd.name == "+CEREG" else (0, 1, 2)
            if n not in allowed:
                raise CmeError(50)
            reg_n[cmd.name] = n
        else:
            raise CommandError(cmd.text)

    @at("+COPS")
    def c_cops(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        net = m.network
        if cmd.kind == "read":
            if m.registered:
                fmt = m.settings.cops_format
                name = {0: net.operator, 1: net.operator_short, 2: net.plmn}[fmt]
                reply.info(f'+COPS: 0,{fmt},"{name}",{self.act}')
            else:
                reply.info("+COPS: 0")
        elif cmd.kind == "test":
            if m.settings.cfun != 1 or m.sim != "ready":
                raise CmeError(30)
            ops = f'(2,"{net.operator}","{net.operator_short}","{net.plmn}",{self.act})'
            reply.info(f"+COPS: {ops},,(0,1,2,3,4),(0,1,2)")
        elif cmd.kind == "set":
            mode = cmd.int_arg(0, 0)
            if mode not in (0, 1, 2, 3, 4):
                raise CmeError(50)
            if mode == 3:
                fmt = cmd.int_arg(1, 0)
                if fmt not in (0, 1, 2):
                    raise CmeError(50)
                m.settings.cops_format = fmt

    @at("+CGATT")
    def c_cgatt(self, cmd: Command, reply: Reply) -> object:
        m = self.m
        if cmd.kind == "read":
            reply.info(f"+CGATT: {1 if m.attached else 0}")
            return None
        if cmd.kind == "test":
            reply.info("+CGATT: (0,1)")
            return None
        state = cmd.int_arg(0)
        if state == 0:
            m.ps_detached = True
            m.later(0.0, m.lose_pdp)
            return None
        if state != 1:
            raise CmeError(50)
        m.ps_detached = False
        if m.attached:
            return None
        if m.settings.cfun != 1 or m.sim != "ready":
            raise CmeError(30)
        m.wait_attach(self._resume_ok_or_no_service)
        return PENDING

    # -- PDP context -------------------------------------------------------------------

    @at("+CGDCONT")
    def c_cgdcont(self, cmd: Command, reply: Reply) -> None:
        contexts = self.m.settings.cgdcont
        if cmd.kind == "read":
            lines = [
                f'+CGDCONT: {cid},"{pdp}","{apn}","0.0.0.0",0,0'
                for cid, (pdp, apn) in sorted(contexts.items())
            ]
            reply.info(*lines)
        elif cmd.kind == "test":
            reply.info(
                '+CGDCONT: (1-24),"IP",,,(0-2),(0-4)', '+CGDCONT: (1-24),"IPV6",,,(0-2),(0-4)'
            )
        elif cmd.kind == "set":
            cid = cmd.int_arg(0)
            if not 1 <= cid <= 24:
                raise CmeError(50)
            if len(cmd.args) == 1:
                contexts.pop(cid, None)
                return
            pdp = cmd.str_arg(1, "IP").upper()
            if pdp not in ("IP", "IPV6", "IPV4V6"):
                raise CmeError(50)
            contexts[cid] = (pdp, cmd.str_arg(2, ""))
        else:
            raise CommandError(cmd.text)

    @at("+CGACT")
    def c_cgact(self, cmd: Command, reply: Reply) -> object:
        m = self.m
        if cmd.kind == "read":
            reply.info(f"+CGACT: 1,{1 if m.pdp_active else 0}")
            return None
        if cmd.kind == "test":
            reply.info("+CGACT: (0,1)")
            return None
        state = cmd.int_arg(0)
        if state == 0:
            m.lose_pdp()
            return None
        if state != 1:
            raise CmeError(50)
        if m.pdp_active:
            return None
        return self.activate_pdp(self._resume_ok_or_no_service)

    def _resume_ok_or_no_service(self, ok: bool) -> None:
        """Answer a pending +CGATT=1 / +CGACT=1: OK, or +CME ERROR 30 (no network service)."""
        if ok:
            self.m.resume()
        else:
            self.m.resume(error=30)

    def activate_pdp(self, done: Callable[[bool], None]) -> object:
        """Bring the data context up after the network's PDP delay; `done(ok)` then."""
        m = self.m

        def finish() -> None:
            ok = m.attached and "pdp_drop" not in m.faults
            if ok:
                m.network.ledger.add("pdp", m.timings.pdp_s)
                m.pdp_active = True
            done(ok)

        m.later(m.timings.pdp_s, finish)
        return PENDING

    @at("+CGPADDR")
    def c_cgpaddr(self, cmd: Command, reply: Reply) -> None:
        if cmd.kind == "test":
            reply.info("+CGPADDR: (1)")
        elif self.m.pdp_active:
            reply.info(f'+CGPADDR: 1,"{self.m.network.ip_address}"')

    # -- functionality, clock, power saving --------------------------------------------

    @at("+CFUN")
    def c_cfun(self, cmd: Command, reply: Reply) -> object:
        m = self.m
        if cmd.kind == "read":
            reply.info(f"+CFUN: {m.settings.cfun}")
            return None
        if cmd.kind == "test":
            reply.info("+CFUN: (0,1,4),(0,1)")
            return None
        fun = cmd.int_arg(0)
        rst = cmd.int_arg(1, 0)
        if fun not in (0, 1, 4) or rst not in (0, 1):
            raise CmeError(50)
        if rst == 1:
            m.send_frame(reply.final("OK"))
            m.reset(self.reset_lines())
            return PENDING
        # The radio switches after the OK: its URCs (+CEREG, PDP loss) follow the answer.
        if fun in (0, 4):
            m.settings.cfun = fun
            m.cancel_registration()

            def radio_off() -> None:
                m.set_stat(0)
                m.lose_pdp()

            m.later(0.0, radio_off)
        elif m.settings.cfun != 1:
            m.settings.cfun = 1
            m.later(0.0, m.start_registration)
        return None

    def reset_lines(self) -> list[str]:
        """What the modem prints between OK and going dark on AT+CFUN=1,1."""
        return []

    @at("+CCLK")
    def c_cclk(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind == "read":
            utc, tzq = m.clock_now()
            reply.info(f'+CCLK: "{format_cclk(utc, tzq)}"')
        elif cmd.kind == "set":
            text = cmd.str_arg(0)
            try:
                stamp, zone = text[:17], int(text[17:] or 0)
                local = dt.datetime.strptime(stamp, "%y/%m/%d,%H:%M:%S").replace(tzinfo=dt.UTC)
            except ValueError:
                raise CmeError(50) from None
            m.clock_base = (m.host.now(), local - dt.timedelta(minutes=15 * zone))
        elif cmd.kind == "exec":
            raise CommandError(cmd.text)

    @at("+CPSMS")
    def c_cpsms(self, cmd: Command, reply: Reply) -> None:
        s = self.m.settings
        if cmd.kind == "read":
            reply.info(f"+CPSMS: {s.cpsms}")
        elif cmd.kind == "test":
            reply.info('+CPSMS: (0,1),,,("00000000"-"11111111"),("00000000"-"11111111")')
        elif cmd.kind == "set":
            mode = cmd.int_arg(0, 0)
            if mode not in (0, 1, 2):
                raise CmeError(50)
            args = cmd.text.split("=", 1)[1].strip()
            s.cpsms = args if mode == 1 else "0"
        else:
            s.cpsms = "0"

    @at("+IPR")
    def c_ipr(self, cmd: Command, reply: Reply) -> None:
        # The baud rate is the simulator's; a change is stored, the line keeps its speed.
        if cmd.kind == "read":
            reply.info(f"+IPR: {self.m.settings.stored.get('+IPR', '115200')}")
        elif cmd.kind == "set":
            self.m.settings.stored["+IPR"] = str(cmd.int_arg(0))

    # -- shared socket helpers ---------------------------------------------------------

    def registered_ok(self) -> bool:
        return self.m.stat in REGISTERED

    def open_reporter(
        self, urc: str, errors: dict[str, int], other: int
    ) -> Callable[[HostLink, str], None]:
        """The `done` for Modem.open_link that announces the outcome as "<urc>: <link>,<err>":
        0 when connected, else the dialect's code for the outcome (`other` if it has none)."""

        def done(link: HostLink, outcome: str) -> None:
            err = 0 if outcome == CONNECTED else errors.get(outcome, other)
            self.m.urc(f"{urc}: {link.link_id},{err}")

        return done

    def collect_send(
        self, link: HostLink, length: int, answer: Callable[[bool], None], *, echo: bool
    ) -> object:
        """Prompt for `length` bytes and send them on `link` if it is still open and still
        the link of its number; then `answer(sent)` gives the dialect's final result."""
        m = self.m

        def sent(data: bytes) -> None:
            answer(link.state == "open" and m.links.get(link.link_id) is link and link.send(data))

        m.prompt(self.send_prompt, length, sent, echo=echo)
        return PENDING


def _flag(value: str) -> bool:
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise CommandError(value)


def _exec_only(cmd: Command) -> None:
    if cmd.kind not in ("exec", "test"):
        raise CommandError(cmd.text)
