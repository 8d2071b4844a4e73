import os

from tracker.seqno import SequenceCounter

PATH = "_test_seq.json"


def _clean():
    for p in (PATH, PATH + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def test_sequence_increases_across_restarts_and_never_repeats():
    _clean()
    seen = []
    for _boot in range(3):
        counter = SequenceCounter(PATH, block=10)
        for _ in range(7):
            seen.append(counter.next())
    _clean()
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert seen[:7] == [0, 1, 2, 3, 4, 5, 6]
    assert seen[7] == 10  # the unused rest of the first block is skipped after a reboot


def test_corrupt_file_restarts_from_zero_without_crashing():
    _clean()
    with open(PATH, "w") as f:
        f.write("{not json")
    counter = SequenceCounter(PATH, block=5)
    assert counter.next() == 0
    _clean()
