# The connection supervisor for a cellular modem: brings the modem up, hands the uplink a
# socket stream, and after failures climbs a bounded, counted recovery ladder:
#
#   reconnect (new socket) -> re-activate PDP -> CFUN 0/1 -> PWRKEY power cycle
#   -> modem power rail cycle (where the board can) -> MCU reset
#
# Each step is tried STEP_TRIES times before the next; a modem that no longer answers AT
# skips straight to the power cycle (nothing softer can help it), and a data context the
# modem reported lost starts at its re-activation. Only a PUBACK proves the
# path works (session_up); "connected" flags and SEND OK prove nothing. Off the network, the
# backoff between tries ends when the modem registers (its URC), not at its full length.
from tracker import log
from tracker.aio import sleep_ms, ticks_add, ticks_diff, ticks_ms
from tracker.modem.at import AtTimeout, ModemError
from tracker.modem.families import REGISTERED
from tracker.uplink.tcp import jittered

_TAG = "link"

RECONNECT = "reconnect"
PDP = "reactivate_pdp"
CFUN = "cfun_cycle"
POWER = "power_cycle"
RAIL = "rail_cycle"
MCU = "mcu_reset"
LADDER = (RECONNECT, PDP, CFUN, POWER, RAIL, MCU)

# The counters the retained status carries (the rest stay on the device for the CLI): what
# shows a field modem's faults from afar -- garbled lines, URCs nobody handles, the peer or
# the network closing, registration lost, reboots, and how long socket commands take
# (socket_ms over sends + reads: a modem grown slow).
_AT_REPORTED = ("commands", "timeouts", "errors", "urcs", "unknown_urcs", "garbage_lines")
_MODEM_REPORTED = (
    "registration_changes pdp_losses peer_closes socket_failures power_cycles"
    " unexpected_resets sends reads socket_ms sim_removals"
).split()


