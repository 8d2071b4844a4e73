"""The modem compatibility report plugin (hil_tests/compat_report.py): one cell per dialect and
fault, pass/fail/skip as the tests ended, recovery times as the tests recorded them, written by
the controller also when the tests ran on pytest-xdist workers."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest

@pytest.mark.compat
@pytest.mark.parametrize("dialect", ["sim7600", "bg96"])
@pytest.mark.parametrize("fault", ["modem_hang", "modem_slow"])
def test_fault(dialect, fault, record_property):
    if (dialect, fault) == ("bg96", "modem_hang"):
        assert False, "did not recover"
    record_property("recovery_s", {"modem_hang": 20.0, "modem_slow": 1.5}[fault])

@pytest.mark.compat(fault="modem_registration_denied")
@pytest.mark.parametrize("dialect", ["sim7600"])
def test_denied(dialect):
    pytest.skip("needs a vboard bench")

def test_unrelated():
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_table_shows_each_cell(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makeconftest('pytest_plugins = ["hil_tests.compat_report"]')
    pytester.makepyfile(test_cells=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    report = pytester.path / "build" / "test-output" / "compatibility.md"
    result.stdout.fnmatch_lines([f"modem compatibility report: {report}"])
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in report.read_text().splitlines()
        if line.startswith("| modem_")
    }
    header = [line for line in report.read_text().splitlines() if line.startswith("| fault")]
    assert header == ["| fault | bg96 | sim7600 |"]
    assert rows == {
        "modem_hang": ["**FAIL**", "pass, 20.0 s"],
        "modem_registration_denied": ["not tested", "skipped (needs a vboard bench)"],
        "modem_slow": ["pass, 1.5 s", "pass, 1.5 s"],
    }


def test_a_session_without_cells_writes_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["hil_tests.compat_report"]')
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "build").exists()
    assert "compatibility report" not in result.stdout.str()
