import os
import random

from mptest import TempDir, raises, skip

from tracker import log
from tracker.store import layout as fmt
from tracker.store.queue import (
    HEADROOM_MIN_BLOCKS,
    RECORD_BYTES,
    Store,
    StoreError,
    flash_capacity,
)

log.echo = False

SEG = 200  # small segments: a few records each, so tests cross many segment boundaries


def payload(n):
    return b'{"seq_hint":%d,"t":21.5,"pad":"%s"}' % (n, b"x" * (n % 7))


def segment_files(root):
    return sorted(n for n in os.listdir(root) if n.endswith(".log"))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def drain(store, max_records=1000):
    return store.read_batch(max_records, 1 << 20)


def fill(store, count, start=0):
    return [(store.append(payload(n)), payload(n)) for n in range(start, start + count)]


def test_round_trip_append_read_ack_deletes_acknowledged_segments():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG)
        recs = fill(s, 30)
        assert [q for q, _ in recs] == list(range(30))
        assert s.pending() == 30
        assert drain(s) == recs
        assert drain(s) == recs  # reading removes nothing
        nseg = len(segment_files(d))
        assert nseg > 3
        assert s.ack(14) == 15
        assert s.pending() == 15
        assert drain(s) == recs[15:]
        assert len(segment_files(d)) < nseg  # wholly acknowledged segments are gone
        s.ack(29)
        assert s.pending() == 0 and drain(s) == []
        assert len(segment_files(d)) == 1  # only the segment being appended to
        assert s.counters["acked"] == 30 and s.counters["appended"] == 30
        assert s.counters["bytes_written"] >= sum(fmt.HEADER + len(p) for _, p in recs)


def test_segments_are_named_by_their_first_sequence_number_and_stay_small():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG)
        fill(s, 20)
        for name in segment_files(d):
            first = int(name[1:9], 16)
            assert os.stat(d + "/" + name)[6] <= SEG
            data = read_file(d + "/" + name)
            status, seq, _ = fmt.parse(data, 0, len(data))
            assert status == fmt.OK and seq == first


def test_read_batch_honours_record_and_byte_limits_but_always_returns_one():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG)
        recs = fill(s, 10)
        assert s.read_batch(3, 1 << 20) == recs[:3]
        size = len(recs[0][1]) + len(recs[1][1])
        assert s.read_batch(100, size) == recs[:2]
        assert s.read_batch(100, 1) == recs[:1]  # a big record never blocks the queue
        batch = s.read_batch(4, 1 << 20)
        assert s.ack(batch[-1][0]) == 4
        assert s.read_batch(2, 1 << 20) == recs[4:6]


def test_payload_larger_than_a_segment_is_refused_with_a_typed_error():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG)
        with raises(StoreError):
            s.append(b"x" * SEG)
        assert s.append(b"ok") == 0  # nothing was burnt or written by the refusal
        assert drain(s) == [(0, b"ok")]


def test_sequence_numbers_continue_without_gap_across_reboots_and_empty_store():
    with TempDir() as d:
        seen = []
        for boot in range(4):
            s = Store(d, segment_bytes=SEG)  # a reboot: the old object is simply abandoned
            got = fill(s, 9, boot * 9)
            seen += [q for q, _ in got]
            if boot == 1:
                s.ack(got[-1][0])  # everything delivered: segments deleted, store empty
                s.sync()
        assert seen == list(range(36))  # a clean reboot shows no false gap to consumers


def test_torn_tail_at_every_offset_is_cut_and_never_yields_a_bogus_record():
    with TempDir() as d:
        for cut in range(fmt.HEADER + len(payload(2))):
            for name in os.listdir(d):
                os.remove(d + "/" + name)
            s = Store(d, segment_bytes=4096)
            recs = fill(s, 3)
            s.sync()
            path = d + "/" + segment_files(d)[-1]
            data = read_file(path)
            good = len(data) - fmt.HEADER - len(recs[2][1])
            write_file(path, data[: good + cut])  # power cut `cut` bytes into the last append
            s = Store(d, segment_bytes=4096)
            assert drain(s) == recs[:2], cut
            assert s.counters["torn_tails_cut"] == (1 if cut else 0)
            assert os.stat(path)[6] == good
            seq = s.append(b"after")
            # Never reuse a number that may have been handed out; a missing record's own
            # number (cut == 0: its append never returned) may be used again.
            assert seq > 2 if cut else seq >= 2
            s = Store(d, segment_bytes=4096)
            assert drain(s) == recs[:2] + [(seq, b"after")]
            assert s.counters["torn_tails_cut"] == 0 and s.counters["corrupt_records"] == 0


