"""A standalone GNSS receiver (a u-blox / L76K module) on a pty UART, paced at its baud rate.

The firmware opens `uart_path` as the board's GNSS UART (board.json gnss.uart, env
ALBATROSS_UART<id>) and reads NMEA: one epoch per second while the receiver is powered,
each epoch starting on a whole second of the wall clock as a real receiver's does. The
bytes leave at the baud rate (10 bits per byte, the modem simulator's `Loop` does the
pacing), so at 9600 baud an epoch of ~500 bytes takes about half a second on the wire.
Everything sent is recorded in `workdir/nmea-<name>.jsonl` (the modem transcript format).
Bytes from the MCU (configuration sentences such as $PMTK/$PUBX) are accepted and ignored.

    rx = NmeaReceiver(GnssSim(motion), workdir, baud=9600).start()
    rx.uart_path                       # what the firmware opens
    rx.sim.set_power(True)             # or the bench's gnss_enable pin
    rx.stop()
"""

from __future__ import annotations

import time
from pathlib import Path

from host_tools.vboard.modem.loop import Loop

from .model import GnssError, GnssSim
from .nmea import TALKERS, corrupt, epoch_sentences

EPOCH_S = 1.0  # 1 Hz output (u-blox M8 / L76K default navigation rate)


class NmeaReceiver:
    def __init__(
        self,
        sim: GnssSim,
        workdir: Path,
        *,
        baud: int = 9600,
        talker: str = "GN",
        name: str = "uart",
    ) -> None:
        if talker not in TALKERS:
            raise GnssError(f"unknown talker {talker!r}: choose {', '.join(TALKERS)}")
        self.sim = sim
        self.workdir = Path(workdir)
        self.baud = baud
        self.talker = talker
        self.transcript_path = self.workdir / f"nmea-{name}.jsonl"
        self._loop = Loop(baud, self.transcript_path)
        self._loop.on_rx = self._on_rx
        self.bytes_from_mcu = 0
        self.epochs = 0

    def start(self) -> NmeaReceiver:
        if not self._loop.running:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._loop.open()
            with self._loop.lock:
                self._schedule()
            self._loop.wake()
        return self

    def stop(self) -> None:
        if self._loop.running:
            self._loop.close()

    def __enter__(self) -> NmeaReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def uart_path(self) -> str:
        if not self._loop.running:
            raise GnssError("the receiver is not started: call start() first")
        return self._loop.uart_path

    @property
    def internal_errors(self) -> list[str]:
        return list(self._loop.errors)

    def line_baud(self) -> int | None:
        return self._loop.line_baud()

    # -- the epoch timer (runs on the loop thread) ---------------------------------------------

    def _schedule(self) -> None:
        now = time.time()
        delay = EPOCH_S - (now % EPOCH_S)
        self._loop.call_later(delay if delay > 0.001 else EPOCH_S, self._epoch)

    def _epoch(self) -> None:
        self._schedule()
        self.emit_epoch()

    def emit_epoch(self) -> bool:
        """Send one epoch now if the receiver is powered; True if it sent."""
        sim = self.sim
        if not sim.powered:
            return False
        fix = sim.fix(count=True)
        lines = epoch_sentences(self.talker, sim.utc(), fix, sim.satellites())
        rate = (sim.faults.get("corrupt") or {}).get("rate", 0.0)
        damaged = 0
        out = bytearray()
        for line in lines:
            if rate and sim.corrupt_rng.random() < rate:
                data, _kind = corrupt(line, sim.corrupt_rng)
                damaged += 1
                out += data
            else:
                out += line.encode("ascii")
        self._loop.uart_write(bytes(out))
        sim.count_sent(len(lines), damaged)
        self.epochs += 1
        return True

    def _on_rx(self, data: bytes) -> None:
        self.bytes_from_mcu += len(data)

    def snapshot(self) -> dict:
        return {
            **self.sim.snapshot(),
            "baud": self.baud,
            "line_baud": self.line_baud(),
            "talker": self.talker,
            "epochs": self.epochs,
            "bytes_tx": self._loop.bytes_tx,
            "bytes_from_mcu": self.bytes_from_mcu,
            "uart": self._loop.uart_path,
        }
