"""The AT transcript: every byte that crossed the modem's UART, both ways, with timestamps.

One JSON object per line (JSON Lines), appended to `<workdir>/at-<dialect>.jsonl`:

    {"t": 1.234567, "dir": "tx", "data": "AT+CSQ\\r"}
    {"t": 1.240112, "dir": "rx", "data": "AT+CSQ\\r\\r\\n+CSQ: 20,99\\r\\n\\r\\nOK\\r\\n"}

- "t": seconds since the simulator started (monotonic clock);
- "dir": the MCU's (host's) point of view, the same as host_tools.at_replay and the firmware's
  recorder: "tx" = bytes the MCU sent to the modem, "rx" = bytes the modem sent to the MCU;
- "data": the bytes decoded as latin-1, so any byte round-trips (`data.encode("latin-1")`).

Chunks are written as they cross the wire (pacing makes "rx" chunks small) and flushed at
once, so a crashed run still leaves its log. Each simulator start appends; "t" restarts at 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO


class Transcript:
    def __init__(self, path: Path, t0: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = t0
        self._file: IO[str] | None = self.path.open("a", encoding="ascii")

    def record(self, direction: str, data: bytes, now: float) -> None:
        if self._file is None or not data:
            return
        entry = {"t": round(now - self._t0, 6), "dir": direction, "data": data.decode("latin-1")}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_transcript(path: Path) -> list[dict]:
    """All entries of a transcript file, in order."""
    with Path(path).open(encoding="ascii") as f:
        return [json.loads(line) for line in f if line.strip()]


def wire_bytes(path: Path, direction: str) -> bytes:
    """Everything one side sent, concatenated: "tx" (MCU -> modem) or "rx" (modem -> MCU)."""
    if direction not in ("tx", "rx"):
        raise ValueError(f"direction must be 'tx' or 'rx', not {direction!r}")
    return b"".join(
        e["data"].encode("latin-1") for e in read_transcript(path) if e["dir"] == direction
    )
