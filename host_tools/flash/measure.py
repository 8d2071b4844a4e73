"""Flashing figures on simulated ESP32s (host_tools/vboard/esp32rom on socket://, paced at
the line's rate): write throughput against the line's limit, and a tray against one board
at a time. `python -m host_tools.flash.measure [--boards 3] [--bauds 115200,921600]`"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from host_tools import flash_layout as fl
from host_tools.flash.flasher import FlashReport, flash_board
from host_tools.flash.fleet import DeviceRow, fleet_flash
from host_tools.flash.payload import Payload, build_payload
from host_tools.vboard.esp32rom import Esp32Chip, FlashFile, RomLoader, serve_tcp

BOARD = "esp32_generic_sim7600"


@contextlib.contextmanager
def boards(tmp: Path, n: int, tag: str):
    with contextlib.ExitStack() as stack:
        urls = []
        for i in range(n):
            flash = stack.enter_context(FlashFile(tmp / f"{tag}-{i}.bin", 4 << 20))
            loader = RomLoader(flash, Esp32Chip.for_board(f"0000000000{i:02x}"))
            urls.append(stack.enter_context(serve_tcp(loader)).url)
        yield urls


def throughput(tmp: Path, payloads: dict[str, Payload], bauds: list[int]) -> None:
    print("write stage of `albatross flash` (esptool write_flash, compressed, stub):")
    print(
        f"{'image':16} {'baud':>7} {'image B':>8} {'wire B':>7} {'write s':>7} "
        f"{'wire B/s':>8} {'line B/s':>8} {'of line':>7} {'image B/s':>9} {'run s':>6}"
    )
    for name, payload in payloads.items():
        for baud in bauds:
            with boards(tmp, 1, f"tp-{name}-{baud}") as (url,):
                r = flash_board(url, payload, baud=baud, boot_timeout=0)
            assert r.result == "ok", r.error
            wire = r.wire_bytes / (r.write_s or 1)
            line = baud / 10
            print(
                f"{name:16} {baud:7} {r.bytes_written:8} {r.wire_bytes:7} {r.write_s:7.2f} "
                f"{wire:8.0f} {line:8.0f} {wire / line:7.0%} {r.throughput or 0:9.0f} "
                f"{r.seconds:6.1f}"
            )


def fleet(tmp: Path, payload: Payload, n: int, baud: int) -> None:
    with boards(tmp, n, f"seq-{baud}") as urls:
        t = time.monotonic()
        seq: list[FlashReport] = [
            flash_board(u, payload, device_id=f"seq-{i}", baud=baud, boot_timeout=0)
            for i, u in enumerate(urls)
        ]
        sequential = time.monotonic() - t
    with boards(tmp, n, f"par-{baud}") as urls:
        rows = [DeviceRow(i + 2, u, None, f"par-{i}") for i, u in enumerate(urls)]
        t = time.monotonic()
        par, _ = fleet_flash(
            urls, rows, payload, tmp / f"report-{baud}", baud=baud, boot_timeout=0
        )
        parallel = time.monotonic() - t
    assert all(r.result == "ok" for r in seq + par), [r.error for r in seq + par]
    print(
        f"fleet of {n} at {baud}: sequential {sequential:.1f} s, parallel {parallel:.1f} s, "
        f"speed-up {sequential / parallel:.2f}x (ideal {n}x)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m host_tools.flash.measure")
    p.add_argument("--boards", type=int, default=3)
    p.add_argument("--bauds", default="115200,921600")
    args = p.parse_args(argv)
    bauds = [int(b) for b in args.bauds.split(",")]
    with tempfile.TemporaryDirectory(prefix="albatross-measure-") as name:
        tmp = Path(name)
        firmware = tmp / "ESP32_GENERIC-standin.bin"
        firmware.write_bytes(fl.standin_firmware())
        payloads = {
            "littlefs 2 MB": build_payload(BOARD, tmp / "lfs"),
            "full flash 4 MB": build_payload(BOARD, tmp / "full", firmware=firmware),
        }
        throughput(tmp, payloads, bauds)
        for baud in bauds:
            fleet(tmp, payloads["full flash 4 MB"], args.boards, baud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
