# SIMCom LTE Cat-1/Cat-4 modules: SIM7600 and A76xx (A7670, A7608), which share the
# TCP/IP command set (MODEMS.md "Sockets"; SIM7600 Series TCP/IP application note):
#   AT+NETOPEN -> OK, +NETOPEN: <err>         AT+CIPRXGET=1 (manual receive) before it
#   AT+CIPOPEN=<l>,"TCP","h",p -> OK, +CIPOPEN: <l>,<err>
#   AT+CIPSEND=<l>,<n> -> ">" (no line end), n bytes -> OK, +CIPSEND: <l>,<n>,<sent>
#   +CIPRXGET: 1,<l> (data waiting) -> AT+CIPRXGET=2,<l>,<max> -> +CIPRXGET: 2,<l>,<n>,<left>
#   +IPCLOSE: <l>,<reason> (peer/network), +CIPEVENT: NETWORK CLOSED UNEXPECTEDLY (PDP gone)
# "(check)" marks numbers to confirm on the hardware design manual of the exact SKU.
from tracker.modem.at_lines import params
from tracker.modem.base import AtError, CmeError, Modem, PdpError, SocketError


def _rx_len(line):
    p = params(line)  # +CIPRXGET: 2,<link>,<n>,<left>
    return p[2] if len(p) > 2 and isinstance(p[2], int) else 0


