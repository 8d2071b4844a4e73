"""`albatross gnss replay`, run as a user runs it (the installed command, in a subprocess), on
logs from the gpsd corpus; its fixes are checked against gpsd's own reports in the .chk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "gpsd-nmea"
ALBATROSS = Path(sys.executable).with_name("albatross")


def albatross(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ALBATROSS), *args], input=stdin, capture_output=True, cwd=REPO, timeout=60
    )


def gpsd_fixes(name: str) -> dict[str, dict]:
    """gpsd's TPV reports with a position and a time, by time (the last one of each)."""
    out = {}
    for line in (CORPUS / f"{name}.chk").read_text(errors="replace").split("\n"):
        if line.startswith('{"class":"TPV"'):
            tpv = json.loads(line)
            if "lat" in tpv and "time" in tpv:
                out[tpv["time"]] = tpv
    return out


def test_json_fixes_agree_with_gpsd() -> None:
    assert CORPUS.is_dir(), f"gpsd corpus missing: expected it at {CORPUS}"
    for name, at_least in (("nmea-fuzzy-cases.log", 14), ("ublox-neo-m9n-nmea.log", 60)):
        result = albatross("gnss", "replay", str(CORPUS / name), "--json")
        assert result.returncode == 0, result.stderr
        ours = [json.loads(line) for line in result.stdout.decode().splitlines()]
        theirs = gpsd_fixes(name)
        assert len(ours) >= at_least, name
        compared = 0
        for fix in ours:
            assert fix["class"] == "TPV" and fix["mode"] in (2, 3)
            tpv = theirs.get(fix["time"])
            if tpv is None:
                continue
            compared += 1
            assert tpv["mode"] == fix["mode"], (name, fix, tpv)
            assert abs(tpv["lat"] - fix["lat"]) <= 0.5e-6 + 1e-9, (name, fix, tpv)
            assert abs(tpv["lon"] - fix["lon"]) <= 0.5e-6 + 1e-9, (name, fix, tpv)
            assert abs(tpv["altMSL"] - fix["altMSL"]) < 0.01, (name, fix, tpv)
            if "speed" in fix:
                assert abs(tpv["speed"] - fix["speed"]) < 0.001, (name, fix, tpv)
        assert compared >= at_least, (name, compared)
        summary = result.stderr.decode().strip().splitlines()[-1]
        assert summary.startswith("sentences ") and f"fixes {len(ours)}" in summary


def test_text_output_and_stdin() -> None:
    log = (CORPUS / "nmea-fuzzy-cases.log").read_bytes()
    result = albatross("gnss", "replay", "-", stdin=log)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("2020-03-18T13:28:20.600Z mode 3 lat   41.574970 lon  -93.750559")
    # 28 sentences, all GGA/RMC with good checksums: 14 epochs with a fix
    assert lines[-1] == (
        "sentences 28, taken 28, bad checksum 0, malformed 0, unknown 0, fixes 14"
    )
    assert len(lines) == 15


def test_bad_checksums_are_counted_not_reported() -> None:
    log = (CORPUS / "nmea-fuzzy-cases.log").read_bytes()
    broken = log.replace(b"*7E", b"*7F")  # two GGA sentences end in *7E
    result = albatross("gnss", "replay", "-", stdin=broken)
    assert result.returncode == 0
    assert "bad checksum 2," in result.stdout.decode().splitlines()[-1]


def test_missing_file_is_one_error_line() -> None:
    result = albatross("gnss", "replay", "no-such-dir/no.log")
    assert result.returncode == 2
    err = result.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "no.log" in err[0] and "Traceback" not in result.stderr.decode()
    assert result.stdout == b""
