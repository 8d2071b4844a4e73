"""One virtual board, assembled: flash image + bench (simulated peripherals) + supervisor.

`VirtualBoard` is what `albatross vboard`, the demo and the HIL suite all start.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from host_tools import image as img
from host_tools.broker import connect_url
from host_tools.vboard import esp32boot
from host_tools.vboard import runtime as rt
from host_tools.vboard.bench import Bench
from host_tools.vboard.gnss import DEFAULT_ROUTE, GnssSim, GnssTimings, Motion, NmeaReceiver
from host_tools.vboard.gnss.route import Route, RouteError
from host_tools.vboard.gnss_wiring import DEFAULT_UART, PIN_ENABLE, attach_gnss
from host_tools.vboard.modem.sim import DIALECTS, ModemSimulator, Timings
from host_tools.vboard.modem_wiring import attach_modem
from host_tools.vboard.supervisor import Supervisor, VboardError, parse_size
from host_tools.vboard.usb import UsbPort

DEFAULT_BOARD = "unix_sim"
GNSS_SOURCES = ("board", "uart", "modem", "none")


def parse_heap(text: str | None) -> int | None:
    """--heap: a size ('110k', '2M', bytes) or a board whose module's heap to take."""
    if not text:
        return None
    if (img.BOARDS_DIR / text / "board.json").is_file():
        heap = (img.board_info(text).get("ram") or {}).get("micropython_heap")
        if not heap:
            raise VboardError(f"board {text!r} states no ram.micropython_heap in its board.json")
        return int(heap)
    try:
        return parse_size(text)
    except VboardError as e:
        known = ", ".join(sorted(p.parent.name for p in img.BOARDS_DIR.glob("*/board.json")))
        raise VboardError(f"{e}, or a board ({known})") from None


def default_workdir(name: str) -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / "albatross-vboards" / name


def config_overrides(*, broker: str | None, device_id: str | None, interval: int | None) -> dict:
    values: dict = {}
    if broker:
        host, port = connect_url(broker)
        values.update(broker_host=host, broker_port=port)
    if device_id:
        values["device_id"] = device_id
    if interval is not None:
        values["interval_s"] = interval
    return values


def validate_config(values: dict) -> None:
    """Check CLI-given values against the firmware's own schema (the single source of truth)."""
    from host_tools.fwconfig import firmware_config

    config = firmware_config()
    cfg = config.Config()
    try:
        cfg.update(values)
    except config.ConfigError as e:
        raise VboardError(str(e)) from None


