"""Test-session header: which MicroPython the firmware tests and virtual boards run on."""

from __future__ import annotations


def pytest_report_header() -> list[str]:
    from host_tools.vboard import runtime as rt

    try:
        runtime = rt.resolve()
    except rt.RuntimeUnavailable as e:
        return [f"micropython runtime: unavailable ({e})"]
    return [f"micropython runtime: {runtime.describe()} ({runtime.path})"]
