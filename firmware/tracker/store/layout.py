# The durable store's on-flash format: the record codec (pure functions over bytes), the
# scanner that reads records back out of a segment file given to it, segment file names, and
# the 16-byte state file. Tested on CPython (hypothesis) and the Unix port.
#
#   offset  size  field
#   0       u8    magic/version 0xA1 (format 1). Above 0x7F, so it never occurs in a JSON
#                 payload: resynchronising after a corrupt record rarely stops on payload
#   1       u16   payload length, little-endian (at most MAX_PAYLOAD: a plausibility check)
#   3       u32   sequence number
#   7       u32   CRC32 (IEEE, as binascii/zlib) over bytes 0..6 and the payload; covering
#                 magic, length and sequence too means a flipped bit anywhere is caught
#   11            payload
import os
import struct

from tracker import log

try:
    from binascii import crc32 as _crc32
except ImportError:  # a MicroPython build without MICROPY_PY_BINASCII_CRC32
    _crc32 = None

MAGIC = 0xA1
HEADER = 11
MAX_PAYLOAD = 1024
_HEAD = "<BHI"  # the CRC-covered part of the header (7 bytes)
_CRC_AT = 7

OK = 0  # a whole record with a matching CRC
BAD = 1  # not a record at this position (magic, length or CRC)
SHORT = 2  # could be a record, but the buffer ends before it does

_BAD = (BAD, 0, 0)
_SHORT = (SHORT, 0, 0)


def crc32_py(data, crc=0):
    """Bitwise CRC32, the same function as binascii.crc32; only used where that is missing."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


crc32 = _crc32 or crc32_py


def record_crc(head, payload):
    """CRC of a record: head is the first 7 header bytes (a memoryview or bytes)."""
    return crc32(payload, crc32(head)) & 0xFFFFFFFF


def encode_header(buf, seq, payload):
    """Write the 11-byte header for `payload` with sequence number `seq` into buf[0:11]."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError("payload of %d bytes exceeds %d" % (n, MAX_PAYLOAD))
    struct.pack_into(_HEAD, buf, 0, MAGIC, n, seq)
    struct.pack_into("<I", buf, _CRC_AT, record_crc(memoryview(buf)[0:_CRC_AT], payload))


def encode(seq, payload):
    """A whole record as bytes (tests and tools; the store writes header and payload apart)."""
    head = bytearray(HEADER)
    encode_header(head, seq, payload)
    return bytes(head) + bytes(payload)


def parse(buf, pos, end, max_payload=MAX_PAYLOAD):
    """Look for a record at buf[pos:end]. Returns (OK, seq, payload_length) for a record whose
    payload is buf[pos+HEADER : pos+HEADER+length], or (BAD, 0, 0), or (SHORT, 0, 0) when the
    bytes up to `end` are a plausible start of a record that does not fit."""
    avail = end - pos
    if avail <= 0:
        return _SHORT
    if buf[pos] != MAGIC:
        return _BAD
    if avail < HEADER:
        return _SHORT
    _magic, length, seq = struct.unpack_from(_HEAD, buf, pos)
    if length > max_payload:
        return _BAD
    if HEADER + length > avail:
        return _SHORT
    (stored,) = struct.unpack_from("<I", buf, pos + _CRC_AT)
    mv = memoryview(buf)
    if record_crc(mv[pos : pos + _CRC_AT], mv[pos + HEADER : pos + HEADER + length]) != stored:
        return _BAD
    return (OK, seq, length)


# ---- files: segment names, the state file ---------------------------------------------------


def seg_name(first):
    return "s%08x.log" % first


def seg_first(name):
    """The first sequence number from a segment's file name, or None if it is not one."""
    if len(name) != 13 or name[0] != "s" or not name.endswith(".log"):
        return None
    try:
        return int(name[1:9], 16)
    except ValueError:
        return None


