"""bench.yaml and the labgrid environment as an operator writes them (docs/hil.md): the
examples load, every mistake is one line naming the file and the key, and pytest says so
before touching a board (as it does for more xdist workers than boards)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hil_tests.plugin import benchfile

BENCHES = Path(__file__).parent / "benches"
EXAMPLE = BENCHES / "example.yaml"
ROOT = Path(__file__).resolve().parents[1]


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_example_bench_loads_as_documented() -> None:
    bench = benchfile.load(EXAMPLE)
    assert [b.name for b in bench.boards] == ["desk-1", "desk-2"]
    desk1, desk2 = bench.boards
    assert (desk1.port, desk1.board, desk1.modem, desk1.apn) == (
        "/dev/ttyUSB0",
        "esp32_generic_sim7600",
        "sim7600",
        "iot.example",
    )
    assert desk1.device_id == "hil-desk-1" and desk1.power.kind == "none"
    assert desk1.broker == "mqtt://broker.example.net:1883" and bench.boot_timeout_s == 180
    assert desk2.device_id == "hil-desk-2"  # the default: hil-<name>
    assert desk2.power == benchfile.PowerSpec(
        kind="command", on="uhubctl -l 1-1 -p 2 -a on", off="uhubctl -l 1-1 -p 2 -a off", off_s=2
    )
    assert desk2.config == {"interval_s": 10}


def _set(data: dict, dotted: str, value: object) -> dict:
    node = data
    *path, last = dotted.split(".")
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

MISTAKES = [
    ("boot_timeout_s", "3 min", "boot_timeout_s: expected a number of seconds > 0, got '3 min'"),
    ("brokr", "mqtt://x", "brokr: unknown key (known: boards, boot_timeout_s, broker)"),
    ("broker", "http://x:80", "broker: bad broker URL 'http://x:80': expected mqtt://HOST:PORT"),
    ("boards", [], "boards: expected a list of one or more boards, got []"),
    ("boards.0.modem", "sim800", "boards[0].modem: expected one of sim7600, a7670, bg96, none"),
    ("boards.0.board", "esp8266", "boards[0].board: no board folder 'esp8266' (known: "),
    ("boards.0.port", _DELETE, "boards[0].port: missing (the board's serial port or URL)"),
    ("boards.0.port", 3, "boards[0].port: expected a non-empty string, got 3"),
    ("boards.0.prot", "/dev/x", "boards[0].prot: unknown key (known: board, broker, config,"),
    ("boards.1.power", "relay", "boards[1].power: expected none or {on: CMD, off: CMD}"),
    ("boards.1.power", {"off": "relay 1 off"}, "boards[1].power.on: missing"),
    ("boards.1.power", {"on": "a", "off": "b", "off_s": -1}, "boards[1].power.off_s: expected"),
    ("boards.1.power", {"on": "a", "off": "'b"}, "boards[1].power.off: not a shell command"),
    ("boards.0.sim.apn", "a" * 64, "boards[0].sim.apn: apn must be"),
    ("boards.0.sim.pin", "1234", "boards[0].sim.pin: unknown key (known: apn)"),
    ("boards.0.device_id", "my tracker", "boards[0].device_id: device_id may only contain"),
    ("boards.1.config.interval_s", 0, "boards[1].config.interval_s: interval_s must be a number"),
    ("boards.1.config.intervall_s", 5, 'boards[1].config.intervall_s: unknown key "intervall_s"'),
    (
        "boards.1.config.broker_port",
        1,
        "boards[1].config.broker_port: set it with boards[1].broker",
    ),
    ("boards.1.name", "desk-1", "boards[1].name: 'desk-1' is already boards[0]'s"),
]


@pytest.mark.parametrize(("key", "value", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_in_bench_yaml_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(_set(_example(), key, value)))
    with pytest.raises(benchfile.BenchError) as caught:
        benchfile.load(path)
    text = str(caught.value)
    assert "\n" not in text, text
    assert text.startswith(f"{path}: {message}"), text


def test_a_file_that_is_not_yaml_or_not_there_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text("boards:\n  - name: [desk\n")
    with pytest.raises(benchfile.BenchError, match=rf"^{path}: line \d+: "):
        benchfile.load(path)
    with pytest.raises(benchfile.BenchError, match="cannot read the bench file"):
        benchfile.load(tmp_path / "missing.yaml")


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-p",
            "no:cacheprovider",
            *args,
            "hil_tests/test_board.py",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pytest_refuses_a_bad_bench_and_more_workers_than_boards_before_any_board(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bench.yaml"
    bad.write_text(yaml.safe_dump(_set(_example(), "boards.0.modem", "sim800")))
    done = _pytest("--target", "serial", "--bench", str(bad))
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert f"ERROR: {bad}: boards[0].modem: expected one of" in done.stderr, done.stderr

    done = _pytest("--target", "serial", "--bench", str(EXAMPLE), "-n", "3")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "-n 3: 3 xdist workers but" in done.stderr and "has 2 board(s)" in done.stderr

    done = _pytest("--target", "serial")
    assert done.returncode == 4 and "--target serial needs --bench bench.yaml" in done.stderr

    # Without a board, the collection shows what each test would run on: nothing is opened.
    done = _pytest("--target", "serial", "--bench", str(EXAMPLE), "--board", "desk-2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "board desk-2: rfc2217://lab-pi.local:4001" in done.stdout
    assert "board desk-1" not in done.stdout
    # --port: a one-board bench's port (here one board picked of two).
    done = _pytest("--target", "serial", "--bench", str(EXAMPLE), "--port", "/dev/ttyACM3")
    assert done.returncode == 4 and "--port /dev/ttyACM3: " in done.stderr, done.stderr
    done = _pytest(
        "--target",
        "serial",
        "--bench",
        str(EXAMPLE),
        "--board",
        "desk-1",
        "--port",
        "/dev/ttyACM3",
    )
    assert done.returncode == 0 and "board desk-1: /dev/ttyACM3, " in done.stdout, done.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("labgrid") is None,
    reason="labgrid is not installed in this Python (make labgrid: .venv/labgrid)",
)
def test_the_example_labgrid_environment_gives_the_boards() -> None:
    done = _pytest(
        "--target", "labgrid", "--lg-env", str(BENCHES / "labgrid-env.yaml"), "--board", "desk-1"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    header = done.stdout
    assert "board desk-1: labgrid:desk-1, boards/esp32_generic_sim7600, modem sim7600" in header
    assert "power labgrid" in header
    done = _pytest("--target", "labgrid", "--lg-env", str(BENCHES / "labgrid-env.yaml"), "-n", "3")
    assert done.returncode == 4 and "has 2 board(s)" in done.stderr, done.stderr
