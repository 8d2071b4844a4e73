# Telemetry records and the RAM queue between sampling and the uplink. Durable storage on
# flash replaces the queue in a later issue; until then an outage longer than the queue drops
# the oldest readings and counts them (never silently).
import json

from tracker.aio import asyncio


def make_record(device_id, seq, ts, sample):
    rec = {
        "device_id": device_id,
        "seq": seq,
        "ts": ts,
        "temperature": sample.get("temperature"),
        "humidity": sample.get("humidity"),
        "battery": sample.get("battery"),
    }
    if sample.get("sensor_error"):
        rec["sensor_error"] = sample["sensor_error"]
    return rec


def encode(rec):
    return json.dumps(rec).encode()


class RecordQueue:
    """A bounded FIFO with an event for the consumer. Drop-oldest, counted."""

    def __init__(self, capacity=64):
        self._items = []
        self._capacity = capacity
        self.dropped = 0
        self._ready = asyncio.Event()

    def __len__(self):
        return len(self._items)

    def put(self, item):
        if len(self._items) >= self._capacity:
            self._items.pop(0)
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def peek(self):
        return self._items[0] if self._items else None

    def pop(self):
        item = self._items.pop(0)
        if not self._items:
            self._ready.clear()
        return item

    def wake(self):
        """Wake a waiting consumer without an item (e.g. its link died)."""
        self._ready.set()

    async def wait(self):
        """Return when there is an item or after wake()."""
        if not self._items:
            self._ready.clear()
            await self._ready.wait()
