"""`albatross bench` as a user types it: every line of the README's "The bench from another
terminal" block, run against a virtual board started with `albatross vboard` (a subprocess,
reporting to a real broker), each checked by its exit status and by what another command
then shows (`snapshot`, `modem`, `status`, `gnss`, the board's own console, its AT
transcript). Bad input gives one line on stderr, exit status 2 and no traceback.

The lines are read from README.md, so the README and this test cannot drift: a new line there
needs a check here (`test_every_readme_bench_line_has_a_check`)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host_tools.broker import start_broker
from host_tools.vboard.bench_client import BenchClient, BenchError

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ALBATROSS = str(Path(sys.executable).with_name("albatross"))
README_NAME = "fridge-1"  # the board name the README's lines use
DIALECT = "sim7600"
START_S = 120.0  # the board up, its modem registered and its MQTT socket open
EFFECT_S = 60.0  # a change shows in what the board or the bench reports
# Values for the README's placeholders in [brackets].
PLACEHOLDERS = {"OFF_SECONDS": "0.5"}
# A route of its own for `gnss route my-trip.gpx`, far from the default Paris drive.
MY_TRIP = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test_bench_cli" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><name>my trip</name><trkseg>
    <trkpt lat="60.16990" lon="24.93840"><time>2025-06-14T06:30:00Z</time></trkpt>
    <trkpt lat="60.17100" lon="24.94100"><time>2025-06-14T06:31:00Z</time></trkpt>
    <trkpt lat="60.17300" lon="24.94500"><time>2025-06-14T06:32:00Z</time></trkpt>
  </trkseg></trk>
</gpx>
"""


# -- the README's lines -----------------------------------------------------------------------


def readme_bench_lines() -> list[str]:
    """The commands of the README's bench block, comments stripped, [a|b] and [PLACEHOLDER]
    expanded (the bare command, then each alternative)."""
    text = README.read_text(encoding="utf-8")
    heading = "### The bench from another terminal"
    assert heading in text, f"README.md has no section {heading!r}"
    block = text.split(heading, 1)[1].split("```", 2)[1]
    lines: list[str] = []
    for raw in block.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        optional = re.search(r"\s*\[([^\]]+)\]", line)
        if optional is None:
            lines.append(line)
            continue
        bare = line[: optional.start()] + line[optional.end() :]
        lines.append(bare)
        inner = optional.group(1)
        if "|" in inner:
            values = inner.split("|")
        else:
            assert inner in PLACEHOLDERS, f"README placeholder [{inner}] needs a value here"
            values = [PLACEHOLDERS[inner]]
        lines += [f"{bare} {value}" for value in values]
    return lines


def readme_words(line: str) -> list[str]:
    """`albatross bench fridge-1 OP ...` -> [OP, ...]."""
    words = shlex.split(line)
    assert words[:3] == ["albatross", "bench", README_NAME], f"not a bench line: {line!r}"
    return words[3:]


def typed(text: str) -> object:
    """What a KEY=VALUE means (the test's own reading, not the CLI's)."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    return text


def pairs(words: list[str]) -> dict[str, object]:
    return {k: typed(v) for k, _, v in (w.partition("=") for w in words)}


# -- the board, driven only through the command line ------------------------------------------


@dataclass
class Board:
    name: str
    runtime_dir: Path  # XDG_RUNTIME_DIR: where `albatross-vboards/NAME` goes
    env: dict[str, str]
    cwd: Path

    @property
    def workdir(self) -> Path:
        return self.runtime_dir / "albatross-vboards" / self.name

    def bench(self, words: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ALBATROSS, "bench", self.name, *words],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=60,
        )

    def ok(self, words: list[str]) -> dict[str, Any]:
        """Run `albatross bench NAME WORDS`; it must succeed; its JSON output."""
        r = self.bench(words)
        assert r.returncode == 0, f"bench {shlex.join(words)}: exit {r.returncode}: {r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
        return json.loads(r.stdout)

    def snapshot(self) -> dict[str, Any]:
        return self.ok(["snapshot"])

    def modem(self) -> dict[str, Any]:
        return self.ok(["modem"])

    def status(self) -> dict[str, Any]:
        return self.ok(["status"])

    def gnss(self) -> dict[str, Any]:
        return self.ok(["gnss"])

    def transcript_rx(self) -> str:
        """Everything the modem has sent the MCU, from the AT transcript in the workdir."""
        path = self.workdir / f"at-{DIALECT}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return "".join(r["data"] for r in rows if r["dir"] == "rx")

    def console(self, command: str) -> str:
        """`command` on the board's technician console (what `albatross console` types)."""
        from host_tools.console.session import open_session

        session = open_session(self.status()["console"], wake_timeout=15)
        try:
            return session.run(command, timeout=30)
        finally:
            session.close()


