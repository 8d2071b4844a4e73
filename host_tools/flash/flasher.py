"""`albatross flash`: one board, with esptool as a library.

Stages, each one line (StageLines) and one entry in the report:

  connect    open the port, reset into download mode (DTR/RTS), sync, detect the chip,
             start esptool's flasher stub, raise the baud rate
  mac        the base MAC from eFuse (before the checks: a rejected board is named by it)
  check      the chip is the board's MCU (board.json "mcu") and its flash chip is at
             least the board's flash size (board.json flash.size)
  provision  the device id (given, else the firmware's own default "alb-<mac hex>") and
             the config go into config.json on the littlefs, before anything is written
  write      esptool's write_flash (compressed; esptool checks each file's MD5 after it)
  verify     our own MD5 of every written region against the image (SPI_FLASH_MD5)
  reset      a hard reset through RTS, as esptool's --after hard-reset
  boot       the console's command line answers `status --json` with the device id and
             the app version just written, within a deadline

Expected failures raise FlashError subclasses (errors.py) with one line of text."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from esptool.cmds import attach_flash, detect_chip, detect_flash_size, write_flash
from esptool.util import FatalError, flash_size_bytes

from host_tools import image as img
from host_tools.console.protocol import CliError
from host_tools.flash import errors as fe
from host_tools.flash.payload import Payload, check_device_id, device_id_from_mac
from host_tools.flash.ports import open_port
from host_tools.flash.progress import esptool_output, progress_to

ROM_BAUD = 115200
CONSOLE_BAUD = 115200
HOLD_BOOT_HINT = (
    "hold BOOT (IO0), press and release EN, release BOOT, then run again; "
    "or check the port is the board's"
)

# The virtual board (boards/unix_sim) stands in for an ESP32 module: in download mode its USB
# port answers as an ESP32 (host_tools/vboard/esp32rom), so that is the chip to expect.
VIRTUAL_MCU = {"unix-sim": "esp32"}

StageDone = Callable[[str, str], None]
Progress = Callable[[str, int, int], None]
Assign = Callable[[bytes], tuple[str | None, dict]]


@dataclass
class FlashReport:
    """What happened to one board; `to_json()` is the --json report and a fleet row."""

    port: str
    board: str
    result: str = "failed"  # ok | failed | skipped
    stage: str | None = None  # where it stopped, when it failed
    error: str | None = None
    chip: str | None = None
    mac: str | None = None
    flash_size: int | None = None
    device_id: str | None = None
    micropython: str | None = None
    app: str | None = None
    image_sha256: str | None = None
    config_sha256: str | None = None
    written: list[dict] = field(default_factory=list)
    bytes_written: int = 0
    wire_bytes: int = 0  # what crossed the serial line for them: esptool compresses
    write_s: float | None = None
    baud: int | None = None
    status: dict | None = None
    stages: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "skipped")

    @property
    def throughput(self) -> float | None:
        """Image bytes per second of the write stage (esptool compresses on the line)."""
        return self.bytes_written / self.write_s if self.write_s else None

    def to_json(self) -> dict:
        out = asdict(self)
        out["throughput_bps"] = round(self.throughput) if self.throughput else None
        return out


class _Stages:
    def __init__(self, report: FlashReport, on_done: StageDone | None) -> None:
        self.report = report
        self.on_done = on_done
        self.current = "connect"
        self.t0 = time.monotonic()

    def start(self, name: str) -> None:
        self.current = name
        self.t0 = time.monotonic()

    def done(self, text: str) -> None:
        took = time.monotonic() - self.t0
        self.report.stages[self.current] = round(took, 3)
        if self.on_done is not None:
            self.on_done(self.current, f"{text} ({took:.1f} s)")


def _line(e: Exception) -> str:
    """The first line of an esptool error (the rest is a link to its troubleshooting page)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _connect_error(url: str, e: FatalError) -> fe.FlashError:
    text = str(e)
    if "Wrong boot mode" in text:
        return fe.NoAnswer(
            f"the board on {url} booted its app, not download mode: {HOLD_BOOT_HINT}"
        )
    if "Failed to connect" in text or "No serial data" in text or "Invalid head" in text:
        return fe.NoAnswer(f"no answer from an ESP32 ROM loader on {url}: {HOLD_BOOT_HINT}")
    if "Unexpected chip" in text:
        first = text.splitlines()[0]
        return fe.WrongChip(f"the chip on {url} is not one esptool knows ({first})")
    return fe.FlashError(f"{url}: {_line(e)}", stage="connect")


def config_sha256(payload: Payload, device_id: str, extra: dict | None) -> str:
    """Names what provisioning puts into config.json for this device."""
    config = {**payload.config, **(extra or {}), "device_id": device_id}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _wire_bytes(transcript: list[str], total: int) -> int:
    """The compressed size esptool reports ("Wrote N bytes (M compressed) at ..."), summed
    over the files; `total` when it wrote them uncompressed."""
    sizes = [int(m.group(1)) for m in map(_WROTE.search, transcript) if m]
    return sum(sizes) if sizes else total


