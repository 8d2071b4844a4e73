"""`albatross fleet flash`: a tray of boards at once, one thread per port.

devices.csv says what each board gets: a header row, then one row per board with
  port       the board's serial port, or
  mac        its MAC (aa:bb:cc:dd:ee:ff), which wins when a row has both;
  device_id  its id (empty: the firmware's default, "alb-" + the MAC in hex);
and any other column a config key for that board (checked against the firmware's schema).
A board with no row fails (nothing is written to it): a tray slot nobody planned for is a
mistake to see, not a board to give a made-up id.

The report (fleet-report.json and fleet-report.csv) has one row per board: port, MAC,
device id, MicroPython and app versions, result, stage and error, seconds. A rerun reads
the JSON report first and skips a board whose MAC holds the same image and config
(image_sha256, config_sha256) from a run that ended well: it is only reset."""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from host_tools.console import values
from host_tools.console.protocol import CliError
from host_tools.flash import errors as fe
from host_tools.flash.flasher import FlashReport, flash_board
from host_tools.flash.payload import Payload, check_device_id
from host_tools.flash.progress import bar, human_bytes

REPORT_JSON = "fleet-report.json"
REPORT_CSV = "fleet-report.csv"
CSV_COLUMNS = (
    "port",
    "mac",
    "device_id",
    "micropython",
    "app",
    "result",
    "stage",
    "error",
    "seconds",
    "image_sha256",
    "config_sha256",
)


@dataclass
class DeviceRow:
    line: int
    port: str | None
    mac: str | None
    device_id: str | None
    config: dict = field(default_factory=dict)


def _mac(text: str) -> str:
    raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError
    return raw.hex(":")


