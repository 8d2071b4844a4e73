"""How many examples the big fuzz runs take: all of them in `make test`, a tenth in
`make test-quick` (ALBATROSS_FUZZ_SCALE=0.1), which then stays a quick check."""

from __future__ import annotations

import os


def examples(n: int) -> int:
    scale = float(os.environ.get("ALBATROSS_FUZZ_SCALE") or 1)
    return max(50, int(n * scale))
