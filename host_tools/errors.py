"""Errors that are the user's or the environment's, not bugs: the CLI prints them as one line."""

from __future__ import annotations


def _collect() -> tuple[type[BaseException], ...]:
    from host_tools.broker import BrokerError
    from host_tools.console.protocol import CliError
    from host_tools.deploy import DeployError
    from host_tools.flash.errors import FlashError
    from host_tools.flash_layout import LayoutError
    from host_tools.image import ImageError
    from host_tools.remote import RemoteError
    from host_tools.vboard.bench import BenchError
    from host_tools.vboard.runtime import RuntimeUnavailable
    from host_tools.vboard.runtime.build import RuntimeBuildError
    from host_tools.vboard.supervisor import VboardError

    return (
        BrokerError,
        CliError,
        DeployError,
        FlashError,
        ImageError,
        LayoutError,
        RemoteError,
        BenchError,
        VboardError,
        RuntimeUnavailable,
        RuntimeBuildError,
        ValueError,
        OSError,
    )


EXPECTED_ERRORS = _collect()
