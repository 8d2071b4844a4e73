"""The HIL suite's pytest plugin: targets, the test broker, virtual boards, the `board`
fixture and failure reports. hil_tests/conftest.py registers it; docs/hil.md is the guide.

Targets (`--target`):
- `vboard` (default): a fresh virtual board per test, with the whole simulated bench.
- `serial --bench bench.yaml [--port P] [--board NAME]`: real boards on a bench, reached
  only through their serial console and the broker; provisioned once per session.
- `labgrid --lg-env env.yaml`: the same, with each board's serial port and power switch
  taken from a labgrid environment (hil_tests/plugin/labgrid_glue.py).

With pytest-xdist each worker takes its own board of the bench (gw0 the first, gw1 the
second, ...). Tests marked `bench` need the simulator (fault injection, sensor values) and
skip elsewhere; tests marked `power` need a power switch and skip on a bench without one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.console_kit import Console
from hil_tests.plugin import benchfile
from hil_tests.plugin.boards import Board, BoardError, PowerSwitch, SerialBoard, command_switch
from hil_tests.plugin.vboards import VboardFactory, logs_of
from host_tools.broker import Broker, start_broker
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.runner import VirtualBoard

TARGETS = ("vboard", "serial", "labgrid")
BOARDS_KEY = pytest.StashKey[list]()  # the boards a test used, for its failure report
VBOARD_BOOT_S = 30.0  # boot and birth over the host's TCP
VBOARD_MODEM_BOOT_S = 60.0  # through the simulated modem (fast timings)
BENCH_KEY = pytest.StashKey[benchfile.Bench]()  # the bench of a serial or labgrid run
BENCH_SKIP = "needs the simulator's bench (fault injection, sensor values): vboard target only"
VBOARD_SKIP = "this test starts its own virtual boards (--target vboard)"

__all__ = [
    "VboardFactory",
    "logs_of",
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "pytest_collection_modifyitems",
    "pytest_runtest_makereport",
    "log_root",
    "broker",
    "mqtt",
    "vboard",
    "bench_board",
    "board",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("albatross HIL")
    group.addoption(
        "--target",
        default="vboard",
        choices=TARGETS,
        help="what the HIL tests run against: vboard (default), serial (--bench), labgrid "
        "(--lg-env)",
    )
    group.addoption("--bench", help="bench.yaml describing the real boards (--target serial)")
    group.addoption(
        "--port", help="the board's serial port, overriding bench.yaml (a one-board bench)"
    )
    group.addoption(
        "--board",
        dest="hil_board",
        help="the bench board to use without xdist (default: the first)",
    )


def _target(config: pytest.Config) -> str:
    return config.getoption("--target")


def pytest_configure(config: pytest.Config) -> None:
    target = _target(config)
    if target == "vboard":
        return
    bench = _load_bench(config, target)
    config.stash[BENCH_KEY] = bench
    workers = _workers(config)
    if workers and workers > len(bench.boards):
        raise pytest.UsageError(
            f"-n {workers}: {workers} xdist workers but {bench.path} has "
            f"{len(bench.boards)} board(s); each worker takes its own board (gw0 the first), "
            f"so use -n {len(bench.boards)} or fewer"
        )


def _load_bench(config: pytest.Config, target: str) -> benchfile.Bench:
    try:
        if target == "labgrid":
            from hil_tests.plugin import labgrid_glue

            bench = labgrid_glue.bench_of(config)
        else:
            path = config.getoption("--bench")
            if not path:
                raise pytest.UsageError(
                    "--target serial needs --bench bench.yaml (see hil_tests/benches/"
                    "example.yaml and docs/hil.md)"
                )
            bench = benchfile.load(path)
        name = config.getoption("hil_board")
        if name:
            bench = benchfile.Bench(bench.path, [bench.board(name)], bench.boot_timeout_s)
        port = config.getoption("--port")
        if port:
            if len(bench.boards) != 1:
                raise pytest.UsageError(
                    f"--port {port}: {bench.path} has {len(bench.boards)} boards; give each "
                    "its port in the file (or pick one with --board NAME)"
                )
            bench.boards[0] = _with_port(bench.boards[0], port)
        return bench
    except benchfile.BenchError as e:
        raise pytest.UsageError(str(e)) from None


def _with_port(spec: benchfile.BoardSpec, port: str) -> benchfile.BoardSpec:
    from dataclasses import replace

    return replace(spec, port=port)


def _workers(config: pytest.Config) -> int | None:
    """How many xdist workers this run starts (None: no xdist), on the controller."""
    if hasattr(config, "workerinput"):
        return None  # a worker: the controller checked
    n = getattr(config.option, "numprocesses", None)
    if not n or getattr(config.option, "dist", "no") == "no":
        return None
    if n in ("auto", "logical"):
        return os.cpu_count() or 1
    return int(n)


def _worker_index(config: pytest.Config) -> int:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return 0
    return int(workerinput["workerid"].removeprefix("gw"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    target = _target(config)
    if target == "vboard":
        return ["hil target: vboard (a virtual board per test)"]
    bench = config.stash[BENCH_KEY]
    lines = [f"hil target: {target}, bench {bench.path}"]
    for spec in bench.boards:
        lines.append(
            f"  board {spec.name}: {spec.port or '(labgrid)'}, boards/{spec.board}, modem "
            f"{spec.modem or 'none'}, device {spec.device_id}, broker {spec.broker}, power "
            f"{spec.power.kind}"
        )
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _target(config) == "vboard":
        return
    bench = config.stash[BENCH_KEY]
    skip_bench = pytest.mark.skip(reason=BENCH_SKIP)
    for item in items:
        if "bench" in item.keywords:
            item.add_marker(skip_bench)
        elif "power" in item.keywords and len(bench.boards) == 1:
            spec = bench.boards[0]
            if spec.power.kind == "none":
                item.add_marker(
                    pytest.mark.skip(reason=f"needs a power switch; board {spec.name} has none")
                )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failing test's report names its boards and carries their console log, AT transcript
    and broker log (sections of the failure: in the terminal and in JUnit XML's <failure>)."""
    report = yield
    boards = item.stash.get(BOARDS_KEY, [])
    if report.failed and report.when in ("setup", "call") and boards:
        names = ", ".join(b.name for b in boards)
        item.user_properties.append(("boards", names))
        watch = item.funcargs.get("mqtt") if hasattr(item, "funcargs") else None
        sections = [s for b in boards for s in _sections(b, watch)]
        longrepr = report.longrepr
        if hasattr(longrepr, "addsection"):
            for title, text in sections:
                longrepr.addsection(title, text)
        else:
            for title, text in sections:
                report.sections.append((title, text))
    return report


