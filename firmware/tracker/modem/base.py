# The family-independent cellular modem driver: power (PWRKEY, power-down command, rail,
# CFUN), init (echo, errors, SIM, identity, RAT) and reboot detection; registration, signal,
# operator, clock, PDP and sockets come from its base sockets.Network. A family
# (simcom.py, quectel.py) sets data and implements six PDP/socket methods.
# Every wait has a deadline in a `*_ms` class attribute that the constructor can override
# (`Sim7600(at, boot_ms=2000)`). No retry loops beyond the documented boot/SIM polls: the
# recovery ladder belongs to the supervisor (STYLE.md 7).
from tracker import log
from tracker.aio import asyncio, sleep_ms
from tracker.aio import ticks_add as _add
from tracker.aio import ticks_diff as _diff
from tracker.aio import ticks_ms as _now
from tracker.modem.at import AtError, AtTimeout, CmeError, ModemError  # noqa: F401 (re-exported)
from tracker.modem.families import answer_value, cclk_to_unix, reg_stat  # noqa: F401 (re-exported)
from tracker.modem.sockets import (  # noqa: F401 (re-exported)
    ModemSocket,
    Network,
    NotSupported,
    PdpError,
    RegistrationDenied,
    RegistrationTimeout,
    SocketClosed,
    SocketError,
)

_TAG = "modem"


class SimError(ModemError):
    """The SIM is missing, locked or broken: reason text, code from +CME ERROR if any."""

    def __init__(self, reason, code=None):
        super().__init__("SIM: %s" % reason)
        self.reason = reason
        self.code = code


class ModemNotResponding(AtTimeout):
    pass


_SIM_CODES = {10: "not inserted", 11: "PIN required", 12: "PUK required", 13: "failure",
              14: "busy", 15: "wrong"}  # fmt: skip
_SIM_TRANSIENT = ("busy", "failure")  # both seen right after boot, then +CPIN: READY


