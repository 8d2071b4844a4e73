"""HIL suite: registers the plugin in hil_tests/plugin/ (targets vboard, serial, labgrid; the
`board`, `vboard`, `broker`, `mqtt` and `log_root` fixtures; failure reports). See docs/hil.md.

`from hil_tests.conftest import VboardFactory, logs_of` keeps working for the tests."""

from __future__ import annotations

from hil_tests.plugin.core import *  # noqa: F403  the plugin's hooks and fixtures
from hil_tests.plugin.core import VboardFactory, logs_of

__all__ = ["VboardFactory", "logs_of"]
