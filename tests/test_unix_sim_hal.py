"""The virtual board's HAL under the real MicroPython Unix port: simhal's I2C and ADC reach the
bench and behave like the ESP32's machine.I2C/ADC (values, errnos); board.py builds the
Board the app uses. Also the LilyGO board factory's wiring, with a fake `machine`."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.vboard.bench import Bench

REPO = Path(__file__).resolve().parents[1]
UNIX_SIM = REPO / "boards" / "unix_sim"
MICROPYTHON = Path(sys.executable).with_name("micropython")

pytestmark = pytest.mark.skipif(not MICROPYTHON.exists(), reason="micropython not installed")

PRELUDE = f"""
import sys, time
sys.path.insert(0, {str(UNIX_SIM)!r})
import simhal
i2c = simhal.I2C(0)
def show(f):
    try:
        print(f())
    except OSError as e:
        print("errno", e.args[0])
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="simhal-"))  # short: AF_UNIX paths are ~100 bytes max
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bench(workdir: Path) -> Iterator[Bench]:
    b = Bench(workdir / "bench").start()
    yield b
    b.stop()


def run_mp(workdir: Path, script: str, *, bench: Bench | None) -> list[str]:
    path = workdir / "script.py"
    path.write_text(PRELUDE + script)
    env = {k: v for k, v in os.environ.items() if k != "ALBATROSS_BENCH"}
    if bench is not None:
        env["ALBATROSS_BENCH"] = str(bench.socket_path)
    r = subprocess.run(
        [str(MICROPYTHON), str(path)], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


def decode(hexstr: str) -> tuple[float, float]:
    b = bytes.fromhex(hexstr)
    return -45 + 175 * (b[0] << 8 | b[1]) / 65535, -6 + 125 * (b[3] << 8 | b[4]) / 65535


def test_measurement_through_simhal_reads_the_benchs_values(workdir: Path, bench: Bench) -> None:
    bench.set_temperature(-18.3)
    bench.set_humidity(72.5)
    out = run_mp(
        workdir,
        """
print(i2c.scan())
i2c.writeto(0x44, b"\\xfd")
time.sleep_ms(10)
print(i2c.readfrom(0x44, 6).hex())
buf = bytearray(6)
i2c.writeto(0x44, b"\\x89")
time.sleep_ms(10)
i2c.readfrom_into(0x44, buf)
print(buf.hex())
""",
        bench=bench,
    )
    assert out[0] == "[68]"
    t, rh = decode(out[1])
    assert abs(t + 18.3) < 0.003 and abs(rh - 72.5) < 0.002
    sn = bytes.fromhex(out[2])
    assert (sn[0] << 24 | sn[1] << 16 | sn[3] << 8 | sn[4]) == bench.sht4x.serial_number
    assert [e["op"] for e in bench.transactions()] == ["scan", "write", "read6", "write", "read6"]


def test_faults_raise_the_esp32_errnos(workdir: Path, bench: Bench) -> None:
    bench.fault("i2c_nack")
    nack = run_mp(workdir, 'show(lambda: i2c.writeto(0x44, b"\\xfd"))', bench=bench)
    bench.fault("i2c_nack", False)
    bench.fault("i2c_stuck")
    stuck = run_mp(
        workdir,
        'show(lambda: i2c.writeto(0x44, b"\\xfd"))\nshow(lambda: i2c.readfrom(0x44, 6))',
        bench=bench,
    )
    bench.fault("i2c_stuck", False)
    ok = run_mp(workdir, 'show(lambda: i2c.writeto(0x44, b"\\xfd"))', bench=bench)
    assert nack == ["errno 19"]  # ENODEV: no ACK
    assert stuck == ["errno 116", "errno 116"]  # ETIMEDOUT as on the ESP32 (not Linux's 110)
    assert ok == ["1"]


def test_crc_fault_reaches_the_firmware_as_bad_crc_bytes(workdir: Path, bench: Bench) -> None:
    bench.fault("i2c_crc", count=1)
    out = run_mp(
        workdir,
        """
for _ in range(2):
    i2c.writeto(0x44, b"\\xfd")
    time.sleep_ms(10)
    print(i2c.readfrom(0x44, 6).hex())
""",
        bench=bench,
    )
    first, second = (bytes.fromhex(h) for h in out)
    assert first[:2] == second[:2] and first[2] != second[2]  # same value, corrupted CRC
    assert bench.snapshot()["sht4x"]["corrupted_replies"] == 1


def test_adc_reads_battery_over_divider(workdir: Path, bench: Bench) -> None:
    bench.set_battery(3.7)
    out = run_mp(
        workdir,
        "adc = simhal.ADC('battery')\nprint(adc.read_uv(), adc.read_u16())",
        bench=bench,
    )
    uv, u16 = map(int, out[0].split())
    assert uv == 1_850_000  # 3.7 V / 2
    assert abs(u16 - 1.85 / 3.1 * 65535) <= 1


def test_without_a_bench_i2c_fails_like_an_absent_device(workdir: Path) -> None:
    out = run_mp(workdir, "show(lambda: i2c.scan())", bench=None)
    assert out == ["errno 19"]


def test_firmware_keeps_working_across_a_bench_restart(workdir: Path) -> None:
    bench_dir = workdir / "bench"
    b = Bench(bench_dir).start()
    path = workdir / "script.py"
    path.write_text(
        PRELUDE
        + """
show(lambda: i2c.scan())
sys.stdin.readline()
show(lambda: i2c.scan())
print("reconnects", simhal.link().reconnects)
"""
    )
    env = {**os.environ, "ALBATROSS_BENCH": str(b.socket_path)}
    p = subprocess.Popen(
        [str(MICROPYTHON), str(path)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline().strip() == "[68]"
        b.stop()
        b = Bench(bench_dir).start()
        p.stdin.write("\n")
        p.stdin.flush()
        out, _ = p.communicate(timeout=30)
    finally:
        b.stop()
        if p.poll() is None:
            p.kill()
    assert out.split("\n")[:2] == ["[68]", "reconnects 1"]


FAKE_MACHINE = """
def reset_cause():
    return 3
def unique_id():
    return b"\\xa1\\xb2\\x0c"
resets = []
def reset():
    resets.append(1)
"""


def test_board_factory_builds_the_board_the_app_uses(workdir: Path, bench: Bench) -> None:
    (workdir / "fake_machine.py").write_text(FAKE_MACHINE)
    bench.set_battery(4.1)
    out = run_mp(
        workdir,
        f"""
sys.path.insert(0, {str(workdir)!r})
import fake_machine as machine
sys.modules["machine"] = machine  # as the virtual ROM installs its own
import board
b = board.create()
print(b.name, b.reset_cause(), b.unique_id(), b.info["sht4x_addr"])
print(b.i2c() is b.i2c(), b.i2c().scan())
print(b.battery_adc().read_uv() * b.battery_divider)
b.reset()
print(len(machine.resets))
""",
        bench=bench,
    )
    assert out == ["unix_sim watchdog a1b20c 68", "True [68]", "4100000.0", "1"]


def test_open_stream_is_one_object_for_reading_and_writing(workdir: Path, bench: Bench) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(conn.recv(16).upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = run_mp(
            workdir,
            f"""
import asyncio, board
async def main():
    s = await board.create().open_stream("127.0.0.1", {port})
    s.write(b"ping")
    await s.drain()
    print((await s.read(4)).decode())
    s.close()
asyncio.run(main())
""",
            bench=bench,
        )
    finally:
        t.join(timeout=5)
        srv.close()
    assert out == ["PING"]


class FakeEsp32Machine(types.ModuleType):
    """The parts of the ESP32 port's `machine` the board factories use, recording what they
    build: Pin(n, mode, value=...), I2C, ADC, UART(..., txbuf, rxbuf), WDT, mem32."""

    def __init__(self, cause: int = 1, rtc_reason: int = 1) -> None:
        super().__init__("machine")
        made: list[tuple] = []
        self.made = made
        self.cause = cause
        self.rtc_reason = rtc_reason
        machine = self

        class Pin:
            IN, OUT = 1, 3

            def __init__(self, n: int, mode: int | None = None, value: int | None = None) -> None:
                self.n = n
                if mode is not None:
                    made.append(("Pin", n, "out" if mode == Pin.OUT else "in", value))

        class I2C:
            def __init__(self, id: int, *, scl: Pin, sda: Pin, freq: int) -> None:
                made.append(("I2C", id, scl.n, sda.n, freq))

        class ADC:
            ATTN_11DB = 3

            def __init__(self, pin: Pin) -> None:
                made.append(("ADC", pin.n))

            def atten(self, a: int) -> None:
                made.append(("atten", a))

        class UART:
            def __init__(self, id: int, **kw: int) -> None:
                made.append(("UART", id, kw))

        class Mem32:
            def __getitem__(self, addr: int) -> int:
                assert addr == 0x3FF48034, hex(addr)  # only the reset-reason register
                return 0x1C0 | machine.rtc_reason  # APP CPU's reason in bits 6..11

        self.Pin, self.I2C, self.ADC, self.UART = Pin, I2C, ADC, UART
        self.mem32 = Mem32()
        self.reset_cause = lambda: machine.cause
        self.WDT = lambda id=0, timeout=5000: made.append(("WDT", timeout))


def load_real_board(board: str, monkeypatch: pytest.MonkeyPatch, machine: types.ModuleType):
    """boards/<board>/board.py as the device imports it: its folder is the device root."""
    folder = REPO / "boards" / board
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "esp32_board", raising=False)
    spec = importlib.util.spec_from_file_location(f"{board}_board", folder / "board.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.create()


# (board, I2C, battery ADC pin, modem UART, flight pin, dtr pin, ri pin, status pin)
REAL_BOARDS = [
    ("lilygo_t_sim7600", ("I2C", 0, 22, 21, 100000), 35, (1, 27, 26), 25, 32, 33, 34),
    ("esp32_generic_sim7600", ("I2C", 0, 22, 21, 100000), 35, (2, 17, 16), 25, 32, 33, 34),
]


@pytest.mark.parametrize(
    ("board", "i2c", "adc", "uart", "flight", "dtr", "ri", "status"), REAL_BOARDS
)
def test_real_board_factories_wire_the_documented_pins(
    monkeypatch: pytest.MonkeyPatch,
    board: str,
    i2c: tuple,
    adc: int,
    uart: tuple,
    flight: int,
    dtr: int,
    ri: int,
    status: int,
) -> None:
    machine = FakeEsp32Machine()
    b = load_real_board(board, monkeypatch, machine)
    assert b.name == board
    b.i2c()
    b.battery_adc()
    assert machine.made == [i2c, ("ADC", adc), ("atten", 3)]
    machine.made.clear()
    with monkeypatch.context() as m:  # MicroPython's StreamReader wraps any stream
        m.setitem(sys.modules, "asyncio", types.SimpleNamespace(StreamReader=lambda s: s))
        b.modem_stream()
    uart_id, tx, rx = uart
    # txbuf holds a whole 1460-byte send; rxbuf a read answer plus URCs (esp32_board.py)
    kw = {"baudrate": 115200, "tx": tx, "rx": rx, "txbuf": 2048, "rxbuf": 4096}
    assert machine.made == [("UART", uart_id, kw)]
    machine.made.clear()
    pins = b.modem_pins()
    # unused control lines first, at a defined level: RF on, DTR asserted (low), RI an input
    assert machine.made == [
        ("Pin", flight, "out", 1),
        ("Pin", dtr, "out", 0),
        ("Pin", ri, "in", None),
        ("Pin", 4, "out", 0),  # PWRKEY released from the first instant
        ("Pin", status, "in", None),
    ]
    assert pins["pwrkey_active"] == 1 and pins["status_active"] == 1 and pins["power"] is None
    machine.made.clear()
    b.modem_pins()
    assert ("Pin", dtr, "out", 0) not in machine.made  # held once, not re-driven
    assert b.battery_divider == 2.0 and b.info["modem"]["family"] == "sim7600"
    with pytest.raises(NotImplementedError, match="use the modem"):
        asyncio.run(b.open_stream("example.org", 1883))
    b.watchdog(30000)
    assert machine.made[-1] == ("WDT", 30000)


@pytest.mark.parametrize("board", [b[0] for b in REAL_BOARDS])
def test_real_boards_tell_a_brownout_from_a_power_on(
    monkeypatch: pytest.MonkeyPatch, board: str
) -> None:
    # ESP32 MicroPython says PWRON_RESET for both; the RTC reset-reason register tells (15).
    for cause, reason, name in [(1, 1, "power_on"), (1, 15, "brownout"), (3, 15, "watchdog"),
                                (2, 12, "hard"), (5, 15, "soft")]:  # fmt: skip
        b = load_real_board(board, monkeypatch, FakeEsp32Machine(cause, reason))
        assert b.reset_cause() == name, (cause, reason)


def test_the_real_boards_share_one_factory_and_each_image_carries_it() -> None:
    from host_tools import image as img

    lilygo = REPO / "boards" / "lilygo_t_sim7600" / "esp32_board.py"
    generic = REPO / "boards" / "esp32_generic_sim7600" / "esp32_board.py"
    assert lilygo.resolve() == generic.resolve()  # one file in the tree
    for board in ("lilygo_t_sim7600", "esp32_generic_sim7600"):
        files = dict(img.board_files(board))
        assert {"board.py", "board.json", "esp32_board.py"} <= set(files)
        assert files["esp32_board.py"].read_bytes() == generic.read_bytes()


def test_real_board_json_blocks_match_micropython_and_the_modules() -> None:
    import json

    generic = json.loads((REPO / "boards/esp32_generic_sim7600/board.json").read_text())
    lilygo = json.loads((REPO / "boards/lilygo_t_sim7600/board.json").read_text())
    unix_sim = json.loads((REPO / "boards/unix_sim/board.json").read_text())
    assert generic["ram"]["psram"] is False and generic["ram"]["micropython_heap"] == 111936
    assert generic["micropython"] == {
        "port": "esp32",
        "board": "ESP32_GENERIC",
        "version": "1.28.0",
    }
    # partitions-4MiBplus.csv: the app ends at 0x200000, the vfs gets the rest of 4 MiB
    for info in (generic, lilygo, unix_sim):
        assert info["flash"] == {"size": 4194304, "vfs_size": 4194304 - (0x10000 + 0x1F0000)}
    assert lilygo["ram"]["psram"] is True and lilygo["ram"] == {
        **lilygo["ram"],
        "micropython_heap": unix_sim["ram"]["micropython_heap"],
    }
    for info in (generic, lilygo, unix_sim):
        assert info["modem"]["status"]["active"] in (0, 1)
