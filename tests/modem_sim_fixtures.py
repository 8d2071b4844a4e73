"""Shared set-up for the modem simulator tests (test_modem_sim*.py).

Each test file keeps its own small `make` fixture on top of `ModemSims`, so a test reads
`sim, probe = make("bg96")` and gets a simulator with fast timings behind a pyserial probe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from host_tools.vboard.modem import ModemSimulator, Timings
from host_tools.vboard.modem.probe import AtProbe, power_on, wait_registered


class ModemSims:
    """Simulators started for one test, each with its probe; all stopped by `close()`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.made: list[tuple[ModemSimulator, AtProbe]] = []

    def start(
        self,
        dialect: str,
        *,
        baud: int = 115200,
        boot: bool = False,
        setup: tuple[str, ...] = (),
        **timing: float,
    ) -> tuple[ModemSimulator, AtProbe]:
        """A running simulator in workdir/<dialect> with fast timings and a 20 ms PWRKEY
        threshold. boot=True powers it on, waits for registration and sends `setup`."""
        timing.setdefault("pwrkey_on_s", 0.02)
        sim = ModemSimulator(
            dialect, self.workdir / dialect, baud=baud, timings=Timings.fast(**timing)
        )
        sim.start()
        probe = AtProbe(sim.uart_path, baud=baud)
        self.made.append((sim, probe))
        if boot:
            power_on(sim, probe)
            wait_registered(probe)
            for command in setup:
                probe.cmd(command)
        return sim, probe

    def close(self) -> None:
        """Stop every simulator; a simulator's internal error fails the test."""
        for sim, probe in self.made:
            probe.close()
            sim.stop()
            assert not sim.internal_errors, sim.internal_errors[0]


@contextmanager
def modem_sims(workdir: Path) -> Iterator[ModemSims]:
    """`ModemSims` for the body of a fixture: `with modem_sims(tmp_path) as sims: yield ...`."""
    sims = ModemSims(workdir)
    yield sims
    sims.close()
