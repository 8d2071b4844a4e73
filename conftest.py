"""Test-session header: which MicroPython the firmware tests and virtual boards run on."""

from __future__ import annotations

# The rootdir conftest: plugins for the whole suite (a non-root conftest may not list them).
pytest_plugins = ["hil_tests.compat_report"]


def pytest_report_header() -> list[str]:
    from host_tools.vboard import runtime as rt

    try:
        runtime = rt.resolve()
    except rt.RuntimeUnavailable as e:
        return [f"micropython runtime: unavailable ({e})"]
    return [f"micropython runtime: {runtime.describe()} ({runtime.path})"]
