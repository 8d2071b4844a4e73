"""Wire a simulated modem to the bench: the MCU's PWRKEY/power/STATUS GPIOs (as board.json
describes them) reach the simulator's pins, and its faults become bench faults, so tests,
`albatross bench NAME fault modem_hang` and the Python API all drive them the same way."""

from __future__ import annotations

from typing import Any

from host_tools.vboard.bench import Bench
from host_tools.vboard.modem.sim import FAULTS, ModemSimulator

PIN_PWRKEY = "modem_pwrkey"
PIN_POWER = "modem_power"
PIN_STATUS = "modem_status"
UART_ENV = "ALBATROSS_UART%d"


def attach_modem(bench: Bench, sim: ModemSimulator, modem_info: dict[str, Any]) -> dict[str, str]:
    """Connect pins, faults and controls; return the env the firmware needs (UART pty)."""
    pwrkey = modem_info.get("pwrkey") or {}
    if pwrkey:
        active = int(pwrkey.get("active", 1))

        # The MCU drives the modem's PWRKEY through a transistor: the MCU level `active`
        # pulls the modem pin LOW (pressed).
        def on_pwrkey(level: int) -> None:
            sim.set_pwrkey(0 if level == active else 1)

        bench.add_pin(PIN_PWRKEY, on_write=on_pwrkey)
        sim.set_pwrkey(1)  # released at power-up: the transistor is off
    power = modem_info.get("power") or {}
    if power:
        power_active = int(power.get("active", 1))
        bench.add_pin(PIN_POWER, on_write=lambda level: sim.set_power(level == power_active))
    status = modem_info.get("status") or {}
    if status:
        # board.json `active` is the level the MCU reads while the modem runs: 1 for a
        # non-inverting level shifter, 0 behind an inverting transistor. The fault
        # modem_status_inverted wires it the other way than board.json says (a wrong
        # board.json), which the firmware must notice by cross-checking with AT.
        status_active = int(status.get("active", 1))
        inverted = {"on": False}

        def read_status() -> int:
            level = status_active if sim.status_pin() else 1 - status_active
            return 1 - level if inverted["on"] else level

        def invert(on: bool) -> None:
            inverted["on"] = on

        bench.add_pin(PIN_STATUS, read=read_status)
        bench.add_fault(
            "modem_status_inverted",
            invert,
            lambda: dict(inverted),
            doc="the STATUS line reads the opposite of what board.json's status.active says",
        )

    for name, defaults in FAULTS.items():

        def apply(on: bool, _name: str = name, **params: Any) -> None:
            sim.fault(_name, on, **params)

        def state(_name: str = name) -> dict[str, Any]:
            active = sim.faults()
            return {"on": _name in active, **active.get(_name, {})}

        bench.add_fault(
            f"modem_{name}", apply, state, params=tuple(defaults), doc=f"simulated modem: {name}"
        )
    bench.add_control("modem", lambda **_: sim.snapshot())
    bench.add_control("modem_signal", lambda **kw: sim.set_signal(**kw) or {})
    bench.add_control(
        "modem_registration", lambda state="home", **_: sim.set_registration(state) or {}
    )
    uart_id = int((modem_info.get("uart") or {}).get("id", 1))
    return {UART_ENV % uart_id: sim.uart_path}
