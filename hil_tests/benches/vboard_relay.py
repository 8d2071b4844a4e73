"""The power relay of a virtual board: `python vboard_relay.py WORKDIR on|off` switches the
supply of the `albatross vboard` whose --workdir is WORKDIR, as a relay's command line
switches a real board's (bench.yaml `power: {on: ..., off: ...}`, labgrid's
ExternalPowerDriver). The CI's labgrid run uses it; nothing else of the bench is reachable."""

from __future__ import annotations

import sys

from host_tools.vboard.bench_client import BenchClient
from host_tools.vboard.bench_server import BenchError


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("on", "off"):
        print("usage: vboard_relay.py WORKDIR on|off", file=sys.stderr)
        return 2
    try:
        BenchClient(argv[0]).call("power", on=argv[1] == "on")
    except BenchError as e:
        print(f"vboard_relay: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
