"""The consumer side of store-and-forward: is every reading there, exactly once?

A tracker may publish a record more than once (QoS 1 redelivery, a batch re-sent after a
reconnect or a reboot) but must never lose one. It sends on two lanes, each with its own
sequence numbers: `telemetry` (readings) and `alarm` (the priority lane). `DeliveryCheck` is
fed what a broker delivers and dedupes by (device id, lane, sequence number); per device and
lane it reports what arrived, what came twice and which sequence numbers are missing.

    tally = check("mqtt://127.0.0.1:1883", until_idle=5)
    print(tally.format_report())
    sys.exit(0 if tally.ok else 1)

Payloads on `albatross/<device_id>/telemetry` and `.../alarm`, JSON:

- one record: `{"device_id", "seq", "ts", "temperature", "humidity", "battery"[, ...]}`
  (an alarm record: `{"device_id", "seq", "ts", "alarm", "state", ...}`)
- a batch: `{"device_id": ..., "records": [record, ...]}`; records may omit `device_id`.

The lane is the topic's last level: `alarm`, else `telemetry` (what this check took before
alarms existed).

The device is the topic's (`albatross/<device_id>/...`); a payload naming another device is
malformed, as is anything that is neither form or a record without a non-negative integer
`seq`. Malformed input is counted and its reason kept, never raised: the rest of the stream
is still checked. In a batch only the bad records are rejected, the good ones count.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from host_tools.monitor import listen

TELEMETRY_TOPIC = "albatross/+/telemetry"
LANES = ("telemetry", "alarm")
LANE_TOPICS = (TELEMETRY_TOPIC, "albatross/+/alarm")
UNKNOWN_DEVICE = "?"  # malformed messages whose device cannot be told from topic or payload
MALFORMED_EXAMPLES = 5  # reasons kept per device; the count is always complete

Record = dict[str, Any]
Ranges = list[tuple[int, int]]


class MalformedPayload(ValueError):
    """A payload or a record in it that is not telemetry; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_payload(payload: bytes) -> object:
    """The payload's value. JSON today; CBOR (issue 4) will be recognised here."""
    head = payload[:1]
    if head and 0xA0 <= head[0] <= 0xBF:  # a CBOR map's initial byte (RFC 8949 §3.1, type 5)
        raise MalformedPayload("looks like CBOR, which this version cannot decode")
    try:
        return json.loads(payload)
    except ValueError:  # also UnicodeDecodeError
        raise MalformedPayload(f"not JSON: {payload[:40]!r}") from None


def device_of_topic(topic: str) -> str | None:
    """`albatross/<device_id>/telemetry` -> device_id; None for other shapes."""
    parts = topic.split("/")
    return parts[1] if len(parts) >= 3 and parts[1] else None


def lane_of_topic(topic: str) -> str:
    """`albatross/<device_id>/alarm` -> "alarm"; anything else is telemetry."""
    return "alarm" if topic.rsplit("/", 1)[-1] == "alarm" else "telemetry"


def compact_ranges(numbers: Iterable[int]) -> Ranges:
    """Sorted inclusive ranges: [3, 1, 2, 7] -> [(1, 3), (7, 7)]."""
    ranges: Ranges = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


def _fingerprint(record: Mapping[str, Any]) -> int:
    # A re-sent record is the same reading whether it came alone (with device_id) or in a
    # batch (often without), so device_id is not part of what must match.
    body = {k: v for k, v in record.items() if k != "device_id"}
    return hash(json.dumps(body, sort_keys=True, default=repr))


