# The durable queue on flash: readings are appended here before any send is attempted, read
# back in batches from the acknowledged cursor, and deleted only once acknowledged. Nothing
# that append() returned is lost across outages, reboots, deep sleep or power cuts: it is
# delivered, or dropped by the capacity bound, or found corrupt -- and the last two are
# counted and logged, never silent.
#
# Files under `root` (one directory per lane, see below):
#   s%08x.log  segments of records (tracker.store.layout), named by the sequence number of
#              their first record in hex (sorted names = sorted sequence numbers), each at
#              most `segment_bytes` (one 4 KB littlefs block by default). Only the newest
#              segment is ever appended to.
#   state.bin  the acknowledged cursor and the sequence reservation, 16 bytes with a CRC,
#              replaced by write-temp-then-rename (atomic on littlefs and POSIX).
#
# Durability: every append() writes the record and flush()es before it returns; on littlefs
# flush() is lfs_file_sync, a copy-on-write commit, so a power cut leaves the segment at its
# previous or its new length, never in between. Elsewhere a cut can leave a torn record at the
# end of the newest segment: at boot it is cut (the good prefix rewritten to a temp file and
# renamed over the segment), so it is not re-examined or counted as corruption at every later
# boot; the cost, one segment copied, is paid only after an unclean stop.
#
# Sequence numbers: after a boot they continue from the newest good record (a clean reboot
# shows consumers no gap). If the newest segment ended in bytes that are not a good record (a
# torn write, or a flipped bit in a last record whose number may have been sent), they jump to
# the reservation instead -- numbers are reserved RESERVE at a time in state.bin before any is
# handed out -- and appends go on in a new segment named by the jump, so even a later loss of
# state.bin cannot bring the number back.
#
# The cursor is persisted when whole segments become deletable (before deleting them) and at
# least every `cursor_every` acknowledged records, and by sync()/close(). A reboot therefore
# re-sends at most `cursor_every` already-acknowledged records (duplicates are allowed on the
# wire, consumers dedupe by sequence number); a lower value costs one state write (a small
# littlefs metadata commit, no data block) per that many records. Call sync() before deep sleep.
#
# Capacity: at most `capacity_records` unsent records (config store_capacity), and never more
# than the filesystem the store lives on can hold. The default 20,000 records (about 136 bytes
# each, ~2.7 MB) exceed the 2 MiB littlefs of a 4 MB ESP32, where the flash would fill and
# config or firmware writes would fail first. So at boot, from os.statvfs(root):
#   block        = f_frsize (littlefs: its block size, 4096 on the ESP32)
#   seg_blocks   = ceil(segment_bytes / block)     a segment occupies whole blocks
#   headroom     = max(HEADROOM_MIN_BLOCKS, f_blocks // HEADROOM_DIV)
#   max_segments = max(2, (f_bavail + segments held now * seg_blocks - headroom) // seg_blocks)
#   flash cap    = max_segments * (segment_bytes // RECORD_BYTES)   records
# and the capacity in force is min(configured, flash cap); info() says which one and why. The
# headroom (1/16 of the filesystem, 128 KB of a 2 MiB one) stays free for what else writes:
# littlefs metadata pairs and their compaction, the copy-on-write block of the segment being
# appended, config/state rewrites (temp file + rename), a firmware update's files, and
# littlefs' allocator, which slows down on a nearly full disk. Everything else that is on the
# filesystem at boot (firmware, config) is already out of f_bavail. Both bounds are enforced:
# records (by count) and segments (by blocks, whatever the records' real size). A flash that
# fills anyway (ENOSPC) still drops the oldest segment, as before. A priority lane sizes
# itself from what the first store left.
#
# Priority lane: a second Store under another root (e.g. "/data/alarm") with its own cursor and
# sequence numbers. The uplink drains it first (read_batch on the alarm store until empty,
# publishing on the `alarm` topic), then telemetry; consumers therefore dedupe and look for
# gaps per (device, lane, seq), the lane being the topic.
import os

from tracker import log
from tracker.aio import ticks_diff, ticks_ms
from tracker.store import layout as fmt

