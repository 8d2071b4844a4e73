"""Wire the GNSS simulator to the bench: the receiver's enable GPIO, the gnss_* faults and the
gnss controls, so tests, `albatross bench NAME gnss ...` and the Python API drive it alike.

    env = attach_gnss(bench, motion, receivers={"uart": uart_rx.sim, "modem": modem_gnss},
                      uart=uart_rx, gnss_info=board_info["gnss"])

- pin `gnss_enable` (board.json gnss.enable.pin / .active): the MCU powers the standalone
  receiver by driving it to the active level; without an enable pin the receiver is always on.
- faults `gnss_no_fix` (indoors: no sky, fix lost), `gnss_jamming` (fix lost, few satellites
  at low C/N0), `gnss_corrupt` (rate=0.2, seed=None: damaged NMEA sentences); they act on
  every receiver of the board (the asset is indoors for all of them; corruption only touches
  the NMEA UART).
- controls `gnss` (the true position, each receiver's state and counters), `gnss_route`
  (path=FILE [speed=m/s]: a new route from its start), `gnss_park` (on=true: the asset stops
  where it is; on=false: it drives on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host_tools.vboard.bench import Bench, BenchError
from host_tools.vboard.gnss.model import FAULTS, GnssError, GnssSim, Motion
from host_tools.vboard.gnss.route import DEFAULT_SPEED_MPS, Route, RouteError
from host_tools.vboard.gnss.uart import NmeaReceiver

PIN_ENABLE = "gnss_enable"
UART_ENV = "ALBATROSS_UART%d"
DEFAULT_UART = {"id": 2, "baudrate": 9600}


def attach_gnss(
    bench: Bench,
    motion: Motion,
    receivers: dict[str, GnssSim],
    *,
    uart: NmeaReceiver | None = None,
    gnss_info: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Connect pin, faults and controls; return the env the firmware needs (the UART pty)."""
    info = gnss_info or {}
    env: dict[str, str] = {}
    if uart is not None:
        enable = info.get("enable") or {}
        pin = enable.get("pin")
        if pin:
            active = int(enable.get("active", 1))
            bench.add_pin(str(pin), on_write=lambda level: uart.sim.set_power(level == active))
            uart.sim.set_power(False)  # the enable line idles inactive until the MCU drives it
        else:
            uart.sim.set_power(True)  # no enable pin: powered with the board
        uart_id = int((info.get("uart") or DEFAULT_UART).get("id", DEFAULT_UART["id"]))
        env[UART_ENV % uart_id] = uart.uart_path

    everyone = list(receivers.values())
    for name, defaults in FAULTS.items():

        def apply(on: bool, _name: str = name, **params: Any) -> None:
            try:
                for rx in everyone:
                    rx.fault(_name, on, **params)
            except GnssError as e:
                raise BenchError(str(e)) from None

        def state(_name: str = name) -> dict[str, Any]:
            active = [rx.faults[_name] for rx in everyone if _name in rx.faults]
            return {"on": bool(active), **(active[0] if active else {})}

        bench.add_fault(
            f"gnss_{name}", apply, state, params=tuple(defaults), doc=f"simulated GNSS: {name}"
        )

    def snapshot(**_: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"truth": motion.snapshot()}
        for key, rx in receivers.items():
            out[key] = uart.snapshot() if uart is not None and rx is uart.sim else rx.snapshot()
        return out

    def set_route(path: object = None, speed: object = DEFAULT_SPEED_MPS, **_: Any) -> dict:
        if not isinstance(path, str) or not path:
            raise BenchError('gnss_route needs path="FILE" (.gpx or an NMEA log)')
        try:
            route = Route.load(Path(path).expanduser(), speed=float(speed))  # type: ignore[arg-type]
        except (RouteError, ValueError, TypeError) as e:
            raise BenchError(str(e)) from None
        motion.set_route(route)
        return snapshot()

    def park(on: object = True, **_: Any) -> dict:
        if not isinstance(on, bool):
            raise BenchError(f"gnss_park: 'on' must be true or false, got {on!r}")
        motion.park() if on else motion.drive()
        return snapshot()

    bench.add_control("gnss", snapshot)
    bench.add_control("gnss_route", set_route)
    bench.add_control("gnss_park", park)
    return env
