"""SIMCom dialects: SIM7600 (SIM7600G-H) and A7670 (A7670E), which share the socket commands.

Facts and their sources (corpus = /work/shared/corpus/at-transcripts, MODEMS.md =
/work/shared/reference/MODEMS.md). "(check)" marks a number to confirm on a datasheet.

Identity (corpus): SIM7600G-H "SIMCOM INCORPORATED", "SIMCOM_SIM7600G-H", "LE20B04SIM7600G22"
(sim7600-boot-mqtt-certdown); A7670E-FASE "A110B01A7670M7_F" (a7670-boot-gnss-cgnsinf-error).
Errors are verbose by default on both ("+CME ERROR: SIM busy" / "SIM failure" before any
AT+CMEE in sim7600-boot-mqtt-certdown and a7670-boot-sim-failure), hence default CMEE 2.

Power (SIMCom hardware design manuals): SIM7600 Ton: the table gives 100 ms minimum and
500 ms typical; MODEMS.md asks for about 0.5 s, and we require the typical 0.5 s so firmware
that works here works on every unit (check). Toff >= 2.5 s (SIMCom LTE family power-off
table; the SIM79xx manual shows the same 2.5 s minimum). A7670: Ton >= 50 ms (check; LilyGO's
A7670 examples pulse 100 ms), Toff >= 2.5 s (check; LilyGO pulses 3 s). Boot to UART ready:
SIM7600 about 11 s (Ton(uart), check), A7670 about 4 s (LilyGO waits 3 s and then polls).

Banners: SIM7600 "RDY", "+CPIN: READY", "SMS DONE", "PB DONE" (sim7600-no-response-then-
reboot-hexdump: "\\r\\nRDY\\r\\n\\r\\n+CPIN: READY\\r\\n\\r\\nSMS DON..." in one read; sim7600-
boot-mqtt-certdown: AT answered and "+CPIN?" -> "SIM busy" between RDY and +CPIN: READY).
A7670 with the gaps of a7670-boot-gnss-cgnsinf-error: "*ATREADY: 1" 0 s, "+CPIN: READY"
1.46 s, "SMS DONE" 4.52 s, "PB DONE" 7.92 s; "+CGEV: EPS PDN ACT 1" there comes with the
attach, so it is sent on registration. No SIM: "+CPIN: SIM REMOVED" (a7670-gnss-cgnssinfo).

Sockets (MODEMS.md, SIM7600 TCP/IP application note): NETOPEN -> OK, +NETOPEN: 0; already
open -> "+IP ERROR: Network is already opened", ERROR; AT+IPADDR without NETOPEN ->
"+IP ERROR: Network not opened", ERROR (sim7600-http-setup-ip-error); CIPOPEN -> OK,
+CIPOPEN: <link>,<err> with err 0 ok, 1 network failure, 2 network not opened, 4 operation
not supported, 10 timeout, 11 DNS parse failed; CIPSEND prompt is '>' with no line end
(">-----BEGIN" in sim7600-boot-mqtt-certdown), then OK and +CIPSEND: <link>,<req>,<cnf>
(cnf -1: the connection is gone); +CIPRXGET: 1,<link> when data arrives in manual mode;
CIPRXGET=2 -> "+CIPRXGET: 2,<link>,<n>,<left>", the raw bytes, OK; "+IP ERROR: No data"
when empty; +IPCLOSE: <link>,<reason> (1 = closed by the peer); +CIPEVENT: NETWORK CLOSED
UNEXPECTEDLY when the PDP context drops.
Unverified choices (noted so nobody takes them for facts): CIPOPEN on a closed network or a
busy link answers "+CIPOPEN: <link>,2|4" then ERROR; +IPCLOSE reason 2 for links lost with
the network, sent after +CIPEVENT; a peer-closed link keeps its unread bytes for CIPRXGET;
payloads after '>' are not echoed; automatic receive mode (CIPRXGET=0) pushes
"+RECEIVE,<link>,<n>" and the bytes.
"""

from __future__ import annotations

from .commands import CmeError, Command, CommandError, Reply, answered_test_form, send_request
from .common import Dialect, at
from .core import PENDING, POWERING_DOWN
from .gnss_at import A7670Gnss, Sim7600Gnss
from .sockets import DNS_FAILED, TIMED_OUT, HostLink

MAX_LINKS = 10  # link numbers 0..9
MAX_SEND = 1500  # AT+CIPSEND length limit
MAX_READ = 1500  # AT+CIPRXGET=2 length limit
CIPOPEN_ERR = {DNS_FAILED: 11, TIMED_OUT: 10}  # everything else: 1, network failure