class VirtualBoard:
    def __init__(
        self,
        *,
        name: str = "vboard",
        workdir: Path | None = None,
        image: Path | None = None,
        board: str = DEFAULT_BOARD,
        config: dict | None = None,
        heap: int | None = None,
        runtime: str | rt.Runtime | None = None,
        ticks_start_ms: int | None = None,
        clock_start: int | None = None,
        refresh_firmware: bool = False,
        temperature: float | None = None,
        humidity: float | None = None,
        battery: float | None = None,
        echo: Callable[[bytes], None] | None = None,
        modem: str | None = "board",
        modem_timings: Timings | None = None,
        cut_after: int = 0,
        cut_seed: int | None = None,
        flash_tags: bool = False,
        bench_setup: Callable[[Bench], None] | None = None,
        files: Iterable[tuple[str, bytes]] = (),
        usb_port: int | None = 0,
        route: Path | str | None = None,
        gnss: str = "board",
        gnss_timings: GnssTimings | None = None,
    ) -> None:
        """modem: a simulator dialect (sim7600, a7670, bg96), "none" for the host's TCP
        instead of a modem, or "board" for what the board's board.json says.
        files: (device path, bytes) written onto the flash after the firmware, e.g. a test's
        own main.py.
        usb_port: the TCP port of the board's USB port (rfc2217, usb.py); 0 picks a free
        one, None leaves the board without one.
        route: the GPX file or NMEA log the asset follows (default: gnss/routes/paris-drive.gpx).
        gnss: where the firmware gets its position (board.json "gnss"): "uart" a standalone
        NMEA receiver, "modem" the modem's GNSS, "none" nowhere, "board" what board.json says.
        The modem's GNSS commands answer from the same route in every case.
        cut_after/cut_seed: tear the first boot's N-th flash program or erase as the seed says
        and cut the power there (rom/_vblockdev.py); flash_tags: tag every flash operation
        with the file operation it belonged to (supervisor status "ops_by_tag").
        bench_setup: called with the bench before the firmware starts (e.g. to fit another
        sensor model)."""
        self.name = name
        self.workdir = Path(workdir) if workdir else default_workdir(name)
        self.keep_image = image is not None
        self.image = Path(image) if image else self.workdir / "flash.img"
        self.board = board
        self.config = dict(config or {})
        validate_config(self.config)
        self.refresh_firmware = refresh_firmware
        self.initial = dict(temperature=temperature, humidity=humidity, battery=battery)
        self.files = list(files)
        self.echo = echo
        self.board_info = img.board_info(board)
        try:
            self.runtime = (
                runtime if isinstance(runtime, rt.Runtime) else rt.resolve(runtime, board=board)
            )
            rt.check_version(self.runtime)  # before building anything: one line, both versions
        except rt.RuntimeUnavailable as e:
            raise VboardError(str(e)) from None
        # None: what MicroPython gets on the board's module (board.json), on this runtime.
        self.heap = heap or rt.default_heap(self.board_info, self.runtime)
        self.ticks_start_ms = ticks_start_ms
        self.clock_start = clock_start
        if modem == "board":
            modem = (self.board_info.get("modem") or {}).get("family")
        if modem in (None, "none"):
            self.board_info["modem"] = None
            modem = None
        else:
            if modem not in DIALECTS:
                raise VboardError(f"unknown modem {modem!r}: choose {', '.join(DIALECTS)}, none")
            self.board_info["modem"] = dict(self.board_info.get("modem") or {}, family=modem)
        self.modem = modem
        self.modem_timings = modem_timings
        self._set_gnss_source(gnss)
        try:
            self.route = Route.load(route or DEFAULT_ROUTE)
        except RouteError as e:
            raise VboardError(f"route {route}: {e}") from None
        self.gnss_timings = gnss_timings
        self.motion: Motion | None = None
        self.gnss_uart: NmeaReceiver | None = None
        self.modem_gnss: GnssSim | None = None
        self.cut_after = cut_after  # cut the power at this flash operation of the first boot
        self.cut_seed = cut_seed
        self.flash_tags = flash_tags
        self.bench_setup = bench_setup
        self.modem_sim: ModemSimulator | None = None
        self.bench: Bench | None = None
        self.supervisor: Supervisor | None = None
        self.usb_port = usb_port
        self.usb: UsbPort | None = None

    def _set_gnss_source(self, gnss: str) -> None:
        """Rewrite board_info["gnss"] as --gnss asks (as --modem rewrites "modem")."""
        if gnss not in GNSS_SOURCES:
            raise VboardError(f"unknown gnss {gnss!r}: choose {', '.join(GNSS_SOURCES)}")
        info = self.board_info.get("gnss") or None
        if gnss == "board":
            if info and info.get("source") == "modem" and self.modem is None:
                info = None  # the board's GNSS is in the modem, and there is no modem
        elif gnss == "none":
            info = None
        elif gnss == "modem":
            if self.modem is None:
                raise VboardError("--gnss modem needs a modem (not --modem none)")
            info = {"source": "modem"}
        else:
            old = info if info and info.get("source") == "uart" else {}
            info = {
                "source": "uart",
                "uart": old.get("uart") or dict(DEFAULT_UART),
                "enable": old.get("enable") or {"pin": PIN_ENABLE, "active": 1},
            }
        self.board_info["gnss"] = info

    @property
    def gnss_source(self) -> str | None:
        return (self.board_info.get("gnss") or {}).get("source")

    @property
    def flash_size(self) -> int | None:
        """The board's flash chip (board.json flash.size): an --image of this size is a full
        flash image, booted through the ESP32's ROM and bootloader (esp32boot)."""
        size = (self.board_info.get("flash") or {}).get("size")
        return int(size) if size else None

    def prepare_image(self) -> None:
        # board.json on the flash says which modem is fitted: the simulator's dialect.
        board_json = ("board.json", json.dumps(self.board_info, indent=1).encode())
        if self.keep_image and esp32boot.is_full_flash(self.image, self.flash_size):
            # A full flash image is the board's flash as flashed: its filesystem gets the
            # same edits as a bare image's, but only when the chip would boot it and
            # MicroPython find a filesystem there; blank or damaged flash is left as it is.
            if esp32boot.boot(self.image, self.flash_size or 0).vfs is None:
                return
            try:
                self._edit_image(board_json)
            except img.ImageError:
                pass  # an unformatted vfs: MicroPython's initial setup formats it at boot
            return
        if self.keep_image and self.image.exists():
            self._edit_image(board_json)
        else:
            img.build_image(
                self.image,
                board=self.board,
                config=self.config,
                extra=[board_json, *self.files],
                frozen=self.frozen,
            )

    def _edit_image(self, board_json: tuple[str, bytes]) -> None:
        if self.refresh_firmware:
            img.refresh_firmware(self.image, board=self.board, frozen=self.frozen)
        if self.config:
            img.merge_config(self.image, self.config)
        for extra in [board_json, *self.files]:
            img.write_file(self.image, *extra)

    def start(self) -> VirtualBoard:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare_image()
        self.bench = Bench(self.workdir, board_info=self.board_info)
        if self.initial["temperature"] is not None:
            self.bench.set_temperature(self.initial["temperature"])
        if self.initial["humidity"] is not None:
            self.bench.set_humidity(self.initial["humidity"])
        if self.initial["battery"] is not None:
            self.bench.set_battery(self.initial["battery"])
        if self.bench_setup is not None:
            self.bench_setup(self.bench)
        self.bench.start()
        env = {"ALBATROSS_BENCH": str(self.bench.socket_path)}
        self.motion = Motion(self.route)
        receivers: dict[str, GnssSim] = {}
        if self.gnss_source == "uart":
            info = self.board_info["gnss"]
            uart = info.get("uart") or DEFAULT_UART
            sim = GnssSim(
                self.motion, timings=self.gnss_timings, seed=f"uart:{self.name}", name="uart"
            )
            self.gnss_uart = NmeaReceiver(
                sim,
                self.workdir,
                baud=int(uart.get("baudrate", DEFAULT_UART["baudrate"])),
                talker=str(info.get("talker", "GN")),
            ).start()
            receivers["uart"] = sim
        if self.modem:
            info = self.board_info["modem"]
            baud = int((info.get("uart") or {}).get("baudrate", 115200))
            self.modem_gnss = GnssSim(
                self.motion, timings=self.gnss_timings, seed=f"modem:{self.name}", name="modem"
            )
            receivers["modem"] = self.modem_gnss
            self.modem_sim = ModemSimulator(
                self.modem,
                self.workdir,
                baud=baud,
                timings=self.modem_timings,
                gnss=self.modem_gnss,
            ).start()
            env.update(attach_modem(self.bench, self.modem_sim, info))
        env.update(
            attach_gnss(
                self.bench,
                self.motion,
                receivers,
                uart=self.gnss_uart,
                gnss_info=self.board_info.get("gnss"),
            )
        )
        self.supervisor = Supervisor(
            self.image,
            self.workdir,
            heap=self.heap,
            runtime=self.runtime,
            ticks_start_ms=self.ticks_start_ms,
            clock_start=self.clock_start,
            env=env,
            echo=self.echo,
            flash_size=self.flash_size,
        )
        sv = self.supervisor
        self.bench.add_control("status", lambda **_: {**sv.status(), "usb": self._usb_url()})
        self.bench.add_control("reset", lambda kind="hard", **_: sv.reset(kind) or {})
        self.bench.add_control(
            "power_cut", lambda off_s=0.2, **_: sv.power_cut(float(off_s)) or {}
        )
        self.bench.add_control(
            "power", lambda on=True, **_: (sv.power_on() if on else sv.power_off()) or {}
        )
        sv.cut_after = self.cut_after
        sv.cut_seed = self.cut_seed
        sv.flash_tags = self.flash_tags
        if self.usb_port is not None:
            self.usb = UsbPort(sv, self.usb_port)
            sv.uart_tx = self.usb.chip_tx
        sv.start()
        return self

    def stop(self) -> None:
        if self.usb:
            self.usb.close()
        if self.supervisor:
            self.supervisor.stop()
        if self.modem_sim:
            self.modem_sim.stop()
        if self.gnss_uart:
            self.gnss_uart.stop()
        if self.bench:
            self.bench.stop()

    def console_text(self) -> str:
        """Everything the board printed on its console so far (console.log)."""
        path = self.workdir / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_console(
        self, text: str, timeout: float, *, count: int = 1, poll: float = 0.05
    ) -> str:
        """Wait until `text` has appeared `count` times on the console; return the console.
        Raises VboardError naming the log to read."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.console_text()
            if out.count(text) >= count:
                return out
            if time.monotonic() >= deadline:
                raise VboardError(
                    f"{text!r} x{count} not on the console within {timeout} s; "
                    f"see {self.workdir / 'console.log'}"
                )
            time.sleep(poll)

    @property
    def frozen(self) -> bool:
        """The runtime carries the app: the filesystem gets only boot.py, main.py and data."""
        return self.runtime.frozen_board is not None

    def _usb_url(self) -> str | None:
        return self.usb.url if self.usb else None

    @property
    def usb_url(self) -> str:
        """The board's USB port as pyserial, esptool and mpremote open it:
        rfc2217://127.0.0.1:PORT. DTR/RTS reset it as a DevKitC's auto-reset circuit does."""
        if self.usb is None:
            raise VboardError(f"board {self.name} was started without a USB port")
        return self.usb.url

    @property
    def console_path(self) -> str:
        assert self.supervisor is not None
        return self.supervisor.console_path

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