class ModemLink:
    STEP_TRIES = 2
    BACKOFF_BASE_MS = 1000
    BACKOFF_MAX_MS = 60000
    REGISTER_TIMEOUT_MS = 120000  # LTE attach can take minutes on a new cell (MODEMS.md)
    PDP_TIMEOUT_MS = 150000  # QIACT up to 150 s (check)
    SOCKET_TIMEOUT_MS = 30000
    PROBE_TIMEOUT_MS = 2000
    REGISTRATION_POLL_MS = 250  # off the network, how often a backoff looks for registration

    def __init__(self, modem, *, reset_mcu=None, apn="", rat="auto", on_network_time=None):
        self.modem = modem
        self._reset_mcu = reset_mcu
        self._on_network_time = on_network_time  # f(unix_seconds): set the RTC from it
        self.apn = apn
        self.rat = rat
        self.failures = 0
        self.counters = {step: 0 for step in LADDER}
        self.counters["sessions"] = 0
        self.registered_wakes = 0  # backoffs the modem's registration ended early
        self.last_recovery = None
        self.last_error = None
        self.recovery_ms = {}  # step -> duration of its last run
        self._up = False  # modem powered, initialised, registered, PDP active
        self._socket = None

    # ---- what the uplink calls -----------------------------------------------------------

    async def open_stream(self, host, port):
        if self.failures:
            step = self._step()
            if step == RECONNECT and self._up and not self.modem.pdp_active:
                # The modem said the data context is gone (its URC): a new socket cannot
                # help, so the ladder starts at the rung that re-activates it.
                self.failures = self.STEP_TRIES * LADDER.index(PDP) + 1
                step = PDP
            await self._recover(step)
        if not self._up:
            await self._bring_up()
        self._close_socket()
        sock = await self.modem.open_socket(host, port, self.SOCKET_TIMEOUT_MS)
        self._socket = sock
        return sock

    def session_up(self):
        if self.failures:
            log.i(_TAG, "link works again after %d failures" % self.failures)
        self.failures = 0
        self.counters["sessions"] += 1

    def session_failed(self, reason):
        self.failures += 1
        self.last_error = reason
        self._close_socket()

    async def backoff(self):
        """Wait before the next try. Off the network (denied, searching), the modem's own
        registration (its URC) ends the wait early: the network let it back in, so the next
        try can work, and the backoff only stood for a network that might."""
        delay = jittered(self.BACKOFF_BASE_MS, self.failures - 1, self.BACKOFF_MAX_MS)
        log.i(_TAG, "failure %d (%s); next try in %d ms" % (self.failures, self.last_error, delay))
        m = self.modem
        if m.registration in REGISTERED:
            await sleep_ms(delay)
            return
        # Polled: a sleep allocates nothing, where waiting on the registration event with a
        # timeout makes a task each time, at the moment the heap is fullest (a reconnect).
        deadline = ticks_add(ticks_ms(), delay)
        while m.registration not in REGISTERED:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return
            await sleep_ms(min(left, self.REGISTRATION_POLL_MS))
        self.registered_wakes += 1
        # Jittered (0.5..1 s) all the same: a cell that comes back lets its devices in at once.
        left = ticks_diff(deadline, ticks_ms())
        wait = min(left, jittered(self.BACKOFF_BASE_MS, 0, self.BACKOFF_MAX_MS))
        log.i(_TAG, "registered (%s): next try in %d ms" % (m.registration, max(wait, 0)))
        if wait > 0:
            await sleep_ms(wait)

    def status(self):
        m = self.modem
        return {
            "kind": "modem",
            "family": m.family,
            "registration": m.registration,
            "pdp_active": m.pdp_active,
            "sim": m.sim,
            "failures": self.failures,
            "ladder": self.counters,
            "last_recovery": self.last_recovery,
            "last_error": self.last_error,
            "recovery_ms": self.recovery_ms,
            "registered_wakes": self.registered_wakes,
            "info": m.info,
            # STATUS pin readings AT proved wrong (modem.py): non-zero means check board.json.
            "status_pin_mismatch": m.counters["status_pin_mismatch"],
            "at": {k: m.at.counters[k] for k in _AT_REPORTED},
            "modem": {k: m.counters[k] for k in _MODEM_REPORTED},
        }

    # ---- internals -----------------------------------------------------------------------

    def _step(self):
        """The ladder rung for the current run of failures."""
        return LADDER[min((self.failures - 1) // self.STEP_TRIES, len(LADDER) - 1)]

    def _close_socket(self):
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _responsive(self):
        try:
            await self.modem.at.cmd("AT", timeout_ms=self.PROBE_TIMEOUT_MS)
            return True
        except ModemError:
            return False

    async def _bring_up(self):
        """Power on if needed, then init, register and activate the data context."""
        m = self.modem
        if not await self._responsive():
            log.i(_TAG, "modem silent: powering it on")
            await m.power_on()
        await m.init()
        await m.configure(self.apn, self.rat)
        await m.wait_registered(self.REGISTER_TIMEOUT_MS)
        if self._on_network_time is not None:
            try:
                t = await m.network_time()
            except ModemError as e:
                t = None
                log.d(_TAG, "no network time: %s" % (e,))
            if t:
                self._on_network_time(t)
        await m.activate_pdp(self.PDP_TIMEOUT_MS)
        self._up = True

    async def _recover(self, step):
        if step != POWER and step != RAIL and step != MCU and not await self._responsive():
            log.w(_TAG, "modem does not answer AT: power cycle instead of " + step)
            step = POWER
        self.counters[step] += 1
        self.last_recovery = "%s after %s" % (step, self.last_error)
        log.w(_TAG, "recovery: " + self.last_recovery)
        started = ticks_ms()
        m = self.modem
        try:
            if step == RECONNECT:
                pass  # a fresh socket and MQTT session are all this rung does
            elif step == PDP:
                try:
                    await m.deactivate_pdp()
                except ModemError as e:
                    log.d(_TAG, "deactivate: %s" % (e,))  # it may be gone already
                self._up = False
            elif step == CFUN:
                await m.cfun_cycle()
                self._up = False
            elif step == POWER:
                await m.power_cycle()
                self._up = False
            elif step == RAIL:
                try:
                    await m.rail_cycle()
                except ModemError as e:  # NotSupported on boards without a power switch
                    log.w(_TAG, "rail cycle: %s; power cycle instead" % (e,))
                    await m.power_cycle()
                self._up = False
            elif step == MCU:
                log.e(_TAG, "recovery ladder exhausted: resetting the MCU")
                if self._reset_mcu is not None:
                    self._reset_mcu()
                await m.power_cycle()
                self._up = False
        except AtTimeout as e:
            self._up = False
            raise ModemError("%s failed: %s" % (step, e))
        finally:
            self.recovery_ms[step] = ticks_diff(ticks_ms(), started)