@dataclass
class DeviceTally:
    """What arrived from one device. `seen` maps seq -> the first copy's fingerprint."""

    device_id: str
    first_expected: int | None = None
    seen: dict[int, int] = field(default_factory=dict)
    duplicates: int = 0
    conflicting: set[int] = field(default_factory=set)
    out_of_order: int = 0
    highest: int | None = None
    messages: int = 0
    payload_bytes: int = 0
    malformed: int = 0
    malformed_reasons: list[str] = field(default_factory=list)

    @property
    def received(self) -> int:
        return len(self.seen)

    @property
    def first_seq(self) -> int | None:
        return min(self.seen) if self.seen else None

    @property
    def last_seq(self) -> int | None:
        return self.highest

    def gaps(self) -> Ranges:
        """Missing sequence numbers from the expected first (or the lowest seen) to the
        highest seen. A missing tail cannot be told from one not yet sent."""
        if not self.seen:
            return []
        ordered = sorted(self.seen)
        prev = ordered[0] - 1
        if self.first_expected is not None:
            prev = min(prev, self.first_expected - 1)
        gaps: Ranges = []
        for seq in ordered:
            if seq > prev + 1:
                gaps.append((prev + 1, seq - 1))
            prev = seq
        return gaps

    def add(self, seq: int, record: Mapping[str, Any]) -> bool:
        """Count one record; True if it is new."""
        fingerprint = _fingerprint(record)
        first = self.seen.get(seq)
        if first is not None:
            self.duplicates += 1
            if first != fingerprint:
                self.conflicting.add(seq)
            return False
        if self.highest is not None and seq < self.highest:
            self.out_of_order += 1
        self.highest = seq if self.highest is None else max(self.highest, seq)
        self.seen[seq] = fingerprint
        return True

    def reject(self, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_reasons) < MALFORMED_EXAMPLES:
            self.malformed_reasons.append(reason)

    def report(self) -> dict[str, Any]:
        gaps = self.gaps()
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "gaps": gaps,
            "missing": sum(hi - lo + 1 for lo, hi in gaps),
            "conflicts": compact_ranges(self.conflicting),
            "out_of_order": self.out_of_order,
            "malformed": self.malformed,
            "malformed_reasons": list(self.malformed_reasons),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "messages": self.messages,
            "payload_bytes": self.payload_bytes,
        }


class DeliveryCheck:
    """Dedupe by (device id, lane, seq) and tally gaps, duplicates and malformed input.

    first_seq: the sequence number each device is known to start from (an int for all, or a
    mapping device -> int), on both lanes (each lane's store starts at the same number), so
    that a missing head counts as a gap. Pure: no I/O, no clock; not thread-safe (`check`
    serialises calls). `devices` is the telemetry lane, `lanes[lane]` any lane.
    """

    def __init__(self, first_seq: int | Mapping[str, int] | None = None) -> None:
        self._first_seq = first_seq
        self.lanes: dict[str, dict[str, DeviceTally]] = {lane: {} for lane in LANES}
        self.devices = self.lanes["telemetry"]

    def _device(self, device_id: str, lane: str = "telemetry") -> DeviceTally:
        tallies = self.lanes[lane]
        tally = tallies.get(device_id)
        if tally is None:
            if isinstance(self._first_seq, Mapping):
                first = self._first_seq.get(device_id)
            else:
                first = self._first_seq
            tally = tallies[device_id] = DeviceTally(device_id, first)
        return tally

    def seqs(self, device_id: str, lane: str = "telemetry") -> set[int]:
        """The sequence numbers received so far from one device on one lane."""
        tally = self.lanes[lane].get(device_id)
        return set(tally.seen) if tally else set()

    def feed(self, topic: str, payload: bytes) -> list[Record]:
        """Take one MQTT message; return its records not seen before, in payload order.

        Every returned record has `device_id` set. Never raises on bad input.
        """
        device = device_of_topic(topic)
        lane = lane_of_topic(topic)
        try:
            body = decode_payload(payload)
            if not isinstance(body, dict):
                raise MalformedPayload(f"a JSON {type(body).__name__}, not an object")
            device = self._check_device(device, body.get("device_id"), "payload")
        except MalformedPayload as e:
            self._device(device or UNKNOWN_DEVICE, lane).reject(f"{topic}: {e.reason}")
            return []
        tally = self._device(device, lane)
        tally.messages += 1
        tally.payload_bytes += len(payload)
        if "records" in body:
            items = body["records"]
            if not isinstance(items, list):
                tally.reject(f"{topic}: 'records' is a {type(items).__name__}, not a list")
                return []
        elif "seq" in body:
            items = [body]
        else:
            tally.reject(f"{topic}: neither a record (no 'seq') nor a batch (no 'records')")
            return []
        fresh = []
        for index, item in enumerate(items):
            try:
                seq = self._seq_of(item, device)
            except MalformedPayload as e:
                where = f" record {index}" if "records" in body else ""
                tally.reject(f"{topic}{where}: {e.reason}")
                continue
            if tally.add(seq, item):
                fresh.append({**item, "device_id": device})
        return fresh

    @staticmethod
    def _check_device(expected: str | None, named: object, where: str) -> str:
        if named is not None and not isinstance(named, str):
            raise MalformedPayload(f"{where} device_id is not a string: {named!r}")
        if expected is not None and named is not None and named != expected:
            raise MalformedPayload(f"{where} names device {named!r}, topic says {expected!r}")
        device = expected or named
        if not device:
            raise MalformedPayload("no device id in topic or payload")
        return device

    def _seq_of(self, item: object, device: str) -> int:
        if not isinstance(item, dict):
            raise MalformedPayload(f"a record is a {type(item).__name__}, not an object")
        self._check_device(device, item.get("device_id"), "record")
        seq = item.get("seq")
        # bool is an int in Python but never a sequence number.
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise MalformedPayload(f"seq must be a non-negative integer, got {seq!r}")
        return seq

    def _lost(self, lane: str) -> bool:
        """Some record of the lane is missing, or a seq carried two different records
        (dedupe would have dropped one of them: a lost record)."""
        return any(t.received and (t.gaps() or t.conflicting) for t in self.lanes[lane].values())

    @property
    def ok(self) -> bool:
        """Something arrived and nothing is lost, on every lane."""
        received = any(t.received for tallies in self.lanes.values() for t in tallies.values())
        return received and not any(self._lost(lane) for lane in LANES)

    def report(self) -> dict[str, Any]:
        """{"ok", "devices": {device_id: tally}, "lanes": {lane: {device_id: tally}}}, a
        tally being {received, duplicates, gaps, missing, conflicts, out_of_order, malformed,
        malformed_reasons, first_seq, last_seq, messages, payload_bytes}; "devices" is the
        telemetry lane (as before lanes). Ranges are inclusive (lo, hi) pairs."""
        lanes = {
            lane: {d: tallies[d].report() for d in sorted(tallies)}
            for lane, tallies in self.lanes.items()
        }
        return {"ok": self.ok, "devices": lanes["telemetry"], "lanes": lanes}

    def format_report(self) -> str:
        """Per device a telemetry line and (when it sent any) an alarm-lane line, each
        followed by its malformed examples; then a verdict."""
        lanes = self.report()["lanes"]
        lines = []
        for device in sorted(set(lanes["telemetry"]) | set(lanes["alarm"])):
            for lane, label in (("telemetry", ""), ("alarm", "alarm lane: ")):
                r = lanes[lane].get(device)
                if r is not None:
                    lines.append(f"{device:<12} {label}{_tally_text(r)}")
                    lines += [f"{'':<12} malformed: {why}" for why in r["malformed_reasons"]]
        received = {
            lane: any(t.received for t in self.lanes[lane].values()) for lane in self.lanes
        }
        lost = [what for lane, what in LOST_WORDS.items() if self._lost(lane)]
        if not any(received.values()):
            lines.append("FAIL: no telemetry records received, no alarms either")
        elif lost:
            lines.append(f"FAIL: {' and '.join(lost)} missing")
        else:
            lines.append("OK: no gaps")
        return "\n".join(lines)


