"""The modem compatibility report: which faults each modem dialect recovers from, and how fast.

A pytest plugin (registered by the repo-root conftest.py). Tests that make a cell of the table
carry `@pytest.mark.compat(dialect=..., fault=...)`: each value is the name of one of the
test's parameters, or a fixed text (a test that covers one fault only). The test records its
recovery time with `record_property(RECOVERY, seconds)`.

Works under pytest-xdist: the cell and the figures travel in `report.user_properties`, the
controller collects them in `pytest_runtest_logreport` and writes
`build/test-output/compatibility.md` at the end of the session (workers write nothing), and
names the file in the terminal summary. A session without such tests leaves the file alone.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

CELL = "compat_cell"  # user property: JSON {"dialect": ..., "fault": ...}
RECOVERY = "recovery_s"  # user property: seconds from the fault's end to the 2nd report
REPORT_PATH = Path("build") / "test-output" / "compatibility.md"


@dataclass
class Cell:
    outcomes: dict[str, str] = field(default_factory=dict)  # nodeid -> passed|failed|skipped
    recovery_s: list[float] = field(default_factory=list)  # from passed tests only
    skip_reasons: set[str] = field(default_factory=set)

    @property
    def outcome(self) -> str:
        seen = set(self.outcomes.values())
        for worst in ("failed", "passed", "skipped"):
            if worst in seen:
                return worst
        return "not run"


class CompatReport:
    def __init__(self, rootpath: Path) -> None:
        self.path = rootpath / REPORT_PATH
        self.cells: dict[tuple[str, str], Cell] = {}
        self.written: Path | None = None

    # -- hooks (the controller's instance only) ----------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.add(report)

    def pytest_sessionfinish(self) -> None:
        self.write()

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if self.written is not None:
            terminalreporter.write_line(f"modem compatibility report: {self.written}")

    # -- the table ---------------------------------------------------------------------------

    def add(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if CELL not in props:
            return
        where = json.loads(props[CELL])
        cell = self.cells.setdefault((where["dialect"], where["fault"]), Cell())
        before = cell.outcomes.get(report.nodeid)
        if report.failed:
            cell.outcomes[report.nodeid] = "failed"
        elif report.skipped and before is None:
            cell.outcomes[report.nodeid] = "skipped"
            cell.skip_reasons.add(_skip_reason(report))
        elif report.when == "call" and report.passed and before is None:
            cell.outcomes[report.nodeid] = "passed"
        if report.when == "call" and report.passed and RECOVERY in props:
            cell.recovery_s.append(float(props[RECOVERY]))

    def markdown(self) -> str:
        dialects = sorted({d for d, _ in self.cells})
        faults = sorted({f for _, f in self.cells})
        lines = [
            "# Modem compatibility",
            "",
            "Each fault injected into each simulated modem dialect on a virtual board: whether",
            "the fault showed its effect (in the simulator's counters and in the tracker's",
            "status), the tracker recovered by itself and no reading was lost; and the recovery",
            "time: seconds from the fault's end to the second report after it (median when",
            "several runs). A fault ends when the test switches it off; a one-shot fault (peer",
            "close, PDP drop) when it is injected; a hung modem when the tracker's power cycle",
            "cures it.",
            "",
            "| fault | " + " | ".join(dialects) + " |",
            "|---|" + "---|" * len(dialects),
        ]
        for fault in faults:
            row = [self._text(self.cells.get((d, fault))) for d in dialects]
            lines.append(f"| {fault} | " + " | ".join(row) + " |")
        counts: dict[str, int] = {}
        for cell in self.cells.values():
            counts[cell.outcome] = counts.get(cell.outcome, 0) + 1
        summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines += ["", f"{summary}. Written {stamp}."]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _text(cell: Cell | None) -> str:
        if cell is None:
            return "not tested"
        outcome = cell.outcome
        if outcome == "passed":
            if cell.recovery_s:
                return f"pass, {statistics.median(cell.recovery_s):.1f} s"
            return "pass"
        if outcome == "failed":
            return "**FAIL**"
        if outcome == "skipped":
            reasons = "; ".join(sorted(r for r in cell.skip_reasons if r))
            return f"skipped ({reasons})" if reasons else "skipped"
        return outcome

    def write(self) -> Path | None:
        if not self.cells:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".md.tmp")
        tmp.write_text(self.markdown())
        tmp.replace(self.path)
        self.written = self.path
        return self.path


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ").replace("|", "/")
    return ""


def _cell_of(item: pytest.Item) -> dict[str, str] | None:
    marker = item.get_closest_marker("compat")
    if marker is None:
        return None
    params = getattr(item, "callspec", None)
    values = params.params if params is not None else {}
    out = {}
    for axis in ("dialect", "fault"):
        name = marker.kwargs.get(axis, axis)
        out[axis] = str(values.get(name, name))
    return out


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "compat(dialect=, fault=): a cell of the modem compatibility report; each value "
        "names a parameter of the test or is the fixed text of the cell",
    )
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        config.pluginmanager.register(CompatReport(config.rootpath), "compat-report")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    # Every phase's report names its cell, also for a test skipped or failed in setup
    # (before it could record anything itself).
    cell = _cell_of(item)
    if cell is not None and not any(name == CELL for name, _ in item.user_properties):
        item.user_properties.append((CELL, json.dumps(cell, sort_keys=True)))
    return (yield)
