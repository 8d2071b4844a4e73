"""A paho-mqtt subscriber that records everything a test's trackers say, with waits that
fail with a message naming the logs to read."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from host_tools.monitor import subscribe


@dataclass
class Message:
    topic: str
    payload: bytes
    at: float

    @property
    def json(self) -> dict:
        return json.loads(self.payload)

    @property
    def records(self) -> list[dict]:
        """Telemetry readings in this message: a batch's records, or the one record."""
        body = self.json
        return body["records"] if "records" in body else [body]

    @property
    def last(self) -> dict:
        """The newest reading of a telemetry message."""
        return self.records[-1]


class MqttWatch:
    def __init__(self, url: str, topic: str = "albatross/#") -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._client = subscribe(url, self._on_message, topic)

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self.messages.append(Message(topic, payload, time.monotonic()))
            self._cond.notify_all()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def wait_for(
        self,
        predicate: Callable[[Message], bool],
        timeout: float,
        *,
        what: str,
        after: int = 0,
        logs: str = "",
    ) -> Message:
        """The first message (from index `after` on) that satisfies predicate."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages[after:]:
                    try:
                        if predicate(msg):
                            return msg
                    except (ValueError, KeyError, TypeError):
                        continue
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [f"{m.topic} {m.payload[:120]!r}" for m in self.messages[-8:]]
                    raise AssertionError(
                        f"no {what} within {timeout:.0f} s; last messages:\n  "
                        + "\n  ".join(seen or ["(none)"])
                        + (f"\nlogs: {logs}" if logs else "")
                    )
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def telemetry(self, device_id: str) -> list[dict]:
        """Every reading received from the device, in arrival order (duplicates included)."""
        topic = f"albatross/{device_id}/telemetry"
        with self._cond:
            return [r for m in self.messages if m.topic == topic for r in m.records]