LOST_WORDS = {"telemetry": "readings", "alarm": "alarms"}


def _tally_text(r: Mapping[str, Any]) -> str:
    seqs = f"seq {r['first_seq']}..{r['last_seq']}" if r["received"] else "no records"
    line = f"{seqs}  received {r['received']}  duplicates {r['duplicates']}  "
    if r["gaps"]:
        line += f"MISSING {r['missing']}: {_ranges_text(r['gaps'])}  "
    else:
        line += "gaps 0  "
    line += f"out-of-order {r['out_of_order']}  malformed {r['malformed']}"
    if r["conflicts"]:
        line += f"  SEQ REUSED for different readings: {_ranges_text(r['conflicts'])}"
    return line


def _ranges_text(ranges: Iterable[tuple[int, int]], limit: int = 10) -> str:
    ranges = list(ranges)
    text = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges[:limit])
    return text + (f", ... ({len(ranges) - limit} more ranges)" if len(ranges) > limit else "")


def check(
    url: str,
    *,
    seconds: float | None = None,
    until_idle: float | None = None,
    topic: str | Sequence[str] = LANE_TOPICS,
    first_seq: int | Mapping[str, int] | None = None,
    on_subscribed: Callable[[], None] | None = None,
) -> DeliveryCheck:
    """Subscribe (QoS 1) and feed a DeliveryCheck until `seconds` have passed, no message came
    for `until_idle` seconds (counted from the subscription on), or Ctrl-C; return it.

    Raises BrokerError when the broker cannot be reached.
    """
    tally = DeliveryCheck(first_seq)
    lock = threading.Lock()

    def feed(msg_topic: str, payload: bytes) -> None:
        with lock:
            tally.feed(msg_topic, payload)

    listen(
        url, feed, topic=topic, seconds=seconds, until_idle=until_idle, on_subscribed=on_subscribed
    )
    return tally