def test_torn_tail_in_a_new_segment_after_roll_over():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG)
        recs = fill(s, 12)
        before = segment_files(d)
        s.append(b"x" * 150)  # does not fit: opens a new segment
        newest = segment_files(d)[-1]
        assert newest not in before
        data = read_file(d + "/" + newest)
        write_file(d + "/" + newest, data[:7])
        s = Store(d, segment_bytes=SEG)
        assert drain(s) == recs
        assert s.append(b"y") > 12


def test_flipped_bit_in_a_middle_record_is_counted_skipped_and_neighbours_delivered():
    with TempDir() as d:
        s = Store(d, segment_bytes=4096)
        recs = fill(s, 5)
        s.sync()
        path = d + "/" + segment_files(d)[0]
        clean = read_file(path)
        start = sum(fmt.HEADER + len(p) for _, p in recs[:2])  # record 2's first byte
        size = fmt.HEADER + len(recs[2][1])
        # magic, length, sequence, CRC and payload bytes, several bits each
        for at in (0, 1, 2, 3, 6, 7, 10, 11, 12, size - 1):
            for bit in (0, 3, 7):
                data = bytearray(clean)
                data[start + at] ^= 1 << bit
                write_file(path, data)
                log_errors = log.counts[log.ERROR]
                s = Store(d, segment_bytes=4096)
                assert drain(s) == recs[:2] + recs[3:], (at, bit)
                assert s.counters["corrupt_records"] == 1, (at, bit)
                assert log.counts[log.ERROR] == log_errors + 1
                assert s.pending() == 4
                s.read_batch(10, 1 << 20)
                assert s.counters["corrupt_records"] == 1  # reported once, not per read
        write_file(path, clean)


def test_corrupt_record_does_not_stop_later_segments():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG)
        recs = fill(s, 20)
        first = d + "/" + segment_files(d)[0]
        data = bytearray(read_file(first))
        data[fmt.HEADER + 2] ^= 0x10  # the first record's payload
        write_file(first, data)
        s = Store(d, segment_bytes=SEG)
        assert drain(s) == recs[1:]
        assert s.counters["corrupt_records"] == 1
        assert s.append(b"z") == 20


def test_full_store_drops_oldest_segment_and_counts_every_record():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG, capacity_records=20)
        warnings = log.counts[log.WARNING]
        recs = fill(s, 50)
        got = drain(s)
        dropped = s.counters["dropped"]
        assert dropped > 0 and log.counts[log.WARNING] > warnings
        assert len(got) + dropped == 50  # every record delivered or counted
        assert got == recs[dropped:]  # the oldest went, in order
        assert s.pending() <= 20


def esp32_fs(free_blocks, blocks=512):
    """statvfs of the 2 MiB littlefs of a 4 MB ESP32 (512 blocks of 4096 bytes)."""
    return lambda path: (4096, 4096, blocks, free_blocks, free_blocks, 0, 0, 0, 0, 255)


def test_capacity_is_capped_by_the_filesystem_of_a_4mb_esp32_and_says_why():
    with TempDir() as d:
        # 467 of 512 blocks free: the firmware, board and config take the rest. Headroom
        # 512 // 16 = 32 blocks; 435 one-block segments of 30 readings each.
        s = Store(d, capacity_records=20000, statvfs=esp32_fs(467))
        assert flash_capacity(esp32_fs(467)(d), 4096, 0) == (435, 13050)
        assert s.capacity_records == 13050 and s.max_segments == 435
        info = s.info()
        assert info["capacity"] == 13050 and info["capacity_by"] == "flash"
        assert s.configured_capacity == 20000
        s2 = Store(d, capacity_records=5000, statvfs=esp32_fs(467))  # a smaller config wins
        assert s2.info()["capacity"] == 5000 and s2.info()["capacity_by"] == "config"


