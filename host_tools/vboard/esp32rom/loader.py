"""The ESP32's serial download mode: the ROM loader's command protocol and, once esptool has
uploaded and started it, the flasher stub's.

Bytes from the host go to feed(); every byte for the host leaves through send(). Packets are
SLIP frames (slip.py). A command is <dir=0, op, size:u16, checksum:u32> + data; a reply is
<dir=1, op, size:u16, value:u32> + data + status. The ESP32 ROM ends a reply with 4 status
bytes (status, error, 2 reserved), the stub with 2 (esptool docs "Serial Protocol", Status
bytes; loader.py check_command). Every number below comes from esptool 5.6.0's loader.py and
targets/esp32.py or from that protocol page (the numbers are in protocol.py). Where the ROM's
behaviour is not documented we follow traces of real chips posted in esptool's issues (eight
SYNC replies; a reply's `value` is the last word the ROM read) and the stubs' sources; the
ROM's reply to an op it does not know (same op, status 1, error 0x05) is our assumption.

Nothing here raises to the caller: a malformed packet, an unknown command or a flash access
out of range becomes an error reply, as on the chip."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from host_tools.vboard.esp32rom import protocol as wire
from host_tools.vboard.esp32rom import slip, stubs
from host_tools.vboard.esp32rom.chip import Esp32Chip
from host_tools.vboard.esp32rom.flashfile import SECTOR_SIZE, FlashFile

ROM = "rom"
STUB = "stub"
APP = "app"  # left the loader: running code the simulator does not emulate


class _Refused(Exception):
    """A command the loader answers with an error status."""

    def __init__(self, rom_code: int, stub_code: int) -> None:
        super().__init__(rom_code, stub_code)
        self.rom_code = rom_code
        self.stub_code = stub_code


def _invalid() -> _Refused:
    return _Refused(wire.ROM_INVALID_MESSAGE, wire.STUB_BAD_DATA_LEN)


@dataclass
class _Download:
    """A FLASH_BEGIN or FLASH_DEFL_BEGIN in progress."""

    offset: int
    size: int
    block_size: int
    compressed: bool
    written: int = 0
    next_seq: int = 0
    inflater: zlib._Decompress | None = None
    erased: set[int] = field(default_factory=set)  # sectors the stub erased on the way


@dataclass
class _ReadJob:
    """A stub READ_FLASH: data packets out, the host's acks (bytes received so far) in."""

    offset: int
    length: int
    packet_size: int
    max_unacked: int
    sent: int = 0
    acked: int = 0