def until(what: str, probe: Callable[[], Any], ok: Callable[[Any], bool], deadline_s: float):
    """Poll `probe` until `ok(value)`; fail naming `what` and the last value otherwise."""
    end = time.monotonic() + deadline_s
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what}: not seen within {deadline_s:g} s; last: {value!r}")
        time.sleep(0.3)


def online(board: Board) -> None:
    until(
        "the board's MQTT socket open through the modem",
        lambda: board.modem()["sockets"],
        lambda sockets: "open" in sockets.values(),
        START_S,
    )


@pytest.fixture
def board() -> Iterator[Board]:
    broker = start_broker()
    runtime_dir = Path(tempfile.mkdtemp(prefix="alb-bcli-"))  # short: AF_UNIX paths
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)}
    b = Board(f"bcli-{os.getpid()}", runtime_dir, env, runtime_dir)
    (runtime_dir / "my-trip.gpx").write_text(MY_TRIP)
    log = (runtime_dir / "vboard.out").open("wb")
    proc = subprocess.Popen(
        [
            ALBATROSS,
            "vboard",
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--device-id",
            b.name,
            "--interval",
            "5",
            "--modem",
            DIALECT,
            "--gnss",
            "modem",
            "--usb-port",
            "-1",
            "--quiet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        until(
            "the vboard's bench answering `albatross bench NAME status`",
            lambda: b.bench(["status"]).returncode,
            lambda rc: rc == 0 or proc.poll() is not None,
            START_S,
        )
        assert proc.poll() is None, (runtime_dir / "vboard.out").read_text(errors="replace")
        yield b
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        broker.stop()
        shutil.rmtree(runtime_dir, ignore_errors=True)


# -- what each README line must visibly do ----------------------------------------------------
# Each check gets the board and the line's words; it runs the line itself (often between a
# before and an after), and puts back what it changed so the next line starts clean.


def check_set(b: Board, words: list[str]) -> None:
    wanted = pairs(words[1:])
    b.ok(words)
    snap = b.snapshot()
    keys = {"temperature": "temperature_c", "humidity": "humidity_pct", "battery": "battery_v"}
    assert {k: snap[keys[k]] for k in wanted} == pytest.approx(wanted)


def check_i2c_fault(b: Board, words: list[str]) -> None:
    fault, switch, params = words[1], words[2], pairs(words[3:])
    if switch == "off":
        b.ok(["fault", fault, "on"])
        assert b.snapshot()["faults"][fault]["on"] is True
        b.ok(words)
        assert b.snapshot()["faults"][fault]["on"] is False
        return
    before = b.snapshot()["sht4x"]["corrupted_replies"]
    b.ok(words)
    snap = b.snapshot()
    state = snap["faults"][fault]
    if fault == "i2c_crc" and "count" in params:
        # The firmware may have used some of the count already: used + left = asked for.
        used = snap["sht4x"]["corrupted_replies"] - before
        assert used + state.get("count", 0) == params["count"], (state, used)
    else:
        assert state["on"] is True, state
    if fault == "i2c_nack":
        assert state["addrs"] == [0x44] and snap["sht4x"]["faults"]["nack"] is True
    if fault == "i2c_stuck":
        assert snap["i2c"]["bus0"]["stuck"] is True
    b.ok(["fault", fault, "off"])
    snap = b.snapshot()
    assert snap["faults"][fault]["on"] is False
    assert snap["i2c"]["bus0"]["stuck"] is False


def check_gnss_fault(b: Board, words: list[str]) -> None:
    fault, params = words[1], pairs(words[3:])
    b.ok(words)
    assert b.snapshot()["faults"][fault] == {"on": True, **params}
    # The receiver itself has it (the modem's GNSS here).
    assert fault.removeprefix("gnss_") in b.gnss()["modem"]["faults"]
    b.ok(["fault", fault, "off"])
    assert b.snapshot()["faults"][fault] == {"on": False}


def check_modem_fault(b: Board, words: list[str]) -> None:
    fault, params = words[1], pairs(words[3:])
    sim_name = fault.removeprefix("modem_")
    if fault == "modem_status_inverted":  # a wiring fault of the bench, not the modem's
        b.ok(words)
        assert b.snapshot()["faults"][fault] == {"on": True}
        b.ok(["fault", fault, "off"])
        assert b.snapshot()["faults"][fault] == {"on": False}
        return
    if fault in ("modem_peer_close", "modem_pdp_drop"):
        # One-shot: the modem tells the MCU the socket / the data context is gone.
        urc = {
            "modem_peer_close": "+IPCLOSE: ",
            "modem_pdp_drop": "+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY",
        }[fault]
        if fault == "modem_peer_close":
            online(b)  # a socket open for the peer to close
        else:
            until("a data context up", lambda: b.modem()["pdp_active"], bool, START_S)
        before = b.transcript_rx().count(urc)
        b.ok(words)
        until(
            f"{urc!r} sent to the MCU",
            lambda: b.transcript_rx().count(urc),
            before.__lt__,
            EFFECT_S,
        )
        return
    b.ok(words)
    active = b.modem()["faults"]
    if fault == "modem_cme":
        rules = active["cme"]["rules"]
        assert rules == {params["command"]: params["code"]}
        assert type(rules[params["command"]]) is int  # code=100 is a number, not "100"
    else:
        assert sim_name in active, active
        for key, value in params.items():
            assert active[sim_name][key] == pytest.approx(value)
    if fault == "modem_deregister":
        until(
            "registration 2 (searching)", lambda: b.modem()["registration"], (2).__eq__, EFFECT_S
        )
    if fault == "modem_no_sim":
        until("registration 0 (no SIM)", lambda: b.modem()["registration"], (0).__eq__, EFFECT_S)
    b.ok(["fault", fault, "off"])
    active = b.modem()["faults"]
    assert sim_name not in active, active


REGISTRATION_CODES = {"not_registered": 0, "home": 1, "searching": 2, "denied": 3, "roaming": 5}


def check_registration(b: Board, words: list[str]) -> None:
    code = REGISTRATION_CODES[words[1]]
    b.ok(words)
    until(f"registration {code}", lambda: b.modem()["registration"], code.__eq__, EFFECT_S)
    b.ok(["registration", "home"])
    until("registration 1 (home)", lambda: b.modem()["registration"], (1).__eq__, EFFECT_S)


def check_signal(b: Board, words: list[str]) -> None:
    rssi = pairs(words[1:])["rssi"]
    b.ok(words)
    # The firmware asks the modem (AT+CSQ) when its console's `modem` runs: -113 + 2 * rssi.
    dbm = -113 + 2 * rssi  # type: ignore[operator]

    def firmware_rssi() -> str:
        online(b)
        out = b.console("modem")
        found = re.search(r"^rssi_dbm\s+(\S+)", out, re.M)
        return found.group(1) if found else out

    until(f"the console's modem showing rssi_dbm {dbm}", firmware_rssi, str(dbm).__eq__, EFFECT_S)


def check_modem(b: Board, words: list[str]) -> None:
    out = b.ok(words)
    assert out["dialect"] == DIALECT
    assert out["commands"].get("AT", 0) > 0  # the firmware has been talking to it
    assert "total" in out["delays"]


def check_snapshot(b: Board, words: list[str]) -> None:
    b.ok(["set", "temperature=-7.5"])
    out = b.ok(words)
    assert out["temperature_c"] == -7.5
    assert set(out["faults"]) >= {"i2c_crc", "modem_hang", "gnss_no_fix"}
    assert out["i2c"]["bus0"]["reads"] > 0  # the firmware reads the sensor


def check_status(b: Board, words: list[str]) -> None:
    out = b.ok(words)
    assert out["boots"] >= 1 and out["chip"] == "running"
    assert out["console"].startswith("/dev/")


RESET_NAMES = {"hard": "hard", "soft": "soft", "watchdog": "watchdog", "brownout": "brownout"}


def check_reset(b: Board, words: list[str]) -> None:
    kind = words[1] if len(words) > 1 else "hard"
    before = b.status()["resets"].get(kind, 0)
    b.ok(words)
    until(
        f"status counting a {kind} reset",
        lambda: b.status()["resets"].get(kind, 0),
        (before + 1).__eq__,
        EFFECT_S,
    )
    until("the board running again", lambda: b.status()["chip"], "running".__eq__, EFFECT_S)


def check_power_cut(b: Board, words: list[str]) -> None:
    before = b.status()
    b.ok(words)
    status = until(
        "status counting the power cut (a power-on reset and a new boot)",
        b.status,
        lambda s: (
            s["resets"].get("power_on", 0) == before["resets"].get("power_on", 0) + 1
            and s["boots"] > before["boots"]
        ),
        EFFECT_S,
    )
    assert status["last_reset"] == "power_on"
    # Counted as the bench's cut of the supply, not as a cut inside a flash operation.
    assert status["supply_cuts"] == before["supply_cuts"] + 1
    assert status["power_cuts"] == before["power_cuts"]
    until("the board running again", lambda: b.status()["chip"], "running".__eq__, EFFECT_S)


def check_gnss(b: Board, words: list[str]) -> None:
    out = b.ok(words)
    assert {"lat", "lon", "parked", "route"} <= set(out["truth"])
    assert "ttff_s" in out["modem"]


def check_gnss_park(b: Board, words: list[str]) -> None:
    assert b.gnss()["truth"]["parked"] is False
    b.ok(words)
    assert b.gnss()["truth"]["parked"] is True
    b.ok(["gnss", "drive"])
    assert b.gnss()["truth"]["parked"] is False


def check_gnss_route(b: Board, words: list[str]) -> None:
    assert (b.cwd / words[2]).is_file()  # run where the user's file is, as they would
    b.ok(words)
    truth = b.gnss()["truth"]
    assert truth["route"] == words[2]
    assert truth["lat"] == pytest.approx(60.17, abs=0.01)
    assert truth["lon"] == pytest.approx(24.94, abs=0.01)


# (pattern on the words after the name, check, phase): phases run in order, README order
# within one. Lines that need the modem online come first (the socket closed by the peer
# before the data context is dropped), the hung modem after the other modem faults, resets
# and power cuts last.
CHECKS: list[tuple[str, Callable[[Board, list[str]], None], int]] = [
    (r"signal rssi=\d+", check_signal, 0),
    (r"fault modem_peer_close on", check_modem_fault, 1),
    (r"fault modem_pdp_drop on", check_modem_fault, 2),
    (r"registration \w+", check_registration, 3),
    (r"fault modem_(deregister|no_sim) on", check_modem_fault, 3),
    (r"set( \w+=\S+)+", check_set, 4),
    (r"fault i2c_\w+ (on|off)( \w+=\S+)*", check_i2c_fault, 4),
    (r"fault gnss_\w+ on( \w+=\S+)*", check_gnss_fault, 4),
    (
        r"fault modem_(slow|garbage|urc_storm|cme|status_inverted) on( \w+=\S+)*",
        check_modem_fault,
        4,
    ),
    (r"modem", check_modem, 4),
    (r"snapshot", check_snapshot, 4),
    (r"status", check_status, 4),
    (r"gnss", check_gnss, 4),
    (r"gnss park", check_gnss_park, 4),
    (r"gnss route \S+\.gpx", check_gnss_route, 4),
    (r"fault modem_hang on", check_modem_fault, 5),
    (r"reset( \w+)?", check_reset, 6),
    (r"power-cut( \S+)?", check_power_cut, 6),
]


def check_for(line: str) -> tuple[Callable[[Board, list[str]], None], int]:
    rest = " ".join(readme_words(line))
    found = [(check, phase) for pattern, check, phase in CHECKS if re.fullmatch(pattern, rest)]
    assert len(found) == 1, f"README line {line!r}: {len(found)} checks match (want 1)"
    return found[0]


def test_every_readme_bench_line_has_a_check() -> None:
    lines = readme_bench_lines()
    assert len(lines) >= 30, lines  # the block was found and read whole
    for line in lines:
        check_for(line)
    # Every operation the CLI knows appears in the README.
    from host_tools.cli import BENCH_OPS

    assert {readme_words(line)[0] for line in lines} == set(BENCH_OPS)


# -- bad input -------------------------------------------------------------------------------

BAD_INPUT = [
    (["frobnicate"], "unknown bench operation 'frobnicate'"),
    (["fault", "modem_explode", "on"], "unknown fault 'modem_explode'"),
    (["fault", "i2c_crc", "on", "count"], "expected KEY=VALUE, got 'count'"),
    (["set", "temperature"], "expected KEY=VALUE, got 'temperature'"),
    (["fault", "i2c_crc", "maybe"], "expected on or off, got 'maybe'"),
    (["fault", "i2c_crc", "on", "count=three"], "count must be an integer"),
    (["fault", "modem_slow", "on", "delay_ms=fast"], "fault modem_slow: "),
    (["set", "temperature=warm"], "temperature must be a number, got 'warm'"),
    (["signal", "rssi=strong"], "rssi must be an integer, got 'strong'"),
    (["reset", "sideways"], "reset [hard|soft|watchdog|brownout]"),
    (["power-cut", "soon"], "OFF_SECONDS must be"),
    (["registration", "lost"], "bad registration state 'lost'"),
]


def one_line_error(r: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("albatross: "), r.stderr
    assert fragment in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.hil
def test_readme_bench_lines_work_as_typed_and_bad_input_is_refused(board: Board) -> None:
    """One board for everything (under pytest-xdist a second test could start a second)."""
    # Bad input first, while nothing else goes on: one line, exit status 2, and the board
    # as it was (read in-process here, quicker than a command per look).
    client = BenchClient(board.workdir)
    for words, fragment in BAD_INPUT:
        before, faults_before = client.call("status"), client.faults()
        try:
            one_line_error(board.bench(words), fragment)
        except AssertionError as e:
            raise AssertionError(f"albatross bench NAME {shlex.join(words)}: {e}") from e
        after = client.call("status")
        assert after["pid"] == before["pid"] is not None, words  # the board lives on, not reset
        assert after["resets"] == before["resets"], words
        assert client.faults() == faults_before, words
    # The Python API refuses a reset kind the chip has not, and the board lives on.
    before = client.call("status")
    with pytest.raises(BenchError, match="reset kind 'sideways'"):
        client.call("reset", kind="sideways")
    assert client.call("status")["pid"] == before["pid"]

    # Then every line of the README.
    lines = readme_bench_lines()
    plan = sorted(enumerate(lines), key=lambda item: (check_for(item[1])[1], item[0]))
    online(board)
    done = []
    for _, line in plan:
        check, _phase = check_for(line)
        try:
            check(board, readme_words(line))
        except (Exception, pytest.fail.Exception) as e:  # name the line that failed
            raise AssertionError(f"README line {line!r} (after {len(done)} others): {e}") from e
        done.append(line)
    assert len(done) == len(lines)


def test_a_board_that_is_not_running_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    r = subprocess.run(
        [ALBATROSS, "bench", "no-such-board", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    one_line_error(r, "is the virtual board running?")
    assert "no-such-board" in r.stderr