class Modem(Network):
    family = "generic"
    # ---- family data (SIMCom / Quectel files override; numbers cited there) ----
    pwrkey_on_ms = 500  # PWRKEY press that turns the module on
    pwrkey_off_ms = 3000  # PWRKEY press that turns it off (fallback when AT is dead)
    boot_ms = 20000  # PWRKEY release -> AT answers
    power_down_ms = 10000  # power-down command -> its URC / STATUS low
    off_settle_ms = 2000  # without a STATUS pin: wait this long after the power-down URC
    rail_off_ms = 1000  # power rail off this long for a rail cycle (check: capacitors)
    at_poll_ms = 500  # AT probe interval while booting (the first AT is often lost)
    probe_ms = 300  # "is it on?" AT probe
    sync_settle_ms = 200  # after the first answer, late answers to lost probes land here
    sync_ms = 3000  # init(): AT must answer within this
    sim_ready_ms = 10000  # SIM busy / failure right after boot: retry this long
    sim_retry_ms = 1000
    cfun_ms = 15000  # AT+CFUN=0/1 answer (check: up to 15 s on Quectel)
    boot_urc = "RDY"  # first banner after boot: unexpected = the modem rebooted
    power_down_cmd = "AT+CPOWD=1"
    power_down_urc = "NORMAL POWER DOWN"
    iccid_cmd = ("AT+CCID", None)  # (command, prefix of its answer when not its own)
    # rat -> ((query, value when already set, set command), ...) for _ensure(); init_steps:
    # other settings init() makes sure of.
    rats = {}
    init_steps = ()

    def __init__(
        self,
        at,
        *,
        pwrkey=None,
        pwrkey_active=1,
        power=None,
        power_active=1,
        status=None,
        status_active=1,
        apn="",
        rat="auto",
        **options,
    ):
        for k, v in options.items():
            if not k.endswith("_ms") or not hasattr(self, k):
                raise TypeError("unknown modem option %s" % k)
            setattr(self, k, v)
        self.at = at
        self.pwrkey = pwrkey
        self.pwrkey_active = pwrkey_active
        self.power = power
        self.power_active = power_active
        self.status = status
        self.status_active = status_active
        self.apn = apn
        self.rat = rat
        if pwrkey is not None:
            pwrkey.value(1 - pwrkey_active)  # released: a floating key could press itself
        self.info = {}
        self.powered = None  # True after power_on(), False after power_off(); None: unknown
        self.registration = "unknown"
        self.sim = "unknown"  # "ready", or what the modem said of it ("sim removed", ...)
        self.pdp_active = False
        self.counters = {
            k: 0
            for k in (
                "power_ons power_offs pwrkey_pulses forced_offs power_cycles rail_cycles"
                " cfun_cycles unexpected_resets registration_changes pdp_activations"
                " pdp_failures pdp_losses socket_opens socket_failures socket_closes"
                " peer_closes bytes_sent bytes_received sends reads polls settings_written"
                " status_pin_mismatch socket_ms sim_removals"
            ).split()
        }
        self._reg = {}  # domain ("CEREG") -> last <stat>
        self.registration_changed = asyncio.Event()  # set at every registration update
        self._socks = {}  # link id -> ModemSocket
        self._spare_bufs = None  # a closed socket's buffers for the next (sockets.py)
        self._booting = False
        self._pin_trusted = True  # until AT catches STATUS lying (_check_pin)
        self._banners = 0  # boot banners seen: a press that made one found the modem off
        at.on_urc(self.boot_urc, self._on_boot)
        if self.power_down_urc:
            at.on_urc(self.power_down_urc, self._on_boot)
        for d in self.reg_domains:
            at.on_urc("+%s:" % d, self._on_reg)
        at.on_urc("+CPIN:", self._on_cpin)
        self._register_urcs()

    # ---- power -------------------------------------------------------------------------
    #
    # STATUS is a hint, AT decides. A pin can be wired inverted, left floating, or described
    # wrongly in board.json, and a pressed PWRKEY toggles the modem: acting on a wrong pin
    # turns a running modem off or never turns an off one on. So every on/off decision asks
    # AT first (a probe_ms probe), and the pin only adds what AT cannot say:
    # - STATUS up but AT silent: a booting modem (STATUS rises before the UART answers) or a
    #   hung one. It gets boot_ms to answer before PWRKEY is pressed (a pwrkey_on_ms press is
    #   shorter than every family's power-off press, so it cannot turn a running modem off).
    # - after a power-down: STATUS low says when it is done, then AT must be silent.
    # Proof that the pin is wrong: AT answers while STATUS reads off, or a press after
    # "STATUS up" brought a boot banner (the modem was off). Then the driver counts
    # status_pin_mismatch, says so once, and stops taking hints from the pin (AT only, as on
    # a board without STATUS). STATUS up with AT silent is no proof (hung or booting).

    def _is_on_pin(self):
        """What STATUS says (True: on), or None: no pin, or a pin AT caught lying."""
        if self.status is None or not self._pin_trusted:
            return None
        return self.status.value() == self.status_active

    def _check_pin(self, running):
        """AT just showed the modem `running`; a STATUS pin that disagrees is wrong."""
        if self.status is None or (self.status.value() == self.status_active) == running:
            return
        self._pin_mismatch("reads %s while AT says %s" % (
            "off" if running else "on", "on" if running else "off"))  # fmt: skip

    def _pin_mismatch(self, what):
        self.counters["status_pin_mismatch"] += 1
        if self._pin_trusted:
            self._pin_trusted = False
            log.w(_TAG, "STATUS pin %s: check modem.status.active in board.json; using AT "
                  "only" % what)  # fmt: skip

    async def _pulse(self, ms):
        if self.pwrkey is None:
            raise NotSupported("no PWRKEY pin")
        self.counters["pwrkey_pulses"] += 1
        self.pwrkey.value(self.pwrkey_active)
        try:
            await sleep_ms(ms)
        finally:
            self.pwrkey.value(1 - self.pwrkey_active)

    async def _probe(self, ms):
        """One AT; True when answered. Nothing from before is worth resyncing for."""
        at = self.at
        saved, at.resync_ms = at.resync_ms, 0
        try:
            await at.cmd("AT", timeout_ms=ms)
            return True
        except ModemError:
            return False
        finally:
            at.resync_ms = saved

    async def _wait_ready(self, ms):
        """Poll AT every at_poll_ms until it answers (the first AT after power-on is often
        lost), then let late answers to lost probes arrive while no command is in flight."""
        deadline = _add(_now(), ms)
        while True:
            left = _diff(deadline, _now())
            if left <= 0:
                raise ModemNotResponding("AT", ms)
            t0 = _now()
            if await self._probe(min(self.at_poll_ms, left)):
                break
            rest = self.at_poll_ms - _diff(_now(), t0)
            if rest > 0:  # an error final came quickly (garbage while booting): pace it
                await sleep_ms(min(rest, max(0, _diff(deadline, _now()))))
        await sleep_ms(self.sync_settle_ms)

    def off(self):
        """Whether the modem is known to be off: powered off by this driver, or its STATUS
        pin (when the board has a trusted one) low."""
        return self.powered is False or self._is_on_pin() is False

    @property
    def changing_power(self):
        """Powering on, off or cycling: AT answers mean little until it is done."""
        return self._booting

    async def power_on(self):
        """Press PWRKEY unless the modem answers AT; wait until AT answers. True when a
        pulse was needed. A modem whose STATUS is up may still be booting: it gets boot_ms to
        answer before the press (ModemNotResponding when it stays deaf after it)."""
        if await self._probe(self.probe_ms):
            self._check_pin(True)
            self.powered = True
            return False
        said_on = self._is_on_pin()
        if said_on:
            try:
                await self._wait_ready(self.boot_ms)
                self.powered = True
                return False
            except ModemNotResponding:
                log.w(_TAG, "STATUS up but AT silent for %d ms: pressing PWRKEY" % self.boot_ms)
        banners = self._banners
        self._booting = True
        try:
            if self.power is not None:
                self.power.value(self.power_active)
            if self.pwrkey is not None:
                await self._pulse(self.pwrkey_on_ms)
            await self._wait_ready(self.boot_ms)
        finally:
            self._booting = False
        if said_on and self._banners != banners:
            self._pin_mismatch("read on while the modem was off (it booted from the press)")
        else:
            self._check_pin(True)
        self.counters["power_ons"] += 1
        self.powered = True
        self._lose_all("power on")
        return True

    async def _soft_power_down(self):
        """The power-down command, until its URC. SIMCom answers AT+CPOWD=1 with the URC
        only (no OK), so the command runs as a task that is dropped once the URC came."""
        if not self.power_down_urc:
            await self.at.cmd(self.power_down_cmd, timeout_ms=self.power_down_ms)
            return
        w = self.at.expect_urc(self.power_down_urc)
        t = asyncio.create_task(self._quiet(self.power_down_cmd, self.power_down_ms))
        try:
            await w.wait(self.power_down_ms)
        finally:
            t.cancel()

    async def _quiet(self, cmd, ms):
        try:
            await self.at.cmd(cmd, timeout_ms=ms)
        except ModemError as e:
            log.w(_TAG, "%s: %s" % (cmd, e))

    async def _wait_off(self):
        """After a power-down URC or a long press: STATUS low, then AT silent. Without a
        (trusted) pin the URC is the evidence: off_settle_ms and done."""
        if self._is_on_pin() is None:
            await sleep_ms(self.off_settle_ms)
            return
        deadline = _add(_now(), self.power_down_ms)
        while self._is_on_pin() and _diff(deadline, _now()) > 0:
            await sleep_ms(50)
        if await self._probe(self.probe_ms):
            self._check_pin(True)
            raise ModemNotResponding("power down", self.power_down_ms)  # it still answers
        if self._is_on_pin():
            log.w(_TAG, "STATUS still up %d ms after power down, AT silent: taken as off"
                  % self.power_down_ms)  # fmt: skip

    async def _force_off(self):
        self.counters["forced_offs"] += 1
        await self._pulse(self.pwrkey_off_ms)
        await self._wait_off()

    async def power_off(self):
        """Power-down command and its URC; a long PWRKEY press if the modem ignores it.
        A modem that does not answer counts as off (a press could turn it on) unless STATUS
        says it is up (hung): power_cycle() presses anyway."""
        if await self._probe(self.probe_ms):
            self._check_pin(True)
        elif not self._is_on_pin():
            return
        self._booting = True
        try:
            try:
                await self._soft_power_down()
                await self._wait_off()
            except ModemError as e:
                log.w(_TAG, "power down: %s; pressing PWRKEY" % e)
                await self._force_off()
        finally:
            self._booting = False
        self.counters["power_offs"] += 1
        self.powered = False
        self._lose_all("power off")

    async def power_cycle(self):
        """Off then on. A modem that does not answer AT goes straight to the long press."""
        self.counters["power_cycles"] += 1
        if await self._probe(self.probe_ms):
            await self.power_off()
        elif self._is_on_pin() is not False:  # hung (STATUS up), or no pin to say it is off
            self._booting = True
            try:
                await self._force_off()
            finally:
                self._booting = False
        self._lose_all("power cycle")
        await self.power_on()

    async def rail_cycle(self):
        if self.power is None:
            raise NotSupported("no modem power switch on this board")
        self.counters["rail_cycles"] += 1
        self.power.value(1 - self.power_active)
        self._lose_all("power rail cut")
        await sleep_ms(self.rail_off_ms)
        self.power.value(self.power_active)
        await self.power_on()

    async def cfun_cycle(self):
        """Radio off and on: the cheap recovery step (registration and PDP start over)."""
        self.counters["cfun_cycles"] += 1
        await self.at.cmd("AT+CFUN=0", timeout_ms=self.cfun_ms)
        self._lose_all("radio off")
        await self.at.cmd("AT+CFUN=1", timeout_ms=self.cfun_ms)

    # ---- init --------------------------------------------------------------------------

    async def init(self):
        """Echo off, numeric errors, SIM ready, identity into self.info, registration URCs,
        RAT preference. Raises SimError, ModemNotResponding, AtError."""
        at = self.at
        await self._wait_ready(self.sync_ms)
        self._check_pin(True)  # at every bring-up, also when no power-on was needed
        await at.cmd("ATE0")
        await at.cmd("AT+CMEE=1")
        await self.check_sim()
        info = self.info
        info["imei"] = answer_value((await at.cmd("AT+CGSN")).first(""))
        cmd, expect = self.iccid_cmd
        info["iccid"] = answer_value((await at.cmd(cmd, expect=expect)).first("")).rstrip("Ff")
        info["fw"] = answer_value((await at.cmd("AT+CGMR")).first(""))
        info["model"] = answer_value((await at.cmd("AT+CGMM")).first(""))
        for i, d in enumerate(self.reg_domains):
            try:
                await at.cmd("AT+%s=2" % d)  # URCs with TAC/cell: +CEREG: <stat>,"tac",...
            except AtError:
                if not i:
                    raise
        await self._apply_rat()
        await self._ensure(self.init_steps)
        log.i(_TAG, "%s %s imei %s" % (info["model"], info["fw"], info["imei"]))
        return info

    async def configure(self, apn=None, rat=None):
        """Change the APN (used by the next activate_pdp()) and the RAT preference (applied
        at once when it changed; init() applies it after every boot)."""
        if apn is not None:
            self.apn = apn
        if rat is not None and rat != self.rat:
            self.rat = rat
            await self._apply_rat()

    async def _apply_rat(self):
        steps = self.rats.get(self.rat)
        if steps is None:
            log.w(_TAG, "%s: no RAT setting %r, left as is" % (self.family, self.rat))
        await self._ensure(steps or ())

    async def check_sim(self):
        deadline = _add(_now(), self.sim_ready_ms)
        while True:
            try:
                state = answer_value((await self.at.cmd("AT+CPIN?")).first(""))
                if state.upper() == "READY":
                    self.sim = "ready"
                    return
                self.sim = state.lower()
                raise SimError(state)
            except CmeError as e:
                reason = _SIM_CODES.get(e.code) if isinstance(e.code, int) else None
                if reason is None:
                    text = str(e.code).lower()
                    reason = [r for r in _SIM_CODES.values() if r in text]
                    reason = reason[0] if reason else text or "error"
                if reason not in _SIM_TRANSIENT or _diff(deadline, _now()) <= 0:
                    self.sim = reason
                    raise SimError(reason, e.code)
            except AtError as e:  # a bare ERROR: the SIM interface is not up yet
                if _diff(deadline, _now()) <= 0:
                    raise SimError(e.final)
            await sleep_ms(self.sim_retry_ms)

    async def _ensure(self, steps):
        """(query, value, set command) steps: set only what differs, so settings the modem
        keeps in NVRAM are not rewritten at every boot; a setting the SKU lacks is skipped."""
        for query, want, setting in steps:
            try:
                v = (await self.at.cmd(query)).first("")
                v = v[v.find(":") + 1 :].strip()
                if v == want or v.endswith("," + want) or v.endswith(',"%s"' % want):
                    continue
            except AtError:
                pass
            self.counters["settings_written"] += 1
            try:
                await self.at.cmd(setting)
            except AtError as e:
                log.w(_TAG, "%s: %s" % (setting, e))

    def _lose_all(self, why):
        self._lose_pdp(why)
        self._reg = {}
        self._update_registration()

    def _on_cpin(self, line):
        """+CPIN: READY / SIM REMOVED / NOT INSERTED ... printed unasked (SIMCom prints
        "+CPIN: SIM REMOVED" when the SIM leaves a running modem)."""
        state = answer_value(line).lower()
        if state != "ready" and self.sim == "ready":
            self.counters["sim_removals"] += 1
            log.w(_TAG, "SIM: " + state)
        self.sim = state

    def _on_boot(self, line):
        if line.startswith(self.boot_urc):
            self._banners += 1
        if not self._booting:
            self.counters["unexpected_resets"] += 1
            self._lose_all("modem says " + line)
