"""`albatross flash` and `albatross fleet flash` against simulated ESP32s in download mode
(host_tools/vboard/esp32rom served on socket://): the real esptool, used as a library, does
the flashing. Over a plain socket there is no DTR/RTS, so these tests do not wait for a
boot (--boot-timeout 0); hil_tests/test_flash_vboard.py does, on virtual boards."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from littlefs import LittleFS

from host_tools import flash_layout as fl
from host_tools import image as img
from host_tools.cli import main as cli_main
from host_tools.flash.flasher import flash_board
from host_tools.flash.fleet import TrayLines, read_devices
from host_tools.flash.payload import Payload, build_payload, device_id_from_mac
from host_tools.vboard import esp32boot
from host_tools.vboard.esp32rom import Esp32Chip, FlashFile, RomLoader, serve_tcp
from host_tools.vboard.esp32rom.chip import CHIP_DETECT_MAGIC_REG_ADDR, mac_from_uid

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings(
        r"ignore:set(Daemon|Name)\(\) is deprecated:DeprecationWarning"  # pyserial's rfc2217
    ),
]

BOARD = "esp32_generic_sim7600"
MB = 1024 * 1024
UID = "a1b2c3d4e5f6"
MAC = mac_from_uid(UID)
ESP32_S2_MAGIC = 0x000007C6  # esptool targets/esp32s2.py MAGIC_VALUE


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Payload:
    return build_payload(BOARD, tmp_path_factory.mktemp("build"), config={"interval_s": 7})


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fw") / "ESP32_GENERIC-standin.bin"
    path.write_bytes(fl.standin_firmware())
    return path


@contextlib.contextmanager
def esp32(
    path: Path,
    *,
    size: int = 4 * MB,
    uid: str = UID,
    magic: int | None = None,
    flash_class: type[FlashFile] = FlashFile,
) -> Iterator[tuple[str, FlashFile]]:
    """A simulated ESP32 in download mode: its url for esptool and its flash."""
    with flash_class(path, size) as flash:
        chip = Esp32Chip.for_board(uid, size)
        if magic is not None:
            chip.defaults[CHIP_DETECT_MAGIC_REG_ADDR] = magic
        with serve_tcp(RomLoader(flash, chip)) as server:
            yield server.url, flash


def config_on_flash(flash: FlashFile, offset: int, size: int) -> dict:
    fs = LittleFS(block_size=img.BLOCK_SIZE, block_count=size // img.BLOCK_SIZE, mount=False)
    fs.context.buffer = bytearray(flash.read(offset, size))
    fs.mount()
    with fs.open(img.CONFIG_FILE, "r") as f:
        return json.loads(f.read())


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    rc = cli_main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err.splitlines()


def test_default_device_id_is_the_firmwares_own() -> None:
    """Without --device-id the board gets what the firmware would call itself: app.py's
    "alb-" + board.unique_id(), where unique_id() hex-encodes machine.unique_id(), the
    ESP32's base MAC (the one esptool reads from eFuse)."""
    app = (img.FIRMWARE_DIR / "tracker" / "app.py").read_text()
    assert 'cfg["device_id"] or "alb-" + board.unique_id()' in app
    path = img.BOARDS_DIR / BOARD / "esp32_board.py"
    spec = importlib.util.spec_from_file_location("esp32_board_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    machine = types.ModuleType("machine")
    machine.unique_id = lambda: MAC  # type: ignore[attr-defined]
    saved = sys.modules.get("machine")
    sys.modules["machine"] = machine
    try:
        unique = module.Esp32Board({"name": BOARD}, BOARD).unique_id()
    finally:
        if saved is None:
            del sys.modules["machine"]
        else:
            sys.modules["machine"] = saved
    assert device_id_from_mac(MAC) == "alb-" + unique == "alb-240ac4d4e5f6"


def test_flash_writes_the_filesystem_with_the_device_config(
    payload: Payload, tmp_path: Path
) -> None:
    stages: list[str] = []
    moved: list[tuple[int, int]] = []
    with esp32(tmp_path / "flash.bin") as (url, flash):
        before = flash.read(0, 0x200000)
        report = flash_board(
            url,
            payload,
            boot_timeout=0,
            on_stage=lambda name, text: stages.append(name),
            on_progress=lambda name, done, total: moved.append((done, total)),
        )
        assert report.result == "ok", report.error
        assert stages == ["connect", "mac", "check", "provision", "write", "verify", "reset"]
        assert moved and moved[-1][0] == moved[-1][1]  # the bar reached its end
        vfs = payload.vfs_offset
        assert flash.read(0, vfs) == before  # only the filesystem partition was written
        config = config_on_flash(flash, vfs, 4 * MB - vfs)
    assert config == {"device_id": "alb-240ac4d4e5f6", "interval_s": 7}
    assert report.mac == MAC.hex(":")
    assert report.chip == "ESP32-D0WD-V3 (revision v3.0)"
    assert report.flash_size == 4 * MB
    assert report.written == [{"offset": 0x200000, "size": 0x200000}]
    # The littlefs is mostly empty blocks: esptool compresses it on the line.
    assert 0 < report.wire_bytes < report.bytes_written // 10


def test_flash_with_firmware_writes_a_full_flash_that_boots(
    firmware: Path, tmp_path: Path
) -> None:
    payload = build_payload(BOARD, tmp_path / "build", firmware=firmware)
    with esp32(tmp_path / "flash.bin") as (url, flash):
        report = flash_board(url, payload, device_id="tray-1", boot_timeout=0)
        assert report.result == "ok", report.error
        assert report.written == [{"offset": 0, "size": 4 * MB}]
        assert report.micropython == "v1.28.0"  # the stand-in app's descriptor
        written = flash.read(0, 4 * MB)
        assert written == payload.regions("tray-1")[0][1]
        assert config_on_flash(flash, 0x200000, 2 * MB)["device_id"] == "tray-1"
    # As a chip would: ROM, bootloader, partition table and app all check out.
    outcome = esp32boot.boot(tmp_path / "flash.bin", 4 * MB)
    assert outcome.error is None and outcome.vfs is not None
    assert outcome.vfs.offset == 0x200000


def test_cli_flash_prints_a_line_per_stage_and_a_json_report(
    payload: Payload, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = tmp_path / "device.json"
    device.write_text(json.dumps({"interval_s": 9}))
    with esp32(tmp_path / "flash.bin") as (url, flash):
        rc, out, err = cli(
            capsys,
            *("flash", "--port", url, "--board", BOARD, "--config", str(device)),
            *("--device-id", "fridge-9", "--boot-timeout", "0", "--json"),
        )
        assert rc == 0, err
        assert config_on_flash(flash, 0x200000, 2 * MB) == {
            "device_id": "fridge-9",
            "interval_s": 9,
        }
    report = json.loads(out)
    assert (report["result"], report["device_id"], report["mac"]) == (
        "ok",
        "fridge-9",
        MAC.hex(":"),
    )
    names = [line.split()[1] for line in err]
    assert names == ["image", "connect", "mac", "check", "provision", "write", "verify", "reset"]


def expect_one_line_error(capsys: pytest.CaptureFixture[str], url: str, *words: str) -> str:
    rc, out, err = cli(
        capsys, "flash", "--port", url, "--board", BOARD, "--boot-timeout", "0", "--json"
    )
    assert rc == 2
    assert err[-1].startswith("albatross: ") and all(w in err[-1] for w in words), err
    assert json.loads(out)["result"] == "failed"  # --json: the report says so too
    return err[-1]


def test_wrong_chip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with esp32(tmp_path / "flash.bin", magic=ESP32_S2_MAGIC) as (url, flash):
        line = expect_one_line_error(capsys, url, "wrong chip", "ESP32-S2", "has an ESP32")
        assert flash.bytes_programmed == 0
    assert url in line


def test_flash_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2 MB flash (its JEDEC id says so) on a board that needs 4 MB: nothing written."""
    with esp32(tmp_path / "flash.bin", size=2 * MB) as (url, flash):
        expect_one_line_error(capsys, url, "flash too small", "2MB", "needs 4 MB")
        assert flash.bytes_programmed == 0


class WeakCellFlash(FlashFile):
    """A flash with one bad cell: a bit at WEAK flips whenever its byte is programmed."""

    WEAK = 0x200000 + 0x1234

    def program(self, offset: int, data: bytes) -> bytes:
        out = super().program(offset, data)
        if offset <= self.WEAK < offset + len(data):
            self._write(self.WEAK, bytes([self.read(self.WEAK, 1)[0] ^ 0x04]))
        return out


def test_verify_catches_a_flipped_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with esp32(tmp_path / "flash.bin", flash_class=WeakCellFlash) as (url, flash):
        expect_one_line_error(capsys, url, "verify mismatch", "MD5")
        assert flash.bytes_programmed > 0


def test_port_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_one_line_error(capsys, str(tmp_path / "ttyUSB9"), "no such port")
    with socket.create_server(("127.0.0.1", 0)) as s:
        free = s.getsockname()[1]  # closed again: nothing listens there
    expect_one_line_error(capsys, f"socket://127.0.0.1:{free}", "connection refused")


def test_port_busy(capsys: pytest.CaptureFixture[str]) -> None:
    main_fd, sub_fd = os.openpty()
    try:
        with serial.Serial(os.ttyname(sub_fd), exclusive=True):
            expect_one_line_error(capsys, os.ttyname(sub_fd), "busy")
    finally:
        os.close(main_fd)
        os.close(sub_fd)
    # An RFC 2217 server hangs up on a second host at once, as the virtual board's USB does.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def hang_up() -> None:
            with contextlib.suppress(OSError):
                server.accept()[0].close()

        threading.Thread(target=hang_up, daemon=True).start()
        expect_one_line_error(capsys, f"rfc2217://127.0.0.1:{port}", "busy", "hung up")


def test_no_answer_gives_the_boot_button_hint(payload: Payload) -> None:
    """A port where nothing speaks the ROM's protocol (a board running its app, or not an
    ESP32 at all)."""
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
        report = flash_board(
            f"socket://127.0.0.1:{port}", payload, boot_timeout=0, connect_attempts=2
        )
    for conn in accepted:
        conn.close()
    assert (report.result, report.stage) == ("failed", "connect")
    assert "no answer" in (report.error or "") and "hold BOOT" in (report.error or "")


def test_no_first_boot_fails_the_boot_stage_with_what_the_console_showed(
    payload: Payload, tmp_path: Path
) -> None:
    """Over a plain socket nothing resets the chip: the loader stays in download mode, no
    firmware prompt comes, and the flash fails at its last stage, saying so."""
    with esp32(tmp_path / "flash.bin") as (url, _):
        report = flash_board(url, payload, boot_timeout=2)
    assert (report.result, report.stage) == ("failed", "boot")
    error = report.error or ""
    assert error.startswith(f"no first boot on {url} within 2 s") and "\n" not in error
    assert "only the filesystem was written" in error and "--firmware" in error
    assert report.stages["write"] > 0  # everything before it was done


# -- fleet ------------------------------------------------------------------------------


def rows_of(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["port"]: row for row in csv.DictReader(f)}


def test_fleet_flashes_a_tray_reports_and_skips_on_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    with contextlib.ExitStack() as stack:
        boards = [
            stack.enter_context(esp32(tmp_path / f"f{i}.bin", uid=f"00000000000{i}", size=size))
            for i, size in enumerate((4 * MB, 4 * MB, 2 * MB))
        ]
        urls = [url for url, _ in boards]
        devices = tmp_path / "devices.csv"
        devices.write_text(
            "port,mac,device_id,interval_s\n"
            f"{urls[0]},,tray-a,11\n"
            f",{mac_from_uid('000000000001').hex(':')},,12\n"  # by MAC; the default id
            f"{urls[2]},,tray-c,13\n"
        )
        argv = ["fleet", "flash", "--ports", ",".join(urls), "--devices", str(devices)]
        argv += ["--board", BOARD, "--boot-timeout", "0", "-o", str(out)]
        rc, _, err = cli(capsys, *argv)
        assert rc == 1  # one board failed; the other two are done
        assert "2 ok, 1 failed of 3" in err[-1]
        rows = rows_of(out / "fleet-report.csv")
        assert [rows[u]["result"] for u in urls] == ["ok", "ok", "failed"]
        assert rows[urls[0]]["device_id"] == "tray-a"
        assert rows[urls[1]]["device_id"] == "alb-240ac4000001"
        assert rows[urls[1]]["mac"] == "24:0a:c4:00:00:01"
        assert rows[urls[2]]["stage"] == "check" and "flash too small" in rows[urls[2]]["error"]
        assert rows[urls[2]]["mac"] == "24:0a:c4:00:00:02"  # a rejected board is named
        assert {rows[u]["app"] for u in urls} == {"0.1.0"}
        assert config_on_flash(boards[1][1], 0x200000, 2 * MB)["interval_s"] == 12
        programmed = [flash.bytes_programmed for _, flash in boards]

        # A rerun writes nothing to the boards that are done; one whose row changed is
        # flashed again.
        devices.write_text(devices.read_text().replace("tray-a,11", "tray-a,21"))
        rc, _, err = cli(capsys, *argv)
        assert "1 ok, 1 skipped, 1 failed of 3" in err[-1]
        rows = rows_of(out / "fleet-report.csv")
        assert [rows[u]["result"] for u in urls] == ["ok", "skipped", "failed"]
        assert boards[1][1].bytes_programmed == programmed[1]
        assert boards[0][1].bytes_programmed > programmed[0]
        assert config_on_flash(boards[0][1], 0x200000, 2 * MB)["interval_s"] == 21
    report = json.loads((out / "fleet-report.json").read_text())["devices"]
    assert len(report) == 3 and all(r["seconds"] > 0 for r in report)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tray_lines_redraw_one_line_per_port_on_a_terminal() -> None:
    tty = FakeTty()
    lines = TrayLines(["/dev/ttyUSB0", "/dev/ttyUSB10"], tty)
    lines.stage("/dev/ttyUSB0", "connect", "ESP32")
    lines.progress("/dev/ttyUSB10", "write", 50, 100)  # within 0.1 s: not drawn yet
    lines.last = 0.0
    lines.progress("/dev/ttyUSB10", "write", 60, 100)
    frames = tty.getvalue().split("\x1b[2A")  # back up over both lines, then redraw
    assert len(frames) == 2
    last = frames[-1].replace("\r\x1b[K", "").splitlines()
    assert last == [
        "/dev/ttyUSB0   connect   ESP32",
        "/dev/ttyUSB10  write     [##############----------]  60%  60 B",
    ]
    log = io.StringIO()  # not a terminal: a line per stage, no bars
    lines = TrayLines(["/dev/ttyUSB0"], log)
    lines.progress("/dev/ttyUSB0", "write", 1, 2)
    lines.stage("/dev/ttyUSB0", "verify", "MD5 matches")
    assert log.getvalue() == "fleet: /dev/ttyUSB0  verify    MD5 matches\n"


@pytest.mark.parametrize(
    "text, words",
    [
        ("device_id\ntray-1\n", "needs a port or a mac column"),
        ("port,intervl_s\n/dev/ttyUSB0,5\n", "column intervl_s: unknown key"),
        ("port,device_id\n/dev/ttyUSB0,a b\n", "line 2: device_id"),
        ("port,device_id\n/dev/ttyUSB0,x\n/dev/ttyUSB1,x\n", "line 3: device_id x is already"),
        ("mac,device_id\n24:0a:c4,x\n", "line 2: '24:0a:c4' is not a MAC"),
        ("port,interval_s\n/dev/ttyUSB0,0\n", "line 2: interval_s must be"),
    ],
)
def test_devices_csv_is_checked_before_any_port(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        read_devices(path)
