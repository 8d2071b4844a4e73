"""Virtual boards for the `vboard` target: the factory behind the `vboard` fixture and the
log files to read when one of them fails."""

from __future__ import annotations

import itertools
from pathlib import Path

from host_tools.broker import Broker
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard

_ids = itertools.count(1)


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
        self.boards.append(vb)  # before start: a board that fails to start still reports
        vb.start()
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