def write_atomic(path, data):
    """Replace `path` with `data` (str or bytes) all or nothing: a temp file, then a rename
    over it, atomic on littlefs and POSIX; a VFS that will not rename over a file (FAT) gets
    remove-then-rename. OSError when the filesystem refuses."""
    tmp = path + ".tmp"
    with open(tmp, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def makedirs(path):
    p = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        p = p + part if not p or p.endswith("/") else p + "/" + part
        try:
            os.mkdir(p)
        except OSError:
            pass  # exists (or cannot be made: the first open() will say so)


def names(path):
    if hasattr(os, "ilistdir"):  # MicroPython: no list of every name on the heap
        for entry in os.ilistdir(path):
            yield entry[0]
    else:
        yield from os.listdir(path)


STATE = "state.bin"

STATE_SIZE = 16
_STATE = "<4sII"  # magic, acked + 1, reserved_to; then the CRC32 of those 12 bytes
_STATE_MAGIC = b"ALS1"


def encode_state(buf, acked, reserved):
    struct.pack_into(_STATE, buf, 0, _STATE_MAGIC, acked + 1, reserved)
    struct.pack_into("<I", buf, 12, crc32(memoryview(buf)[0:12]) & 0xFFFFFFFF)


def decode_state(buf, n):
    """(acked, reserved_to) from the n bytes read into buf, or None if they are not a
    whole, undamaged state record."""
    if n != STATE_SIZE:
        return None
    magic, acked_next, reserved = struct.unpack_from(_STATE, buf, 0)
    (stored,) = struct.unpack_from("<I", buf, 12)
    if magic != _STATE_MAGIC or crc32(memoryview(buf)[0:12]) & 0xFFFFFFFF != stored:
        return None
    return acked_next - 1, reserved


def load_state(prefix, buf):
    """(acked, reserved_to, found, resave) from prefix + STATE, read into buf. A complete
    .tmp (power cut before its rename) holds real acknowledgements too, so the larger of two
    valid copies wins, and resave says it should be saved again under the real name."""
    acked, reserved, found, resave = -1, 0, False, False
    for name in (STATE, STATE + ".tmp"):
        try:
            with open(prefix + name, "rb") as f:
                n = f.readinto(buf)
                extra = f.read(1)
        except OSError:
            continue
        got = None if extra else decode_state(buf, n)
        if got is None:
            if name == STATE:
                log.w("store", "%s%s is damaged: records may be sent again" % (prefix, name))
            continue
        resave = name != STATE  # a valid .tmp: its rename never happened
        found = True
        acked = max(acked, got[0])
        reserved = max(reserved, got[1])
    return acked, reserved, found, resave


def save_state(prefix, buf, acked, reserved):
    """Replace prefix + STATE atomically: write a temp file, then rename it over."""
    encode_state(buf, acked, reserved)
    write_atomic(prefix + STATE, buf)


# ---- reading records back out of a segment file ---------------------------------------------


class Scanner:
    """Finds the records of a segment file through one fixed window buffer (no allocation
    per record beyond the tuple it yields), skipping what is not a good record."""

    def __init__(self):
        self.buf = bytearray(HEADER + MAX_PAYLOAD)  # the largest record fits the window
        self.mv = memoryview(self.buf)
        self.tail_gap = -1

    def payload(self, p, length):
        """A copy of the payload of the record yielded at window index p."""
        return bytes(self.mv[p + HEADER : p + HEADER + length])

    def _fill(self, f, base, size):
        f.seek(base)
        want = min(len(self.buf), size - base)
        got = 0
        while got < want:
            n = f.readinto(self.mv[got:want])
            if not n:
                break
            got += n
        return got, base + got if got < want else size  # a file shorter than we thought

    def records(self, f, size, off=0):
        """Yield (seq, offset, length, window_index, gap) for each good record of the open
        file f (`size` bytes) from byte `off` on; the payload stays in the window until the
        next step. `gap` is the offset of unreadable bytes just before the record (-1: none).
        After the last record, self.tail_gap is the offset of unreadable bytes at the end, or
        -1. A corrupt record is skipped by trying each following byte as the start of a record
        (magic, plausible length and a matching CRC): one flipped bit costs one record."""
        self.tail_gap = -1
        base = off
        n, size = self._fill(f, base, size)
        p = 0
        gap = -1
        while base + p < size:
            status, seq, length = parse(self.buf, p, n)
            if status == SHORT and base + n < size and p > 0:
                base += p  # the record continues past the window: slide the window to it
                p = 0
                n, size = self._fill(f, base, size)
                continue
            if status == OK:
                yield (seq, base + p, length, p, gap)
                gap = -1
                p += HEADER + length
            else:
                if gap < 0:
                    gap = base + p
                p += 1
            if p >= n and base + n < size:
                base += p
                p = 0
                n, size = self._fill(f, base, size)
        self.tail_gap = gap
