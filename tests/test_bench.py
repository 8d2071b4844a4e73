"""The simulated bench: the SHT4x answers its real command bytes with datasheet timing and
CRCs, faults behave as on a bench, and both sockets (binary for the firmware, JSON lines
for tests and tools) serve what they promise and survive bad clients."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.vboard import bench as bench_mod
from host_tools.vboard.bench import Bench, BenchClient, BenchError
from host_tools.vboard.sht4x_sim import Sht4xSim, crc8

REPO = Path(__file__).resolve().parents[1]
ENODEV, ETIMEDOUT = 19, 116  # ESP32 errno values


# -- reference implementations, written from the datasheet, independent of the sim --------


def ref_crc(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1) ^ 0x131 if crc & 0x80 else crc << 1
    return crc & 0xFF


def decode(reply: bytes) -> tuple[float, float]:
    """Check both CRCs, return (degC, %RH) by the datasheet formulas."""
    assert len(reply) == 6
    for i in (0, 3):
        assert ref_crc(reply[i : i + 2]) == reply[i + 2], f"bad CRC in word {i // 3}"
    s_t = reply[0] << 8 | reply[1]
    s_rh = reply[3] << 8 | reply[4]
    return -45 + 175 * s_t / 65535, -6 + 125 * s_rh / 65535


def crc_ok(reply: bytes) -> list[bool]:
    return [ref_crc(reply[i : i + 2]) == reply[i + 2] for i in (0, 3)]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Sht4xSim:
    return Sht4xSim(clock=clock, temperature_c=23.4, humidity_pct=61.2)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short path: AF_UNIX socket paths are limited to ~100 bytes.
    d = Path(tempfile.mkdtemp(prefix="bench-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bench(workdir: Path, clock: FakeClock) -> Iterator[Bench]:
    b = Bench(workdir, clock=clock)
    b.start()
    yield b
    b.stop()


def measure(sim: Sht4xSim, clock: FakeClock, cmd: int = 0xFD, wait: float = 0.0084) -> bytes:
    assert sim.write(bytes([cmd]))
    clock.advance(wait)
    reply = sim.read(6)
    assert reply is not None
    return reply


# -- the SHT4x on the wire ----------------------------------------------------------------


def test_crc_matches_sensirion_test_vectors() -> None:
    assert crc8(b"\xbe\xef") == 0x92
    assert crc8(b"\xff\xff") == 0xAC  # a floating bus reading all 0xFF fails the CRC


@pytest.mark.parametrize(
    ("cmd", "max_s"), [(0xFD, 0.0083), (0xF6, 0.0045), (0xE0, 0.0016)], ids=["high", "med", "low"]
)
def test_measurement_is_nacked_until_its_datasheet_duration(
    sim: Sht4xSim, clock: FakeClock, cmd: int, max_s: float
) -> None:
    assert sim.write(bytes([cmd]))
    clock.advance(max_s - 0.0002)
    assert sim.read(6) is None  # still converting: the read header is NACKed
    clock.advance(0.0003)
    t, rh = decode(sim.read(6) or b"")
    assert abs(t - 23.4) < 0.003  # one LSB is 175/65535 = 0.0027 degC
    assert abs(rh - 61.2) < 0.002


def test_reply_is_read_once_and_a_read_without_command_is_nacked(
    sim: Sht4xSim, clock: FakeClock
) -> None:
    assert sim.read(6) is None
    measure(sim, clock)
    assert sim.read(6) is None
    assert sim.measurements_served == 1


def test_values_beyond_the_word_range_clamp(sim: Sht4xSim, clock: FakeClock) -> None:
    sim.temperature_c, sim.humidity_pct = 200.0, -20.0
    reply = measure(sim, clock)
    assert reply[0:2] == b"\xff\xff" and reply[3:5] == b"\x00\x00"
    assert all(crc_ok(reply))


def test_serial_number_is_two_crc_protected_words(sim: Sht4xSim, clock: FakeClock) -> None:
    sim.serial_number = 0x1234ABCD
    reply = measure(sim, clock, cmd=0x89, wait=0.002)
    assert all(crc_ok(reply))
    assert (reply[0] << 24 | reply[1] << 16 | reply[3] << 8 | reply[4]) == 0x1234ABCD
    assert sim.measurements_served == 0


def test_soft_reset_drops_a_pending_reply_and_is_busy_briefly(
    sim: Sht4xSim, clock: FakeClock
) -> None:
    assert sim.write(b"\xfd")
    clock.advance(0.01)
    assert sim.write(b"\x94")
    clock.advance(0.0005)
    assert not sim.write(b"\xfd")  # still resetting
    clock.advance(0.001)
    assert sim.read(6) is None  # the measurement taken before the reset is gone
    assert sim.soft_resets == 1
    decode(measure(sim, clock))


def test_writes_while_busy_unknown_commands_and_extra_bytes_are_nacked(
    sim: Sht4xSim, clock: FakeClock
) -> None:
    assert sim.write(b"\xfd")
    assert not sim.write(b"\xf6")  # busy converting
    clock.advance(0.01)
    assert not sim.write(b"\x00")
    assert not sim.write(b"\xfd\x00")
    assert sim.write(b"")  # address probe
    decode(sim.read(6) or b"")  # the first measurement is still there


@pytest.mark.parametrize(
    ("cmd", "busy_s", "min_rise", "max_rise"),
    [(0x39, 1.1, 5.0, 15.0), (0x24, 0.11, 0.2, 2.0), (0x15, 0.11, 0.01, 0.5)],
)
def test_heater_measures_after_heating_and_reads_warmer_and_drier(
    sim: Sht4xSim, clock: FakeClock, cmd: int, busy_s: float, min_rise: float, max_rise: float
) -> None:
    assert sim.write(bytes([cmd]))
    clock.advance(busy_s - 0.01)
    assert sim.read(6) is None
    clock.advance(0.011)
    t, rh = decode(sim.read(6) or b"")
    assert min_rise < t - 23.4 < max_rise
    assert rh < 61.2
    assert sim.heater_pulses == 1
    t, rh = decode(measure(sim, clock))  # no thermal memory: next plain reading is the set one
    assert abs(t - 23.4) < 0.003


def test_crc_fault_with_count_corrupts_exactly_that_many_replies(
    sim: Sht4xSim, clock: FakeClock
) -> None:
    sim.set_crc_fault(True, count=2)
    bad = [measure(sim, clock) for _ in range(2)]
    assert all(crc_ok(r) == [False, False] for r in bad)
    decode(measure(sim, clock))
    assert sim.corrupted_replies == 2 and sim.measurements_served == 3


def test_crc_fault_without_count_lasts_until_switched_off(sim: Sht4xSim, clock: FakeClock) -> None:
    sim.set_crc_fault(True)
    for _ in range(5):
        assert crc_ok(measure(sim, clock)) == [False, False]
    sim.set_crc_fault(False)
    decode(measure(sim, clock))


def test_nack_fault_silences_the_sensor(sim: Sht4xSim, clock: FakeClock) -> None:
    sim.nack = True
    assert not sim.write(b"\xfd") and not sim.write(b"")
    sim.nack = False
    decode(measure(sim, clock))


# -- the bench: bus, faults, ADC, log ----------------------------------------------------


def test_bench_stuck_bus_times_out_every_transaction(bench: Bench, clock: FakeClock) -> None:
    bench.fault("i2c_stuck")
    assert bench.i2c_write(0x44, b"\xfd") == ETIMEDOUT
    assert bench.i2c_write(0x10, b"\x00") == ETIMEDOUT  # the whole bus, not one device
    assert bench.i2c_read(0x44, 6) == (ETIMEDOUT, b"")
    assert bench.i2c_scan() == []
    bench.fault("i2c_stuck", False)
    assert bench.i2c_write(0x44, b"\xfd") == 0
    clock.advance(0.01)
    status, data = bench.i2c_read(0x44, 6)
    assert status == 0 and abs(decode(data)[0] - 21.0) < 0.003


def test_bench_nack_fault_and_absent_devices(bench: Bench) -> None:
    assert bench.i2c_scan() == [0x44]
    assert bench.i2c_write(0x45, b"\xfd") == ENODEV
    bench.fault("i2c_nack", True)
    assert bench.i2c_write(0x44, b"\xfd") == ENODEV
    assert bench.i2c_scan() == []
    assert bench.faults()["i2c_nack"] == {"on": True, "addrs": [0x44]}
    bench.fault("i2c_nack", False)
    assert bench.i2c_scan() == [0x44]


def test_bench_sensor_address_and_divider_come_from_board_json(
    workdir: Path, clock: FakeClock
) -> None:
    b = Bench(workdir, board_info={"sht4x_addr": 0x45, "battery_divider": 3.0}, clock=clock)
    assert b.i2c_scan() == [0x45]
    assert b.adc_read("battery")[0] == 1_300_000  # 3.9 V / 3
    b = Bench(workdir, board_info={"sensors": [{"part": "sht4x", "address": 0x46}]})
    assert b.i2c_scan() == [0x46]


def test_bench_adc_reads_battery_through_divider_and_clamps(bench: Bench) -> None:
    assert bench.adc_read("battery") == (1_950_000, round(1.95 / 3.1 * 65535))
    bench.set_battery(3.7)
    assert bench.adc_read("battery")[0] == 1_850_000
    bench.set_battery(8.0)  # 4 V at the pin: the ESP32 ADC at 11 dB saturates near 3.1 V
    assert bench.adc_read("battery") == (3_100_000, 65535)
    with pytest.raises(BenchError, match="no ADC channel 'solar'"):
        bench.adc_read("solar")


def test_bench_rejects_bad_values_without_changing_anything(bench: Bench) -> None:
    before = bench.state()
    for bad in (
        {"temperature": float("nan")},
        {"temperature": 21.0, "humidity": 120},
        {"battery": -1},
        {"battery": True},
        {"pressure": 1000},
        {},
    ):
        with pytest.raises(BenchError):
            bench.set(**bad)
    assert bench.state() == before
    with pytest.raises(BenchError, match="unknown fault 'i2c_bogus'.*i2c_crc"):
        bench.fault("i2c_bogus")
    with pytest.raises(BenchError, match="unknown parameter 'cnt'"):
        bench.fault("i2c_crc", cnt=3)
    with pytest.raises(BenchError, match="no I2C device at 0x50"):
        bench.fault("i2c_nack", addr=0x50)


def test_transactions_are_kept_in_a_ring_and_in_i2c_log(bench: Bench, clock: FakeClock) -> None:
    bench.i2c_write(0x44, b"\xfd")
    bench.i2c_read(0x44, 6)  # too early: NACK
    clock.advance(0.01)
    bench.i2c_read(0x44, 6)
    log = bench.transactions()
    assert [(e["op"], e["addr"], e["result"]) for e in log] == [
        ("write", 0x44, "ack"),
        ("read6", 0x44, "nack"),
        ("read6", 0x44, "ack"),
    ]
    assert log[0]["data"] == "fd" and len(bytes.fromhex(log[2]["data"])) == 6
    lines = bench.log_path.read_text().splitlines()
    assert len(lines) == 3 and "0x44 [fd] ack" in lines[0] and lines[0][:2] == "20"
    assert bench.transactions(last=1) == log[-1:]


# -- control socket (JSON lines) ---------------------------------------------------------


def _talk(path: Path, *lines: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        f = s.makefile("rb")
        replies = []
        for line in lines:
            s.sendall(line)
            replies.append(json.loads(f.readline()))
        return replies


def test_control_set_fault_snapshot(bench: Bench, workdir: Path, clock: FakeClock) -> None:
    client = BenchClient(workdir)
    assert client.set(temperature=-18.5, humidity=40, battery=3.7)["state"] == {
        "temperature": -18.5,
        "humidity": 40,
        "battery": 3.7,
    }
    client.fault("i2c_crc", count=3)
    assert client.faults()["i2c_crc"]["count"] == 3
    for _ in range(4):
        bench.i2c_write(0x44, b"\xfd")
        clock.advance(0.01)
        bench.i2c_read(0x44, 6)
    snap = client.snapshot()
    assert snap["temperature_c"] == -18.5 and snap["battery_v"] == 3.7
    assert snap["adc"]["battery"]["uv"] == 1_850_000
    assert snap["sht4x"]["corrupted_replies"] == 3
    assert snap["sht4x"]["measurements_served"] == 4
    assert snap["faults"]["i2c_crc"] == {"on": False}
    assert client.transactions(last=2)[-1]["op"] == "read6"


def test_control_errors_are_clear_and_the_server_survives(bench: Bench) -> None:
    replies = _talk(
        bench.control_path,
        b"{not json\n",
        b'["cmd"]\n',
        b'{"cmd": "frobnicate"}\n',
        b'{"cmd": "set", "humidity": "wet"}\n',
        b'{"cmd": "fault", "name": "i2c_nope"}\n',
        b'{"cmd": "fault", "name": "i2c_crc", "on": "yes"}\n',
        b'{"cmd": "snapshot", "extra": 1}\n',
        b'{"cmd": "set", "temperature": 30}\n',
    )
    errors = [r.get("error", "") for r in replies[:-1]]
    assert all(r["ok"] is False for r in replies[:-1])
    assert errors[0].startswith("bad JSON")
    assert "JSON object" in errors[1]
    assert "unknown command 'frobnicate'" in errors[2] and "snapshot" in errors[2]
    assert "humidity must be a number" in errors[3]
    assert "unknown fault 'i2c_nope'" in errors[4]
    assert "'on' must be true or false" in errors[5]
    assert "bad arguments for 'snapshot'" in errors[6]
    assert replies[-1] == {
        "ok": True,
        "state": {"temperature": 30, "humidity": 45.0, "battery": 3.9},
    }
    assert _talk(bench.control_path, b'{"cmd": "faults"}\n')[0]["ok"] is True


def test_client_raises_bench_error_with_the_servers_message(bench: Bench, workdir: Path) -> None:
    client = BenchClient(bench.control_path)
    with pytest.raises(BenchError, match="temperature must be between -45 and 130"):
        client.set(temperature=500)
    with pytest.raises(BenchError, match="unknown command"):
        client.call("bogus")


def test_client_without_a_bench_says_so(workdir: Path) -> None:
    with pytest.raises(BenchError, match="no bench at .*control.sock"):
        BenchClient(workdir).snapshot()


def test_add_control_extends_the_server(bench: Bench, workdir: Path) -> None:
    calls = []
    bench.add_control("reset", lambda kind="hard", **_: calls.append(kind) or {"kind": kind})

    def broken() -> None:
        raise RuntimeError("supervisor on fire")

    bench.add_control("status", broken)
    client = BenchClient(workdir)
    assert client.call("reset", kind="soft") == {"kind": "soft"}
    assert calls == ["soft"]
    with pytest.raises(BenchError, match="internal error in 'status'.*supervisor on fire"):
        client.call("status")
    assert client.call("help")["commands"] == sorted(
        ["fault", "faults", "help", "log", "reset", "set", "snapshot", "status"]
    )
    with pytest.raises(BenchError, match="already exists"):
        bench.add_control("reset", lambda: None)


def test_oversized_control_line_is_refused(bench: Bench) -> None:
    big = b'{"cmd": "set", "x": "' + b"a" * (bench_mod.MAX_CONTROL_LINE + 10) + b'"}\n'
    reply = _talk(bench.control_path, big)[0]
    assert reply["ok"] is False and "longer than" in reply["error"]
    assert BenchClient(bench.control_path).snapshot()["battery_v"] == 3.9


# -- firmware socket (binary frames) -----------------------------------------------------


def _frame(op: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", op, len(payload)) + payload


def _reply(s: socket.socket) -> tuple[int, bytes]:
    f = s.makefile("rb")
    status, n = struct.unpack(">BH", f.read(3))
    return status, f.read(n)


def test_binary_protocol_over_a_real_socket(bench: Bench, clock: FakeClock) -> None:
    bench.set_temperature(-7.25)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(bench.socket_path))

        def req(op: int, payload: bytes = b"") -> tuple[int, bytes]:
            s.sendall(_frame(op, payload))
            return _reply(s)

        assert req(0x01) == (0, b"\x01albatross-bench")
        assert req(0x12, b"\x00") == (0, b"\x44")
        assert req(0x10, b"\x00\x44\x01\xfd") == (0, b"")
        assert req(0x11, b"\x00\x44\x01\x00\x06") == (ENODEV, b"")  # too early
        clock.advance(0.01)
        status, data = req(0x11, b"\x00\x44\x01\x00\x06")
        assert status == 0 and abs(decode(data)[0] + 7.25) < 0.003
        assert req(0x20, b"battery") == (0, struct.pack(">IH", 1_950_000, 41224))
        assert req(0x20, b"nope")[0] == ENODEV
        assert req(0x7F) == (95, b"")  # unknown op
        assert req(0x11, b"\x00\x44")[0] == 22  # malformed payload
        assert req(0x11, b"\x00\x44\x01\xff\xff")[0] == 22  # absurd read length
        bench.fault("i2c_stuck")
        assert req(0x10, b"\x00\x44\x01\xfd") == (ETIMEDOUT, b"")
        assert req(0x01)[0] == 0  # still serving after all that
    assert bench.snapshot()["wire"]["requests"] == 12


def test_binary_server_survives_clients_that_vanish(bench: Bench) -> None:
    for junk in (b"\x10\x00", b"\x10\x00\x09\x00\x44", b""):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(bench.socket_path))
            s.sendall(junk)  # and hang up mid-frame, like a board that reset
    clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
    try:
        for c in clients:
            c.settimeout(5)
            c.connect(str(bench.socket_path))
        for c in reversed(clients):
            c.sendall(_frame(0x12, b"\x00"))
            assert _reply(c) == (0, b"\x44")
    finally:
        for c in clients:
            c.close()


def test_concurrent_clients_each_get_their_own_replies(bench: Bench) -> None:
    errors: list[str] = []

    def worker(channel: bytes, expect: bytes) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(bench.socket_path))
            for _ in range(200):
                s.sendall(_frame(0x20 if channel else 0x12, channel or b"\x00"))
                got = _reply(s)
                if got != (0, expect):
                    errors.append(repr(got))

    uv = struct.pack(">IH", *bench.adc_read("battery"))
    threads = [threading.Thread(target=worker, args=a) for a in [(b"battery", uv), (b"", b"D")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_stop_removes_sockets_and_a_second_bench_cannot_steal_them(workdir: Path) -> None:
    b = Bench(workdir).start()
    with pytest.raises(BenchError, match="another bench"):
        Bench(workdir).start()
    b.stop()
    assert not b.socket_path.exists() and not b.control_path.exists()
    b2 = Bench(workdir).start()  # a stale socket file would be replaced too
    b2.stop()


# -- simhal (the firmware's side) on CPython against the bench ------------------------------


def _simhal():
    spec = importlib.util.spec_from_file_location(
        "simhal_cpython", REPO / "boards" / "unix_sim" / "simhal.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_simhal_raises_what_the_esp32_raises(bench: Bench, clock: FakeClock) -> None:
    simhal = _simhal()
    link = simhal.BenchLink(str(bench.socket_path))
    i2c = simhal.I2C(0, link=link)
    assert i2c.scan() == [0x44]
    assert i2c.writeto(0x44, b"\xfd") == 1
    with pytest.raises(OSError) as e:
        i2c.readfrom(0x44, 6)
    assert e.value.errno == ENODEV
    clock.advance(0.01)
    buf = bytearray(6)
    i2c.readfrom_into(0x44, buf)
    assert abs(decode(bytes(buf))[0] - 21.0) < 0.003
    bench.fault("i2c_stuck")
    with pytest.raises(OSError) as e:
        i2c.writeto(0x44, b"\xfd")
    assert e.value.errno == ETIMEDOUT
    adc = simhal.ADC("battery", link=link)
    assert adc.read_uv() == 1_950_000 and adc.read_u16() == 41224
    with pytest.raises(ValueError, match="ATTN_11DB"):
        adc.atten(adc.ATTN_6DB)


def test_simhal_reconnects_after_the_bench_restarts(workdir: Path) -> None:
    simhal = _simhal()
    link = simhal.BenchLink(str(workdir / "bench.sock"))
    b = Bench(workdir).start()
    assert simhal.I2C(link=link).scan() == [0x44]
    b.stop()
    with pytest.raises(simhal.BenchUnavailable):
        simhal.I2C(link=link).scan()
    b = Bench(workdir).start()
    try:
        assert simhal.I2C(link=link).scan() == [0x44]
    finally:
        b.stop()


class _StubModem:
    """What attach_modem needs of a ModemSimulator: its pins, faults and controls."""

    def __init__(self) -> None:
        self.on = False
        self.uart_path = "/dev/null"

    def status_pin(self) -> int:
        return 1 if self.on else 0

    def set_pwrkey(self, level: int) -> None:
        pass

    def faults(self) -> dict:
        return {}


@pytest.mark.parametrize("active", [1, 0])
def test_modem_status_line_follows_board_json_polarity_and_can_be_miswired(
    bench: Bench, active: int
) -> None:
    from host_tools.vboard.modem_wiring import PIN_STATUS, attach_modem

    modem = _StubModem()
    info = {"pwrkey": {"pin": "modem_pwrkey", "active": 1}, "uart": {"id": 1}}
    info["status"] = {"pin": PIN_STATUS, "active": active}
    attach_modem(bench, modem, info)  # type: ignore[arg-type]
    assert bench.pin_read(PIN_STATUS) == (0, 1 - active)  # off
    modem.on = True
    assert bench.pin_read(PIN_STATUS) == (0, active)  # running: board.json's level
    bench.fault("modem_status_inverted")  # wired the other way than board.json says
    assert bench.pin_read(PIN_STATUS) == (0, 1 - active)
    bench.fault("modem_status_inverted", False)
    assert bench.pin_read(PIN_STATUS) == (0, active)
