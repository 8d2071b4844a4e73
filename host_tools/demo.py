"""`make demo`: a real broker, one virtual tracker, and its telemetry shown live."""

from __future__ import annotations

import signal
import sys
import threading
import time

from host_tools.broker import start_broker
from host_tools.monitor import format_message, subscribe
from host_tools.vboard.runner import VirtualBoard
from host_tools.vboard.supervisor import parse_size


class ConsoleLines:
    """The firmware's own log lines from the console, shown indented under the telemetry."""

    def __init__(self) -> None:
        self._buf = b""

    def __call__(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if line[:2] in ("I ", "W ", "E "):
                print(f"         device | {line}", flush=True)


def run_demo(
    *, seconds: float | None, interval: int = 2, heap: str | None = None, modem: str = "board"
) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with start_broker() as broker:
        print(f"demo: {broker.kind} broker at {broker.url}", flush=True)
        client = subscribe(broker.url, lambda t, p: print(format_message(t, p), flush=True))
        vb = VirtualBoard(
            name="demo-tracker",
            config={
                "broker_host": broker.host,
                "broker_port": broker.port,
                "device_id": "demo-tracker",
                "interval_s": interval,
            },
            heap=parse_size(heap) if heap else None,  # None: the board's module's heap
            temperature=4.0,
            humidity=55.0,
            modem=modem,
            echo=ConsoleLines(),
        )
        vb.start()
        print(f"demo: runtime {vb.runtime.describe()}, heap {vb.heap} B", flush=True)
        print(
            f"demo: modem {vb.modem or 'none (host TCP)'}; AT transcript in {vb.workdir}",
            flush=True,
        )
        if vb.gnss_source and vb.motion is not None:
            print(
                f"demo: GNSS from {vb.gnss_source}, the asset drives {vb.motion.route.name} "
                f"({vb.motion.route.length_m / 1000:.1f} km); park it with "
                "`.venv/bin/albatross bench demo-tracker gnss park`",
                flush=True,
            )
        print(
            f"demo: virtual tracker console at {vb.console_path} "
            f"(try: mpremote connect {vb.console_path} repl)",
            flush=True,
        )
        print(
            "demo: change it live from another terminal, e.g. "
            "`.venv/bin/albatross bench demo-tracker set temperature=-18`",
            flush=True,
        )
        print("demo: Ctrl-C to stop", flush=True)
        started = time.monotonic()
        try:
            while not stop.wait(0.2):
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
        finally:
            vb.stop()
            client.loop_stop()
            client.disconnect()
    print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(seconds=float(sys.argv[1]) if len(sys.argv) > 1 else None))