_WROTE = re.compile(r"Wrote \d+ bytes \((\d+) compressed\)")


def board_requirements(board: str) -> tuple[str, int]:
    """(MCU as esptool names it, flash size in bytes) from the board's board.json."""
    info = img.board_info(board)
    mcu = str(info.get("mcu") or "")
    mcu = VIRTUAL_MCU.get(mcu, mcu).upper()
    size = int((info.get("flash") or {}).get("size") or 0)
    if not mcu or not size:
        raise fe.FlashError(
            f"board {board}: board.json states no mcu or flash.size", stage="check"
        )
    return mcu, size


def flash_board(
    url: str,
    payload: Payload,
    *,
    device_id: str | None = None,
    extra_config: dict | None = None,
    assign: Assign | None = None,
    baud: int = 921600,
    boot_timeout: float = 60.0,
    connect_attempts: int = 7,
    skip: Callable[[FlashReport], bool] | None = None,
    on_stage: StageDone | None = None,
    on_progress: Progress | None = None,
) -> FlashReport:
    """Flash one board; always returns its report (result "failed" with stage and error on
    an expected failure; other exceptions are bugs and propagate).
    assign(mac): (device id or None, per-device config) once the MAC is known, instead of
    device_id / extra_config (a fleet's devices.csv); FlashError when the board has none.
    skip(report): True when the board already holds this build and config (the report has
    mac, device_id, image_sha256 and config_sha256 by then): it is only reset.
    boot_timeout 0: do not wait for the first boot."""
    report = FlashReport(port=url, board=payload.board, baud=baud)
    report.image_sha256 = payload.image_sha256
    report.app = payload.app_version
    report.micropython = payload.micropython_version
    stages = _Stages(report, on_stage)
    t0 = time.monotonic()
    if assign is None:
        fixed = (device_id, dict(extra_config or {}))

        def assign(mac: bytes) -> tuple[str | None, dict]:
            return fixed

    try:
        _run(
            url,
            payload,
            report,
            stages,
            assign,
            baud,
            boot_timeout,
            connect_attempts,
            skip,
            on_progress,
        )
    except fe.FlashError as e:
        report.result = "failed"
        report.stage = e.stage if e.stage != "flash" else stages.current
        report.error = str(e)
    finally:
        report.seconds = round(time.monotonic() - t0, 3)
    return report


