"""Console figures of `make bench` (issue 8): how quickly the technician's command line answers
while the tracker reports every second, and the RAM it adds.

Latency, through the board's console pty as a terminal sees it: keystroke to echo, and Enter
to the end of a command's answer (`config get interval_s`, `status`), each against the same
measurement at the board's MicroPython REPL (no app running) as the baseline.

RAM, on the ESP32-faithful runtime with the app as .mpy and frozen: three boards side by side
in the standard scenario (simulated SIM7600, 1 s interval): the app without the console task,
with it but never used, and after a technician ran commands (the command module is imported
at the first Enter); the live heap each reports in its status messages.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import serial

from host_tools.broker import Broker
from host_tools.mqtt_watch import MqttWatch
from host_tools.vboard.modem import Timings
from host_tools.vboard.runner import VirtualBoard

PROMPT = b"albatross> "
# main.py variants: the app without its console task (the RAM baseline).
NO_CONSOLE_MAIN = b"""import tracker.app as app
_run = app.Tracker.run
async def _without_console(self, console=False):
    await _run(self, False)
app.Tracker.run = _without_console
app.run()
"""


def _board(broker: Broker, work: Path, name: str, runtime: str, files: tuple = ()) -> VirtualBoard:
    vb = VirtualBoard(
        name=name,
        workdir=work / name,
        config={
            "broker_host": broker.host,
            "broker_port": broker.port,
            "device_id": name,
            "interval_s": 1,
            "status_interval_s": 10,
        },
        runtime=runtime,
        modem="sim7600",
        modem_timings=Timings.fast(),
        files=files,
    )
    return vb


class Pty:
    """The console as a terminal program holds it."""

    def __init__(self, path: str) -> None:
        self.port = serial.serial_for_url(path, baudrate=115200, timeout=0)
        self.buf = b""

    def drain(self) -> None:
        time.sleep(0.05)
        self.port.read(65536)
        self.buf = b""

    def until(self, marker: bytes, timeout: float = 10.0) -> float:
        """Read until `marker` arrives; the moment it did."""
        end = time.monotonic() + timeout
        while marker not in self.buf:
            data = self.port.read(4096)
            if data:
                self.buf += data
                continue
            if time.monotonic() > end:
                raise TimeoutError(f"{marker!r} not seen within {timeout} s: {self.buf[-200:]!r}")
            time.sleep(0.0005)
        now = time.monotonic()
        self.buf = self.buf[self.buf.index(marker) + len(marker) :]
        return now

    def keystroke_ms(self, ch: bytes) -> float:
        self.drain()
        t0 = time.monotonic()
        self.port.write(ch)
        return (self.until(ch) - t0) * 1000

    def answer_ms(self, line: bytes, end: bytes) -> float:
        self.drain()
        t0 = time.monotonic()
        self.port.write(line + b"\r")
        return (self.until(end) - t0) * 1000

    def close(self) -> None:
        self.port.close()


def _stats(values: list[float]) -> dict:
    values = sorted(values)
    return {
        "median_ms": statistics.median(values),
        "p95_ms": values[int(len(values) * 0.95) - 1] if len(values) >= 20 else max(values),
        "n": len(values),
    }


def latency(broker: Broker, work: Path, runtime: str, n: int) -> dict:
    vb = _board(broker, work, f"lat-{runtime}", runtime)
    with vb:
        vb.wait_console("I uplink: connected", 90)
        term = Pty(vb.console_path)
        try:
            term.port.write(b"\r")
            term.until(PROMPT)
            echo = [term.keystroke_ms(b"~") for _ in range(n)]
            term.port.write(b"\x15")  # Ctrl-U: clear the line of ~
            get = [term.answer_ms(b"config get interval_s", b"interval_s = 1.0") for _ in range(n)]
            status = [term.answer_ms(b"status", b"memory errors") for _ in range(max(5, n // 4))]
            # The baseline: the same board's REPL, the app stopped.
            term.port.write(b"\x03")
            term.until(b">>> ")
            repl_echo = [term.keystroke_ms(b"1") for _ in range(n)]
            term.port.write(b"\x15\x03")
            term.until(b">>> ")
            repl_eval = [term.answer_ms(b"print('ok' + 'ay')", b"okay") for _ in range(n)]
        finally:
            term.close()
    out = {
        "runtime": runtime,
        "keystroke_to_echo": _stats(echo),
        "config_get_answer": _stats(get),
        "status_answer": _stats(status),
        "repl_keystroke_to_echo": _stats(repl_echo),
        "repl_print_answer": _stats(repl_eval),
    }
    out["echo_over_repl"] = out["keystroke_to_echo"]["median_ms"] / max(
        out["repl_keystroke_to_echo"]["median_ms"], 1e-6
    )
    out["config_get_over_repl_print"] = out["config_get_answer"]["median_ms"] / max(
        out["repl_print_answer"]["median_ms"], 1e-6
    )
    return out


def _heap_used(watch: MqttWatch, since: float) -> list[int]:
    return [
        m.json["heap"]["used"]
        for m in watch.messages
        if m.topic.endswith("/status") and m.json.get("state") == "online" and m.at >= since
    ]


def _ram_board(broker: Broker, work: Path, runtime: str, kind: str, seconds: float) -> dict:
    files = (("main.py", NO_CONSOLE_MAIN),) if kind == "no_console" else ()
    vb = _board(broker, work, f"ram-{kind}-{runtime}", runtime, files)
    watch = MqttWatch(broker.url, f"albatross/{vb.name}/#")
    try:
        with vb:
            vb.wait_console("I uplink: connected", 90)
            if kind == "used":
                term = Pty(vb.console_path)
                try:
                    term.port.write(b"\r")
                    term.until(PROMPT)
                    for cmd, end in ((b"help", b"REPL"), (b"status", b"memory errors"),
                                     (b"config show", b"temperature_offset_c = ")):  # fmt: skip
                        term.answer_ms(cmd, end)
                finally:
                    term.close()
            settled = time.monotonic() + 12  # the next status after the commands
            time.sleep(seconds)
            used = _heap_used(watch, settled)
            boots = vb.supervisor.status()["boots"]
    finally:
        watch.close()
    return {"kind": kind, "runtime": runtime, "heap_used": used, "boots": boots,
            "median_used": statistics.median(used) if used else None}  # fmt: skip


def ram(broker: Broker, work: Path, runtime: str, seconds: float) -> dict:
    kinds = ("no_console", "idle", "used")
    with ThreadPoolExecutor(max_workers=3) as pool:
        rows = list(pool.map(lambda k: _ram_board(broker, work, runtime, k, seconds), kinds))
    by = {r["kind"]: r for r in rows}
    base = by["no_console"]["median_used"]

    def added(kind: str) -> int | None:
        m = by[kind]["median_used"]
        return None if m is None or base is None else int(m - base)

    return {"runtime": runtime, "boards": rows, "console_task_bytes": added("idle"),
            "after_commands_bytes": added("used")}  # fmt: skip


def run(broker: Broker, work: Path, *, quick: bool = False) -> dict:
    n = 20 if quick else 60
    seconds = 25.0 if quick else 45.0
    print(f"bench: console latency ({n} keystrokes) and RAM", flush=True)
    return {
        "latency": latency(broker, work, "esp32", n),
        "ram": [ram(broker, work, r, seconds) for r in ("esp32", "esp32-frozen")],
    }


def summary(r: dict) -> str:
    lat = r["latency"]
    lines = [
        f"console ({lat['runtime']}, tracker reporting every 1 s):",
        f"  keystroke -> echo:        {lat['keystroke_to_echo']['median_ms']:6.1f} ms median, "
        f"{lat['keystroke_to_echo']['p95_ms']:6.1f} p95  "
        f"({lat['echo_over_repl']:.1f}x the REPL's "
        f"{lat['repl_keystroke_to_echo']['median_ms']:.1f})",
        f"  config get -> answer:     {lat['config_get_answer']['median_ms']:6.1f} ms median "
        f"({lat['config_get_over_repl_print']:.1f}x a REPL print: "
        f"{lat['repl_print_answer']['median_ms']:.1f})",
        f"  status -> answer:         {lat['status_answer']['median_ms']:6.1f} ms median "
        "(reads signal and operator from the modem)",
    ]
    for row in r["ram"]:
        lines.append(
            f"  RAM on {row['runtime']:12s}: console task {row['console_task_bytes']} B, "
            f"after commands {row['after_commands_bytes']} B (vs the app without it)"
        )
    return "\n".join(lines)
