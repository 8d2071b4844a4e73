# Sequence numbers that only ever increase, across reboots and power cuts, without writing
# flash for every reading: numbers are reserved in blocks and the end of the reserved block
# is persisted (write-temp-then-rename) before any number from it is handed out. A reboot
# skips the unused rest of a block, so a number is never used twice.
import json
import os

BLOCK = 100


class SequenceCounter:
    def __init__(self, path="seq.json", block=BLOCK):
        self._path = path
        self._block = block
        self._next = self._load()
        self._limit = self._next  # nothing reserved yet

    def _load(self):
        try:
            with open(self._path) as f:
                value = json.load(f)["reserved_to"]
            if isinstance(value, int) and value >= 0:
                return value
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return 0

    def _reserve(self):
        limit = self._next + self._block
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"reserved_to": limit}, f)
        os.rename(tmp, self._path)
        self._limit = limit

    def next(self):
        if self._next >= self._limit:
            self._reserve()
        n = self._next
        self._next += 1
        return n

    @property
    def peek(self):
        return self._next