def _run(
    url: str,
    payload: Payload,
    report: FlashReport,
    stages: _Stages,
    assign: Assign,
    baud: int,
    boot_timeout: float,
    connect_attempts: int,
    skip: Callable[[FlashReport], bool] | None,
    on_progress: Progress | None,
) -> None:
    mcu, board_flash = board_requirements(payload.board)
    port = open_port(url)
    try:
        with esptool_output() as transcript:
            stages.start("connect")
            try:
                esp = detect_chip(port, ROM_BAUD, "default-reset", False, connect_attempts)
            except FatalError as e:
                raise _connect_error(url, e) from None
            report.chip = esp.get_chip_description()
            if esp.CHIP_NAME != mcu:
                stages.start("check")
                raise fe.WrongChip(
                    f"wrong chip on {url}: {report.chip}, but board {payload.board} has an "
                    f"{mcu} (wrong board plugged in, or wrong --board?)"
                )
            try:
                esp = esp.run_stub()
                if baud != ROM_BAUD:
                    esp.change_baud(baud)
            except FatalError as e:
                raise fe.FlashError(
                    f"{url}: starting the flasher stub: {_line(e)}", stage="connect"
                ) from None
            stages.done(f"{report.chip} on {url}, stub at {baud} baud")

            # Before the checks: a board that fails them is still named by its MAC.
            stages.start("mac")
            mac = bytes(esp.read_mac())
            report.mac = mac.hex(":")
            stages.done(report.mac)

            stages.start("check")
            try:
                attach_flash(esp)
                found = detect_flash_size(esp)
            except FatalError as e:
                raise fe.FlashError(
                    f"{url}: reading the flash chip: {_line(e)}", stage="check"
                ) from None
            if found is None:
                raise fe.FlashError(
                    f"{url}: the flash chip's size is unknown (JEDEC id)", stage="check"
                )
            report.flash_size = flash_size_bytes(found)
            need = max(board_flash, payload.write_size)
            if report.flash_size < need:
                raise fe.FlashTooSmall(
                    f"flash too small on {url}: {found} ({report.flash_size} bytes); board "
                    f"{payload.board} needs {need >> 20} MB"
                )
            needs = f"board {payload.board} needs {board_flash >> 20}MB"
            stages.done(f"{esp.CHIP_NAME} with {found} flash; {needs}")

            stages.start("provision")
            device_id, extra = assign(mac)
            if device_id:
                try:
                    check_device_id(device_id)
                except ValueError as e:
                    raise fe.FlashError(str(e), stage="provision") from None
            report.device_id = device_id or device_id_from_mac(mac)
            report.config_sha256 = config_sha256(payload, report.device_id, extra)
            if skip is not None and skip(report):
                stages.current = "reset"
                esp.hard_reset()
                report.result = "skipped"
                stages.done(f"{report.device_id} already holds this image: skipped, hard reset")
                return
            regions = payload.regions(report.device_id, extra)
            keys = sorted({**payload.config, **extra})
            how = "given" if device_id else "from the MAC"
            stages.done(
                f"device id {report.device_id} ({how}); config {', '.join(keys) or 'defaults'}"
            )

            stages.start("write")
            total = sum(len(d) for _, d in regions)

            def moved(done: int, of: int) -> None:
                if on_progress is not None:
                    on_progress("write", done, of)

            t = time.monotonic()
            try:
                with progress_to(moved):
                    write_flash(esp, list(regions), flash_size="keep", compress=True)
            except FatalError as e:
                if "MD5 of file does not match" in str(e) or "region is empty" in str(e):
                    raise fe.VerifyMismatch(
                        f"verify mismatch on {url}: the flash's MD5 differs from the image's "
                        "after writing (a bad flash chip, or power lost while writing?)"
                    ) from None
                raise fe.FlashError(f"{url}: writing: {_line(e)}", stage="write") from None
            report.write_s = round(time.monotonic() - t, 3)
            report.bytes_written = total
            report.wire_bytes = _wire_bytes(transcript, total)
            report.written = [{"offset": a, "size": len(d)} for a, d in regions]
            rate = total / report.write_s if report.write_s else 0
            stages.done(
                f"{total} bytes at {', '.join(hex(a) for a, _ in regions)}, {rate / 1024:.0f} kB/s"
            )

            stages.start("verify")
            for addr, data in regions:
                want = hashlib.md5(data).hexdigest()
                try:
                    got = esp.flash_md5sum(addr, len(data))
                except FatalError as e:
                    raise fe.FlashError(
                        f"{url}: MD5 of flash: {_line(e)}", stage="verify"
                    ) from None
                if got != want:
                    raise fe.VerifyMismatch(
                        f"verify mismatch on {url} at {addr:#x}+{len(data):#x}: flash MD5 "
                        f"{got}, image {want}"
                    )
            stages.done(f"MD5 of {len(regions)} region(s) matches")

            stages.start("reset")
            esp.hard_reset()
            hint = " (no RTS over socket://: press EN)" if url.startswith("socket:") else ""
            stages.done(f"hard reset via RTS{hint}")
    finally:
        port.close()

    if boot_timeout <= 0:
        report.result = "ok"
        return
    stages.start("boot")
    try:
        report.status = wait_first_boot(
            url, report.device_id or "", payload.app_version, boot_timeout
        )
    except fe.BootFailed as e:
        if payload.flash is None:  # the board was meant to run MicroPython already
            raise fe.BootFailed(
                f"{e} (only the filesystem was written: does the board run MicroPython "
                f"{payload.manifest.get('micropython_version')}? if not, pass --firmware)"
            ) from None
        raise
    report.result = "ok"
    stages.done(
        f"status: app {report.status.get('fw')}, device {report.status.get('device_id')}, "
        f"board {report.status.get('board')}"
    )


def wait_first_boot(url: str, device_id: str, app_version: str, timeout: float) -> dict:
    """The firmware's `status --json` over the console after the reset; BootFailed when the
    prompt does not come within `timeout` s or the board reports another id or version."""
    from host_tools.console.session import open_session

    deadline = time.monotonic() + timeout
    status: dict | None = None
    last: Exception | None = None
    while status is None and time.monotonic() < deadline:
        left = deadline - time.monotonic()
        try:
            with open_session(url, baud=CONSOLE_BAUD, wake_timeout=max(1.0, left)) as cli:
                status = cli.run_json("status", timeout=max(5.0, min(20.0, left)))
        except CliError as e:
            last = e
            if "cannot open" not in str(e):
                break  # the port is there but the app does not answer: no use retrying
            time.sleep(0.5)  # a USB port comes back after the reset
    if status is None:
        raise fe.BootFailed(f"no first boot on {url} within {timeout:g} s: {last}")
    if status.get("device_id") != device_id:
        raise fe.BootFailed(
            f"{url} booted but reports device id {status.get('device_id')!r}, not {device_id!r}"
        )
    if status.get("fw") != app_version:
        raise fe.BootFailed(
            f"{url} booted but runs app {status.get('fw')!r}, not the {app_version!r} written"
        )
    return status