def test_flash_capacity_counts_the_segments_the_store_already_holds():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG, capacity_records=1000, statvfs=esp32_fs(400, 64))
        fill(s, 20)  # SEG-byte segments: one block each on the filesystem
        held = len(segment_files(d))
        # at the next boot those blocks are no longer free, but they are the store's own:
        # the bound does not shrink (8 blocks of headroom: 64 // 16 is less than the minimum)
        s = Store(d, segment_bytes=SEG, capacity_records=1000, statvfs=esp32_fs(30 - held, 64))
        assert s.max_segments == 30 - HEADROOM_MIN_BLOCKS
        assert s.pending() == 20 and s.counters["dropped"] == 0


def test_records_bigger_than_assumed_are_bounded_by_segments():
    with TempDir() as d:
        # room for 3 segments; records of ~250 bytes, twice the size the record cap assumes
        s = Store(d, segment_bytes=1024, capacity_records=10000,
                  statvfs=esp32_fs(3 + HEADROOM_MIN_BLOCKS, 64))  # fmt: skip
        assert s.max_segments == 3 and s.capacity_records == 3 * (1024 // RECORD_BYTES)
        big = [b"r%03d" % n + b"z" * 240 for n in range(40)]
        for data in big:
            s.append(data)
            assert len(segment_files(d)) <= 3
        got = drain(s)
        assert len(got) + s.counters["dropped"] == 40  # every record delivered or counted
        assert [p for _, p in got] == big[s.counters["dropped"] :]


def test_without_statvfs_the_configured_capacity_stands():
    def broken(path):
        raise OSError(22)

    with TempDir() as d:
        s = Store(d, capacity_records=20000, statvfs=broken)
        assert s.info()["capacity"] == 20000 and s.info()["capacity_by"] == "config"


def test_dropping_a_partly_acknowledged_segment_counts_only_unsent_records():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG, capacity_records=1000)
        recs = fill(s, 10)
        k = int(segment_files(d)[1][1:9], 16)  # records in the oldest segment
        assert k > 2
        s.ack(1)  # two of them are delivered
        s.capacity_records = s.pending()  # the next append overflows: drop the oldest
        extra = s.append(b"new")
        assert s.counters["dropped"] == k - 2
        assert drain(s) == recs[k:] + [(extra, b"new")]


def test_cursor_survives_reboot_with_at_most_n_redelivered_and_none_lost():
    n = 8
    with TempDir() as d:
        s = Store(d, segment_bytes=4096, cursor_every=n)
        recs = fill(s, 60)
        for k in range(45):  # one PUBACK per record, no segment becomes deletable
            s.ack(k)
        writes = s.counters["cursor_writes"]
        assert writes <= 45 // n + 2  # not a flash write per acknowledgement
        s = Store(d, segment_bytes=4096, cursor_every=n)  # power cut, no sync
        got = drain(s)
        assert got[-15:] == recs[45:]  # nothing lost
        assert len(got) - 15 <= n  # at most n already-delivered records come again
        s.ack(50)
        s.sync()  # before deep sleep
        s = Store(d, segment_bytes=4096, cursor_every=n)
        assert drain(s) == recs[51:]


def test_cut_between_cursor_save_and_segment_delete_finishes_the_delete():
    with TempDir() as d:
        s = Store(d, segment_bytes=SEG)
        recs = fill(s, 20)
        oldest = segment_files(d)[0]
        saved = read_file(d + "/" + oldest)
        last_in_oldest = int(segment_files(d)[1][1:9], 16) - 1
        s.ack(last_in_oldest)
        assert oldest not in segment_files(d)
        write_file(d + "/" + oldest, saved)  # as if power failed before the remove
        s = Store(d, segment_bytes=SEG)
        assert oldest not in segment_files(d)
        assert drain(s) == recs[last_in_oldest + 1 :]


