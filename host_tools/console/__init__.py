"""The host side of the technician command line (docs/console.md): a scripted session
(session.py), config and provisioning over it, and `albatross console`, a terminal."""

from host_tools.console.protocol import CliError
from host_tools.console.session import CliSession, open_session

__all__ = ["CliError", "CliSession", "open_session"]
