"""`BenchClient`: drives a running bench through its control socket (protocol: bench_server.py).

Used by tests, `albatross bench` and scripts; needs nothing of the bench but the socket path.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from host_tools.vboard.bench_server import CONTROL_SOCKET, MAX_CONTROL_LINE, BenchError


class BenchClient:
    """Talks to a running bench's control socket (from tests, `albatross bench`, scripts)."""

    def __init__(self, target: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        """`target`: the vboard's workdir, or the control socket's path."""
        p = Path(target)
        if p.is_dir() or not (p.is_socket() or p.suffix == ".sock"):
            p = p / CONTROL_SOCKET
        self.path = p
        self.timeout = timeout

    def call(self, cmd: str, /, **args: Any) -> dict[str, Any]:
        """Send one command; return the reply without "ok". Raises BenchError."""
        if "cmd" in args:
            raise BenchError(f'{cmd}: "cmd" cannot be an argument')
        try:
            request = json.dumps({"cmd": cmd, **args}, allow_nan=False).encode() + b"\n"
        except (TypeError, ValueError) as e:
            raise BenchError(f"{cmd}: arguments not sendable as JSON: {e}") from None
        if not os.path.exists(self.path):  # before connect(): it may not take a long path
            raise BenchError(f"no bench at {self.path}: is the virtual board running?")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(request)
                with s.makefile("rb") as f:
                    line = f.readline(MAX_CONTROL_LINE * 16)
        except (FileNotFoundError, ConnectionRefusedError):
            raise BenchError(f"no bench at {self.path}: is the virtual board running?") from None
        except TimeoutError:
            msg = f"bench at {self.path} did not answer in {self.timeout:g} s"
            raise BenchError(msg) from None
        except OSError as e:
            raise BenchError(f"bench at {self.path}: {e}") from None
        if not line:
            raise BenchError(f"bench at {self.path} closed the connection without a reply")
        try:
            reply = json.loads(line)
        except ValueError:
            raise BenchError(f"bench at {self.path} sent a bad reply: {line[:200]!r}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else None
            raise BenchError(error or f"bench refused {cmd!r}")
        reply.pop("ok")
        return reply

    def set(self, **values: float) -> dict[str, Any]:
        return self.call("set", **values)

    def fault(self, name: str, on: bool = True, /, **params: Any) -> dict[str, Any]:
        for key in ("name", "on"):
            if key in params:
                raise BenchError(f"fault {name}: {key!r} cannot be a parameter")
        return self.call("fault", name=name, on=on, **params)

    def faults(self) -> dict[str, Any]:
        return self.call("faults")["faults"]

    def snapshot(self) -> dict[str, Any]:
        return self.call("snapshot")

    def transactions(self, last: int = 50) -> list[dict[str, Any]]:
        return self.call("log", last=last)["transactions"]