class Sim7600(Sim7600Gnss, Dialect):
    name = "sim7600"
    manufacturer = "SIMCOM INCORPORATED"
    model = "SIMCOM_SIM7600G-H"
    revision = "LE20B04SIM7600G22"
    imei_tac = "86427804"
    default_cmee = 2
    pwrkey_on_s = 0.5
    pwrkey_off_s = 2.5
    boot_s = 11.0
    banners = [
        (0.0, "RDY", None),
        (0.3, "+CPIN: READY", "sim"),
        (0.4, "SMS DONE", "sim_ok"),
        (1.5, "PB DONE", "sim_ok"),
    ]
    no_sim_urc = "+CPIN: SIM REMOVED"
    power_down_urc = "NORMAL POWER DOWN"
    send_prompt = b"\r\n>"
    stored_commands = (
        "+CSCLK",
        "+CIPCCFG",
        "+CIPTIMEOUT",
        "+CIPSENDMODE",
        "+CIPHEAD",
        "+CIPSRIP",
        "+CGSOCKCONT",
        "+CSOCKSETPN",
        "+CSOCKAUTH",
        "+CGAUTH",
        "+CTZU",
        "+CTZR",
        "+AUTOCSQ",
        "+CGEREP",
        "+CSCS",
        "+CMGF",
        "+CNMI",
    )
    gcap = "+GCAP: +CGSM"  # the last line of ATI

    def __init__(self, seed: str) -> None:
        super().__init__(seed)
        self._netopen_gen = 0

    def identity_lines(
        self, before_imei: tuple[str, ...], after_imei: tuple[str, ...]
    ) -> list[str]:
        """The "Name: value" identity block that ATI and AT+SIMCOMATI print."""
        return [
            f"Manufacturer: {self.manufacturer}",
            f"Model: {self.model}",
            f"Revision: {self.revision}",
            *before_imei,
            f"IMEI: {self.imei}",
            *after_imei,
        ]

    def ati_lines(self) -> list[str]:
        return self.identity_lines((), (self.gcap,))

    def simcomati_lines(self) -> list[str]:
        return self.identity_lines(("QCN: ",), ("MEID: ", "+GCAP: +CGSM"))

    def revision_line(self) -> str:
        return f"+CGMR: {self.revision}"

    # -- hooks -----------------------------------------------------------------------------

    def pdp_lost(self) -> None:
        m = self.m
        if m.netopen == "open" or m.links:
            m.urc("+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY")
        for link_id, link in sorted(m.links.items()):
            if link.state == "open":
                m.urc(f"+IPCLOSE: {link_id},2")

    def data_arrived(self, link: HostLink, had: int) -> None:
        m = self.m
        if m.settings.ciprxget == 1:
            if had == 0:
                m.urc(f"+CIPRXGET: 1,{link.link_id}")
            return
        data = link.take(len(link.rx))
        head = f"\r\n+RECEIVE,{link.link_id},{len(data)}\r\n".encode()
        m.send_frame(head + data)

    def peer_closed(self, link: HostLink) -> None:
        self.m.urc(f"+IPCLOSE: {link.link_id},1")
        if not link.rx:
            self.m.links.pop(link.link_id, None)

    def storm_urcs(self) -> list[str]:
        sig = self.m.network.signal
        return [f"+CEREG: {self.m.stat}", f"+CSQ: {sig.rssi},{sig.ber}", "+CGEV: ME PDN ACT 8"]

    # -- identity and radio ------------------------------------------------------------

    @at("+SIMCOMATI")
    def c_simcomati(self, cmd: Command, reply: Reply) -> None:
        reply.info(*self.simcomati_lines())

    @at("+CICCID")
    def c_ciccid(self, cmd: Command, reply: Reply) -> None:
        self._need_sim()
        reply.info(f"+ICCID: {self.iccid}")

    @at("+CCID")
    def c_ccid(self, cmd: Command, reply: Reply) -> None:
        self._need_sim()
        reply.info(self.iccid)

    @at("+CNMP")
    def c_cnmp(self, cmd: Command, reply: Reply) -> None:
        s = self.m.settings
        if cmd.kind == "read":
            reply.info(f"+CNMP: {s.cnmp}")
        elif cmd.kind == "test":
            reply.info("+CNMP: (2,13,14,38,48,51,54,59,60,63,67)")
        elif cmd.kind == "set":
            mode = cmd.int_arg(0)
            if mode not in (2, 13, 14, 38, 48, 51, 54, 59, 60, 63, 67):
                raise CmeError(50)
            s.cnmp = mode
        else:
            raise CommandError(cmd.text)

    @at("+CPSI")
    def c_cpsi(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if not m.registered:
            reply.info("+CPSI: NO SERVICE,Online")
            return
        net = m.network
        sig = net.signal
        plmn = f"{net.plmn[:3]}-{net.plmn[3:]}"
        # Tenths of dB/dBm, as "-84,-822,-549" in sim7600-boot-mqtt-certdown.
        rsrq = (sig.rsrq - 40) * 5
        rsrp = (sig.rsrp - 141) * 10
        rssi = (-113 + 2 * sig.rssi) * 10
        reply.info(
            f"+CPSI: LTE,Online,{plmn},0x{net.tac:04X},{net.cell_id},237,EUTRAN-BAND3,"
            f"1300,5,5,{rsrq},{rsrp},{rssi},13"
        )

    # -- power -----------------------------------------------------------------------------

    @at("+CPOWD")
    def c_cpowd(self, cmd: Command, reply: Reply) -> object:
        urgent = cmd.kind == "set" and cmd.int_arg(0) == 0
        self.m.power_down("command", None if urgent else "NORMAL POWER DOWN")
        return PENDING

    @at("+CPOF")
    def c_cpof(self, cmd: Command, reply: Reply) -> object:
        self.m.send_frame(reply.final("OK"))
        self.m.power_down("command", None)
        return PENDING

    @at("+CRESET")
    def c_creset(self, cmd: Command, reply: Reply) -> object:
        self.m.send_frame(reply.final("OK"))
        self.m.reset(self.reset_lines())
        return PENDING

    # -- socket service ----------------------------------------------------------------

    @at("+NETOPEN")
    def c_netopen(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind == "read":
            reply.info(f"+NETOPEN: {1 if m.netopen == 'open' else 0}")
            return
        if cmd.kind != "exec":
            raise CommandError(cmd.text)
        if m.netopen != "closed":
            reply.info("+IP ERROR: Network is already opened")
            raise CommandError(cmd.text)
        m.netopen = "opening"
        self._netopen_gen += 1
        gen = self._netopen_gen

        def done(ok: bool) -> None:
            if gen != self._netopen_gen or m.power == POWERING_DOWN:
                return  # superseded by NETCLOSE, or the modem is going down
            ok = ok and m.netopen == "opening"  # the network may have gone meanwhile
            m.netopen = "open" if ok else "closed"
            m.urc(f"+NETOPEN: {0 if ok else 1}")

        if m.pdp_active:
            m.later(0.0, lambda: done(True))
        else:
            self.activate_pdp(done)

    @at("+NETCLOSE")
    def c_netclose(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if m.netopen == "closed":
            reply.info("+IP ERROR: Network not opened")
            raise CommandError(cmd.text)
        for link in list(m.links.values()):
            m.close_link(link)
        self._netopen_gen += 1
        m.netopen = "closed"
        m.pdp_active = False
        m.later(0.0, lambda: m.urc("+NETCLOSE: 0"))

    @at("+IPADDR")
    def c_ipaddr(self, cmd: Command, reply: Reply) -> None:
        if self.m.netopen != "open":
            reply.info("+IP ERROR: Network not opened")
            raise CommandError(cmd.text)
        reply.info(f"+IPADDR: {self.m.network.ip_address}")

    @at("+CIPRXGET")
    def c_ciprxget(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind == "read":
            reply.info(f"+CIPRXGET: {m.settings.ciprxget}")
            return
        if answered_test_form(cmd, reply, "+CIPRXGET: (0-4),(0-9),(1-1500)"):
            return
        mode = cmd.int_arg(0)
        if mode in (0, 1) and len(cmd.args) == 1:
            m.settings.ciprxget = mode
            return
        if mode not in (2, 3, 4) or m.settings.ciprxget != 1:
            raise CommandError(cmd.text)
        link_id = cmd.int_arg(1)
        link = m.links.get(link_id)
        if link is None:
            reply.info("+IP ERROR: No data")
            raise CommandError(cmd.text)
        if mode == 4:
            reply.info(f"+CIPRXGET: 4,{link_id},{len(link.rx)}")
            return
        want = cmd.int_arg(2, MAX_READ)
        if not 1 <= want <= MAX_READ:
            raise CmeError(50)
        if not link.rx:
            reply.info("+IP ERROR: No data")
            raise CommandError(cmd.text)
        if mode == 3:
            want = max(1, want // 2)
        data = link.take(want)
        reply.info(f"+CIPRXGET: {mode},{link_id},{len(data)},{len(link.rx)}")
        reply.raw(data if mode == 2 else data.hex().upper().encode())
        if link.state == "peer_closed" and not link.rx:
            m.links.pop(link_id, None)

    @at("+CIPOPEN")
    def c_cipopen(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind == "read":
            lines = []
            for i in range(MAX_LINKS):
                lk = m.links.get(i)
                if lk is not None and lk.state == "open":
                    lines.append(f'+CIPOPEN: {i},"{lk.proto}","{lk.host}",{lk.port},-1')
                else:
                    lines.append(f"+CIPOPEN: {i}")
            reply.info(*lines)
            return
        if answered_test_form(cmd, reply, '+CIPOPEN: (0-9),("TCP","UDP")'):
            return
        link_id = cmd.int_arg(0)
        proto = cmd.str_arg(1).upper()
        if not 0 <= link_id < MAX_LINKS or proto not in ("TCP", "UDP"):
            raise CmeError(50)
        host = cmd.str_arg(2)
        port = cmd.int_arg(3)
        if not 0 < port < 65536 or not host:
            raise CmeError(50)
        if proto != "TCP":
            reply.info(f"+CIPOPEN: {link_id},4")  # the simulator bridges TCP only
            raise CommandError(cmd.text)
        if m.netopen != "open":
            reply.info(f"+CIPOPEN: {link_id},2")
            raise CommandError(cmd.text)
        old = m.links.get(link_id)
        if old is not None and old.state in ("open", "connecting"):
            reply.info(f"+CIPOPEN: {link_id},4")
            raise CommandError(cmd.text)
        if old is not None:
            m.close_link(old)
        done = self.open_reporter("+CIPOPEN", CIPOPEN_ERR, 1)
        m.open_link(HostLink(link_id, host, port), done, m.timings.socket_open_s)

    @at("+CIPSEND")
    def c_cipsend(self, cmd: Command, reply: Reply) -> object:
        m = self.m
        request = send_request(cmd, reply, "+CIPSEND: (0-9),(1-1500)")
        if request is None:
            return None
        link_id, length = request
        link = m.links.get(link_id)
        if link is None or link.state != "open" or not 1 <= length <= MAX_SEND:
            raise CommandError(cmd.text)

        def answer(sent: bool) -> None:
            m.resume("OK")
            m.urc(f"+CIPSEND: {link_id},{length},{length if sent else -1}")

        return self.collect_send(link, length, answer, echo=False)

    @at("+CIPCLOSE")
    def c_cipclose(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind == "read":
            flags = ",".join(
                "1" if (lk := m.links.get(i)) is not None and lk.state == "open" else "0"
                for i in range(MAX_LINKS)
            )
            reply.info(f"+CIPCLOSE: {flags}")
            return
        if cmd.kind != "set":
            raise CommandError(cmd.text)
        link_id = cmd.int_arg(0)
        link = m.links.get(link_id)
        if link is None or link.state not in ("open", "connecting", "peer_closed"):
            reply.info(f"+CIPCLOSE: {link_id},4")
            raise CommandError(cmd.text)
        m.close_link(link)
        m.later(0.0, lambda: m.urc(f"+CIPCLOSE: {link_id},0"))


class A7670(A7670Gnss, Sim7600):
    name = "a7670"
    model = "A7670E-FASE"
    revision = "A110B01A7670M7_F"
    imei_tac = "86277107"  # the TAC of the IMEI printed in a7670-boot-gnss-cgnsinf-error
    pwrkey_on_s = 0.05
    pwrkey_off_s = 2.5
    boot_s = 4.0
    banners = [
        (0.0, "*ATREADY: 1", None),
        (1.46, "+CPIN: READY", "sim"),
        (4.52, "SMS DONE", "sim_ok"),
        (7.92, "PB DONE", "sim_ok"),
    ]
    gcap = "+GCAP: +CGSM,+FCLASS,+DS"

    def simcomati_lines(self) -> list[str]:
        return self.identity_lines(("A7670M7_B01V01_240105",), ())

    def on_registered(self) -> None:
        self.m.urc("+CGEV: EPS PDN ACT 1")
