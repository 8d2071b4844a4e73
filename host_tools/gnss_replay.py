"""`albatross gnss replay`: run a recorded NMEA stream through the firmware's own parser
(firmware/tracker/location/nmea.py, the file the tracker runs) and list the fixes it reports,
one per epoch with a position, as text or as gpsd-style TPV JSON to diff against gpsd."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from host_tools.image import FIRMWARE_DIR


def _nmea_class() -> type:
    path = str(FIRMWARE_DIR)
    if path not in sys.path:
        sys.path.insert(0, path)
    from tracker.location.nmea import Nmea

    return Nmea


def _iso(parser: Any) -> str | None:
    date = parser.date
    tod = parser.tod_ms
    if date is None or tod is None:
        return None
    s, ms = divmod(tod, 1000)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{date[0]:04d}-{date[1]:02d}-{date[2]:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def _snapshot(parser: Any) -> dict:
    """The parser's fix as a gpsd TPV object (keys absent when unknown), plus sats/hdop."""
    fix: dict[str, Any] = {"class": "TPV", "mode": parser.mode}
    time = _iso(parser)
    if time is not None:
        fix["time"] = time
    fix["lat"] = parser.lat / 1e6
    fix["lon"] = parser.lon / 1e6
    for key, value in (("altMSL", parser.alt), ("speed", parser.speed), ("track", parser.track)):
        if value is not None:
            fix[key] = value
    for key, value in (("sats", parser.sats), ("hdop", parser.hdop)):
        if value is not None:
            fix[key] = value
    return fix


def replay(lines: Iterable[bytes]) -> tuple[list[dict], dict]:
    """Feed lines (bytes, one sentence each) to a fresh parser. Returns the fixes, one per
    epoch that had a position (its state after its last sentence), and the parser's counters.
    Lines starting with '#' (gpsd's log headers) are skipped."""
    parser = _nmea_class()()
    fixes: list[dict] = []
    pending: dict | None = None
    epoch = parser.epochs
    for line in lines:
        if line.startswith(b"#"):
            continue
        kind = parser.feed(line)
        if kind is None:
            continue
        if parser.epochs != epoch:  # the last epoch is complete
            epoch = parser.epochs
            if pending is not None:
                fixes.append(pending)
            pending = None
        if parser.fixed():
            pending = _snapshot(parser)
    if pending is not None:
        fixes.append(pending)
    return fixes, dict(parser.counters)


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    yield from stream


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_fix(fix: dict) -> str:
    return (
        f"{fix.get('time', '-'):24} mode {fix['mode']} "
        f"lat {fix['lat']:11.6f} lon {fix['lon']:11.6f} "
        f"alt {_fmt(fix.get('altMSL'), '8.1f')} m speed {_fmt(fix.get('speed'), '7.3f')} m/s "
        f"track {_fmt(fix.get('track'), '5.1f')} sats {fix.get('sats', '-')} "
        f"hdop {_fmt(fix.get('hdop'), '.1f')}"
    )


def format_summary(counters: dict, fixes: int) -> str:
    return (
        f"sentences {counters['sentences']}, taken {counters['taken']}, "
        f"bad checksum {counters['bad_checksum']}, malformed {counters['malformed']}, "
        f"unknown {counters['unknown']}, fixes {fixes}"
    )


def run(source: str, *, as_json: bool = False, out: IO[str] = sys.stdout) -> int:
    """Replay a log file ('-': stdin) and print its fixes and a summary (with --json the
    fixes as TPV objects on stdout, the summary on stderr)."""
    if source == "-":
        fixes, counters = replay(_lines(sys.stdin.buffer))
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"gnss replay: no such log file: {source}")
        with path.open("rb") as f:
            fixes, counters = replay(_lines(f))
    for fix in fixes:
        if as_json:
            out.write(json.dumps(fix) + "\n")
        else:
            out.write(format_fix(fix) + "\n")
    summary = format_summary(counters, len(fixes))
    print(summary, file=sys.stderr if as_json else out)
    return 0
