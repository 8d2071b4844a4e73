"""The virtual board's supervisor: plays the ESP32's silicon around the MicroPython Unix port.

It owns the console pty (what a USB-serial adapter would be), starts `micropython` on the ROM
runtime in `rom/`, relays console bytes, turns Ctrl-C into SIGINT while code runs (as the UART
interrupt-char does), and restarts the process on every kind of reset an ESP32 has: soft reset,
machine.reset(), a machine.WDT timeout, deep sleep and power cuts (an exception out of main.py is
not one: the board stays in the REPL). Resets are requested by the ROM over a control pipe.

The chip's EN and IO0 pins are inputs too (set_pins, driven by the USB port's auto-reset
circuit in usb.py): EN low holds the chip in reset; when EN rises the chip samples IO0, and
with IO0 low a full-flash board enters the ROM's serial download mode (esp32boot.DownloadMode)
instead of booting. Its UART0 is uart_rx() in and uart_tx out, beside the pty.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pty
import selectors
import signal
import subprocess
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.vboard import runtime as rt

ROM_DIR = Path(__file__).with_name("rom")

# machine.reset_cause() values on ESP32 MicroPython.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
RESET_NAMES = {
    PWRON_RESET: "power_on",
    HARD_RESET: "hard",
    WDT_RESET: "watchdog",
    DEEPSLEEP_RESET: "deepsleep",
    SOFT_RESET: "soft",
}
# Resets the ESP32's RTC counts through (only the CPU restarts; the RTC domain keeps power and
# the time). A power-on or a brown-out starts it over.
RTC_KEPT = (HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET)
# A brown-out is not a machine.reset_cause() value: ESP32 MicroPython reports it as PWRON_RESET
# (modmachine.c) and the chip's reset-reason register says 15 (the ROM's _vmachine.mem32 answers
# it from ALBATROSS_RTC_RESET_REASON). Used by the supervisor only.
BROWNOUT_RESET = -1
RTC_BROWN_OUT_RESET = 15
RESET_NAMES[BROWNOUT_RESET] = "brownout"
# What the bench's reset can do (`albatross bench NAME reset KIND`).
RESET_KINDS = {"hard": HARD_RESET, "soft": SOFT_RESET, "watchdog": WDT_RESET,
               "brownout": BROWNOUT_RESET}  # fmt: skip

CTRL_C = 3
CONSOLE_BAUD = 115200  # UART0: the ROM's and MicroPython's REPL rate
# How long after EN is released the chip latches IO0. On a DevKitC that is EN's RC delay
# (10 kOhm pull-up, 1 uF to GND: CHIP_PU crosses 0.75 VDD about 1.4 RC = 14 ms after release,
# and the strapping pins are held 1 ms more, ESP32 datasheet "Setup and hold times"), which
# lets IO0 go low a few milliseconds after EN rises. Here DTR and RTS come over RFC 2217, and
# pyserial's client waits for the server's acknowledgement of each change by polling every
# 50 ms, so esptool's "IO0 low" arrives 50-60 ms after its "EN high" instead of about 1 ms.
# The delay is stretched in proportion: IO0 is sampled 100 ms after EN rises, between esptool's
# IO0 low (+50 ms) and its IO0 release (+150 ms at the earliest, reset_delay=0.05).
EN_RISE_S = 0.1


def _die_with_parent() -> None:
    """In the child: if the supervisor dies (even by SIGKILL), the board loses power too,
    instead of living on as an orphan that still holds the broker connection."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VboardError(Exception):
    """An expected failure (bad option, missing micropython): printed as one line."""


def parse_size(text: str | int) -> int:
    """'160k', '2M', '65536' -> bytes."""
    if isinstance(text, int):
        return text
    t = text.strip().lower()
    mult = 1
    if t.endswith("k"):
        mult, t = 1024, t[:-1]
    elif t.endswith("m"):
        mult, t = 1024 * 1024, t[:-1]
    try:
        value = int(t) * mult
    except ValueError:
        raise VboardError(f"bad size {text!r}: use bytes or a k/M suffix, e.g. 160k") from None
    if value <= 0:
        raise VboardError(f"bad size {text!r}: must be positive")
    return value