_TAG = "store"
RESERVE = 256  # sequence numbers reserved per state write
CURSOR_EVERY = 32  # acknowledged records between cursor writes, at most
# Counted since boot. dropped: unsent records deleted by the capacity bound or a full flash;
# corrupt_records: runs of bad bytes among unacknowledged records; cursor_writes: writes of
# state.bin (cursor and reservation); bytes_written: records, state and tail cuts.
COUNTERS = (
    "appended acked dropped corrupt_records torn_tails_cut segments_created segments_deleted"
    " cursor_writes bytes_written"
).split()
_ENOSPC = 28
# The flash cap's assumptions (see "Capacity" above): a stored reading is 11 bytes of header
# plus ~125 of JSON (tracker.records with an "alb-<12 hex>" device id): 30 per 4 KB segment.
RECORD_BYTES = 136
HEADROOM_DIV = 16
HEADROOM_MIN_BLOCKS = 8
_NO_LIMIT = 1 << 30
_STATVFS = getattr(os, "statvfs", None)  # not on every port


def flash_capacity(st, segment_bytes, segments_held):
    """(max_segments, records) a store may hold on the filesystem of the statvfs tuple `st`,
    holding `segments_held` segments now (formula in the module comment)."""
    block = st[1] or st[0]
    seg_blocks = -(-segment_bytes // block)
    headroom = max(HEADROOM_MIN_BLOCKS, st[2] // HEADROOM_DIV)
    budget = st[4] + segments_held * seg_blocks - headroom
    segments = max(2, budget // seg_blocks)
    return segments, segments * max(1, segment_bytes // RECORD_BYTES)


class StoreError(Exception):
    """The store could not do what was asked: reason, plus the underlying error if any."""

    def __init__(self, reason, err=None):
        super().__init__("%s%s" % (reason, ": %s" % err if err is not None else ""))
        self.reason = reason
        self.err = err


class Store:
    def __init__(
        self,
        root="/data",
        *,
        segment_bytes=4096,
        capacity_records=20000,
        cursor_every=CURSOR_EVERY,
        clock=None,
        statvfs=_STATVFS,
    ):
        """statvfs: os.statvfs or a stand-in, to bound the capacity by the filesystem;
        None: by capacity_records alone."""
        if segment_bytes < fmt.HEADER + 1:
            raise ValueError("segment_bytes too small")
        self.root = root
        self._prefix = root if root.endswith("/") else root + "/"
        self.segment_bytes = segment_bytes
        self.capacity_records = capacity_records  # in force: min(configured, flash cap)
        self.configured_capacity = capacity_records
        self.capacity_by = "config"
        self.max_segments = _NO_LIMIT
        self.cursor_every = cursor_every
        self.max_payload = min(fmt.MAX_PAYLOAD, segment_bytes - fmt.HEADER)
        self._clock = clock or ticks_ms
        self.counters = dict.fromkeys(COUNTERS, 0)  # since boot
        self._scanner = fmt.Scanner()
        self._head = bytearray(fmt.HEADER)
        self._state = bytearray(fmt.STATE_SIZE)
        self._writer = None
        self._batch = None  # where the last read_batch ended, for a cheap ack of all of it
        self._recover()
        if statvfs is not None:
            self._bound_by_flash(statvfs)

    # ---- public API --------------------------------------------------------------------

    @property
    def next_seq(self):
        """The sequence number the next append() will return."""
        return self._next

    @property
    def acked(self):
        """The acknowledged cursor: every record up to this number is delivered (-1: none)."""
        return self._acked

    def pending(self):
        """Records stored and not yet acknowledged."""
        return self._pending

    def append(self, payload):
        """Store one record durably and return its sequence number."""
        n = len(payload)
        if n > self.max_payload:
            raise StoreError("payload of %d bytes exceeds %d" % (n, self.max_payload))
        try:
            seq = self._append(payload)
        except OSError as e:
            if e.args[0] != _ENOSPC or not self._drop_oldest("flash full"):
                raise StoreError("append failed", e)
            try:
                seq = self._append(payload)  # one retry with a segment's room freed
            except OSError as e2:
                raise StoreError("append failed", e2)
        self._enforce_capacity()
        return seq

    def read_batch(self, max_records=32, max_bytes=4096):
        """Up to max_records records after the cursor, oldest first, as [(seq, payload)],
        their payloads adding up to at most max_bytes (but always at least one record)."""
        out = []
        if max_records <= 0 or not self._segs:
            return out
        total = 0
        sc = self._scanner
        i, off, nb = self._pi, self._poff, self._pnb
        end = None
        while i < len(self._segs) and end is None:
            seg_nb = nb
            with open(self._path(i), "rb") as f:
                for seq, roff, length, p, gap in sc.records(f, self._sizes[i], off):
                    if gap >= 0:
                        self._note_gap(i, gap, seq)
                    if out and total + length > max_bytes:
                        end = (i, roff, seg_nb)
                        break
                    out.append((seq, sc.payload(p, length)))
                    total += length
                    seg_nb += 1
                    if len(out) >= max_records:
                        end = (i, roff + fmt.HEADER + length, seg_nb)
                        break
            if end is None:
                if sc.tail_gap >= 0:
                    self._note_gap(i, sc.tail_gap, None)
                if i == len(self._segs) - 1:
                    end = (i, self._sizes[i], seg_nb)
                i, off, nb = i + 1, 0, 0
        self._batch = (out[-1][0], end, len(out)) if out else None
        return out

    def ack(self, seq):
        """Everything up to and including `seq` is delivered. Returns how many stored records
        that acknowledged for the first time."""
        if seq <= self._acked:
            return 0
        if seq >= self._next:
            log.w(_TAG, "ack of %d beyond the last record %d" % (seq, self._next - 1))
            seq = self._next - 1
            if seq <= self._acked:
                return 0
        n = self._advance(seq)
        self._acked = seq
        self._pending -= n
        self.counters["acked"] += n
        self._unsaved += n
        if not self._collect() and self._unsaved >= self.cursor_every:
            self._save_state()
        return n

    def sync(self):
        """Persist the cursor now if it moved (before deep sleep or a planned reset)."""
        if self._acked != self._saved_acked:
            self._save_state()

    def close(self):
        self.sync()
        self._close_writer()

    def erase(self):
        """Delete every stored record and the store's directory (a factory reset). The
        object is unusable afterwards: the board resets."""
        self._close_writer()
        try:
            names = os.listdir(self.root)
        except OSError:
            return
        for name in names:
            fmt.remove_quietly(self._prefix + name)
        try:
            os.rmdir(self.root)
        except OSError:
            pass

    def info(self):
        """For `status` and the CLI: the queue, and the capacity in force with what set it
        ("config": store_capacity; "flash": the filesystem's room, see the module comment)."""
        n, segs = self._next, len(self._segs)
        return {"pending": self._pending, "acked": self._acked, "next_seq": n, "segments": segs,
                "capacity": self.capacity_records, "capacity_by": self.capacity_by}  # fmt: skip

    def _bound_by_flash(self, statvfs):
        try:
            st = statvfs(self.root)
        except (OSError, AttributeError) as e:
            log.w(_TAG, "no statvfs for %s (%s): capacity from config only" % (self.root, e))
            return
        self.max_segments, cap = flash_capacity(st, self.segment_bytes, len(self._segs))
        if cap < self.configured_capacity:
            self.capacity_records = cap
            self.capacity_by = "flash"
            why = "the filesystem's room, less than the configured %d" % self.configured_capacity
            log.i(_TAG, "capacity %d records in %d segments: %s" % (cap, self.max_segments, why))
        self._enforce_capacity()

    # ---- boot --------------------------------------------------------------------------

    def _recover(self):
        t0 = self._clock()
        fmt.makedirs(self.root)
        acked, reserved, state_ok, resave = fmt.load_state(self._prefix, self._state)
        firsts = []
        for name in fmt.names(self.root):
            if name.endswith(".tmp"):
                fmt.remove_quietly(self._prefix + name)  # a rewrite cut short; the original
                continue  # is intact (rename is the commit point)
            first = fmt.seg_first(name)
            if first is not None:
                firsts.append(first)
        firsts.sort()
        self._acked = self._saved_acked = acked
        self._unsaved = 0
        self._segs, self._counts, self._sizes = [], [], []
        self._gaps = []  # (segment first seq, offset) of corrupt runs already counted
        self._pending = 0
        self._pi = None
        last_good = -1
        torn = False
        for k, first in enumerate(firsts):
            newest = k == len(firsts) - 1
            path = self._prefix + fmt.seg_name(first)
            if not newest and firsts[k + 1] - 1 <= acked:
                # Fully acknowledged (the cursor was saved before the delete that a power cut
                # interrupted): finish the job.
                fmt.remove_quietly(path)
                self.counters["segments_deleted"] += 1
                continue
            i = len(self._segs)
            self._segs.append(first)
            self._counts.append(0)
            self._sizes.append(os.stat(path)[6])
            count = 0
            with open(path, "rb") as f:
                for seq, roff, _length, _p, gap in self._scanner.records(f, self._sizes[i]):
                    if gap >= 0:
                        self._note_gap(i, gap, seq)
                    if seq > acked:
                        if self._pi is None:
                            self._pi, self._poff, self._pnb = i, roff, count
                        self._pending += 1
                    if seq > last_good:
                        last_good = seq
                    count += 1
            self._counts[i] = count
            tail = self._scanner.tail_gap
            if tail >= 0:
                if newest:
                    torn = True
                    self._cut_tail(i, tail)
                else:
                    self._note_gap(i, tail, None)
        nxt = max(acked + 1, last_good + 1, firsts[-1] if firsts else 0)
        if torn:
            # The bytes cut may have been a record whose number was handed out (a flipped
            # bit in the last record): never reuse it. Without a state file, skip a block.
            nxt = max(nxt, reserved if state_ok else nxt + RESERVE)
        self._next = nxt
        self._reserved = reserved if reserved > nxt else nxt  # reserve before the next append
        self._roll = not self._segs
        if self._pi is None:
            self._end_position()
        if torn:
            # Continue in a new segment named by the jump: the next boot finds a clean tail,
            # and the name keeps the jump even if state.bin is lost later.
            self._new_segment(nxt)
            self._writer = open(self._path(len(self._segs) - 1), "ab")
        if resave:
            self._save_state()  # what the interrupted save held, now under its real name
        self._collect()
        self._enforce_capacity()
        ms = ticks_diff(self._clock(), t0)
        msg = "%d pending in %d segments, next %d" % (self._pending, len(self._segs), nxt)
        log.i(_TAG, "%s: %s, acked %d (%d ms)" % (self.root, msg, acked, ms))

    def _end_position(self):
        last = len(self._segs) - 1
        if last < 0:
            self._pi, self._poff, self._pnb = 0, 0, 0
        else:
            self._pi, self._poff, self._pnb = last, self._sizes[last], self._counts[last]

    def _cut_tail(self, i, good):
        """Cut segment i back to its first `good` bytes (temp copy + rename)."""
        path = self._path(i)
        cut = self._sizes[i] - good
        log.w(_TAG, "cutting a torn tail of %d bytes from %s" % (cut, path))
        self.counters["torn_tails_cut"] += 1
        tmp = path + ".tmp"
        mv = self._scanner.mv
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            left = good
            while left > 0:
                n = src.readinto(mv[0 : min(left, len(mv))])
                if not n:
                    break
                dst.write(mv[0:n])
                left -= n
        os.rename(tmp, path)
        self._sizes[i] = good
        self.counters["bytes_written"] += good

    # ---- state file --------------------------------------------------------------------

    def _save_state(self):
        fmt.save_state(self._prefix, self._state, self._acked, self._reserved)
        self._saved_acked = self._acked
        self._unsaved = 0
        self.counters["cursor_writes"] += 1
        self.counters["bytes_written"] += fmt.STATE_SIZE

    # ---- appending ---------------------------------------------------------------------

    def _path(self, i):
        return self._prefix + fmt.seg_name(self._segs[i])

    def _append(self, payload):
        seq = self._next
        if seq > 0xFFFFFFFF:
            raise StoreError("sequence numbers exhausted")
        need = fmt.HEADER + len(payload)
        if self._roll or self._sizes[-1] + need > self.segment_bytes:
            self._new_segment(seq)
        try:
            if seq >= self._reserved:
                old = self._reserved
                self._reserved = seq + RESERVE
                try:
                    self._save_state()
                except OSError:
                    self._reserved = old
                    raise
            fmt.encode_header(self._head, seq, payload)
            if self._writer is None:
                self._writer = open(self._path(len(self._segs) - 1), "ab")
            self._writer.write(self._head)
            self._writer.write(payload)
            self._writer.flush()  # the commit: on littlefs, lfs_file_sync
        except OSError:
            self._write_failed()
            raise
        self._next = seq + 1
        self._sizes[-1] += need
        self._counts[-1] += 1
        self._pending += 1
        self.counters["appended"] += 1
        self.counters["bytes_written"] += need
        return seq

    def _new_segment(self, first):
        self._close_writer()
        self._roll = False
        self._segs.append(first)
        self._counts.append(0)
        self._sizes.append(0)
        self.counters["segments_created"] += 1
        self._collect()  # the segment just closed may be wholly acknowledged

    def _write_failed(self):
        """A write or flush raised: part of the record may be on flash. Cut the segment back
        to its last good length; if even that fails, burn the number and start a new
        segment, so the uncertain record's number is never used for another reading."""
        self._close_writer()
        i = len(self._segs) - 1
        try:
            size = os.stat(self._path(i))[6]
        except OSError:
            size = None
        try:
            if size is None and self._sizes[i] == 0:
                self._pop_newest()  # a new segment that never got its file
                return
            if size != self._sizes[i]:
                self._cut_tail(i, self._sizes[i])
        except OSError as e:
            log.w(_TAG, "could not cut a failed write: %s" % e)
            self._next += 1
            self._roll = True

    def _pop_newest(self):
        self._segs.pop()
        self._counts.pop()
        self._sizes.pop()
        self._roll = True
        self._batch = None
        if self._pi >= len(self._segs):
            self._end_position()

    def _close_writer(self):
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
            self._writer = None

    # ---- acknowledging, deleting, dropping -----------------------------------------------

    def _bound(self, i):
        """Every record in segment i has a sequence number <= this."""
        return self._segs[i + 1] - 1 if i + 1 < len(self._segs) else self._next - 1

    def _active(self, i):
        return i == len(self._segs) - 1 and not self._roll

    def _advance(self, seq):
        """Move the read position past every record <= seq; return how many it passed."""
        n = 0
        batch = self._batch
        if batch is not None and batch[0] == seq:
            self._pi, self._poff, self._pnb = batch[1]
            self._batch = None
            return batch[2]
        self._batch = None
        while self._pi < len(self._segs):
            i = self._pi
            if self._bound(i) <= seq:  # the whole rest of segment i, without reading it
                n += self._counts[i] - self._pnb
                if i == len(self._segs) - 1:
                    self._poff, self._pnb = self._sizes[i], self._counts[i]
                    return n
                self._pi, self._poff, self._pnb = i + 1, 0, 0
                continue
            with open(self._path(i), "rb") as f:
                recs = self._scanner.records(f, self._sizes[i], self._poff)
                for rseq, roff, length, _p, _gap in recs:
                    if rseq > seq:
                        self._poff = roff
                        return n
                    n += 1
                    self._pnb += 1
                    self._poff = roff + fmt.HEADER + length
            if i == len(self._segs) - 1:
                return n
            self._pi, self._poff, self._pnb = i + 1, 0, 0
        return n

    def _collect(self):
        """Delete closed segments that are wholly acknowledged, saving the cursor first.
        Returns True if the cursor was saved."""
        k = 0
        while k < len(self._segs) and not self._active(k) and self._bound(k) <= self._acked:
            k += 1
        if not k:
            return False
        if self._acked != self._saved_acked:
            self._save_state()  # before the delete: a reboot must not re-read a lost segment
        for _ in range(k):
            fmt.remove_quietly(self._path(0))
            self._pop_oldest()
            self.counters["segments_deleted"] += 1
        return True

    def _pop_oldest(self):
        first = self._segs.pop(0)
        self._counts.pop(0)
        self._sizes.pop(0)
        if self._pi == 0:
            self._poff, self._pnb = 0, 0
        else:
            self._pi -= 1
        self._batch = None
        if self._gaps:
            self._gaps = [g for g in self._gaps if g[0] != first]
        if not self._segs:
            self._roll = True
            self._pi = 0

    def _drop_oldest(self, why):
        """Delete the oldest closed segment with whatever it holds unacknowledged (counted and
        logged). Returns False if there is none: the newest segment is never dropped."""
        if not self._segs or self._active(0):
            return False
        lost = self._counts[0] - (self._pnb if self._pi == 0 else self._counts[0])
        path = self._path(0)
        fmt.remove_quietly(path)
        self._pop_oldest()
        self._pending -= lost
        self.counters["dropped"] += lost
        self.counters["segments_deleted"] += 1
        log.w(_TAG, "%s: dropped %d unsent records (%s)" % (why, lost, path))
        return True

    def _enforce_capacity(self):
        while self._pending > self.capacity_records or len(self._segs) > self.max_segments:
            if not self._drop_oldest("store full"):
                break

    def _note_gap(self, i, off, next_seq):
        """A run of bytes that are not a good record, at `off` in segment i, followed by the
        record `next_seq` (None: at the end of the segment). Counted and logged once."""
        key = (self._segs[i], off)
        if key in self._gaps:
            return
        self._gaps.append(key)
        if next_seq is not None and next_seq <= self._acked:
            return  # among acknowledged records: nothing of value lost
        self.counters["corrupt_records"] += 1
        log.e(_TAG, "corrupt record skipped at %s+%d" % (self._path(i), off))
