"""Quectel dialect: BG96 (LTE-M / NB-IoT), socket commands as in the Quectel TCP/IP manual.

Facts and their sources (corpus = /work/shared/corpus/at-transcripts, MODEMS.md =
/work/shared/reference/MODEMS.md). "(check)" marks a number to confirm on a datasheet.

Identity (corpus bg96-boot-app-rdy-cme-error): ATI -> "Quectel", "BG96",
"Revision: BG96MAR02A07M1G"; AT+QGMR -> "BG96MAR02A07M1G_01.019.01.019"; AT+QCCID ->
"+QCCID: <19 digits>F". Numeric +CME errors (default CMEE 1, Quectel AT manual, check).

Power (Quectel "BG95&BG96 Compatible Design" and BG96 hardware design): PWRKEY low >= 500 ms
turns the module on, >= 650 ms turns it off (the power-down runs after the release).
UART ready about 4.8 s after the pulse (check). AT+QPOWD=1 -> OK, then "POWERED DOWN".
AT+CFUN=1,1 -> OK, "POWERED DOWN", +QIURC: "pdpdeact",1 when a context was up, then RDY
again (bg96-reset-powered-down-pdpdeact-rdy).

Banners: "RDY" then "APP RDY" (bg96-boot-app-rdy-cme-error), then "+CPIN: READY",
"+QIND: SMS DONE", "+QIND: PB DONE" (gaps are a modelling choice).

Sockets (MODEMS.md; bg96-init-mqttcfg-qiact-escaped): AT+QICSGP=1 -> +QICSGP: 1,"","","",0
when unset; AT+QIACT? with no context -> bare OK, with one -> +QIACT: 1,1,1,"<ip>";
AT+QICLOSE on a closed socket -> OK; AT+QIOPEN -> OK, +QIOPEN: <id>,<err> (0 success;
Quectel TCP/IP error codes: 561 open PDP context failed, 563 socket identity used, 565 DNS
parse failed, 566 socket connect failed, 569 operation timeout); AT+QISEND -> "> " prompt
(27.005-style, with a space, no line end), data, SEND OK / SEND FAIL; the payload is echoed
while echo is on unless AT+QISDE=0 (why the Azure driver sends AT+QISDE=0);
+QIURC: "recv",<id> when data waits (buffer access mode); AT+QIRD=<id>,<len> ->
"+QIRD: <n>", the bytes, a blank line, OK; +QIRD: 0 when empty; +QIURC: "closed",<id>;
+QIURC: "pdpdeact",1.
Unverified choices: AT+QIACT=1 on an active context answers ERROR; QIOPEN with no active
context reports 561; direct push mode (access mode 1) sends +QIURC: "recv",<id>,<n> and the
bytes; transparent mode (2) is not simulated (ERROR).
"""

from __future__ import annotations

from .commands import CmeError, Command, CommandError, Reply, answered_test_form, send_request
from .common import Dialect, at
from .core import PENDING
from .gnss_at import Bg96Gnss
from .sockets import DNS_FAILED, TIMED_OUT, HostLink

MAX_SOCKETS = 12  # connectID 0..11
MAX_SEND = 1460
MAX_READ = 1500
QIOPEN_ERR = {DNS_FAILED: 565, TIMED_OUT: 569}  # everything else: 566, connect failed


