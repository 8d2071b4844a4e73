"""The virtual board's USB port (host_tools/vboard/usb.py) against pyserial's own rfc2217
client and esptool's reset sequences, with a recording chip in place of the supervisor."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import serial
from esp_pylib.serial_reset import classic_bootloader_reset, hard_reset

from host_tools.vboard.supervisor import EN_RISE_S
from host_tools.vboard.usb import UsbPort, auto_reset_pins

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:set(Daemon|Name):DeprecationWarning"),
]


class RecordingChip:
    """What the chip's EN and IO0 pins see, when, and the bytes on its RX."""

    def __init__(self) -> None:
        self.pins: list[tuple[float, bool, bool]] = []
        self.rx = bytearray()
        self.got_rx = threading.Event()

    def set_pins(self, en: bool, io0: bool) -> None:
        self.pins.append((time.monotonic(), en, io0))

    def uart_rx(self, data: bytes) -> None:
        self.rx += data
        self.got_rx.set()

    def strap_at_last_release(self) -> bool:
        """IO0's level EN_RISE_S after EN last went high (what the supervisor samples)."""
        rises = [
            t for (t, en, _), (_, prev, _) in zip(self.pins[1:], self.pins, strict=False)
            if en and not prev
        ]  # fmt: skip
        assert rises, self.pins
        sample_at = rises[-1] + EN_RISE_S
        io0 = True
        for t, _, level in self.pins:
            if t <= sample_at:
                io0 = level
        return io0

    def ever_in_reset(self) -> bool:
        return any(not en for _, en, _ in self.pins)


@pytest.fixture
def usb() -> Iterator[tuple[UsbPort, RecordingChip]]:
    chip = RecordingChip()
    with UsbPort(chip, paced=False) as port:
        yield port, chip


def test_auto_reset_truth_table() -> None:
    # (EN high, IO0 high) for (DTR, RTS) asserted: never both low.
    assert auto_reset_pins(dtr=False, rts=False) == (True, True)
    assert auto_reset_pins(dtr=True, rts=True) == (True, True)
    assert auto_reset_pins(dtr=False, rts=True) == (False, True)
    assert auto_reset_pins(dtr=True, rts=False) == (True, False)


def test_opening_and_closing_the_port_does_not_reset(usb: tuple[UsbPort, RecordingChip]) -> None:
    port, chip = usb
    with serial.serial_for_url(port.url, timeout=1):  # pyserial asserts DTR, then RTS
        pass
    deadline = time.monotonic() + 2
    while port.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not chip.ever_in_reset(), chip.pins
    assert chip.pins[-1][1:] == (True, True)  # the bridge released both lines


def test_esptool_classic_reset_straps_download_mode(usb: tuple[UsbPort, RecordingChip]) -> None:
    port, chip = usb
    with serial.serial_for_url(port.url, timeout=1) as host:
        classic_bootloader_reset(host)  # esptool's --before default-reset over rfc2217
        assert chip.ever_in_reset()
        assert chip.strap_at_last_release() is False  # IO0 low: download mode
        hard_reset(host)  # esptool's --after hard-reset
        assert chip.strap_at_last_release() is True  # IO0 high: boot from flash


def test_bytes_both_ways_including_telnet_iac(usb: tuple[UsbPort, RecordingChip]) -> None:
    port, chip = usb
    data = bytes(range(256)) * 4  # SLIP frames carry 0xFF, Telnet's IAC
    with serial.serial_for_url(port.url, timeout=2) as host:
        host.write(data)
        deadline = time.monotonic() + 5
        while len(chip.rx) < len(data) and time.monotonic() < deadline:
            chip.got_rx.wait(0.1)
        assert bytes(chip.rx) == data
        port.chip_tx(data, 115200)
        assert host.read(len(data)) == data


def test_a_second_host_is_turned_away(usb: tuple[UsbPort, RecordingChip]) -> None:
    port, _ = usb
    with serial.serial_for_url(port.url, timeout=1):
        with pytest.raises(serial.SerialException):
            serial.serial_for_url(port.url, timeout=1)
        assert port.refused == 1


def test_bytes_take_the_line_time_of_the_baud_rate() -> None:
    chip = RecordingChip()
    with UsbPort(chip) as port, serial.serial_for_url(port.url, timeout=3) as host:
        t = time.monotonic()
        port.chip_tx(b"x" * 2304, 115200)  # 200 ms of line time at 10 bits a byte
        assert len(host.read(2304)) == 2304
        assert time.monotonic() - t >= 0.19
