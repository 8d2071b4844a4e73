"""The real-board path in CI: the serial and labgrid targets run against virtual boards that
they reach only through their serial ports, as a bench reaches a real board.

    python -m hil_tests.plugin.ci --out build/test-output [serial] [labgrid]

For each run: a broker, `albatross vboard` started as separate processes (their console ptys
are all the tests get: no bench socket, no simulator API), a bench description pointing at the
ptys and the broker (bench.yaml; for labgrid an environment whose RawSerialPort is the pty and
whose ExternalPowerDriver is benches/vboard_relay.py, the virtual board's supply switch), then
`pytest --target serial|labgrid` on the target-agnostic tests. The boards start with the
image's default config: the plugin provisions device id and broker through the console.

Each run writes `junit-<run>.xml` and its logs under `<out>/hil-<run>/`; the exit status is
non-zero when a run fails, errors, or runs no test at all.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from host_tools.broker import Broker, start_broker

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RELAY = ROOT / "hil_tests" / "benches" / "vboard_relay.py"
START_S = 60.0  # `albatross vboard` up, its console path printed
RUN_TIMEOUT_S = 900  # a run that hangs fails make test instead of holding it up for ever
# What each run types at its boards. The serial run takes every test that does not need the
# simulator; the labgrid run, on two boards in parallel, the board tests (and the bench-file
# checks, whose labgrid example needs labgrid).
TESTS = {
    "serial": [
        "hil_tests/test_board.py",
        "hil_tests/test_console.py",
        "hil_tests/test_cli_golden_vboard.py",
    ],
    "labgrid": ["hil_tests/test_board.py", "hil_tests/test_bench_yaml.py"],
}
BOARDS = {"serial": 3, "labgrid": 2}
# Set at provisioning, as a bench sets a test run's cadence (docs/hil.md): the tests wait for
# readings, and at the default 60 s each wait would take a minute.
BENCH_CONFIG = {"interval_s": 5}
LABGRID_PYTHON = ROOT / ".venv" / "labgrid" / "bin" / "python"


@dataclass
class Run:
    name: str
    out: Path
    python: Path
    boards: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    consoles: list[str] = field(default_factory=list)
    workdirs: list[Path] = field(default_factory=list)
    summary: str = ""
    ok: bool = False


def start_vboard(run: Run, index: int) -> None:
    name = f"ci-{run.name}-{index}"
    workdir = run.out / name
    workdir.mkdir(parents=True, exist_ok=True)
    err = workdir / "vboard.stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "albatross"),
                "vboard",
                "--quiet",
                "--name",
                name,
                "--workdir",
                str(workdir),
                "--usb-port",
                "-1",
            ],  # fmt: skip
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    run.procs.append(proc)
    run.workdirs.append(workdir)
    deadline = time.monotonic() + START_S
    while True:
        text = err.read_text(errors="replace")
        found = re.search(r"^vboard: console (\S+)$", text, re.M)
        if found:
            run.consoles.append(found.group(1))
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start; see {err}:\n{text[-1500:]}")
        time.sleep(0.1)


def write_bench(run: Run, broker: Broker) -> list[str]:
    """The bench file and the pytest options that point at it."""
    if run.name == "serial":
        bench = {
            "broker": broker.url,
            "boot_timeout_s": 120,
            "boards": [
                {
                    "name": f"ci-serial-{i}",
                    "port": console,
                    "board": "unix_sim",
                    "modem": "sim7600",
                    "device_id": f"ci-serial-{i}-{os.getpid()}",
                    "power": "none",
                    "config": dict(BENCH_CONFIG),
                }
                for i, console in enumerate(run.consoles)
            ],
        }
        path = run.out / "bench.yaml"
        path.write_text(yaml.safe_dump(bench, sort_keys=False))
        return ["--target", "serial", "--bench", str(path)]
    relay = f"{sys.executable} {RELAY}"
    env = {
        "targets": {
            f"ci-labgrid-{i}": {
                "resources": {"RawSerialPort": {"port": console, "speed": 115200}},
                "drivers": {
                    "ExternalPowerDriver": {
                        "cmd_on": f"{relay} {workdir} on",
                        "cmd_off": f"{relay} {workdir} off",
                        "delay": 0.5,
                    }
                },
                "options": {
                    "albatross": {
                        "board": "unix_sim",
                        "modem": "sim7600",
                        "device_id": f"ci-labgrid-{i}-{os.getpid()}",
                        "config": dict(BENCH_CONFIG),
                    }
                },
            }
            for i, (console, workdir) in enumerate(zip(run.consoles, run.workdirs, strict=True))
        },
        "options": {"albatross_broker": broker.url, "albatross_boot_timeout_s": 120},
    }
    path = run.out / "env.yaml"
    path.write_text(yaml.safe_dump(env, sort_keys=False))
    return ["--target", "labgrid", "--lg-env", str(path)]


def junit_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: 0 for k in ("tests", "failures", "errors", "skipped")}
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


def skip_reasons(path: Path) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for skipped in ET.parse(path).getroot().iter("skipped"):
        why = (skipped.get("message") or "").removeprefix("Skipped: ")
        reasons[why] = reasons.get(why, 0) + 1
    return reasons


def execute(run: Run, log: Path, extra: list[str]) -> None:
    started = time.monotonic()
    junit = run.out.parent / f"junit-{run.name}.xml"
    junit.unlink(missing_ok=True)
    broker = start_broker(log_dir=run.out / "broker")
    try:
        for i in range(run.boards):
            start_vboard(run, i)
        options = write_bench(run, broker)
        if run.boards > 1:
            options += ["-n", str(run.boards)]
        cmd = [str(run.python), "-m", "pytest", *options, "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-o", f"junit_suite_name=hil-{run.name}",
               "-rs", *extra, *TESTS[run.name]]  # fmt: skip
        env = dict(os.environ, ALBATROSS_TEST_LOGS=str(run.out / "logs"))
        with log.open("w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            try:
                code = subprocess.run(
                    cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                    timeout=RUN_TIMEOUT_S, check=False,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                run.summary = f"hil-{run.name}: FAILED: still running after {RUN_TIMEOUT_S} s"
                return
    finally:
        stop(run)
        broker.stop()
    wall = time.monotonic() - started
    if not junit.exists():
        run.summary = f"hil-{run.name}: pytest exited {code} without a JUnit report; see {log}"
        return
    c = junit_counts(junit)
    ran = c["tests"] - c["skipped"]
    passed = ran - c["failures"] - c["errors"]
    run.summary = (
        f"hil-{run.name}: {c['tests']} tests on {run.boards} virtual board(s) reached only "
        f"through their serial ports: {passed} passed, {c['failures']} failed, {c['errors']} "
        f"errors, {c['skipped']} skipped; {wall:.0f} s; {junit}, {log}"
    )
    for why, n in skip_reasons(junit).items():
        run.summary += f"\n  skipped {n}: {why}"
    if ran == 0:
        run.summary += "\n  FAILED: no test ran"
    run.ok = code == 0 and ran > 0


def stop(run: Run) -> None:
    for proc in run.procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in run.procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.plugin.ci", description=__doc__)
    parser.add_argument("runs", nargs="*", help="serial, labgrid (default: both)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "test-output")
    parser.add_argument("--pytest", action="append", default=[], help="an extra pytest argument")
    args = parser.parse_args(argv)
    names = args.runs or ["serial", "labgrid"]
    unknown = sorted(set(names) - set(TESTS))
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}: choose serial, labgrid")
    runs = []
    for name in names:
        python = LABGRID_PYTHON if name == "labgrid" else Path(sys.executable)
        if not python.exists():
            print(f"hil-{name}: {python} missing (make labgrid)", file=sys.stderr)
            return 1
        out = (args.out / f"hil-{name}").resolve()
        out.mkdir(parents=True, exist_ok=True)
        runs.append(Run(name, out, python, BOARDS[name]))
    threads = []
    failed: list[str] = []

    def one(run: Run) -> None:
        try:
            execute(run, run.out / "pytest.log", args.pytest)
        except Exception as e:
            run.summary = f"hil-{run.name}: FAILED to run: {e}"

    for run in runs:
        threads.append(threading.Thread(target=one, args=(run,)))
        threads[-1].start()
    for t in threads:
        t.join()
    for run in runs:
        print(run.summary, flush=True)
        if not run.ok:
            failed.append(run.name)
            log = run.out / "pytest.log"
            if log.exists():
                print(f"--- {log} (last 80 lines)", flush=True)
                print("\n".join(log.read_text(errors="replace").splitlines()[-80:]), flush=True)
    if failed:
        print(f"FAILED: the {' and '.join(failed)} run(s) of the real-board path", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
