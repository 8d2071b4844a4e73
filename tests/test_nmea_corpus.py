"""The firmware's NMEA parser against gpsd's regression corpus (../shared/corpus/gpsd-nmea).

Each NAME.log is fed to tracker.location.nmea.Nmea line by line, exactly as it was recorded
(bad checksums, binary packets and all). NAME.log.chk is gpsd's own output for that stream:
every sentence gpsd accepted, echoed, followed by the JSON it emitted after it. The oracle is
that file only.

A log matches when every TPV report gpsd emits right after a sentence type the parser
understands (GGA, RMC, GNS, GLL, VTG, GSA, ZDA) is matched by the parser's state after that same
sentence:
- mode equal, where gpsd's 0 ("not seen") after a GN GSA that said "no fix" is our 1;
- only when gpsd's mode is 2 or 3 (gpsd prints no position otherwise; a void epoch has no fix
  to time, and gpsd's bookkeeping of it varies between its versions):
  - time: the same second (gpsd prints milliseconds; we keep them, compare seconds), or exactly
    a multiple of 1024 weeks apart (gpsd moves some dates forward by its GPS week-rollover
    guess; we report the date the receiver sent); when gpsd prints no time we may still have
    one (gpsd forgets the date over a run of empty void RMCs, we keep the receiver's last);
  - lat and lon both absent, or within 0.5e-6 degree (ours are rounded to the microdegree,
    gpsd prints 9 decimals: 1e-6 is the requirement, this checks the rounding too);
  - altMSL both absent or within 1 cm;
  - speed within 0.001 m/s and track within 0.001 degree when the parser has them (gpsd
    derives both from successive positions when no sentence carries them; the parser reports
    only what the receiver said).
Echoed sentences are aligned with the log by content, in order; a sentence the parser
understands that cannot be aligned counts as a mismatch. The parser must also refuse what gpsd
refused (log lines gpsd did not echo: bad or missing checksums, cut or binary lines) and take
what gpsd took whole, for the sentence types it understands; gpsd's lexer also refuses talker
IDs it does not list (e.g. $IMGSA), which the parser takes: talkers gpsd echoes nowhere in the
corpus are not held against it.
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "gpsd-nmea"
SUMMARY = REPO / "build" / "nmea_corpus_summary.json"
sys.path.insert(0, str(REPO / "firmware"))

from tracker.location.nmea import Nmea  # noqa: E402

UNDERSTOOD = {"GGA", "RMC", "GNS", "GLL", "VTG", "GSA", "ZDA"}
WEEKS_1024 = 1024 * 7 * 86400
LATLON_TOL = 0.5e-6 + 1e-9  # ours is rounded to 1e-6, gpsd prints 9 decimals
ALT_TOL = 0.01
SPEED_TOL = 0.001
TRACK_TOL = 0.001

# Logs whose fixes differ, and why: what gpsd or the receiver does that the parser does not.
EXCEPTIONS: dict[str, str] = {
    "mtk-3301.log": "a GGA with fix quality 0 ('fix not valid', the RMC of that second is void "
    "too) and 3 satellites: gpsd ignores the quality and reports a 2D fix; we report no fix",
    "tr737A+.log": "a GGA with fix quality 0 ('fix not valid', the RMC of that second is void "
    "too) and 4 satellites: gpsd ignores the quality and reports a 3D fix; we report no fix",
}


def _sentence_type(echo: str) -> str | None:
    if not echo.startswith("$"):
        return None
    address = echo[1:].split(",", 1)[0].split("*", 1)[0]
    if len(address) != 5 or address.startswith("P"):
        return None
    return address[2:] if address[2:] in UNDERSTOOD else None


def _gpsd_seconds(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() // 1)


def _differences(tpv: dict, p: Nmea) -> list[tuple]:
    diffs = []
    if tpv.get("mode") != p.mode and not (tpv.get("mode") == 0 and p.mode == 1):
        diffs.append(("mode", tpv.get("mode"), p.mode))
    if tpv.get("mode", 0) < 2:
        return diffs
    theirs = _gpsd_seconds(tpv["time"]) if "time" in tpv else None
    ours = p.unix_time()
    if theirs != ours and (ours is None or (theirs is not None and (theirs - ours) % WEEKS_1024)):
        diffs.append(("time", theirs, ours))
    for key, mine in (("lat", p.lat), ("lon", p.lon)):
        value = None if mine is None else mine / 1e6
        theirs_ = tpv.get(key)
        if (theirs_ is None) != (value is None) or (
            value is not None and abs(theirs_ - value) > LATLON_TOL
        ):
            diffs.append((key, tpv.get(key), value))
    alt = tpv.get("altMSL")
    if (alt is None) != (p.alt is None) or (alt is not None and abs(alt - p.alt) > ALT_TOL):
        diffs.append(("altMSL", alt, p.alt))
    for key, mine, tol in (("speed", p.speed, SPEED_TOL), ("track", p.track, TRACK_TOL)):
        if mine is not None and (tpv.get(key) is None or abs(tpv[key] - mine) > tol):
            diffs.append((key, tpv.get(key), mine))
    return diffs


def compare_log(name: str) -> dict:
    """Feed NAME.log to a fresh parser; compare with NAME.log.chk. Returns the tally and the
    first mismatches."""
    lines = [raw for raw in (CORPUS / name).read_bytes().split(b"\n") if not raw.startswith(b"#")]
    texts = [raw.decode("latin-1") for raw in lines]
    chk = (CORPUS / (name + ".chk")).read_bytes().decode("utf-8", "replace").split("\n")
    parser = Nmea()
    fed = 0
    echo = ""
    echo_type = None
    aligned = False
    tally = {"tpv_compared": 0, "tpv_with_position": 0, "mismatches": 0, "unaligned": 0}
    tally["acceptance"] = 0
    tally["first"] = []
    for entry in (c.strip() for c in chk):
        if not entry:
            continue
        if entry.startswith("{"):
            if not aligned or echo_type is None:
                continue
            try:
                report = json.loads(entry)
            except ValueError:
                continue
            if report.get("class") != "TPV":
                continue
            tally["tpv_compared"] += 1
            tally["tpv_with_position"] += "lat" in report
            diffs = _differences(report, parser)
            if diffs:
                tally["mismatches"] += 1
                if len(tally["first"]) < 5:
                    tally["first"].append((echo, diffs))
            continue
        echo = entry
        echo_type = _sentence_type(echo)
        # The echo is the next log line holding this sentence; gpsd's byte-stream lexer also
        # reassembles a sentence split by another one, which a line parser cannot.
        at = next((i for i in range(fed, len(texts)) if echo in texts[i]), None)
        aligned = at is not None
        if not aligned:
            if echo_type is not None:
                tally["unaligned"] += 1
                tally["mismatches"] += 1
            continue
        while fed < at:  # lines gpsd did not take
            _refused(tally, texts[fed], parser.feed(lines[fed]), None)
            fed += 1
        _refused(tally, texts[fed], parser.feed(lines[fed]), echo)
        fed += 1
    for raw, text in zip(lines[fed:], texts[fed:], strict=True):
        _refused(tally, text, parser.feed(raw), None)
    tally["counters"] = dict(parser.counters)
    return tally


@functools.cache
def _gpsd_talkers() -> frozenset[str]:
    """The talker IDs gpsd echoes anywhere in the corpus: its lexer knows a fixed list (IM,
    for one, is not on it) where the parser takes any two upper-case letters."""
    out = set()
    for chk in CORPUS.glob("*.chk"):
        for line in chk.read_bytes().split(b"\n"):
            if line.startswith(b"$") and len(line) > 3 and line[1] != ord("P"):
                out.add(line[1:3].decode("latin-1"))
    return frozenset(out)


def _refused(tally: dict, text: str, taken: str | None, echo: str | None) -> None:
    """A sentence gpsd refused (not echoed: bad or missing checksum, cut, binary) the parser
    must refuse, unless gpsd refused its talker; one gpsd took whole, of a type the parser
    understands, the parser must take."""
    gpsd_took = echo is not None and text.strip() == echo
    talker = text.strip()[1:3]
    if taken is not None and echo is None and talker in _gpsd_talkers():
        wrong = ("parser took a sentence gpsd refused", text.strip()[:100])
    elif taken is None and gpsd_took and _sentence_type(echo) is not None:
        wrong = ("parser refused a sentence gpsd took", echo[:100])
    else:
        return
    tally["mismatches"] += 1
    tally["acceptance"] += 1
    if len(tally["first"]) < 5:
        tally["first"].append(wrong)


LOGS = sorted(p.name for p in CORPUS.glob("*.log"))
_RESULTS: dict[str, dict] = {}


def test_the_corpus_is_beside_the_repo() -> None:
    assert CORPUS.is_dir(), f"gpsd corpus missing: expected it at {CORPUS}"
    assert len(LOGS) == 96, f"{len(LOGS)} logs in {CORPUS}, expected 96"


@pytest.mark.parametrize("name", LOGS)
def test_log_matches_gpsd(name: str) -> None:
    tally = compare_log(name)
    _RESULTS[name] = tally
    matched = tally["mismatches"] == 0
    if name in EXCEPTIONS:
        assert not matched, f"{name} now matches gpsd: remove it from EXCEPTIONS"
    else:
        assert matched, f"{name}: {tally['mismatches']} mismatches, e.g. {tally['first']}"


def test_at_least_95_percent_of_logs_match() -> None:
    assert CORPUS.is_dir(), f"gpsd corpus missing: expected it at {CORPUS}"
    assert set(EXCEPTIONS) <= set(LOGS)
    assert len(LOGS) - len(EXCEPTIONS) >= 0.95 * len(LOGS)
    results = {name: _RESULTS.get(name) or compare_log(name) for name in LOGS}
    summary = {
        "logs": len(results),
        "matched": sum(r["mismatches"] == 0 for r in results.values()),
        "tpv_compared": sum(r["tpv_compared"] for r in results.values()),
        "tpv_with_position": sum(r["tpv_with_position"] for r in results.values()),
        "mismatches": sum(r["mismatches"] for r in results.values()),
        "exceptions": EXCEPTIONS,
        "per_log": {
            n: {
                k: r[k]
                for k in (
                    "tpv_compared",
                    "tpv_with_position",
                    "mismatches",
                    "unaligned",
                    "counters",
                )
            }
            for n, r in results.items()
        },
    }
    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=1, sort_keys=True))
    print(
        f"\nNMEA corpus: {summary['matched']}/{summary['logs']} logs match gpsd, "
        f"{summary['tpv_compared']} TPV reports compared ({summary['tpv_with_position']} with a "
        f"position), {summary['mismatches']} mismatches "
        f"(in the {len(EXCEPTIONS)} listed exceptions); {SUMMARY}"
    )
    assert summary["matched"] == len(LOGS) - len(EXCEPTIONS)