class RomLoader:
    """One ESP32 in download mode. `send` gets every byte for the host; `on_baud(new)` is
    called when the UART's rate changes (CHANGE_BAUDRATE, reset); `on_leave(reason)` when
    the chip leaves the loader: "run_user_code" (the ROM's FLASH_END/FLASH_DEFL_END asking
    to run, the legacy stub's RUN_USER_CODE), "reboot" (the ROM's or the legacy stub's
    FLASH_END asking to reboot) or "run_ram" (MEM_END starting an image that is not
    esptool's stub). Without on_leave a reboot comes back to the ROM's
    download mode (the board's BOOT pin is taken as held) and the other two leave the loader
    silent until reset()."""

    def __init__(
        self,
        flash: FlashFile,
        chip: Esp32Chip,
        send: Callable[[bytes], None] | None = None,
        *,
        on_baud: Callable[[int], None] | None = None,
        on_leave: Callable[[str], None] | None = None,
    ) -> None:
        self.flash = flash
        self.chip = chip
        self.send: Callable[[bytes], None] = send or (lambda data: None)
        self.on_baud = on_baud
        self.on_leave = on_leave
        self.counters = {"commands": 0, "errors": 0, "garbled_frames": 0, "resets": 0}
        self.baud = wire.ROM_BAUD
        self._handlers = self._handler_tables()
        self.reset()
        self.counters["resets"] = 0

    # -- state -------------------------------------------------------------------------

    def reset(self) -> None:
        """The chip was reset into download mode: ROM loader, 115200 baud, nothing attached."""
        self.mode = ROM
        self.stub: stubs.StubImage | None = None
        self._decoder = slip.Decoder()
        self._download: _Download | None = None
        self._read: _ReadJob | None = None
        self._mem_segments: dict[int, bytearray] = {}
        self._mem: tuple[int, int, int] | None = None  # offset, size, block size
        self._value = 0  # the ROM's reply "value": the last word it read
        self.flash_limit = wire.ROM_DEFAULT_FLASH_SIZE
        self.spi_attached = False
        self.chip.reset()
        self.counters["resets"] += 1
        self._set_baud(wire.ROM_BAUD)

    def _set_baud(self, baud: int) -> None:
        changed = baud != self.baud
        self.baud = baud
        self.chip.uart_baud = baud
        if changed and self.on_baud is not None:
            self.on_baud(baud)

    def _leave(self, reason: str) -> None:
        self.mode = APP
        self._download = self._read = None
        if self.on_leave is not None:
            self.on_leave(reason)
        elif reason == "reboot":
            self.reset()

    # -- wire --------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the host, any slicing."""
        if self.mode == APP:
            return
        for frame in self._decoder.feed(data):
            if self.mode == APP:
                return
            self._frame(frame)

    def _status_len(self) -> int:
        return 4 if self.mode == ROM else 2

    def _reply(self, op: int, data: bytes = b"", value: int | None = None) -> None:
        if value is None:
            value = self._value if self.mode == ROM else 0
        body = data + bytes(self._status_len())
        self._send_packet(struct.pack("<BBHI", 1, op, len(body), value & 0xFFFFFFFF) + body)

    def _error(self, op: int, refused: _Refused) -> None:
        self.counters["errors"] += 1
        if self.mode == ROM:
            status = bytes((1, refused.rom_code, 0, 0))
            value = self._value
        else:
            status = bytes((refused.stub_code, 0))
            value = 0
        self._send_packet(struct.pack("<BBHI", 1, op, len(status), value) + status)

    def _send_packet(self, packet: bytes) -> None:
        self.send(slip.encode(packet))

    def _frame(self, frame: slip.Frame) -> None:
        if self._read is not None and len(frame) == 4 and not frame.corrupt:
            self._read_ack(struct.unpack("<I", frame)[0])
            return
        if frame.corrupt or len(frame) < 8 or frame[0] != 0:
            self.counters["garbled_frames"] += 1
            if len(frame) >= 2:
                self._error(frame[1], _invalid())
            return
        _, op, size, chk = struct.unpack("<BBHI", frame[:8])
        data = bytes(frame[8:])
        self.counters["commands"] += 1
        if size != len(data):
            self.counters["garbled_frames"] += 1
            self._error(op, _invalid())
            return
        handler = self._handlers[self.mode].get(op)
        try:
            if handler is None:
                raise _Refused(wire.ROM_INVALID_MESSAGE, wire.STUB_INVALID_COMMAND)
            handler(op, data, chk)
        except _Refused as refused:
            self._error(op, refused)
        except (ValueError, OSError, zlib.error, struct.error):
            self._error(op, _Refused(wire.ROM_FAILED_TO_ACT, wire.STUB_FAILED_SPI_OP))

    def _handler_tables(self) -> dict[str, dict[int, Callable[[int, bytes, int], None]]]:
        common = {
            wire.SYNC: self._sync,
            wire.READ_REG: self._read_reg,
            wire.WRITE_REG: self._write_reg,
            wire.SPI_SET_PARAMS: self._spi_set_params,
            wire.SPI_ATTACH: self._spi_attach,
            wire.CHANGE_BAUDRATE: self._change_baudrate,
            wire.FLASH_BEGIN: self._flash_begin,
            wire.FLASH_DATA: self._flash_data,
            wire.FLASH_END: self._flash_end,
            wire.FLASH_DEFL_BEGIN: self._flash_begin,
            wire.FLASH_DEFL_DATA: self._flash_defl_data,
            wire.FLASH_DEFL_END: self._flash_end,
            wire.SPI_FLASH_MD5: self._flash_md5,
            wire.MEM_BEGIN: self._mem_begin,
            wire.MEM_DATA: self._mem_data,
            wire.MEM_END: self._mem_end,
        }
        # GET_SECURITY_INFO is ESP32-S2 and later: neither the ESP32 ROM nor, here, the stub
        # knows it; READ_FLASH_SLOW is the ROM's only way to read flash.
        rom = {**common, wire.READ_FLASH_SLOW: self._read_flash_slow}
        stub = {
            **common,
            wire.ERASE_FLASH: self._erase_flash,
            wire.ERASE_REGION: self._erase_region,
            wire.READ_FLASH: self._read_flash,
            wire.RUN_USER_CODE: self._run_user_code,
        }
        return {ROM: rom, STUB: stub, APP: {}}

    # -- helpers -----------------------------------------------------------------------

    def _words(self, data: bytes, n: int, *alternatives: int) -> tuple[int, ...]:
        if len(data) not in (4 * n, *(4 * a for a in alternatives)):
            raise _invalid()
        return struct.unpack(f"<{len(data) // 4}I", data)

    def _data_packet(self, data: bytes, chk: int) -> tuple[int, bytes]:
        """A *_DATA payload: length, sequence, 0, 0, then the data the checksum covers."""
        if len(data) < 16:
            raise _invalid()
        length, seq, _, _ = struct.unpack("<IIII", data[:16])
        payload = data[16:]
        if length != len(payload):
            raise _invalid()
        if wire.checksum(payload) != chk & 0xFF:
            raise _Refused(wire.ROM_INVALID_CRC, wire.STUB_BAD_CHECKSUM)
        return seq, payload

    def _flash_range(self, offset: int, length: int) -> None:
        """The ROM's SPI routines refuse what lies past the size SPI_SET_PARAMS gave; the
        stub and the chip itself stop at the physical end."""
        limit = self.flash_limit if self.mode == ROM else self.flash.size
        if offset < 0 or length < 0 or offset + length > min(limit, self.flash.size):
            raise _Refused(wire.ROM_FAILED_TO_ACT, wire.STUB_FAILED_SPI_OP)

    # -- commands both loaders know -----------------------------------------------------

    def _sync(self, op: int, data: bytes, chk: int) -> None:
        if data != wire.SYNC_PAYLOAD:
            raise _invalid()
        value = wire.ROM_SYNC_VALUE if self.mode == ROM else 0
        if self.mode == ROM:
            self._value = value
        for _ in range(wire.SYNC_REPLIES):
            self._reply(op, value=value)

    def _read_reg(self, op: int, data: bytes, chk: int) -> None:
        (addr,) = self._words(data, 1)
        value = self.chip.read_reg(addr)
        if self.mode == ROM:
            self._value = value
        self._reply(op, value=value)

    def _write_reg(self, op: int, data: bytes, chk: int) -> None:
        if not data or len(data) % 16:
            raise _invalid()
        for i in range(0, len(data), 16):
            addr, value, mask, _delay_us = struct.unpack("<IIII", data[i : i + 16])
            self.chip.write_reg(addr, value, mask)
        self._reply(op)

    def _spi_set_params(self, op: int, data: bytes, chk: int) -> None:
        _id, total_size, _block, _sector, _page, _status_mask = self._words(data, 6)
        self.flash_limit = total_size
        self._reply(op)

    def _spi_attach(self, op: int, data: bytes, chk: int) -> None:
        # The ROM takes a second word ("is legacy"), the stub only the pin word.
        self._words(data, 2 if self.mode == ROM else 1)
        self.spi_attached = True
        self._reply(op)

    def _change_baudrate(self, op: int, data: bytes, chk: int) -> None:
        new, _old = self._words(data, 2)
        if new == 0:
            raise _invalid()
        self._reply(op)  # still at the old rate
        self._set_baud(self.chip.rom_baud(new) if self.mode == ROM else new)

    def _flash_begin(self, op: int, data: bytes, chk: int) -> None:
        # ESP32 ROM: 4 words; the stub also takes a 5th, the encrypted-write flag.
        words = self._words(data, 4) if self.mode == ROM else self._words(data, 4, 5)
        size, _blocks, block_size, offset = words[:4]
        if len(words) == 5 and words[4]:  # an encrypted write: no flash encryption here
            raise _Refused(wire.ROM_FAILED_TO_ACT, wire.STUB_FAILED_SPI_OP)
        if block_size == 0 or block_size > 0x10000:
            raise _Refused(wire.ROM_INVALID_MESSAGE, wire.STUB_BAD_BLOCKSIZE)
        self._flash_range(offset, size)
        if self.mode == ROM and size:
            self.flash.erase(offset, size)  # the ROM erases up front, the stub as it writes
        compressed = op == wire.FLASH_DEFL_BEGIN
        self._download = _Download(
            offset,
            size,
            block_size,
            compressed,
            inflater=zlib.decompressobj() if compressed else None,
        )
        self._reply(op)

    def _program(self, dl: _Download, pos: int, data: bytes) -> None:
        """Write decoded bytes at flash offset `pos`: the ROM checks what it wrote by
        reading it back (docs: error 0x08), the stub erases each sector before its first
        write and leaves checking to SPI_FLASH_MD5."""
        if not data:
            return
        self._flash_range(pos, len(data))
        if self.mode == STUB:
            for sector in range(pos // SECTOR_SIZE, (pos + len(data) - 1) // SECTOR_SIZE + 1):
                if sector not in dl.erased:
                    self.flash.erase(sector * SECTOR_SIZE, SECTOR_SIZE)
                    dl.erased.add(sector)
        written = self.flash.program(pos, data)
        if self.mode == ROM and written != data:
            raise _Refused(wire.ROM_FLASH_WRITE_ERROR, wire.STUB_FAILED_SPI_OP)

    def _flash_data(self, op: int, data: bytes, chk: int) -> None:
        dl = self._download
        if dl is None or dl.compressed:
            raise _Refused(wire.ROM_FAILED_TO_ACT, wire.STUB_NOT_IN_FLASH_MODE)
        seq, payload = self._data_packet(data, chk)
        pos = seq * dl.block_size  # by sequence number: a repeated block lands in place
        if self.mode == STUB:
            payload = payload[: max(0, dl.size - pos)]  # the stub stops at the size it was given
        self._program(dl, dl.offset + pos, payload)
        dl.written = max(dl.written, pos + len(payload))
        self._reply(op)

    def _flash_defl_data(self, op: int, data: bytes, chk: int) -> None:
        dl = self._download
        if dl is None or not dl.compressed or dl.inflater is None:
            raise _Refused(wire.ROM_FAILED_TO_ACT, wire.STUB_NOT_IN_FLASH_MODE)
        seq, payload = self._data_packet(data, chk)
        if seq == dl.next_seq - 1:
            self._reply(op)  # esptool resent a block whose reply it lost: already inflated
            return
        if seq != dl.next_seq:
            raise _Refused(wire.ROM_INVALID_MESSAGE, wire.STUB_BAD_DATA_LEN)
        try:
            out = dl.inflater.decompress(payload)
        except zlib.error:
            raise _Refused(wire.ROM_DEFLATE_ERROR, wire.STUB_INFLATE_ERROR) from None
        if dl.written + len(out) > dl.size:
            raise _Refused(wire.ROM_DEFLATE_ERROR, wire.STUB_TOO_MUCH_DATA)
        self._program(dl, dl.offset + dl.written, out)
        dl.written += len(out)
        dl.next_seq += 1
        self._reply(op)

    def _flash_end(self, op: int, data: bytes, chk: int) -> None:
        (run_user_code,) = self._words(data, 1)
        dl = self._download
        if self.mode == STUB:
            # Both stubs refuse to end a download that is not complete (legacy stub:
            # "not enough data", esp-flasher-stub: "bad data length").
            if dl is None:
                raise _Refused(wire.ROM_FAILED_TO_ACT, wire.STUB_NOT_IN_FLASH_MODE)
            if dl.written < dl.size:
                code = wire.STUB_NOT_ENOUGH_DATA if self._legacy_stub() else wire.STUB_BAD_DATA_LEN
                raise _Refused(wire.ROM_FAILED_TO_ACT, code)
        self._download = None
        self._reply(op)
        if self.mode == ROM:
            self._leave("run_user_code" if run_user_code else "reboot")
        elif not run_user_code and self._legacy_stub():
            self._leave("reboot")  # the stub stays for "run user code": esptool goes on

    def _legacy_stub(self) -> bool:
        """The legacy stub (esptool-legacy-flasher-stub stub_flasher.c) answers FLASH_END(0)
        with a software reset and RUN_USER_CODE by booting the app; esp-flasher-stub,
        esptool 5's default, leaves both a TODO and keeps running, so a later SYNC finds the
        stub (value 0) and esptool skips the upload."""
        return self.stub is not None and self.stub.version == "1"

    def _flash_md5(self, op: int, data: bytes, chk: int) -> None:
        addr, size, _, _ = self._words(data, 4)
        try:
            self._flash_range(addr, size)
        except _Refused:
            raise _Refused(wire.ROM_FLASH_READ_ERROR, wire.STUB_FAILED_SPI_OP) from None
        digest = self.flash.md5(addr, size)
        # The ROM answers 32 lowercase hex digits, the stub 16 raw bytes (docs; esptool
        # compares the ROM's text with hashlib's hexdigest()).
        self._reply(op, digest.hex().encode() if self.mode == ROM else digest)

    def _mem_begin(self, op: int, data: bytes, chk: int) -> None:
        size, _blocks, block_size, offset = self._words(data, 4)
        if block_size == 0 or size > 0x100000:
            raise _invalid()
        self._mem = (offset, size, block_size)
        self._mem_segments[offset] = bytearray(size)
        self._reply(op)

    def _mem_data(self, op: int, data: bytes, chk: int) -> None:
        if self._mem is None:
            raise _Refused(wire.ROM_FAILED_TO_ACT, wire.STUB_NOT_IN_FLASH_MODE)
        seq, payload = self._data_packet(data, chk)
        offset, size, block_size = self._mem
        pos = seq * block_size
        if pos + len(payload) > size:
            raise _invalid()
        self._mem_segments[offset][pos : pos + len(payload)] = payload
        self._reply(op)

    def _mem_end(self, op: int, data: bytes, chk: int) -> None:
        no_execute, entry = self._words(data, 2)
        self._mem = None
        self._reply(op)
        if no_execute:
            return
        segments = {addr: bytes(seg) for addr, seg in self._mem_segments.items()}
        self._mem_segments.clear()
        stub = stubs.identify(entry, segments)
        if stub is None:
            self._leave("run_ram")
            return
        self.mode = STUB
        self.stub = stub
        self._download = None
        self.spi_attached = True  # the stub attaches the flash when it starts
        self._send_packet(wire.OHAI)

    # -- ROM only ------------------------------------------------------------------------

    def _read_flash_slow(self, op: int, data: bytes, chk: int) -> None:
        offset, length = self._words(data, 2)
        if length > wire.READ_FLASH_SLOW_BLOCK:
            raise _Refused(wire.ROM_READ_LENGTH_ERROR, wire.STUB_INVALID_COMMAND)
        try:
            self._flash_range(offset, length)
        except _Refused:
            raise _Refused(wire.ROM_FLASH_READ_ERROR, wire.STUB_INVALID_COMMAND) from None
        block = self.flash.read(offset, length)
        self._reply(op, block + b"\xff" * (wire.READ_FLASH_SLOW_BLOCK - length))

    # -- stub only -------------------------------------------------------------------------

    def _erase_flash(self, op: int, data: bytes, chk: int) -> None:
        if data:
            raise _invalid()
        self.flash.erase_all()
        self._reply(op)

    def _erase_region(self, op: int, data: bytes, chk: int) -> None:
        offset, size = self._words(data, 2)
        if offset % SECTOR_SIZE or size % SECTOR_SIZE:
            raise _Refused(wire.ROM_INVALID_MESSAGE, wire.STUB_BAD_DATA_LEN)
        self._flash_range(offset, size)
        self.flash.erase(offset, size)
        self._reply(op)

    def _read_flash(self, op: int, data: bytes, chk: int) -> None:
        offset, length, packet_size, max_unacked = self._words(data, 4)
        if packet_size == 0 or max_unacked == 0:
            raise _invalid()
        self._flash_range(offset, length)
        self._reply(op)
        self._read = _ReadJob(offset, length, packet_size, max_unacked)
        self._read_pump()

    def _read_pump(self) -> None:
        job = self._read
        if job is None:
            return
        while job.sent < job.length and job.sent - job.acked < job.max_unacked * job.packet_size:
            n = min(job.packet_size, job.length - job.sent)
            self._send_packet(self.flash.read(job.offset + job.sent, n))
            job.sent += n

    def _read_ack(self, received: int) -> None:
        job = self._read
        if job is None:
            return
        job.acked = max(job.acked, min(received, job.sent))
        if job.acked >= job.length:
            self._read = None
            self._send_packet(self.flash.md5(job.offset, job.length))
        else:
            self._read_pump()

    def _run_user_code(self, op: int, data: bytes, chk: int) -> None:
        # No reply. The legacy stub returns into the ROM's boot path and runs the app;
        # esp-flasher-stub leaves this a TODO and simply goes on listening.
        if self._legacy_stub():
            self._leave("run_user_code")