def _sections(board: Board | VirtualBoard, watch: object) -> list[tuple[str, str]]:
    try:
        if isinstance(board, Board):
            return board.report_sections()
        return _vboard_sections(board, watch if isinstance(watch, MqttWatch) else None)
    except Exception as e:  # a report must not hide the test's own failure
        return [(f"board {board.name}: logs", f"could not be read: {e!r}")]


def _vboard_sections(vb: VirtualBoard, watch: MqttWatch | None) -> list[tuple[str, str]]:
    """A board of the `vboard` fixture: its console log, AT transcript and broker log."""
    from hil_tests.plugin.boards import _tail, broker_log_text

    out = [(f"board {vb.name}: console log", _tail(vb.console_text()))]
    if vb.modem:
        path = vb.workdir / f"at-{vb.modem}.jsonl"
        text = path.read_text(errors="replace") if path.exists() else "(empty)"
        out.append((f"board {vb.name}: AT transcript", f"{path}\n{_tail(text)}"))
    else:
        out.append((f"board {vb.name}: AT transcript", "(no modem: host TCP)"))
    device_id = str(vb.config.get("device_id") or vb.name)
    log = getattr(vb, "hil_broker_log", None)
    out.append((f"board {vb.name}: broker log", broker_log_text(device_id, watch, log)))
    return out


def _used(request: pytest.FixtureRequest, board: Board | VirtualBoard) -> None:
    request.node.stash.setdefault(BOARDS_KEY, []).append(board)


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def log_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("ALBATROSS_TEST_LOGS")
    if root:
        # One folder per pytest-xdist worker: each numbers its boards from hil-1.
        path = Path(root) / os.environ.get("PYTEST_XDIST_WORKER", "")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("hil-logs")