def read_devices(path: Path) -> list[DeviceRow]:
    """The rows of devices.csv, every value checked (ValueError naming file and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    if not ({"port", "mac"} & set(columns)):
        raise ValueError(f"{path}: needs a port or a mac column (header: {', '.join(columns)})")
    for name in columns:
        if name not in ("port", "mac", "device_id"):
            try:
                values.check_key(name)
            except CliError as e:
                raise ValueError(f"{path}: column {name}: {e}") from None
    rows: list[DeviceRow] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(reader, start=2):
        cells = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(cells.values()):
            continue
        row = DeviceRow(n, cells.get("port") or None, None, cells.get("device_id") or None)
        try:
            row.mac = _mac(cells["mac"]) if cells.get("mac") else None
        except ValueError:
            raise ValueError(f"{path} line {n}: {cells['mac']!r} is not a MAC") from None
        if row.port is None and row.mac is None:
            raise ValueError(f"{path} line {n}: neither port nor mac")
        if row.device_id:
            try:
                check_device_id(row.device_id)
            except ValueError as e:
                raise ValueError(f"{path} line {n}: {e}") from None
        for name, value in cells.items():
            if name in ("port", "mac", "device_id") or value == "":
                continue
            try:
                row.config[name] = values.check(name, value)  # typed, as the device stores it
            except CliError as e:
                raise ValueError(f"{path} line {n}: {e}") from None
        for key in (f"port {row.port}", f"mac {row.mac}", f"device_id {row.device_id}"):
            if key.endswith(" None"):
                continue
            if key in seen:
                raise ValueError(f"{path} line {n}: {key} is already on line {seen[key]}")
            seen[key] = n
        rows.append(row)
    return rows


class Assignments:
    """Which row a board gets: by its MAC first, else by its port."""

    def __init__(self, rows: list[DeviceRow]) -> None:
        self.by_mac = {r.mac: r for r in rows if r.mac}
        self.by_port = {r.port: r for r in rows if r.port and not r.mac}

    def for_board(self, port: str) -> Callable[[bytes], tuple[str | None, dict]]:
        def assign(mac: bytes) -> tuple[str | None, dict]:
            row = self.by_mac.get(bytes(mac).hex(":")) or self.by_port.get(port)
            if row is None:
                raise fe.FlashError(
                    f"no row in devices.csv for port {port} or MAC {bytes(mac).hex(':')}",
                    stage="provision",
                )
            return row.device_id, dict(row.config)

        return assign


def load_report(out_dir: Path) -> list[dict]:
    path = out_dir / REPORT_JSON
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        return list(data["devices"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: not a fleet report ({e}); move it away to start afresh"
        ) from None


def already_done(previous: list[dict]) -> Callable[[FlashReport], bool]:
    done = {
        (r.get("mac"), r.get("image_sha256"), r.get("config_sha256"))
        for r in previous
        if r.get("result") in ("ok", "skipped")
    }

    def skip(report: FlashReport) -> bool:
        return (report.mac, report.image_sha256, report.config_sha256) in done

    return skip


def write_report(out_dir: Path, previous: list[dict], reports: list[FlashReport]) -> list[dict]:
    """This run's rows over the previous report's (a board is its MAC, or its port when it
    never answered); written as JSON and CSV. Returns the rows."""
    rows: dict[str, dict] = {}
    for r in previous:
        rows[r.get("mac") or f"port {r.get('port')}"] = r
    run_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for rep in reports:
        row = rep.to_json()
        row["run_at"] = run_at
        if rep.mac:
            rows.pop(f"port {rep.port}", None)
        rows[rep.mac or f"port {rep.port}"] = row
    out = sorted(rows.values(), key=lambda r: (str(r.get("port")), str(r.get("mac"))))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_JSON).write_text(json.dumps({"devices": out}, indent=1, sort_keys=True))
    with open(out_dir / REPORT_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in out:
            writer.writerow({k: row.get(k) for k in CSV_COLUMNS})
    return out


class TrayLines:
    """One line per port. On a terminal the block of lines is redrawn in place (at most
    ten times a second); elsewhere (a log, CI) a line is printed when a board ends a stage."""

    def __init__(self, ports: list[str], stream: TextIO | None = None) -> None:
        self.ports = ports
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = max(len(p) for p in ports)
        self.state = {p: "waiting" for p in ports}
        self.lock = threading.Lock()
        self.drawn = False
        self.last = 0.0

    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        up = f"\x1b[{len(self.ports)}A" if self.drawn else ""
        lines = "".join(f"\r\x1b[K{p:{self.width}}  {self.state[p]}\n" for p in self.ports)
        self.stream.write(up + lines)
        self.stream.flush()
        self.drawn = True

    def stage(self, port: str, stage: str, text: str) -> None:
        with self.lock:
            self.state[port] = f"{stage:9} {text}"
            if self.tty:
                self._redraw(force=True)
            else:
                self.stream.write(f"fleet: {port:{self.width}}  {stage:9} {text}\n")
                self.stream.flush()

    def progress(self, port: str, stage: str, done: int, total: int) -> None:
        if not self.tty:
            return
        with self.lock:
            self.state[port] = f"{stage:9} {bar(done, total)}  {human_bytes(done)}"
            self._redraw()


def fleet_flash(
    ports: list[str],
    rows: list[DeviceRow],
    payload: Payload,
    out_dir: Path,
    *,
    baud: int = 921600,
    boot_timeout: float = 60.0,
    connect_attempts: int = 7,
    lines: TrayLines | None = None,
) -> tuple[list[FlashReport], list[dict]]:
    """Flash every port at once, one thread each; a board's failure is its row's, never
    the others'. Returns this run's reports and the report's rows (also written)."""
    if len(set(ports)) != len(ports):
        raise ValueError("a port is given twice in --ports")
    previous = load_report(out_dir)
    skip = already_done(previous)
    plan = Assignments(rows)
    reports: dict[str, FlashReport] = {}

    def one(port: str) -> None:
        def stage(name: str, text: str) -> None:
            if lines is not None:
                lines.stage(port, name, text)

        def moved(name: str, done: int, total: int) -> None:
            if lines is not None:
                lines.progress(port, name, done, total)

        try:
            rep = flash_board(
                port,
                payload,
                assign=plan.for_board(port),
                baud=baud,
                boot_timeout=boot_timeout,
                connect_attempts=connect_attempts,
                skip=skip,
                on_stage=stage,
                on_progress=moved,
            )
        except Exception as e:  # a bug: this board's row says so, the others go on
            traceback.print_exc()
            rep = FlashReport(port=port, board=payload.board, stage="bug", error=repr(e))
        reports[port] = rep
        if lines is not None:
            if rep.result == "failed":
                lines.stage(port, "FAILED", f"at {rep.stage}: {rep.error}")
            else:
                lines.stage(port, rep.result, f"{rep.device_id} in {rep.seconds:.1f} s")

    threads = [threading.Thread(target=one, args=(p,), name=f"flash {p}") for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [reports[p] for p in ports]
    return done, write_report(out_dir, previous, done)
