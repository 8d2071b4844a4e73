import json

from mptest import run

from tracker import aio
from tracker.records import RecordQueue, encode, make_record


def test_record_carries_values_and_error_flag():
    ok = make_record("dev1", 7, 1700000000, {"temperature": 21.5, "humidity": 40.0,
                                            "battery": 3.9, "sensor_error": None})
    assert json.loads(encode(ok)) == {"device_id": "dev1", "seq": 7, "ts": 1700000000,
                                      "temperature": 21.5, "humidity": 40.0, "battery": 3.9}
    bad = make_record("dev1", 8, 1700000001, {"temperature": None, "humidity": None,
                                             "battery": 3.9, "sensor_error": "crc"})
    decoded = json.loads(encode(bad))
    assert decoded["temperature"] is None and decoded["sensor_error"] == "crc"


def test_queue_drops_oldest_and_counts():
    q = RecordQueue(capacity=3)
    for n in range(5):
        q.put(n)
    assert q.dropped == 2
    assert [q.pop() for _ in range(3)] == [2, 3, 4]


def test_queue_wait_wakes_consumer():
    q = RecordQueue()
    got = []

    async def consumer():
        await q.wait()
        got.append(q.pop())

    async def main():
        task = asyncio_create(consumer())
        await aio.sleep_ms(10)
        assert not got
        q.put("r")
        await aio.wait_for_ms(task, 1000)

    run(main())
    assert got == ["r"]


def asyncio_create(coro):
    return aio.asyncio.create_task(coro)