@pytest.fixture(scope="session")
def broker(log_root: Path, request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The test broker (vboard target; a real bench has its own, in bench.yaml)."""
    if _target(request.config) != "vboard":
        pytest.skip(VBOARD_SKIP)
    with start_broker(log_dir=log_root / "broker") as b:
        yield b


@pytest.fixture
def mqtt(broker: Broker) -> Iterator[MqttWatch]:
    watch = MqttWatch(broker.url)
    yield watch
    watch.close()


class _RecordingFactory(VboardFactory):
    """VboardFactory whose boards go into the test's failure report."""

    def __init__(self, request: pytest.FixtureRequest, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._request = request

    def __call__(self, **kwargs: object) -> VirtualBoard:
        before = len(self.boards)
        try:
            return super().__call__(**kwargs)  # type: ignore[arg-type]
        finally:
            for vb in self.boards[before:]:
                vb.hil_broker_log = self.broker.log_path  # type: ignore[attr-defined]
                _used(self._request, vb)


@pytest.fixture
def vboard(
    broker: Broker, log_root: Path, request: pytest.FixtureRequest
) -> Iterator[VboardFactory]:
    if _target(request.config) != "vboard":
        pytest.skip(VBOARD_SKIP)
    factory = _RecordingFactory(request, broker, log_root, request.node.name)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def bench_board(request: pytest.FixtureRequest, log_root: Path) -> Iterator[SerialBoard]:
    """This worker's bench board (serial and labgrid targets), provisioned once."""
    config = request.config
    bench = config.stash[BENCH_KEY]
    index = _worker_index(config)
    if index >= len(bench.boards):  # the controller checks -n; this is `-n auto` and the like
        raise pytest.UsageError(
            f"xdist worker gw{index} has no board: {bench.path} has {len(bench.boards)}"
        )
    spec = bench.boards[index]
    power: PowerSwitch | None = None
    if spec.power.kind == "command":
        power = command_switch(spec.name, spec.power)
    elif spec.power.kind == "labgrid":
        from hil_tests.plugin import labgrid_glue

        spec, power = labgrid_glue.attach(config, spec)
    try:
        sb = SerialBoard(spec, log_root / "boards" / spec.name, bench.boot_timeout_s)
    except Exception as e:
        pytest.fail(f"board {spec.name}: cannot open {spec.port}: {e}", pytrace=False)
    sb.set_power(power)
    try:
        sb.provision()
    except (BoardError, AssertionError) as e:
        sb.close()
        pytest.fail(f"board {spec.name} could not be provisioned: {e}", pytrace=False)
    yield sb
    sb.close()


@pytest.fixture
def board(request: pytest.FixtureRequest, log_root: Path) -> Iterator[Board]:
    """The board under test, online and reporting, on any target. Options come from the
    test's `board` mark: interval (s between readings), modem (True or a dialect), config."""
    mark = request.node.get_closest_marker("board")
    options = dict(mark.kwargs) if mark else {}
    unknown = set(options) - {"interval", "modem", "config"}
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.board: unknown option(s) {sorted(unknown)}")
    if _target(request.config) == "vboard":
        yield from _vboard_board(request, log_root, options)
    else:
        yield from _bench_board(request, options)


def _vboard_board(request: pytest.FixtureRequest, log_root: Path, options: dict) -> Iterator:
    broker_ = request.getfixturevalue("broker")
    watch = MqttWatch(broker_.url)
    factory = _RecordingFactory(request, broker_, log_root, request.node.name)
    modem = options.get("modem") or "none"
    if modem is True:
        modem = "sim7600"
    console = b = None
    try:
        vb = factory(
            interval=options.get("interval", 1), modem=modem, config=options.get("config", {})
        )
        console = Console(vb)
        power = PowerSwitch(
            "the virtual board's supervisor",
            off=lambda: vb.supervisor.power_off(),  # type: ignore[union-attr]
            on=lambda: vb.supervisor.power_on(),  # type: ignore[union-attr]
            off_s=0.2,
        )
        b = Board(
            target="vboard",
            name=vb.name,
            device_id=vb.device_id,  # type: ignore[attr-defined]
            console=console,
            mqtt=watch,
            broker_url=broker_.url,
            modem=vb.modem,
            boot_timeout_s=VBOARD_MODEM_BOOT_S if vb.modem else VBOARD_BOOT_S,
            bench=vb,
            power=power,
            broker_log=broker_.log_path,
            console_log=vb.workdir / "console.log",
            reopen=lambda: Console(vb),
        )
        request.node.stash[BOARDS_KEY] = [b]  # the Board's report, not the bare vboard's
        b.wait_online()
        yield b
    finally:
        current = b.console if b is not None else console
        if current is not None:
            current.close()
        factory.stop_all()
        watch.close()


def _bench_board(request: pytest.FixtureRequest, options: dict) -> Iterator:
    sb: SerialBoard = request.getfixturevalue("bench_board")
    b = sb.board
    if "power" in request.node.keywords and b.power is None:
        pytest.skip(f"needs a power switch; board {b.name} has none")
    modem = options.get("modem")
    if modem and not b.modem:
        pytest.skip(f"needs a modem; board {b.name} has none")
    if isinstance(modem, str) and modem != b.modem:
        pytest.skip(f"needs a {modem} modem; board {b.name} has {b.modem}")
    _used(request, b)
    values = dict(options.get("config", {}))
    if "interval" in options:
        values["interval_s"] = options["interval"]
    try:
        sb.restore()  # a test before may have failed half-way
        if values and sb.set_config(values):
            b.reboot()
    except (BoardError, AssertionError) as e:
        pytest.fail(f"board {b.name} is not ready: {e}", pytrace=False)
    yield b
    sb.restore()
