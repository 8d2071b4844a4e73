"""Cellular modem simulator for the virtual board (SIM7600, A7670, BG96 over a pty).

See sim.py for the API; `ModemSimulator("bg96", workdir).start()` is the whole setup.
"""

from .core import Timings
from .sim import DIALECTS, FAULTS, ModemSimError, ModemSimulator
from .transcript import read_transcript, wire_bytes

__all__ = [
    "DIALECTS",
    "FAULTS",
    "ModemSimError",
    "ModemSimulator",
    "Timings",
    "read_transcript",
    "wire_bytes",
]