@dataclass
class BoardStats:
    boots: int = 0
    resets: dict[str, int] = field(default_factory=dict)
    last_reset: str = "power_on"
    unexpected_exits: int = 0
    programs: int = 0
    erases: int = 0
    power_cuts: int = 0  # cuts inside a flash operation (cut_after)
    supply_cuts: int = 0  # the supply cut from the bench (power_cut), between flash operations
    erases_per_block: dict[int, int] = field(default_factory=dict)
    # Flash operations per tag (what file operation each belonged to), counted on a boot
    # with tags on (ALBATROSS_FLASH_TAGS; see rom/_vblockdev.py).
    ops_by_tag: dict[str, int] = field(default_factory=dict)
    cuts: list[dict] = field(default_factory=list)  # every power cut inside a flash op


class Supervisor:
    """Runs one virtual board. Thread-safe control methods; one I/O thread."""

    def __init__(
        self,
        image: Path,
        workdir: Path,
        *,
        heap: int | None = None,
        block_size: int = 4096,
        uid: str | None = None,
        env: dict[str, str] | None = None,
        echo: Callable[[bytes], None] | None = None,
        runtime: rt.Runtime | None = None,
        ticks_start_ms: int | None = None,
        clock_start: int | None = None,
        flash_size: int | None = None,
    ) -> None:
        """flash_size: the board's flash chip (board.json flash.size). An image file of
        exactly that size is a full flash image that boots as an ESP32 does (esp32boot);
        any other image is a bare littlefs image mounted whole, as before."""
        self.image = Path(image)
        self.flash_size = flash_size
        # Full flash: the vfs partition MicroPython mounts (offset, blocks) from the last boot
        # through the ROM (a soft reset keeps it), and why the flash last failed to boot.
        self._vfs: tuple[int, int] | None = None
        self.boot_error: str | None = None
        self._rom_reset: bytes | None = None
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        self.block_size = block_size
        self.uid = uid or hashlib.sha1(str(self.image).encode()).hexdigest()[:12]
        self.extra_env = dict(env or {})
        self.echo = echo
        # Cut the power during the N-th flash program/erase of the next boot (0 = never); it
        # applies once, the board then boots again with the power left on. The cut tears that
        # operation (rom/_vblockdev.py) as the seed says: None draws one, recorded with the
        # cut so it can be replayed. flash_tags: tag every flash operation with the file
        # operation it belonged to (always on for a boot with a cut armed).
        self.cut_after = 0
        self.cut_seed: int | None = None
        self.cut_off_s = 0.05
        self.flash_tags = False
        self.flash_trace: list[tuple[str, str]] = []  # (p|e, tag) of every op while tagged
        self._tagging = False
        try:
            self.runtime = runtime or rt.resolve()
            rt.check_version(self.runtime)  # the firmware's oldest MicroPython (compat.py)
        except rt.RuntimeUnavailable as e:
            raise VboardError(str(e)) from None
        self.micropython = self.runtime.path
        if self.heap is None:  # no board to ask (runner.VirtualBoard passes the board's)
            self.heap = rt.default_heap({}, self.runtime)
        # The faithful runtime's tick counter and wall clock at each boot (None: 0 and the
        # host's clock); see runtime/variant/esp32_clock.c.
        self.ticks_start_ms = ticks_start_ms
        self.clock_start = clock_start
        # The board's wall clock minus the host's (None: the host's). machine.RTC sets it (the
        # ROM reports "c<unix s>"), and the next boot starts where it has got to.
        self._rtc_offset: float | None = None
        self.stats = BoardStats()
        self.console_log_path = self.workdir / "console.log"
        self.events_log_path = self.workdir / "vboard.log"
        self._console_log = open(self.console_log_path, "ab", buffering=0)
        self._events_log = open(self.events_log_path, "a", buffering=1)
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.console_path = os.ttyname(self._slave)
        self._lock = threading.RLock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._commands: list[tuple[str, object]] = []
        self._child: subprocess.Popen[bytes] | None = None
        self._ctl_r = self._ack_w = -1
        self._ctl_buf = b""
        self._interrupt_armed = False
        self._wdt_deadline: float | None = None
        self._wdt_timeout = 0.0
        self._spawned_at = 0.0
        self._restart_at: float | None = None
        self._restart_cause = PWRON_RESET
        self._restart_mode = "friendly"
        self._powered = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._last_cr = False
        self._soft_restarting = False
        self._held_input = b""
        # The pins the USB port's auto-reset circuit drives, and download mode.
        self.uart_tx: Callable[[bytes, int], None] | None = None
        self._en_low = False
        self._io0_low = False
        self._strap_at: float | None = None  # EN has risen: the chip samples IO0 then
        self._download = None  # esp32boot.DownloadMode, made at the first download boot
        self._downloading = False

    # ----- public control (any thread) -----
    def start(self) -> None:
        self._running = True
        self._sel.register(self._master, selectors.EVENT_READ, "console")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="vboard", daemon=True)
        self._thread.start()
        self._command("power_on", None)

    def stop(self) -> None:
        if not self._running:
            return
        self._command("stop", None)
        if self._thread:
            self._thread.join(timeout=10)
        self._running = False
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._console_log.close()
        self._events_log.close()
        if self._download is not None:
            self._download.close()

    def reset(self, kind: str = "hard") -> None:
        """kind: hard | soft | watchdog | brownout (the supply dipped: the chip resets at
        once, as on a power cut, and reports a power-on reset its RTC says was a brown-out)."""
        if kind not in RESET_KINDS:
            raise ValueError(f"reset kind {kind!r}: one of {', '.join(RESET_KINDS)}")
        self._command("reset", kind)

    def power_cut(self, off_s: float = 0.2) -> None:
        """Cut power at once (no flush, no goodbye), then power on after off_s."""
        self._command("power_cut", off_s)

    def power_off(self) -> None:
        self._command("power_off", None)

    def power_on(self) -> None:
        self._command("power_on", None)

    def set_pins(self, en: bool, io0: bool) -> None:
        """The levels on the chip's EN (CHIP_PU) and IO0 pins (True: high)."""
        self._command("pins", (en, io0))

    def uart_rx(self, data: bytes) -> None:
        """Bytes arriving on UART0's RX from the USB bridge."""
        self._command("rx", data)

    @property
    def uart_baud(self) -> int:
        """The rate UART0 runs at now: the ROM loader's in download mode."""
        return self._download.baud if self._downloading and self._download else CONSOLE_BAUD

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child and child.poll() is None else None

    def status(self) -> dict:
        with self._lock:
            return {
                "console": self.console_path,
                "pid": self.pid,
                "powered": self._powered,
                "boots": self.stats.boots,
                "resets": dict(self.stats.resets),
                "last_reset": self.stats.last_reset,
                "unexpected_exits": self.stats.unexpected_exits,
                "flash": {
                    "programs": self.stats.programs,
                    "erases": self.stats.erases,
                    "max_erases_per_block": max(self.stats.erases_per_block.values(), default=0),
                },
                "power_cuts": self.stats.power_cuts,
                "supply_cuts": self.stats.supply_cuts,
                "cuts": [dict(c) for c in self.stats.cuts[-50:]],
                "ops_by_tag": dict(self.stats.ops_by_tag),
                "heap": self.heap,
                "runtime": self.runtime.name,
                "image": str(self.image),
                "boot_error": self.boot_error,
                "chip": self._chip_state(),
                "download": self._download_stats(),
            }

    def _chip_state(self) -> str:
        if not self._powered:
            return "off"
        if self._en_low:
            return "held in reset"  # EN low: the USB port's RTS holds it
        return "download mode" if self._downloading else "running"

    def _download_stats(self) -> dict | None:
        """What esptool has done to the flash since the board started (None: never in
        download mode)."""
        dl = self._download
        if dl is None:
            return None
        return {
            "bytes_programmed": dl.flash.bytes_programmed,
            "sectors_erased": dl.flash.sectors_erased,
            "baud": dl.baud,
        }

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- I/O thread -----
    def _command(self, name: str, arg: object) -> None:
        with self._lock:
            self._commands.append((name, arg))
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _event(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._events_log.write(f"{stamp} {text}\n")

    def _loop(self) -> None:
        try:
            while True:
                timeout = self._next_timeout()
                for key, _ in self._sel.select(timeout):
                    if key.data == "console":
                        self._on_console_input()
                    elif key.data == "stdout":
                        self._on_child_output()
                    elif key.data == "ctl":
                        self._on_ctl()
                    elif key.data == "wake":
                        os.read(self._wake_r, 4096)
                if not self._run_commands():
                    return
                self._check_timers()
        finally:
            self._kill_child()

    def _next_timeout(self) -> float | None:
        deadlines = [
            d for d in (self._wdt_deadline, self._restart_at, self._strap_at) if d is not None
        ]
        if not deadlines:
            return 1.0
        return max(0.0, min(deadlines) - time.monotonic())

    def _run_commands(self) -> bool:
        with self._lock:
            commands, self._commands = self._commands, []
        for name, arg in commands:
            if name == "stop":
                self._event("stop")
                return False
            if name == "power_on":
                if not self._powered:
                    self._powered = True
                    self._restart(PWRON_RESET, "friendly", delay=0)
            elif name == "power_off":
                self._event("power off")
                self._powered = False
                self._downloading = False
                self._kill_child()
                self._restart_at = None
            elif name == "power_cut":
                self.stats.supply_cuts += 1
                self._event("power cut")
                self._kill_child()
                self._restart(PWRON_RESET, "friendly", delay=float(arg))
            elif name == "reset":
                self._restart(RESET_KINDS[arg], "friendly", delay=0)
            elif name == "pins":
                self._on_pins(*arg)  # type: ignore[misc]
            elif name == "rx":
                self._rx(arg)  # type: ignore[arg-type]
        return True

    def _on_pins(self, en: bool, io0: bool) -> None:
        self._io0_low = not io0
        if not en and not self._en_low:
            self._en_low = True
            self._strap_at = None
            self._event("EN low: chip held in reset")
            self._kill_child()
            self._restart_at = None
            self._downloading = False
            self._soft_restarting = False
            self._held_input = b""
        elif en and self._en_low:
            self._en_low = False
            self._strap_at = time.monotonic() + EN_RISE_S

    def _check_timers(self) -> None:
        now = time.monotonic()
        if self._wdt_deadline is not None and now >= self._wdt_deadline:
            self._event("watchdog timeout")
            # What ESP-IDF's task watchdog prints before its panic reboots the chip.
            t = b"E (%d) task_wdt: " % int((now - self._spawned_at) * 1000)
            self._console_out(
                b"\r\n" + t + b"Task watchdog got triggered. The following tasks/users did not"
                b" reset the watchdog in time:\r\n"
                + t
                + b" - mpy_machine_wdt\r\n"
                + t
                + b"Aborting.\r\n\r\nRebooting...\r\n"
            )
            self._restart(WDT_RESET, "friendly", delay=0)
        if self._strap_at is not None and now >= self._strap_at:
            self._strap_at = None
            if self._powered:  # EN released: a power-on reset, IO0 sampled at _spawn
                self._restart(PWRON_RESET, "friendly", delay=0)
        if self._restart_at is not None and now >= self._restart_at and self._powered:
            self._restart_at = None
            self._spawn()

    def _restart(self, cause: int, mode: str, delay: float) -> None:
        self._downloading = False
        self._soft_restarting = cause == SOFT_RESET
        if not self._soft_restarting:
            self._held_input = b""
        # A soft reset leaves the ESP32's task watchdog running (ports/esp32/main.c does not
        # touch it): it keeps counting and the next firmware must feed it in time.
        wdt = (self._wdt_timeout, self._wdt_deadline) if cause == SOFT_RESET else None
        self._kill_child()
        name = RESET_NAMES[cause]
        self.stats.resets[name] = self.stats.resets.get(name, 0) + 1
        self._restart_cause = cause
        self._restart_mode = mode
        self._rom_reset = None  # a reset from outside ends the ROM's own reset loop
        self._restart_at = time.monotonic() + delay
        if delay == 0:
            self._restart_at = None
            self._spawn()
        if wdt is not None and wdt[1] is not None:
            self._wdt_timeout, self._wdt_deadline = wdt

    def _through_rom(self) -> bool:
        """A full flash image: run the ROM and the bootloader over it (esp32boot) and print
        what they print. False: the flash does not boot; the chip resets and tries again."""
        from host_tools.vboard import esp32boot

        reset = self._rom_reset or esp32boot.rom_reset_reason(RESET_NAMES[self._restart_cause])
        self._rom_reset = None
        try:
            outcome = esp32boot.boot(self.image, self.flash_size or 0, reset)
        except OSError as e:  # the image went missing: no flash chip answers
            outcome = esp32boot.BootOutcome(b"", None, f"flash image: {e}")
        self._console_out(outcome.console)
        if outcome.vfs is None:
            if outcome.error != self.boot_error:
                self._event(f"no boot: {outcome.error}")
            self.boot_error = outcome.error
            self._rom_reset = outcome.next_reset
            self._restart_at = time.monotonic() + esp32boot.RETRY_S
            return False
        self.boot_error = None
        self._vfs = (outcome.vfs.offset, outcome.vfs.size // self.block_size)
        return True

    def _chip_mac(self) -> bytes:
        """The eFuse MAC esptool reads, derived from the board's uid (esp32rom.mac_from_uid);
        on a full flash board machine.unique_id() returns it too, as on an ESP32."""
        from host_tools.vboard.esp32rom import mac_from_uid

        try:
            return mac_from_uid(self.uid)
        except ValueError:  # a uid that is not hex
            return mac_from_uid(hashlib.sha1(self.uid.encode()).hexdigest()[:12])

    def _enter_download(self) -> None:
        """IO0 was low when the chip came out of a power-on or EN reset: the ROM waits for
        esptool on UART0 instead of booting."""
        from host_tools.vboard import esp32boot

        reset = esp32boot.rom_reset_reason(RESET_NAMES[self._restart_cause])
        self._console_out(esp32boot.download_banner(reset))
        if not esp32boot.is_full_flash(self.image, self.flash_size):
            # A bare littlefs image is not a chip's flash: nothing to flash esptool's
            # addresses into. The ROM stays silent, as with a flash chip missing.
            self._console_out(
                b"vboard: download mode needs a full flash image of the board's flash size "
                b"(albatross build-image --firmware); this board runs a bare littlefs image\r\n"
            )
            self._event("download mode refused: not a full flash image")
            return
        if self._download is None:
            self._download = esp32boot.DownloadMode(
                self.image,
                self.flash_size or 0,
                self._chip_mac(),
                self._uart_raw_out,
                self._leave_download,
            )
        self._download.enter()
        self._downloading = True
        self._event("download mode (IO0 low at reset)")

    def _leave_download(self, reason: str) -> None:
        """esptool asked the ROM (or its stub) to run the firmware: the chip boots from flash."""
        self._event(f"download mode left: {reason}")
        self._downloading = False
        if reason in ("run_user_code", "reboot"):
            self._restart(HARD_RESET, "friendly", delay=0)

    def _spawn(self) -> None:
        from host_tools.vboard import esp32boot

        if self._en_low:
            return
        if self._restart_cause in (PWRON_RESET, BROWNOUT_RESET) and self._io0_low:
            self._enter_download()
            return
        self._vfs = self._vfs if self._restart_cause == SOFT_RESET else None
        full_flash = esp32boot.is_full_flash(self.image, self.flash_size)
        if full_flash:
            if self._vfs is None and not self._through_rom():
                return
        else:
            self._vfs = None
        ctl_r, ctl_w = os.pipe()
        ack_r, ack_w = os.pipe()
        self._tagging = bool(self.flash_tags or self.cut_after)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(
            ALBATROSS_IMAGE=str(self.image),
            ALBATROSS_BLOCK_SIZE=str(self.block_size),
            ALBATROSS_RESET_CAUSE=str(max(self._restart_cause, PWRON_RESET)),
            ALBATROSS_RTC_RESET_REASON=(
                str(RTC_BROWN_OUT_RESET) if self._restart_cause == BROWNOUT_RESET else ""
            ),
            ALBATROSS_BOOT_MODE=self._restart_mode,
            ALBATROSS_UID=self._chip_mac().hex() if full_flash else self.uid,
            ALBATROSS_CTL_FD=str(ctl_w),
            ALBATROSS_ACK_FD=str(ack_r),
            ALBATROSS_CUT_AFTER=str(self.cut_after),
            ALBATROSS_CUT_SEED=str(self._arm_seed()),
            ALBATROSS_FLASH_TAGS="1" if self._tagging else "",
            TZ="UTC0",  # an ESP32 keeps UTC: localtime() and mktime() must not take the host's
        )
        if self._vfs is not None:
            env["ALBATROSS_FLASH_OFFSET"] = str(self._vfs[0])
            env["ALBATROSS_FLASH_BLOCKS"] = str(self._vfs[1])
        else:
            env.pop("ALBATROSS_FLASH_OFFSET", None)
            env.pop("ALBATROSS_FLASH_BLOCKS", None)
        if self.ticks_start_ms is not None:
            env["ALBATROSS_TICKS_START_MS"] = str(self.ticks_start_ms)
        if self._restart_cause not in RTC_KEPT:
            start = self.clock_start
            self._rtc_offset = None if start is None else start - time.time()
        if self._rtc_offset is not None:
            env["ALBATROSS_CLOCK_START"] = str(round(time.time() + self._rtc_offset))
        # The faithful runtime has the ROM frozen in (no heap spent on it, as on an ESP32).
        rom = ["-m", "_vboot"] if self.runtime.rom_frozen else [str(ROM_DIR / "_vboot.py")]
        cmd = [self.micropython, "-X", f"heapsize={self.heap}", *rom]
        self._child = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(ctl_w, ack_r),
            env=env,
            cwd=str(self.workdir),
            start_new_session=True,  # a Ctrl-C typed at our terminal is not the board's
            preexec_fn=_die_with_parent,
        )
        os.close(ctl_w)
        os.close(ack_r)
        self._ctl_r, self._ack_w = ctl_r, ack_w
        self._ctl_buf = b""
        self._interrupt_armed = False
        self._wdt_deadline = None
        self._wdt_timeout = 0.0
        if self._restart_cause != SOFT_RESET:
            self._spawned_at = time.monotonic()  # the chip's log clock (esp_log_timestamp)
        assert self._child.stdout is not None and self._child.stdin is not None
        os.set_blocking(self._child.stdout.fileno(), False)
        os.set_blocking(self._child.stdin.fileno(), False)
        self._sel.register(self._child.stdout, selectors.EVENT_READ, "stdout")
        self._sel.register(ctl_r, selectors.EVENT_READ, "ctl")
        if self._held_input:
            self._write_child(self._child, self._held_input)
            self._held_input = b""
        self._soft_restarting = False
        self.stats.boots += 1
        self.stats.last_reset = RESET_NAMES[self._restart_cause]
        self._event(
            f"boot #{self.stats.boots} pid={self._child.pid} cause={self.stats.last_reset} "
            f"mode={self._restart_mode} heap={self.heap} runtime={self.runtime.name}"
        )

    def _kill_child(self) -> None:
        child = self._child
        if child is None:
            return
        self._child = None
        if child.poll() is None:
            child.kill()
        child.wait()
        # What the firmware printed before it died still reaches the console.
        assert child.stdout is not None
        try:
            self._sel.unregister(child.stdout)
        except (KeyError, ValueError):
            pass
        os.set_blocking(child.stdout.fileno(), True)
        rest = child.stdout.read()
        if rest:
            self._console_out(rest)
        for f in (child.stdout, child.stdin):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            self._sel.unregister(self._ctl_r)
        except (KeyError, ValueError):
            pass
        for fd in (self._ctl_r, self._ack_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._ctl_r = self._ack_w = -1
        self._interrupt_armed = False
        self._wdt_deadline = None
        self._wdt_timeout = 0.0

    def _on_child_output(self) -> None:
        child = self._child
        if child is None or child.stdout is None:
            return
        try:
            data = os.read(child.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if data:
            self._console_out(data)
            return
        # EOF: the interpreter exited without asking for a reset (fatal error, or the ROM
        # itself failed). A real chip would panic and reboot; so does the virtual one.
        code = child.wait()
        self.stats.unexpected_exits += 1
        self._event(f"firmware process exited unexpectedly (code {code})")
        self._console_out(b"\r\nvboard: firmware process exited (code %d), rebooting\r\n" % code)
        self._kill_child()
        self._restart(HARD_RESET, "friendly", delay=0.5)

    def _on_ctl(self) -> None:
        try:
            data = os.read(self._ctl_r, 4096)
        except OSError:
            data = b""
        if not data:
            try:
                self._sel.unregister(self._ctl_r)
            except (KeyError, ValueError):
                pass
            return
        self._ctl_buf += data
        while b"\n" in self._ctl_buf:
            line, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
            self._on_ctl_message(line)

    def _on_ctl_message(self, msg: bytes) -> None:
        kind, arg = msg[:1], msg[1:]
        if kind == b"I":
            self._interrupt_armed = arg == b"1"
            if not self._interrupt_armed:
                os.write(self._ack_w, b"A")
        elif kind == b"H":
            self._restart(HARD_RESET, "friendly", delay=0)
        elif kind == b"S":
            self._restart(SOFT_RESET, "friendly", delay=0)
        elif kind == b"s":
            self._restart(SOFT_RESET, "raw", delay=0)
        elif kind == b"D":
            ms = int(arg or b"0")
            self._event(f"deep sleep {ms} ms")
            self._restart(DEEPSLEEP_RESET, "friendly", delay=ms / 1000 if ms else 3600.0)
        elif kind == b"p" or kind == b"e":
            block, _, tag = arg.partition(b" ")
            if kind == b"p":
                self.stats.programs += 1
            else:
                self.stats.erases += 1
                n = int(block)
                self.stats.erases_per_block[n] = self.stats.erases_per_block.get(n, 0) + 1
            if self._tagging:
                name = tag.decode(errors="replace")
                self.stats.ops_by_tag[name] = self.stats.ops_by_tag.get(name, 0) + 1
                self.flash_trace.append((kind.decode(), name))
        elif kind == b"X":
            self._on_cut(arg)
        elif kind == b"c":  # machine.RTC().datetime(...) set the clock
            self._rtc_offset = int(arg) - time.time()
            self._event(f"RTC set to {int(arg)}")
        elif kind == b"w":  # machine.WDT(timeout=...): start, or reconfigure and restart
            self._wdt_timeout = int(arg) / 1000
            self._wdt_deadline = time.monotonic() + self._wdt_timeout
        elif kind == b"f":
            if self._wdt_timeout:
                self._wdt_deadline = time.monotonic() + self._wdt_timeout

    def _arm_seed(self) -> int:
        if not self.cut_after:
            return 0
        if self.cut_seed is None:
            self.cut_seed = int.from_bytes(os.urandom(4), "little")
        return self.cut_seed

    def _on_cut(self, arg: bytes) -> None:
        """The flash's N-th operation was torn and the power went: record what it left
        ("p|e block offset length torn tag", rom/_vblockdev.py) and power up again."""
        fields = arg.decode(errors="replace").split(" ", 5)
        kind, block, offset, length, torn = fields[0], *map(int, fields[1:5])
        cut = {
            "kind": "program" if kind == "p" else "erase",
            "op": self.cut_after,
            "block": block,
            "offset": offset,
            "length": length,
            "bytes_torn": torn,  # program: new bytes written; erase: bytes left erased
            "tag": fields[5] if len(fields) > 5 else "-",
            "seed": self.cut_seed,
            "boot": self.stats.boots,
            "at": time.monotonic(),
        }
        self.stats.power_cuts += 1
        self.cut_after = 0
        self.cut_seed = None
        what = "new bytes written" if kind == "p" else "bytes erased"
        self._event(
            f"power cut in flash operation {cut['op']}: {cut['kind']} of block {block} "
            f"offset {offset}, {torn} of {length} {what} (seed {cut['seed']}, "
            f"during {cut['tag']})"
        )
        self._restart(PWRON_RESET, "friendly", delay=self.cut_off_s)
        # Everything the cut boot printed is on the console now (_kill_child read it all).
        cut["console_bytes"] = self._console_log.tell()
        self.stats.cuts.append(cut)

    def _on_console_input(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EIO):
                return
            raise
        self._rx(data)

    def _rx(self, data: bytes) -> None:
        """Bytes on UART0's RX (the pty's or the USB bridge's): the ROM loader's in download
        mode, otherwise the firmware's stdin."""
        if self._downloading and self._download is not None:
            self._download.feed(data)
            return
        child = self._child
        if child is None or child.stdin is None:
            if self._soft_restarting:
                # A soft reset keeps the UART driver: what arrives meanwhile is read later.
                self._held_input = (self._held_input + data)[-4096:]
            return  # powered off or rebooting from a hard reset: the bytes are gone
        out = bytearray()
        for b in data:
            if b == CTRL_C and self._interrupt_armed:
                self._write_child(child, bytes(out))
                out.clear()
                try:
                    os.kill(child.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            else:
                out.append(b)
        self._write_child(child, bytes(out))

    @staticmethod
    def _write_child(child: subprocess.Popen[bytes], data: bytes) -> None:
        if not data or child.stdin is None:
            return
        try:
            os.write(child.stdin.fileno(), data)
        except (BlockingIOError, BrokenPipeError):
            pass  # RX buffer overflow, as on a UART nobody reads

    def _console_out(self, data: bytes) -> None:
        # Text the firmware prints with "\n" leaves a real board as "\r\n" (MicroPython's
        # cooked stdout); the Unix port prints bare "\n", so cook it here.
        cooked = bytearray()
        for b in data:
            if b == 10 and not self._last_cr:
                cooked.append(13)
            cooked.append(b)
            self._last_cr = b == 13
        out = bytes(cooked)
        self._console_log.write(out)
        if self.echo:
            self.echo(out)
        self._uart_raw_out(out, CONSOLE_BAUD)

    def _uart_raw_out(self, data: bytes, baud: int | None = None) -> None:
        """UART0's TX as it is, to the pty and the USB bridge. The ROM loader's binary
        replies come here directly: console.log keeps the text the board printed."""
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            pass  # nobody is reading the console: a UART's bytes are gone
        if self.uart_tx is not None:
            self.uart_tx(data, baud or self.uart_baud)