def test_complete_state_tmp_from_an_interrupted_save_is_used():
    with TempDir() as d:
        s = Store(d, segment_bytes=4096, cursor_every=1000)
        recs = fill(s, 10)
        s.ack(6)
        s.sync()
        state = read_file(d + "/state.bin")
        os.rename(d + "/state.bin", d + "/state.bin.tmp")  # cut before the rename
        s = Store(d, segment_bytes=4096)
        assert drain(s) == recs[7:]
        assert "state.bin.tmp" not in os.listdir(d)
        assert read_file(d + "/state.bin") == state


def test_damaged_state_file_resends_rather_than_loses():
    with TempDir() as d:
        s = Store(d, segment_bytes=4096)
        recs = fill(s, 5)
        s.ack(2)
        s.sync()
        write_file(d + "/state.bin", b"garbage")
        s = Store(d, segment_bytes=4096)
        assert drain(s) == recs  # duplicates on the wire are allowed, loss is not
        assert s.append(b"n") == 5


def test_priority_lane_is_an_independent_store():
    with TempDir() as d:
        telemetry = Store(d + "/t", segment_bytes=SEG)
        alarm = Store(d + "/a", segment_bytes=SEG)
        fill(telemetry, 5)
        alarm.append(b"alarm")
        alarm.ack(0)
        assert telemetry.pending() == 5 and alarm.pending() == 0
        assert drain(Store(d + "/t", segment_bytes=SEG))[0] == (0, payload(0))
        for sub in ("/t", "/a"):
            for name in os.listdir(d + sub):
                os.remove(d + sub + "/" + name)
            os.rmdir(d + sub)


def test_crc_fallback_matches_the_library_crc():
    data = bytes(range(256)) + b"albatross"
    assert fmt.crc32_py(data) == fmt.crc32(data) & 0xFFFFFFFF
    assert fmt.crc32_py(data[5:], fmt.crc32_py(data[:5])) == fmt.crc32(data) & 0xFFFFFFFF


