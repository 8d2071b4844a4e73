# Quectel modules: BG96 / BG95 (LTE-M, NB-IoT, optional GSM) and EC25 / EG25-G (LTE Cat-4),
# which share the TCP/IP command set (MODEMS.md "Sockets"; Quectel TCP/IP AT manual):
#   AT+QICSGP=1,1,"apn" ; AT+QIACT=1 -> OK (context 1 up)
#   AT+QIOPEN=1,<id>,"TCP","h",p,0,0 -> OK, +QIOPEN: <id>,<err>   (access mode 0: buffer)
#   AT+QISEND=<id>,<n> -> "> ", n bytes -> SEND OK | SEND FAIL
#   +QIURC: "recv",<id> (data waiting) -> AT+QIRD=<id>,<max> -> +QIRD: <n>, n bytes, OK
#   +QIURC: "closed",<id> (peer closed: AT+QICLOSE still frees the id)
#   +QIURC: "pdpdeact",<ctx> (the context dropped: AT+QIDEACT, then AT+QIACT again)
# "(check)" marks numbers to confirm on the hardware design manual of the exact SKU.
from tracker.modem.at_lines import params
from tracker.modem.base import AtError, Modem, SocketError


def _qird_len(line):
    p = params(line)  # +QIRD: <n>
    return p[0] if p and isinstance(p[0], int) else 0


def _qcfg(key, value):
    q = 'AT+QCFG="%s"' % key
    return (q, value, "%s,%s,1" % (q, value))  # ",1": take effect at once


class Quectel(Modem):
    family = "quectel"
    # BG96 hardware design: PWRKEY low >= 500 ms turns it on, >= 650 ms turns it off; UART
    # ready ~4.8 s after (check). EC25: the same 500 ms / 650 ms (check). 550 ms: a margin
    # over Ton that stays below Toff, should the module be on after all (booting, deaf).
    pwrkey_on_ms = 550
    pwrkey_off_ms = 800
    boot_ms = 15000
    boot_urc = "RDY"  # then APP RDY (corpus bg96-boot-app-rdy-cme-error)
    power_down_cmd = "AT+QPOWD=1"  # -> OK, POWERED DOWN
    power_down_urc = "POWERED DOWN"
    iccid_cmd = ("AT+QCCID", None)  # -> +QCCID: 8949...770F (corpus bg96-boot-app-rdy-cme-error)
    # URCs must come out of the UART, not the USB AT port (EC25 with a Linux host: "usbat",
    # corpus ec25-ril-init-cpin-cme13). Kept in NVRAM by the modem: set only when different.
    init_steps = (('AT+QURCCFG="urcport"', "uart1", 'AT+QURCCFG="urcport","uart1"'),)
    # nwscanmode 0 auto, 1 GSM only, 3 LTE only; iotopmode 0 LTE-M, 1 NB-IoT, 2 both.
    rats = {
        "auto": (_qcfg("nwscanmode", "0"), _qcfg("iotopmode", "2")),
        "lte": (_qcfg("nwscanmode", "3"), _qcfg("iotopmode", "2")),
        "ltem": (_qcfg("nwscanmode", "3"), _qcfg("iotopmode", "0")),
        "nbiot": (_qcfg("nwscanmode", "3"), _qcfg("iotopmode", "1")),
        "gsm": (_qcfg("nwscanmode", "1"),),
    }
    pdp_timeout_ms = 150000  # AT+QIACT: up to 150 s (MODEMS.md) (check)
    pdp_close_ms = 40000  # AT+QIDEACT: up to 40 s (check)
    socket_open_ms = 150000  # +QIOPEN within 150 s (check)
    socket_close_ms = 10000  # AT+QICLOSE answers within its 10 s default timeout (check)
    max_links = 12  # connectID 0..11
    max_send = 1460  # AT+QISEND takes at most 1460 bytes
    max_read = 1460  # AT+QIRD reads up to 1500 (check)

    def __init__(self, at, **kw):
        Modem.__init__(self, at, **kw)
        self._deact_first = False

    def _register_urcs(self):
        self.at.on_urc("+QIURC:", self._on_qiurc)

    def _on_qiurc(self, line):
        p = params(line)
        kind = p[0]
        if kind == "pdpdeact":
            self._deact_first = True
            self._lose_pdp(line)
            return
        s = self._sock(p[1]) if len(p) > 1 else None
        if s is None:
            return
        if kind == "recv":
            s._data_waiting()
        elif kind == "closed":
            s._peer_close()

    async def _ctx_active(self):
        for line in (await self.at.cmd("AT+QIACT?")).lines:
            p = params(line)  # +QIACT: <ctx>,<state>,<type>,"<ip>"
            if p[0] == 1 and len(p) > 1 and p[1] == 1:
                return True
        return False

    async def _activate(self, ms):
        at = self.at
        if self._deact_first:  # after +QIURC: "pdpdeact" the manual asks for QIDEACT first
            self._deact_first = False
            try:
                await at.cmd("AT+QIDEACT=1", timeout_ms=self.pdp_close_ms)
            except AtError:
                pass
        if self.apn:
            # context 1, IPv4, APN, no user/password, auth 1 as in the TCP/IP manual's example
            await at.cmd('AT+QICSGP=1,1,"%s","","",1' % self.apn)
        try:
            await at.cmd("AT+QIACT=1", timeout_ms=ms)
        except AtError:
            if not await self._ctx_active():  # ERROR when it is active already
                raise

    async def _deactivate(self):
        await self.at.cmd("AT+QIDEACT=1", timeout_ms=self.pdp_close_ms)

    async def _open(self, link, host, port, ms):
        at = self.at
        with at.expect_urc("+QIOPEN: %d," % link) as w:
            cmd = 'AT+QIOPEN=1,%d,"TCP","%s",%d,0,0' % (link, host, port)
            await at.cmd(cmd, timeout_ms=ms)
            code = params(await w.wait(ms))[1]
        if code != 0:  # 561 PDP failed, 563 id in use, 565 DNS failed, 566 connect failed
            raise SocketError(code, link)

    async def _send(self, link, data):
        cmd = "AT+QISEND=%d,%d" % (link, len(data))
        await self.at.send_with_prompt(
            cmd, data, timeout_ms=self.socket_send_ms, final=("SEND OK",)
        )

    async def _recv(self, link, buf):
        k = min(len(buf), self.max_read)
        cmd = "AT+QIRD=%d,%d" % (link, k)
        _, data = await self.at.read_payload(
            cmd, "+QIRD:", _qird_len, self.socket_read_ms, buf=buf
        )
        n = len(data)
        return n, n >= k  # a full read: there may be more

    async def _close(self, link, sock):
        await self.at.cmd("AT+QICLOSE=%d" % link, timeout_ms=self.socket_close_ms)


class Bg96(Quectel):
    family = "bg96"


class Bg95(Quectel):
    family = "bg95"
    # BG95 hardware design: PWRKEY low 500-1000 ms turns it on, >= 650 ms off (check).


class Ec25(Quectel):
    family = "ec25"
    # EC25: LTE Cat-4 with 3G/2G fallback, no LTE-M/NB-IoT: nwscanmode only (2 = WCDMA).
    rats = {
        "auto": (_qcfg("nwscanmode", "0"),),
        "lte": (_qcfg("nwscanmode", "3"),),
        "gsm": (_qcfg("nwscanmode", "1"),),
    }
    boot_ms = 30000  # EC25 needs longer than BG96 before AT answers (check: ~13 s)
