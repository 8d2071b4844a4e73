"""Serve a simulated ESP32 in download mode for esptool, or measure flashing throughput.

python -m host_tools.vboard.esp32rom serve --flash flash.bin [--size 4MB] [--uid HEX]
python -m host_tools.vboard.esp32rom throughput [--kib 64] [--bauds 115200,921600]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools.vboard.esp32rom import Esp32Chip, FlashFile, RomLoader, serve_tcp

SIZES = {"2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}


def serve(args: argparse.Namespace) -> int:
    size = SIZES[args.size]
    with FlashFile(args.flash, size) as flash:
        loader = RomLoader(flash, Esp32Chip.for_board(args.uid, size))
        with serve_tcp(loader, args.port) as server:
            print(f"esp32rom: download mode on {server.url}", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0


def write_rate(url: str, src: Path, baud: int, stub: bool) -> tuple[float, float]:
    """esptool write-flash --no-compress of `src`: the rate esptool reports (bytes/s) and
    the wall time of the whole run (connect, stub upload, write, verify)."""
    cmd = [sys.executable, "-m", "esptool", "--chip", "esp32", "--port", url, "--before"]
    cmd += ["no-reset", "--after", "no-reset", "--baud", str(baud)]
    cmd += ([] if stub else ["--no-stub"]) + ["write-flash", "--no-compress", "0x10000", str(src)]
    t = time.monotonic()
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env=dict(os.environ, NO_COLOR="1")
    ).stdout
    wall = time.monotonic() - t
    kbit = re.search(r"\(([\d.]+) kbit/s\)", out)
    if kbit is None:
        raise RuntimeError(f"no rate in esptool's output:\n{out}")
    return float(kbit.group(1)) * 1000 / 8, wall


def throughput(args: argparse.Namespace) -> int:
    # Incompressible, so that the rate is the line's and not zlib's.
    data = b"\x00" + random.Random(1).randbytes(args.kib * 1024 - 1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "random.bin"
        src.write_bytes(data)
        with FlashFile(Path(tmp) / "flash.bin", 4 << 20) as flash:
            loader = RomLoader(flash, Esp32Chip.for_board("a1b2c3d4e5f6"))
            with serve_tcp(loader) as server:
                print(f"write-flash of {len(data)} random bytes at 0x10000, esptool 5.6.0")
                print(
                    f"{'loader':8} {'mode':12} {'baud':>7} {'B/s':>8} {'line B/s':>9} "
                    f"{'of line':>8} {'run s':>6}"
                )
                for baud in (int(b) for b in args.bauds.split(",")):
                    for stub in (True, False):
                        rate, wall = write_rate(server.url, src, baud, stub)
                        label = "stub" if stub else "rom"
                        mode = "raw"
                        limit = baud / 10
                        print(
                            f"{label:8} {mode:12} {baud:7} {rate:8.0f} {limit:9.0f} "
                            f"{rate / limit:8.0%} {wall:6.1f}"
                        )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m host_tools.vboard.esp32rom")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve one simulated ESP32 on socket://127.0.0.1:PORT")
    s.add_argument("--flash", type=Path, required=True, help="flash image file (made if new)")
    s.add_argument("--size", choices=sorted(SIZES), default="4MB")
    s.add_argument("--uid", default="a1b2c3d4e5f6", help="board uid; the MAC derives from it")
    s.add_argument("--port", type=int, default=0)
    t = sub.add_parser("throughput", help="esptool write-flash rates against the line's limit")
    t.add_argument("--kib", type=int, default=64)
    t.add_argument("--bauds", default="115200,921600")
    args = p.parse_args(argv)
    return serve(args) if args.cmd == "serve" else throughput(args)


if __name__ == "__main__":
    sys.exit(main())
