"""Test-session header: which MicroPython the firmware tests and virtual boards run on."""

from __future__ import annotations

# The rootdir conftest: plugins for the whole suite (a non-root conftest may not list them).
pytest_plugins = ["hil_tests.compat_report"]


def pytest_collection_modifyitems(items: list) -> None:
    """The long scenarios first (`slow`, then the other `hil` tests), each group in its
    usual order: `make test` hands tests out one at a time (pytest-xdist --maxschedchunk 1),
    so the long ones start early on every worker instead of one of them ending the run alone.
    """

    def rank(item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("hil") else 2

    items.sort(key=rank)


def pytest_report_header() -> list[str]:
    from host_tools.vboard import runtime as rt

    try:
        runtime = rt.resolve()
    except rt.RuntimeUnavailable as e:
        return [f"micropython runtime: unavailable ({e})"]
    return [f"micropython runtime: {runtime.describe()} ({runtime.path})"]