def test_record_parse_rejects_every_single_bit_flip():
    rec = fmt.encode(0x01020304, b'{"t":1}')
    assert fmt.parse(rec, 0, len(rec)) == (fmt.OK, 0x01020304, 7)
    for i in range(len(rec) * 8):
        bad = bytearray(rec)
        bad[i // 8] ^= 1 << (i % 8)
        assert fmt.parse(bad, 0, len(bad))[0] != fmt.OK, i
    assert fmt.parse(rec, 0, len(rec) - 1)[0] == fmt.SHORT


def test_flipped_last_record_number_is_not_reused_even_if_the_state_file_is_lost_later():
    with TempDir() as d:
        s = Store(d, segment_bytes=4096)
        recs = fill(s, 3)
        path = d + "/" + segment_files(d)[-1]
        data = bytearray(read_file(path))
        data[-1] ^= 0x01  # record 2, already handed out (and maybe sent), is damaged
        write_file(path, data)
        s = Store(d, segment_bytes=4096)
        assert drain(s) == recs[:2]
        write_file(d + "/state.bin", b"")  # and later the state file is lost too
        s = Store(d, segment_bytes=4096)
        assert s.append(b"new") > 2


class FileFlash:
    """A flash chip for littlefs (extended block protocol) kept in a file, not on the heap,
    counting programs, erases and bytes programmed."""

    def __init__(self, path, blocks, block_size=4096):
        self.block_size = block_size
        self.blocks = blocks
        self.f = open(path, "w+b")
        for _ in range(blocks):
            self.f.write(b"\xff" * block_size)
        self.programs = self.erases = self.programmed = 0

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * self.block_size + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            for i in range(len(buf) // self.block_size):
                self.ioctl(6, block + i)
            offset = 0
        self.f.seek(block * self.block_size + offset)
        self.f.write(buf)
        self.programs += 1
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        if op == 6:
            self.f.seek(arg * self.block_size)
            self.f.write(b"\xff" * self.block_size)
            self.erases += 1
        return 0


def _vfs():
    try:
        import vfs

        return vfs
    except ImportError:
        return os


def littlefs_mount(image, blocks):
    """A fresh littlefs2 filesystem on a FileFlash, mounted; (None, None) where the
    interpreter has no littlefs (CPython)."""
    vfs = _vfs()
    if not hasattr(vfs, "VfsLfs2"):
        return None, None
    flash = FileFlash(image, blocks)
    vfs.VfsLfs2.mkfs(flash)
    mount = "/_lfs_%08x" % random.getrandbits(32)
    vfs.mount(vfs.VfsLfs2(flash), mount)
    return flash, mount


def test_on_littlefs_a_full_flash_drops_oldest_and_keeps_appending():
    with TempDir() as d:
        flash, mount = littlefs_mount(d + "/flash.img", 24)
        if flash is None:
            skip("no littlefs VFS in this interpreter (CPython): the Unix port runs this")
        try:
            root = mount + "/data"
            # statvfs=None: no capacity from the filesystem's size, so the flash really fills
            s = Store(root, segment_bytes=4096, capacity_records=100000, statvfs=None)
            for n in range(1200):  # about 120 KB of records into 96 KB of flash
                s.append(payload(n) + b"y" * 60)
            dropped = s.counters["dropped"]
            assert dropped > 0  # flash full: the oldest went, counted
            s = Store(root, segment_bytes=4096, capacity_records=100000, statvfs=None)  # cut
            expect = dropped  # the newest records arrive, in order, none missing
            batch = s.read_batch(50, 8192)
            while batch:
                for seq, data in batch:
                    assert (seq, data) == (expect, payload(expect) + b"y" * 60)
                    expect += 1
                s.ack(seq)
                batch = s.read_batch(50, 8192)
            assert expect == 1200  # every record delivered or counted as dropped
        finally:
            _vfs().umount(mount)
            flash.f.close()


def test_on_littlefs_the_filesystems_size_bounds_the_store_before_the_flash_fills():
    with TempDir() as d:
        flash, mount = littlefs_mount(d + "/flash.img", 48)
        if flash is None:
            skip("no littlefs VFS in this interpreter (CPython): the Unix port runs this")
        try:
            root = mount + "/data"
            s = Store(root, segment_bytes=4096, capacity_records=100000)
            assert s.info()["capacity_by"] == "flash"
            segments = s.max_segments
            assert 2 <= segments <= 48 - HEADROOM_MIN_BLOCKS
            for n in range(1500):  # ~250 KB of records into 192 KB of flash
                s.append(payload(n) + b"y" * 100)
                assert len(segment_files(root)) <= segments
            # the capacity bound dropped the oldest; the flash never filled (no ENOSPC), and
            # the headroom is still free for config and firmware writes
            assert s.counters["dropped"] > 0
            assert os.statvfs(mount)[3] >= HEADROOM_MIN_BLOCKS - 1
            with open(mount + "/config.json", "w") as f:
                f.write("x" * 5000)  # a config save still fits (2 blocks of the headroom)
            # at the next boot the store yields what the config took, and keeps the headroom
            s = Store(root, segment_bytes=4096, capacity_records=100000)
            assert segments - 3 <= s.max_segments < segments
            assert len(segment_files(root)) <= s.max_segments
        finally:
            _vfs().umount(mount)
            flash.f.close()


class BufFile:
    """A read-only file over a bytearray, without copying it (the heap is small)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def seek(self, pos):
        self.pos = pos

    def readinto(self, buf):
        n = min(len(buf), len(self.data) - self.pos)
        buf[0:n] = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return n


def test_scanner_resyncs_across_its_read_window_and_reports_a_torn_end():
    rec_size = fmt.HEADER + 40
    data = bytearray()
    for n in range(70):  # about 3.6 KB: several read windows
        data += fmt.encode(n, b"p%03d" % n + b"x" * 36)
    window = fmt.HEADER + fmt.MAX_PAYLOAD
    sc = fmt.Scanner()
    for at in (window - 1, window, window + 5, 2 * window - 3, len(data) - 1):
        data[at] ^= 0x40
        seqs = [r[0] for r in sc.records(BufFile(data), len(data))]
        data[at] ^= 0x40
        hit = at // rec_size
        assert seqs == [n for n in range(70) if n != hit], at
    clean = len(data)
    data += fmt.encode(70, b"torn")[:9]
    got = list(sc.records(BufFile(data), len(data)))
    assert len(got) == 70 and sc.tail_gap == clean
    assert sc.payload(got[-1][3], got[-1][2]) == b"p069" + b"x" * 36