class Simcom(Modem):
    family = "simcom"
    iccid_cmd = ("AT+CICCID", "+ICCID:")  # -> +ICCID: <iccid> (AT+CCID: not on A76xx)
    power_down_cmd = "AT+CPOWD=1"  # -> NORMAL POWER DOWN, no OK (MODEMS.md) (check)
    power_down_urc = "NORMAL POWER DOWN"
    # AT+CNMP: 2 automatic, 13 GSM only, 38 LTE only (MODEMS.md; corpus sim7600-boot-netopen-
    # error shows +CNMP: 38). No LTE-M / NB-IoT on these Cat-1/Cat-4 parts.
    rats = {
        "auto": (("AT+CNMP?", "2", "AT+CNMP=2"),),
        "lte": (("AT+CNMP?", "38", "AT+CNMP=38"),),
        "gsm": (("AT+CNMP?", "13", "AT+CNMP=13"),),
    }
    pdp_timeout_ms = 120000  # +NETOPEN within 120 s (MODEMS.md) (check)
    socket_open_ms = 120000  # +CIPOPEN: network dependent (check)
    max_links = 10  # links 0..9
    max_send = 1460  # CIPSEND takes up to 1500 (check); one TCP segment's worth
    max_read = 1460  # CIPRXGET=2 reads up to 1500 (check)

    def _register_urcs(self):
        at = self.at
        at.on_urc("+CIPRXGET: 1,", self._on_rx)
        at.on_urc("+IPCLOSE:", self._on_ipclose)
        at.on_urc("+CIPEVENT:", self._on_cipevent)

    def _on_rx(self, line):
        s = self._sock(params(line)[1])
        if s is not None:
            s._data_waiting()

    def _on_ipclose(self, line):
        s = self._sock(params(line)[0])
        if s is not None:
            s._peer_close()

    def _on_cipevent(self, line):
        if "CLOSED" in line:  # +CIPEVENT: NETWORK CLOSED UNEXPECTEDLY
            self._lose_pdp(line)

    async def _activate(self, ms):
        at = self.at
        if self.apn:
            await at.cmd('AT+CGDCONT=1,"IP","%s"' % self.apn)
        await at.cmd("AT+CIPRXGET=1")  # manual receive: data waits in the modem for CIPRXGET
        with at.expect_urc("+NETOPEN:") as w:
            try:
                await at.cmd("AT+NETOPEN", timeout_ms=ms)
            except AtError:
                # "+IP ERROR: Network is already opened" + ERROR, or a bare ERROR (corpus
                # sim7600-boot-netopen-error): open already counts as success.
                w.cancel()
                r = await at.cmd("AT+NETOPEN?")
                if params(r.first("+NETOPEN: 0"))[0] == 1:
                    return
                raise
            code = params(await w.wait(ms))[0]
        if code != 0:
            raise PdpError(code, "AT+NETOPEN")

    async def _deactivate(self):
        at = self.at
        with at.expect_urc("+NETCLOSE:") as w:
            try:
                await at.cmd("AT+NETCLOSE", timeout_ms=self.pdp_close_ms)
            except AtError:
                return  # "+IP ERROR: Network not opened": closed already
            await w.wait(self.pdp_close_ms)

    async def _open(self, link, host, port, ms):
        at = self.at
        with at.expect_urc("+CIPOPEN: %d," % link) as w:
            try:
                await at.cmd('AT+CIPOPEN=%d,"TCP","%s",%d' % (link, host, port), timeout_ms=ms)
            except AtError as e:
                if w.line is None:  # e.g. +CME ERROR: <n>
                    raise SocketError(getattr(e, "code", e.final), link)
            line = await w.wait(ms)
        code = params(line)[1]
        if code != 0:
            raise SocketError(code, link)

    async def _send(self, link, data):
        at = self.at
        n = len(data)
        ms = self.socket_send_ms
        with at.expect_urc("+CIPSEND: %d," % link) as w:
            await at.send_with_prompt(
                "AT+CIPSEND=%d,%d" % (link, n), data, timeout_ms=ms, final=("OK",)
            )
            p = params(await w.wait(ms))
        # +CIPSEND: <link>,<requested>,<confirmed>; confirmed -1: the connection is gone.
        if len(p) < 3 or p[2] != n:
            raise SocketError("sent %s of %d" % (p[-1], n), link)

    async def _recv(self, link, buf):
        k = min(len(buf), self.max_read)
        try:
            hdr, data = await self.at.read_payload(
                "AT+CIPRXGET=2,%d,%d" % (link, k),
                "+CIPRXGET: 2,",
                _rx_len,
                self.socket_read_ms,
                buf=buf,
            )
        except CmeError:
            raise
        except AtError:
            return 0, False  # "+IP ERROR: No data" + ERROR: nothing waiting (or link gone)
        if hdr is None:
            return 0, False
        p = params(hdr)
        return len(data), len(p) > 3 and isinstance(p[3], int) and p[3] > 0

    async def _close(self, link, sock):
        if sock.lost:
            return  # the network close took every link with it
        at = self.at
        with at.expect_urc("+CIPCLOSE: %d," % link) as w:
            try:
                await at.cmd("AT+CIPCLOSE=%d" % link, timeout_ms=self.socket_close_ms)
            except AtError:
                if sock.peer_closed:
                    return  # +IPCLOSE already released the link
                raise
            await w.wait(self.socket_close_ms)


class Sim7600(Simcom):
    family = "sim7600"
    # SIM7600 hardware design: PWRKEY low Ton typ. 500 ms (min 100 ms) turns it on, Toff
    # >= 2.5 s turns it off (check); LilyGO's examples press 3 s to power off. 600 ms: the
    # typical value plus a margin, far below Toff (a press of exactly Ton is a coin toss).
    pwrkey_on_ms = 600
    pwrkey_off_ms = 3000
    boot_ms = 25000  # UART ready ~11 s after PWRKEY (check); LilyGO waits 15 s before AT
    boot_urc = "RDY"  # then +CPIN: READY, SMS DONE, PB DONE (corpus sim7600-*)


class A76xx(Simcom):
    family = "a76xx"
    # LilyGO T-A7670 utilities.h: MODEM_POWERON_PULSE_WIDTH_MS 100, POWEROFF 3000 ms
    # (A76xx hardware design: Ton >= 50 ms, Toff >= 2.5 s) (check).
    pwrkey_on_ms = 100
    pwrkey_off_ms = 3000
    boot_ms = 15000  # corpus a7670-*: 9-16 unanswered AT probes, then *ATREADY: 1 (check)
    boot_urc = "*ATREADY"


A7670 = A76xx
