"""HIL suite plugin: targets, a real broker, virtual boards, and an MQTT watcher.

Targets: `--target vboard` (default: virtual boards with full fault injection) or
`--target serial` (a board reached only through its serial port and the broker). Tests that
need the bench (fault injection, setting sensor values) are marked `bench` and are skipped on
targets that can't inject.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.broker import Broker, start_broker
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard

_ids = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        default="vboard",
        choices=("vboard", "serial"),
        help="what the HIL tests run against",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--target") == "vboard":
        return
    skip = pytest.mark.skip(reason="needs a vboard bench (fault injection, sensor control)")
    for item in items:
        if "bench" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def log_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("ALBATROSS_TEST_LOGS")
    if root:
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("hil-logs")


@pytest.fixture(scope="session")
def broker(log_root: Path) -> Iterator[Broker]:
    with start_broker(log_dir=log_root / "broker") as b:
        yield b


@pytest.fixture
def mqtt(broker: Broker) -> Iterator[MqttWatch]:
    watch = MqttWatch(broker.url)
    yield watch
    watch.close()


class VboardFactory:
    def __init__(self, broker: Broker, log_root: Path, test_name: str) -> None:
        self.broker = broker
        self.log_root = log_root
        self.test_name = test_name
        self.boards: list[VirtualBoard] = []

    def __call__(
        self, *, interval: float = 1, modem: str = "none", **kwargs: object
    ) -> VirtualBoard:
        """A started vboard. modem: "none" (host TCP) or a simulator dialect, which runs with
        Timings.fast() so a test waits seconds, not a real modem's minutes."""
        n = next(_ids)
        device_id = str(kwargs.pop("device_id", f"hil-{n}"))
        config = {
            "broker_host": self.broker.host,
            "broker_port": self.broker.port,
            "device_id": device_id,
            "interval_s": interval,
        }
        config.update(kwargs.pop("config", {}))  # type: ignore[arg-type]
        # Short: the bench's AF_UNIX sockets live here (paths < ~100 bytes); the test's name
        # goes into a file beside the logs instead.
        workdir = self.log_root / device_id
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "test.txt").write_text(self.test_name + "\n")
        if modem != "none":
            kwargs.setdefault("modem_timings", Timings.fast())
        # No GNSS unless a test asks (gnss="modem"|"uart"): a moving asset adds readings and
        # AT traffic that the other scenarios do not count on.
        kwargs.setdefault("gnss", "none")
        vb = VirtualBoard(name=device_id, workdir=workdir, config=config, modem=modem, **kwargs)  # type: ignore[arg-type]
        vb.device_id = device_id  # type: ignore[attr-defined]
        vb.start()
        self.boards.append(vb)
        return vb

    def stop_all(self) -> None:
        for vb in self.boards:
            vb.stop()


def logs_of(vb: VirtualBoard) -> str:
    """The files to read when a vboard test fails."""
    names = ["console.log", "vboard.log", "i2c.log"]
    if vb.modem:
        names.append(f"at-{vb.modem}.jsonl")
    return ", ".join(str(vb.workdir / n) for n in names)


@pytest.fixture
def vboard(
    broker: Broker, log_root: Path, request: pytest.FixtureRequest
) -> Iterator[VboardFactory]:
    if request.config.getoption("--target") != "vboard":
        pytest.skip("this test starts its own virtual boards")
    factory = VboardFactory(broker, log_root, request.node.name)
    yield factory
    factory.stop_all()