class Bg96(Bg96Gnss, Dialect):
    name = "bg96"
    manufacturer = "Quectel"
    model = "BG96"
    revision = "BG96MAR02A07M1G"
    full_revision = "BG96MAR02A07M1G_01.019.01.019"
    imei_tac = "86642503"
    default_cmee = 1
    pwrkey_on_s = 0.5
    pwrkey_off_s = 0.65
    boot_s = 4.8
    banners = [
        (0.0, "RDY", None),
        (0.3, "APP RDY", None),
        (0.5, "+CPIN: READY", "sim"),
        (1.5, "+QIND: SMS DONE", "sim_ok"),
        (2.5, "+QIND: PB DONE", "sim_ok"),
    ]
    no_sim_urc = None
    power_down_urc = "POWERED DOWN"
    send_prompt = b"\r\n> "
    stored_commands = (
        "+QURCCFG",
        "+QINDCFG",
        "+QSCLK",
        "+QMTCFG",
        "+QSSLCFG",
        "+CTZU",
        "+CGEREP",
        "+CSCS",
        "+CMGF",
        "+CNMI",
    )
    qcfg_defaults = {
        "nwscanseq": "020301",
        "nwscanmode": "0",
        "iotopmode": "2",
        "servicedomain": "1",
    }

    @property
    def act(self) -> int:
        # 8 = E-UTRAN eMTC (LTE-M), 9 = E-UTRAN NB-S1 (27.007 <AcT>); iotopmode 1 = NB-IoT.
        return 9 if self._qcfg("iotopmode") == "1" else 8

    def _qcfg(self, key: str) -> str:
        return self.m.settings.qcfg.get(key, self.qcfg_defaults.get(key, ""))

    def reset_lines(self) -> list[str]:
        lines = ["POWERED DOWN"]
        if self.m.pdp_active:
            lines.append('+QIURC: "pdpdeact",1')
        return lines

    # -- hooks -----------------------------------------------------------------------------

    def pdp_lost(self) -> None:
        if self.m.pdp_active:
            self.m.urc('+QIURC: "pdpdeact",1')

    def data_arrived(self, link: HostLink, had: int) -> None:
        m = self.m
        if link.access_mode == 1:
            data = link.take(len(link.rx))
            head = f'\r\n+QIURC: "recv",{link.link_id},{len(data)}\r\n'.encode()
            m.send_frame(head + data)
        elif had == 0:
            m.urc(f'+QIURC: "recv",{link.link_id}')

    def peer_closed(self, link: HostLink) -> None:
        self.m.urc(f'+QIURC: "closed",{link.link_id}')

    def storm_urcs(self) -> list[str]:
        sig = self.m.network.signal
        return [f"+CEREG: {self.m.stat}", f'+QIND: "csq",{sig.rssi},{sig.ber}']

    # -- identity and radio ------------------------------------------------------------

    @at("+QGMR")
    def c_qgmr(self, cmd: Command, reply: Reply) -> None:
        reply.info(self.full_revision)

    @at("+QCCID")
    def c_qccid(self, cmd: Command, reply: Reply) -> None:
        self._need_sim()
        reply.info(f"+QCCID: {self.iccid}F")

    @at("+QCFG")
    def c_qcfg(self, cmd: Command, reply: Reply) -> None:
        if answered_test_form(cmd, reply, *(f'+QCFG: "{key}"' for key in self.qcfg_defaults)):
            return
        key = cmd.str_arg(0).lower()
        if len(cmd.args) == 1:
            value = self._qcfg(key)
            if not value:
                raise CmeError(50)
            reply.info(f'+QCFG: "{key}",{value}')
            return
        value = cmd.str_arg(1)
        if key == "iotopmode" and value not in ("0", "1", "2"):
            raise CmeError(50)
        if key == "nwscanseq" and not (value.isdigit() and len(value) % 2 == 0):
            raise CmeError(50)
        self.m.settings.qcfg[key] = value

    @at("+QNWINFO")
    def c_qnwinfo(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if not m.registered:
            reply.info("+QNWINFO: No Service")
            return
        rat = "CAT-NB1" if self.act == 9 else "eMTC"
        reply.info(f'+QNWINFO: "{rat}","{m.network.plmn}","LTE BAND 3",1575')

    @at("+QPOWD")
    def c_qpowd(self, cmd: Command, reply: Reply) -> object:
        m = self.m
        urgent = cmd.kind == "set" and cmd.int_arg(0) == 0
        m.send_frame(reply.final("OK"))
        if urgent:
            m.power_down("command", None)
        else:
            m.power_down("command", "POWERED DOWN")
        return PENDING

    # -- PDP context -------------------------------------------------------------------

    @at("+QICSGP")
    def c_qicsgp(self, cmd: Command, reply: Reply) -> None:
        contexts = self.m.settings.qicsgp
        test = '+QICSGP: (1-16),(1-3),"APN","USERNAME","PASSWORD",(0-3)'
        if answered_test_form(cmd, reply, test):
            return
        cid = cmd.int_arg(0)
        if not 1 <= cid <= 16:
            raise CmeError(50)
        if len(cmd.args) == 1:
            kind, apn, user, pwd, auth = contexts.get(cid, (1, "", "", "", 0))
            reply.info(f'+QICSGP: {kind},"{apn}","{user}","{pwd}",{auth}')
            return
        kind = cmd.int_arg(1, 1)
        auth = cmd.int_arg(5, 0)
        if kind not in (1, 2, 3) or auth not in (0, 1, 2, 3):
            raise CmeError(50)
        contexts[cid] = (kind, cmd.str_arg(2, ""), cmd.str_arg(3, ""), cmd.str_arg(4, ""), auth)

    @at("+QIACT")
    def c_qiact(self, cmd: Command, reply: Reply) -> object:
        m = self.m
        if cmd.kind == "read":
            if m.pdp_active:
                reply.info(f'+QIACT: 1,1,1,"{m.network.ip_address}"')
            return None
        if cmd.kind == "test":
            reply.info("+QIACT: (1-16)")
            return None
        if cmd.kind != "set" or cmd.int_arg(0) != 1:
            raise CmeError(50)
        if m.pdp_active:
            raise CommandError(cmd.text)

        def done(ok: bool) -> None:
            if ok:
                m.resume()
            else:
                m.resume("ERROR")

        return self.activate_pdp(done)

    @at("+QIDEACT")
    def c_qideact(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind == "test":
            reply.info("+QIDEACT: (1-16)")
            return
        if cmd.kind != "set" or cmd.int_arg(0) != 1:
            raise CmeError(50)
        for link in list(m.links.values()):
            m.close_link(link)
        m.pdp_active = False

    @at("+QIDNSCFG")
    def c_qidnscfg(self, cmd: Command, reply: Reply) -> None:
        primary, secondary = self.m.network.dns
        if cmd.kind == "set" and len(cmd.args) == 1:
            reply.info(f'+QIDNSCFG: 1,"{primary}","{secondary}"')

    # -- sockets ---------------------------------------------------------------------------

    @at("+QIOPEN")
    def c_qiopen(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        test = '+QIOPEN: (1-16),(0-11),"TCP/UDP/TCP LISTENER/UDP SERVICE",,,,(0-2)'
        if answered_test_form(cmd, reply, test):
            return
        cid = cmd.int_arg(0)
        sock_id = cmd.int_arg(1)
        proto = cmd.str_arg(2).upper()
        host = cmd.str_arg(3)
        port = cmd.int_arg(4)
        mode = cmd.int_arg(6, 0)
        if cid != 1 or not 0 <= sock_id < MAX_SOCKETS or not 0 < port < 65536 or not host:
            raise CmeError(50)
        if proto != "TCP" or mode not in (0, 1):
            raise CmeError(50)  # UDP, listeners and transparent mode are not simulated
        old = m.links.get(sock_id)
        if old is not None:
            m.later(0.0, lambda: m.urc(f"+QIOPEN: {sock_id},563"))
            return
        if not m.pdp_active:
            m.later(m.timings.socket_open_s, lambda: m.urc(f"+QIOPEN: {sock_id},561"))
            return

        link = HostLink(sock_id, host, port)
        link.access_mode = mode
        done = self.open_reporter("+QIOPEN", QIOPEN_ERR, 566)
        m.open_link(link, done, m.timings.socket_open_s)

    @at("+QISEND")
    def c_qisend(self, cmd: Command, reply: Reply) -> object:
        m = self.m
        request = send_request(cmd, reply, "+QISEND: (0-11),(0-1460)")
        if request is None:
            return None
        sock_id, length = request
        link = m.links.get(sock_id)
        if link is None:
            raise CommandError(cmd.text)
        if length == 0:
            reply.info(f"+QISEND: {link.tx_total},{link.tx_total},0")
            return None
        if link.state != "open" or not 1 <= length <= MAX_SEND:
            raise CommandError(cmd.text)

        def answer(sent: bool) -> None:
            m.resume("SEND OK" if sent else "SEND FAIL")

        echo = m.settings.echo and m.settings.qisde == 1
        return self.collect_send(link, length, answer, echo=echo)

    @at("+QISDE")
    def c_qisde(self, cmd: Command, reply: Reply) -> None:
        if cmd.kind == "read":
            reply.info(f"+QISDE: {self.m.settings.qisde}")
        elif cmd.kind == "set":
            value = cmd.int_arg(0)
            if value not in (0, 1):
                raise CmeError(50)
            self.m.settings.qisde = value

    @at("+QIRD")
    def c_qird(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind != "set":
            raise CommandError(cmd.text)
        sock_id = cmd.int_arg(0)
        link = m.links.get(sock_id)
        if link is None:
            raise CommandError(cmd.text)
        want = cmd.int_arg(1, MAX_READ)
        if want == 0:
            reply.info(f"+QIRD: {link.rx_total},{link.read_total},{len(link.rx)}")
            return
        if not 0 < want <= MAX_READ:
            raise CmeError(50)
        data = link.take(want)
        reply.info(f"+QIRD: {len(data)}")
        if data:
            reply.raw(data + b"\r\n")

    @at("+QICLOSE")
    def c_qiclose(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        if cmd.kind != "set":
            raise CommandError(cmd.text)
        link = m.links.get(cmd.int_arg(0))
        if link is not None:
            m.close_link(link)

    @at("+QISTATE")
    def c_qistate(self, cmd: Command, reply: Reply) -> None:
        m = self.m
        states = {"connecting": 1, "open": 2, "peer_closed": 4}
        links = sorted(m.links.items())
        if cmd.kind == "set" and len(cmd.args) >= 2:
            links = [(i, lk) for i, lk in links if i == cmd.int_arg(1)]
        lines = [
            f'+QISTATE: {i},"{lk.proto}","{lk.host}",{lk.port},{lk.local_port},'
            f'{states.get(lk.state, 4)},1,0,{lk.access_mode},"uart1"'
            for i, lk in links
        ]
        reply.info(*lines)
