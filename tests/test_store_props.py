"""Property tests for the firmware's durable store (CPython only): random appends,
acknowledgements, reboots, power cuts mid-append and flipped bits, checked against a model of
what a consumer must see: nothing appended and unacknowledged disappears without being
counted, and no sequence number ever stands for two different readings."""

import os
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))

from tracker import log  # noqa: E402
from tracker.store import layout as fmt  # noqa: E402
from tracker.store.queue import Store  # noqa: E402

log.echo = False

payloads = st.binary(min_size=0, max_size=50)  # binary: includes the magic byte, to test resync
ops = st.one_of(
    st.tuples(st.just("append"), payloads),
    st.tuples(st.just("append_many"), st.integers(1, 25)),
    st.tuples(st.just("read_ack"), st.integers(1, 12), st.booleans()),
    st.tuples(st.just("read"), st.integers(1, 12)),
    st.tuples(st.just("reboot"), st.booleans()),
    st.tuples(st.just("torn_append"), payloads, st.floats(0, 1, exclude_max=True)),
    st.tuples(
        st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 1 << 16), st.integers(0, 7)
    ),
    st.tuples(st.just("flip_state"), st.integers(0, 15), st.integers(0, 7)),
)


def segment_paths(root):
    return [os.path.join(root, n) for n in sorted(os.listdir(root)) if n.endswith(".log")]


def record_at(data, offset):
    """The sequence number of the good record holding byte `offset`, or None."""
    pos = 0
    while pos < len(data):
        status, seq, length = fmt.parse(data, pos, len(data))
        if status == fmt.OK:
            if pos <= offset < pos + fmt.HEADER + length:
                return seq
            pos += fmt.HEADER + length
        else:
            pos += 1
    return None


class Model:
    def __init__(self, root, cfg):
        self.root = root
        self.cfg = cfg
        self.store = Store(root, **cfg)
        self.returned = {}  # seq -> payload, for every append() that returned
        self.acked = -1  # what the consumer acknowledged
        self.damaged = set()  # records hit by a flipped bit
        self.dropped = 0  # summed over boots: a dropped segment is gone, counted once
        self.state_damaged = False
        self.n = 0

    def boot(self):
        self.dropped += self.store.counters["dropped"]
        self.store = Store(self.root, **self.cfg)
        s = self.store
        assert s.acked <= self.acked
        if not self.state_damaged:
            # a reboot re-sends at most cursor_every already-acknowledged records
            n = self.cfg["cursor_every"]
            again = [q for q, _ in s.read_batch(n + 1, 1 << 20) if q <= self.acked]
            assert len(again) <= n, (s.acked, self.acked, again)

    def append(self, payload):
        seq = self.store.append(payload)
        assert all(seq > q for q in self.returned), "sequence number reused"
        self.returned[seq] = payload
        return seq

    def check_batch(self, batch):
        seqs = [q for q, _ in batch]
        assert seqs == sorted(set(seqs))
        for seq, payload in batch:
            assert self.returned.get(seq) == payload, ("bogus record", seq)

    def run(self, op):
        kind = op[0]
        s = self.store
        if kind == "append":
            self.append(op[1])
        elif kind == "append_many":
            for _ in range(op[1]):
                self.n += 1
                self.append(b"r%d" % self.n)
        elif kind in ("read", "read_ack"):
            batch = s.read_batch(op[1], 200)
            self.check_batch(batch)
            if kind == "read_ack" and batch:
                seq = batch[len(batch) // 2 if op[2] else -1][0]  # a PUBACK for part or all
                s.ack(seq)
                self.acked = max(self.acked, seq)
        elif kind == "reboot":
            if op[1]:
                s.close()  # an orderly reset or deep sleep
            self.boot()
        elif kind == "torn_append":
            payload, frac = op[1], op[2]
            seq = s.append(payload)
            path = segment_paths(self.root)[-1]
            need = fmt.HEADER + len(payload)
            size = os.path.getsize(path)
            os.truncate(path, size - need + int(frac * need))  # power cut mid-append
            self.boot()
            # that append never returned: its number may be used again, its payload is gone
            assert seq not in self.returned
        elif kind == "flip":
            paths = segment_paths(self.root)
            if not paths:
                return
            path = paths[op[1] % len(paths)]
            data = bytearray(Path(path).read_bytes())
            if not data:
                return
            at = op[2] % len(data)
            hit = record_at(data, at)
            data[at] ^= 1 << op[3]
            Path(path).write_bytes(data)
            self.boot()
            s = self.store
            if hit is not None:
                self.damaged.add(hit)
                if hit > s.acked and hit in self.returned:
                    found = s.counters["corrupt_records"] + s.counters["torn_tails_cut"]
                    assert found >= 1, "a damaged record went unreported"
        elif kind == "flip_state":
            path = os.path.join(self.root, "state.bin")
            if os.path.exists(path):
                data = bytearray(Path(path).read_bytes())
                data[op[1] % len(data)] ^= 1 << op[2]
                Path(path).write_bytes(data)
                self.state_damaged = True
                self.boot()

    def finish(self):
        self.boot()  # a last power cut, then drain everything
        s = self.store
        got = []
        while True:
            batch = s.read_batch(7, 100)
            if not batch:
                break
            self.check_batch(batch)
            got += batch
            s.ack(batch[-1][0])
        assert s.pending() == 0
        self.dropped += s.counters["dropped"]
        delivered = {q for q, _ in got}
        missing = {q for q in self.returned if q > self.acked} - delivered
        assert len(missing - self.damaged) <= self.dropped, sorted(missing - self.damaged)
        if s.counters["dropped"] == 0 and self.dropped == 0:
            assert missing <= self.damaged
        # and the store keeps going with a fresh number
        self.append(b"last")


@settings(max_examples=300, deadline=None)
@given(
    program=st.lists(ops, max_size=40),
    segment_bytes=st.sampled_from([64, 128, 512, 4096]),
    capacity=st.sampled_from([6, 40, 10000]),
    cursor_every=st.sampled_from([1, 5, 32]),
)
def test_store_never_loses_or_reuses_silently(program, segment_bytes, capacity, cursor_every):
    cfg = {
        "segment_bytes": segment_bytes,
        "capacity_records": capacity,
        "cursor_every": cursor_every,
    }
    with tempfile.TemporaryDirectory() as root:
        model = Model(root, cfg)
        for op in program:
            model.run(op)
        model.finish()


@settings(max_examples=100, deadline=None)
@given(
    program=st.lists(
        st.one_of(
            st.tuples(st.just("append"), payloads),
            st.tuples(st.just("read_ack"), st.integers(1, 12), st.booleans()),
            st.tuples(st.just("reboot"), st.booleans()),
        ),
        max_size=60,
    )
)
def test_without_faults_every_record_arrives_exactly(program):
    cfg = {"segment_bytes": 128, "capacity_records": 10000, "cursor_every": 4}
    with tempfile.TemporaryDirectory() as root:
        model = Model(root, cfg)
        for op in program:
            model.run(op)
        expected = sorted(q for q in model.returned if q > model.acked)
        model.boot()
        got = [q for q, _ in model.store.read_batch(10000, 1 << 20)]
        assert [q for q in got if q > model.acked] == expected
        assert model.store.counters["corrupt_records"] == 0
