"""A cellular modem simulator for the virtual board: SIM7600, A7670 or BG96 on a pty UART.

The firmware opens `uart_path` (a pty slave, set raw, like /dev/ttyUSB0) and talks AT to it
byte by byte, exactly as to a real modem; the bench drives the modem's pins. API:

    sim = ModemSimulator("sim7600", workdir, baud=115200, timings=Timings.fast())
    sim.start()                       # background thread; supply on, modem off (not booted)
    sim.uart_path                     # "/dev/pts/7": what the firmware opens
    sim.set_pwrkey(0); ...; sim.set_pwrkey(1)   # PWRKEY level at the modem pin (0 = pressed)
    sim.pulse_pwrkey(0.6)             # the same, blocking, for tests and scripts
    sim.pwrkey_timing                 # (Ton, Toff) in seconds for this dialect and timings
    sim.set_power(False)              # the board's modem power switch: instant death
    sim.status_pin()                  # STATUS line: 1 from the first banner until power-off
    sim.state                         # "off" | "booting" | "on" | "powering_down"
    sim.fault("deregister")           # faults: see below; sim.fault(name, on=False) ends one
    sim.faults()                      # {name: params} of the active faults
    sim.set_signal(rssi=10)           # network: also set_registration(), set_registration_delay()
    sim.network                       # the Network model (network.py) for anything else
    sim.snapshot()                    # counters: commands, bytes, awake time, power cycles,
                                      # fault_effects (what each fault did: core.EFFECTS)
    sim.imposed_delays()              # simulated waits by kind (boot, registration, pdp, ...)
    sim.transcript_path               # workdir/at-<dialect>.jsonl (transcript.py)
    sim.imei, sim.iccid               # deterministic per (dialect, workdir) unless seed= given
    sim.gnss                          # the module's GNSS (gnss=GnssSim(...)): AT+CGPS/QGPS...
    sim.stop()

Pins are modelled at the modem: boards that drive PWRKEY through an NPN transistor invert
the MCU pin, so the bench passes `not mcu_level` there.

Power model (datasheet numbers per dialect, cited in simcom.py / quectel.py): a LOW on PWRKEY
held for the dialect's Ton powers an OFF modem on (while still held, as the modules do); a
LOW of at least Toff that began while the modem was on powers it off on release (URC
"NORMAL POWER DOWN" / "POWERED DOWN", STATUS low `Timings.power_down_s` later). Booting takes
`boot_s`; until the first banner every byte from the MCU is lost (the first AT after
power-on often gets no answer). `set_power(False)` kills the modem at once: output stops,
host connections close. Modelling choices: STATUS rises with the first banner; there is no
sleep mode (AT+CSCLK / AT+QSCLK / PSM are accepted and stored), so "awake" = powered on;
bytes from the MCU are not paced (the MCU's UART paces its own side).

Faults (`fault(name, on=True, **params)`):
    deregister   stat=2|0, duration_s=None: the network drops us (+CEREG: 2, PDP and sockets
                 gone with the dialect's URCs); registration comes back when it ends
    pdp_drop     persist=False: the data context drops now (+CIPEVENT / +QIURC "pdpdeact");
                 with persist=True, it cannot be re-activated until the fault ends
    peer_close   link=None: the TCP peer closes (one link or all): +IPCLOSE / +QIURC "closed"
    hang         the modem goes silent and deaf until a power cycle (PWRKEY off+on, or power)
    slow         delay_ms=500: every final answer comes that much later
    garbage      rate=0.2, max_len=8, seed=None: random non-UTF-8 bytes between output lines
    urc_storm    interval_ms=200, burst=3: bursts of harmless URCs
    cme          command="AT+CIPOPEN", code=...: that command answers +CME ERROR: <code>
                 (a number, or the text under AT+CMEE=2; never a bare ERROR); one rule per
                 command, fault("cme", on=False) clears all, with command= just that one
    no_sim       the SIM is gone: "+CPIN: SIM REMOVED" (SIMCom), +CPIN? -> +CME ERROR: 10,
                 no registration; off: +CPIN: READY and a new search
    registration state=home|roaming|searching|denied|not_registered|unknown (off: home)
One-shot faults (pdp_drop without persist, peer_close) act at once and are not listed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from .common import Dialect
from .core import ON, POWERING_DOWN, Modem, Timings
from .loop import Loop
from .network import Network, reg_code
from .quectel import Bg96
from .simcom import A7670, Sim7600

if TYPE_CHECKING:
    from host_tools.vboard.gnss.model import GnssSim

__all__ = ["DIALECTS", "FAULTS", "ModemSimError", "ModemSimulator", "Timings"]

DIALECTS: dict[str, type[Dialect]] = {"sim7600": Sim7600, "a7670": A7670, "bg96": Bg96}

# Fault name -> default parameters (any other parameter is an error).
FAULTS: dict[str, dict] = {
    "deregister": {"stat": 2, "duration_s": None},
    "pdp_drop": {"persist": False},
    "peer_close": {"link": None},
    "hang": {},
    "slow": {"delay_ms": 500},
    "garbage": {"rate": 0.2, "max_len": 8, "seed": None},
    "urc_storm": {"interval_ms": 200, "burst": 3},
    "cme": {"command": None, "code": 100},
    "no_sim": {},
    "registration": {"state": "home"},
}
ONE_SHOT = ("peer_close",)


class ModemSimError(ValueError):
    """A bad argument to the simulator (unknown dialect, fault or parameter)."""


class ModemSimulator:
    def __init__(
        self,
        dialect: str,
        workdir: Path,
        *,
        baud: int = 115200,
        timings: Timings | None = None,
        seed: str | None = None,
        gnss: GnssSim | None = None,
    ) -> None:
        """gnss: the module's GNSS receiver model (host_tools/vboard/gnss), answering the
        dialect's GNSS commands (modem/gnss_at.py); None: they answer ERROR."""
        if dialect not in DIALECTS:
            raise ModemSimError(f"unknown modem {dialect!r}: choose {', '.join(DIALECTS)}")
        self.dialect = dialect
        self.workdir = Path(workdir)
        self.baud = baud
        self.timings = timings or Timings()
        self.seed = seed if seed is not None else f"{dialect}:{self.workdir.resolve()}"
        self.transcript_path = self.workdir / f"at-{dialect}.jsonl"
        self.network = Network(registration_delay_s=self.timings.registration_s, seed=self.seed)
        self._loop = Loop(baud, self.transcript_path)
        self._modem = Modem(DIALECTS[dialect](self.seed), self.network, self.timings, self._loop)
        self._modem.gnss = gnss
        if gnss is not None:
            gnss.set_power(False)  # the modem starts unpowered, its GNSS with it
        self._loop.on_rx = self._modem.on_rx
        self._loop.on_link = self._modem.on_link_readable
        self._storm_gen = 0
        self._dereg_gen = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ModemSimulator:
        if not self._loop.running:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._loop.open()
        return self

    def stop(self) -> None:
        if not self._loop.running:
            return
        with self._loop.lock:
            self._modem.shutdown()
        self._loop.close()

    def __enter__(self) -> ModemSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def uart_path(self) -> str:
        if not self._loop.running:
            raise ModemSimError("the simulator is not started: call start() first")
        return self._loop.uart_path

    @property
    def gnss(self) -> GnssSim | None:
        return self._modem.gnss

    @property
    def imei(self) -> str:
        return self._modem.dialect.imei

    @property
    def iccid(self) -> str:
        return self._modem.dialect.iccid

    # -- pins ------------------------------------------------------------------------------

    def set_pwrkey(self, level: int) -> None:
        """PWRKEY at the modem pin: 0 = pulled low (pressed), 1 = released."""
        with self._loop.lock:
            self._modem.set_pwrkey(level)
        self._loop.wake()

    def pulse_pwrkey(self, seconds: float) -> None:
        """Hold PWRKEY low for `seconds`, then release (blocks)."""
        self.set_pwrkey(0)
        time.sleep(seconds)
        self.set_pwrkey(1)

    def set_power(self, on: bool) -> None:
        """The modem's supply switch. Off kills the modem instantly."""
        with self._loop.lock:
            self._modem.set_rail(bool(on))
        self._loop.wake()

    @property
    def pwrkey_timing(self) -> tuple[float, float]:
        """(seconds LOW that power an off modem on, seconds LOW that power it off)."""
        return self._modem.pwrkey_on_s, self._modem.pwrkey_off_s

    def status_pin(self) -> int:
        with self._loop.lock:
            return 1 if self._modem.power in (ON, POWERING_DOWN) else 0

    @property
    def state(self) -> str:
        """ "off", "booting", "on" or "powering_down"."""
        return self._modem.power

    # -- network ---------------------------------------------------------------------------

    def set_signal(
        self,
        rssi: int | None = None,
        ber: int | None = None,
        *,
        rsrp: int | None = None,
        rsrq: int | None = None,
    ) -> None:
        """Signal in 27.007 units (rssi 0..31/99, ber 0..7/99, rsrp 0..97, rsrq 0..34)."""
        with self._loop.lock:
            sig = self.network.signal
            old = (sig.rssi, sig.ber, sig.rsrp, sig.rsrq)
            if rssi is not None:
                sig.rssi = rssi
            if ber is not None:
                sig.ber = ber
            if rsrp is not None:
                sig.rsrp = rsrp
            if rsrq is not None:
                sig.rsrq = rsrq
            try:
                sig.check()
            except ValueError as exc:
                sig.rssi, sig.ber, sig.rsrp, sig.rsrq = old
                raise ModemSimError(str(exc)) from None

    def set_registration(self, state: str | int) -> None:
        """What the network grants: home, roaming, searching, denied, not_registered, unknown.

        A modem that is searching or registered moves to the new state at once (with URCs).
        """
        try:
            code = reg_code(state)
        except ValueError as exc:
            raise ModemSimError(str(exc)) from None
        with self._loop.lock:
            self.network.registration = code
            m = self._modem
            if m.power == ON and m.sim == "ready" and m.settings.cfun == 1:
                if "deregister" not in m.faults:
                    m.cancel_registration()
                    m.set_stat(code)
        self._loop.wake()

    def set_registration_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ModemSimError(f"registration delay must be >= 0, not {seconds}")
        with self._loop.lock:
            self.network.registration_delay_s = seconds

    # -- faults ----------------------------------------------------------------------------

    def fault(self, name: str, on: bool = True, **params: object) -> None:
        """Switch a fault on (with params) or off. See the module docstring."""
        if name not in FAULTS:
            raise ModemSimError(f"unknown fault {name!r}: choose {', '.join(FAULTS)}")
        unknown = set(params) - set(FAULTS[name])
        if unknown:
            raise ModemSimError(f"fault {name!r} has no parameter {', '.join(sorted(unknown))}")
        merged = {**FAULTS[name], **params}
        with self._loop.lock:
            getattr(self, f"_fault_{name}")(bool(on), merged)
        self._loop.wake()

    def faults(self) -> dict[str, dict]:
        with self._loop.lock:
            active = {name: dict(p) for name, p in self._modem.faults.items()}
            if self._modem.cme_rules:
                active["cme"] = {"rules": dict(self._modem.cme_rules)}
            return active

    def _fault_deregister(self, on: bool, p: dict) -> None:
        m = self._modem
        self._dereg_gen += 1
        if not on:
            if m.faults.pop("deregister", None) is not None:
                m.start_registration()
            return
        stat = int(p["stat"])
        if stat not in (0, 2):
            raise ModemSimError("deregister stat must be 2 (searching) or 0 (not searching)")
        m.faults["deregister"] = {"stat": stat, "duration_s": p["duration_s"]}
        m.cancel_registration()
        if m.power == ON and m.sim == "ready" and m.settings.cfun == 1:
            if m.registered:
                m.effects["deregistrations"] += 1
            m.set_stat(stat)
        if p["duration_s"] is not None:
            gen = self._dereg_gen

            def end() -> None:
                if gen == self._dereg_gen:
                    self._fault_deregister(False, {})

            self._loop.call_later(float(p["duration_s"]), end)

    def _fault_pdp_drop(self, on: bool, p: dict) -> None:
        m = self._modem
        if not on:
            m.faults.pop("pdp_drop", None)
            return
        if p["persist"]:
            m.faults["pdp_drop"] = {"persist": True}
        if m.power == ON:
            if m.pdp_active or m.links or m.netopen != "closed":
                m.effects["pdp_drops"] += 1
            m.lose_pdp()

    def _fault_peer_close(self, on: bool, p: dict) -> None:
        m = self._modem
        if not on:
            return
        for link_id, link in sorted(m.links.items()):
            if p["link"] is not None and link_id != int(p["link"]):
                continue
            if link.state != "open":
                continue
            self._loop.unwatch_link(link)
            link.close()
            link.state = "peer_closed"
            m.effects["peer_closes"] += 1
            m.dialect.peer_closed(link)

    def _fault_hang(self, on: bool, p: dict) -> None:
        m = self._modem
        if on:
            if m.power != "off":
                m.faults["hang"] = {}
                self._loop.uart_flush()
        else:
            m.faults.pop("hang", None)

    def _fault_slow(self, on: bool, p: dict) -> None:
        self._set_or_clear("slow", on, {"delay_ms": float(p["delay_ms"])})

    def _fault_garbage(self, on: bool, p: dict) -> None:
        if on and p["seed"] is not None:
            self._modem.rng.seed(p["seed"])
        rate = float(p["rate"])
        if not 0 <= rate <= 1:
            raise ModemSimError(f"garbage rate must be 0..1, not {rate}")
        self._set_or_clear("garbage", on, {"rate": rate, "max_len": max(1, int(p["max_len"]))})

    def _fault_urc_storm(self, on: bool, p: dict) -> None:
        m = self._modem
        self._storm_gen += 1
        if not on:
            m.faults.pop("urc_storm", None)
            return
        interval = max(0.001, float(p["interval_ms"]) / 1000)
        burst = max(1, int(p["burst"]))
        m.faults["urc_storm"] = {"interval_ms": interval * 1000, "burst": burst}
        gen = self._storm_gen

        def tick() -> None:
            if gen != self._storm_gen:
                return
            if m.power == ON and m.can_talk():
                choices = m.dialect.storm_urcs()
                for _ in range(burst):
                    m.urc(m.rng.choice(choices))
                m.effects["storm_urcs"] += burst
            self._loop.call_later(interval, tick)

        self._loop.call_later(interval, tick)

    def _fault_cme(self, on: bool, p: dict) -> None:
        rules = self._modem.cme_rules
        command = p["command"]
        if command is None:
            if on:
                raise ModemSimError('fault "cme" needs command="AT+..."')
            rules.clear()
            return
        name = str(command).strip().upper()
        name = name if name.startswith("AT") else "AT" + name
        for sep in "=?":
            name = name.split(sep, 1)[0]
        if on:
            code = p["code"]
            rules[name] = code if isinstance(code, str) else int(code)
        else:
            rules.pop(name, None)

    def _fault_no_sim(self, on: bool, p: dict) -> None:
        m = self._modem
        self.network.sim_present = not on
        if on:
            m.faults["no_sim"] = {}
            if m.sim == "ready":
                m.sim = "absent"
                m.effects["sim_removals"] += 1
                if m.dialect.no_sim_urc:
                    m.urc(m.dialect.no_sim_urc)
                m.cancel_registration()
                m.set_stat(0)
        else:
            m.faults.pop("no_sim", None)
            if m.sim == "absent" and m.power == ON:
                m.sim = "ready"
                m.urc("+CPIN: READY")
                m.start_registration()

    def _fault_registration(self, on: bool, p: dict) -> None:
        self.set_registration(p["state"] if on else "home")
        if on and p["state"] != "home":
            self._modem.faults["registration"] = {"state": p["state"]}
        else:
            self._modem.faults.pop("registration", None)

    def _set_or_clear(self, name: str, on: bool, params: dict) -> None:
        if on:
            self._modem.faults[name] = params
        else:
            self._modem.faults.pop(name, None)

    # -- counters --------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Counters and state, JSON-ready."""
        with self._loop.lock:
            m = self._modem
            return {
                "dialect": self.dialect,
                "state": m.power,
                "status": 1 if m.power in (ON, POWERING_DOWN) else 0,
                "commands": dict(sorted(m.commands.items())),
                "baud": self.baud,
                "line_baud": self._loop.line_baud(),  # what the MCU set on the pty
                "bytes_rx": self._loop.bytes_rx,
                "bytes_tx": self._loop.bytes_tx,
                "awake_s": round(m.awake_s(), 3),
                "power_cycles": m.boots,
                "power_offs": dict(m.power_offs),
                "faults": self.faults(),
                "fault_effects": dict(m.effects),
                "delays": self.network.ledger.totals(),
                "registration": m.stat,
                "pdp_active": m.pdp_active,
                "sockets": {i: lk.state for i, lk in sorted(m.links.items())},
                "internal_errors": len(self._loop.errors),
            }

    def imposed_delays(self) -> dict[str, float]:
        """Seconds of simulated waiting by kind, and "total" (see network.DelayLedger)."""
        with self._loop.lock:
            return self.network.ledger.totals()

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of simulator bugs caught on its thread (empty when all is well)."""
        return list(self._loop.errors)

    def __repr__(self) -> str:
        where = self._loop.uart_path or "not started"
        return f"<ModemSimulator {self.dialect} {self.state} {where}>"
