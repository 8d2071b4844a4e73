"""Power-cut campaign: cut the virtual board's power during the N-th flash program or erase,
for many N across a scenario, and prove after every cut that the tracker boots, keeps its
config, stores and delivers a new reading, delivers every reading it had stored before the cut
with the content it had, and never gives one sequence number to two readings.

The cut (host_tools/vboard/rom/_vblockdev.py) tears the operation as a brown-out does: a
program leaves a random prefix of its new bytes written and the rest as it was, an erase
leaves a random mix of erased and old pages. Each cut point has its own seed, derived from the
campaign's (`cut_seed`), recorded with the result: `albatross campaign power-cut --seed S`
replays the same cuts.

The scenario: a fresh image whose config.json is in the host tools' compact form (the first
boot rewrites it in canonical form: a config save), the tracker sampling every 0.1 s and
reporting through the host's TCP to a real broker in batches of 5, over a relay that delays
every byte 0.1 s each way (`SlowLink`, a cellular link's latency) so that readings sent and
not yet acknowledged are there to be lost when the power goes. Within a few seconds that
covers the config save, appends, segment roll-overs (about 35 readings a segment), the store's
state writes (the acknowledged cursor, at least every 32 acknowledged readings and before a
segment is deleted, and the sequence reservation) and segment deletes. A reference run counts
its flash operations (and what they belonged to); each cut point then gets its own copy of the
fresh image and one boot whose N-th flash operation is torn.

Readings are told apart by content, from the bench rather than from the firmware: the
simulated SHT4x (`DistinctReadings`) answers every measurement 0.01 degC warmer than the last
(its resolution is 0.0027 degC and the firmware rounds to 0.01), and records when it took each
one. So a reading's temperature names it: the console's "stored seq N T=x ..." (printed after
the store's append returned; the console is a pipe the cut does not lose) says which readings
were stored before the cut, and what the broker delivers must carry the same seq *and* the same
temperature and humidity. Lost: a reading stored before the cut that never arrives with its
content; a conflict: a seq delivered with two contents, or one reading delivered under two
seqs. "New reading": one the sensor measured after the cut, delivered; a cut not followed by
one counts as a failed boot.

At risk: a reading stored before the cut that our subscriber had not received when the power
went (the subscriber sees a publish within a millisecond of the broker taking it; a reading
still in the relay at the cut is dropped with the connection, as a modem's buffer would be,
and must come again from flash). A cut is at risk if it had one.

Category of a cut: the file operation the torn flash operation belonged to. On a boot with a
cut armed, the ROM wraps open() (files opened to write) and the firmware's `os` (rename,
remove, mkdir), and tags every flash operation with the call it happened in
("flush:/data/s00000023.log", "rename:/data/state.tmp>/data/state.bin", ...); `category()`
maps a tag: config.json or its temp file -> config; the store's state.bin and its temp file ->
cursor (acknowledged cursor and sequence reservation share that file); opening a segment
file (littlefs commits a new file at open: only a new segment's first append does) ->
rollover; writing/flushing/closing a segment -> append; removing one -> segment_delete; a
segment's .tmp (a torn tail cut) -> tail_cut; anything else (crash record, mkdir at first
boot, ...) -> other; no call -> untagged. Alarm-lane files get an "alarm_" prefix.
"""

from __future__ import annotations

import json
import random
import re
import selectors
import shutil
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from host_tools import image as img
from host_tools.broker import Broker
from host_tools.monitor import subscribe
from host_tools.vboard.bench import Bench
from host_tools.vboard.runner import VirtualBoard
from host_tools.vboard.sht4x_sim import HEATER, MEASURE_S, Sht4xSim

STORED_SEQ = re.compile(r"stored seq (\d+)")
STORED = re.compile(r"stored seq (\d+) T=(-?[0-9.]+) RH=(-?[0-9.]+)")
SEGMENT = re.compile(r"s[0-9a-f]{8}\.log")
TORN_TAIL = "cutting a torn tail"
CORRUPT = "corrupt record skipped"
# Fast sampling so a few seconds cover what a cut can hit (see the module docstring).
CONFIG = {"interval_s": 0.1, "batch_size": 5, "status_interval_s": 3600}
DEVICE_ID = "campaign"
CATEGORIES = ("config", "append", "rollover", "cursor", "segment_delete", "tail_cut", "other")
T0_C = -40.0  # DistinctReadings' first temperature
STEP_C = 0.01


def stored_seqs(vb: VirtualBoard) -> list[int]:
    """Sequence numbers the firmware reported as stored on flash ("stored seq N" is printed
    after the store's append returned), from the board's console log."""
    return [int(m.group(1)) for m in STORED_SEQ.finditer(vb.console_text())]


class DistinctReadings(Sht4xSim):
    """An SHT4x whose every measurement is 0.01 degC warmer than the last, humidity stepping
    too: no two readings of a run are alike, and `taken[i]` is when reading i was measured
    (time.monotonic(), the clock the supervisor stamps cuts with)."""

    def __init__(self, like: Sht4xSim) -> None:
        super().__init__(address=like.address, clock=like.clock)
        self.taken: list[float] = []

    def _start(self, cmd: int, now: float) -> bool:
        if cmd in MEASURE_S or cmd in HEATER:
            i = len(self.taken)
            self.temperature_c = T0_C + i * STEP_C
            self.humidity_pct = 20.0 + (i % 5000) * STEP_C
            self.taken.append(time.monotonic())
        return super()._start(cmd, now)


def reading_index(temperature: float) -> int:
    """Which DistinctReadings measurement a reported temperature is."""
    return round((temperature - T0_C) / STEP_C)


def fit_distinct_sensor(bench: Bench) -> None:
    sim = DistinctReadings(bench.sht4x)
    bench.buses[0].devices[sim.address] = sim  # in place of the bench's own SHT4x
    bench.sht4x = sim


def category(tag: str) -> str:
    """A flash operation's category from its tag (see the module docstring)."""
    if not tag or tag == "-":
        return "untagged"
    action, _, path = tag.partition(":")
    if action == "rename":
        path = path.split(">", 1)[0]
    lane = "alarm_" if "/alarm/" in path else ""
    name = path.rsplit("/", 1)[-1]
    if name.startswith("config.json"):
        return "config"
    if name.startswith("state.bin"):
        return lane + "cursor"
    if SEGMENT.fullmatch(name[:13]):
        if name.endswith(".tmp"):
            return lane + "tail_cut"
        if action == "remove":
            return lane + "segment_delete"
        return lane + ("rollover" if action == "open" else "append")
    return "other"


@dataclass
class CutResult:
    cut_at: int
    seed: int
    cut_happened: bool
    kind: str = ""  # program | erase
    tag: str = ""
    category: str = ""
    block: int = -1
    offset: int = 0
    length: int = 0
    bytes_torn: int = 0
    stored_before_cut: int = 0
    at_risk: int = 0  # stored before the cut, not yet received when it came
    lost: list[int] = field(default_factory=list)  # seqs stored and never delivered as stored
    conflicts: list[int] = field(default_factory=list)  # seqs delivered with two contents
    renumbered: list[int] = field(default_factory=list)  # readings delivered under two seqs
    duplicates: int = 0  # copies delivered more than once (allowed: QoS 1)
    new_reading: bool = False  # a reading measured after the cut was delivered
    failed_boot: bool = False
    config_intact: bool = True
    torn_tails_cut: int = 0  # the store found a torn record after the cut
    corrupt_records: int = 0
    seconds: float = 0.0

    @property
    def bad(self) -> bool:
        return bool(
            self.lost
            or self.conflicts
            or self.renumbered
            or self.failed_boot
            or not self.config_intact
        )


@dataclass
class CampaignResult:
    total_ops: int
    seed: int
    reference_ops: dict[str, int] = field(default_factory=dict)
    results: list[CutResult] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict:
        cuts = [r for r in self.results if r.cut_happened]
        at_risk = [r for r in cuts if r.at_risk]
        return {
            "seed": self.seed,
            "flash_ops_in_scenario": self.total_ops,
            "reference_ops_by_category": self.reference_ops,
            "cut_points": len(self.results),
            "cuts": len(cuts),
            "cuts_by_kind": dict(Counter(r.kind for r in cuts)),
            "cuts_by_category": dict(Counter(r.category for r in cuts)),
            "cuts_at_risk": len(at_risk),
            "cuts_at_risk_by_category": dict(Counter(r.category for r in at_risk)),
            "readings_stored_before_cuts": sum(r.stored_before_cut for r in cuts),
            "readings_at_risk": sum(r.at_risk for r in cuts),
            "lost": sum(len(r.lost) for r in cuts),
            "seq_conflicts": sum(len(r.conflicts) for r in cuts),
            "renumbered": sum(len(r.renumbered) for r in cuts),
            "duplicates": sum(r.duplicates for r in cuts),
            "failed_boots": sum(r.failed_boot for r in cuts),
            "cuts_without_new_reading": sum(not r.new_reading for r in cuts),
            "damaged_configs": sum(not r.config_intact for r in cuts),
            "torn_tails_cut": sum(r.torn_tails_cut for r in cuts),
            "corrupt_records": sum(r.corrupt_records for r in cuts),
            "bad_cuts": [
                {"cut_at": r.cut_at, "seed": r.seed, "tag": r.tag, "lost": r.lost[:10]}
                for r in cuts
                if r.bad
            ],
            "wall_time_s": round(self.wall_s, 1),
        }


class _Received:
    """What the broker delivered on the campaign device's telemetry topic, with when."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.copies: list[tuple[float, int, int, int]] = []  # (t, seq, reading, RH x 100)

    def feed(self, _topic: str, payload: bytes) -> None:
        now = time.monotonic()
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        records = doc.get("records", [doc]) if isinstance(doc, dict) else []
        with self.lock:
            for rec in records:
                if isinstance(rec, dict) and isinstance(rec.get("temperature"), (int, float)):
                    i = reading_index(rec["temperature"])
                    rh = rec.get("humidity")
                    rh100 = round(rh * 100) if isinstance(rh, (int, float)) else -1
                    self.copies.append((now, int(rec["seq"]), i, rh100))

    def snapshot(self) -> list[tuple[float, int, int, int]]:
        with self.lock:
            return list(self.copies)


class SlowLink:
    """A TCP relay between the board and the broker that delays every byte by `delay_s` each
    way, as a cellular link's latency does, so readings are stored and sent but not yet at
    the broker for a while: a cut then has data at risk. Bytes still queued towards the broker
    when the board's side closes are dropped (the modem lost them with the power)."""

    def __init__(self, host: str, port: int, delay_s: float = 0.3) -> None:
        self.target = (host, port)
        self.delay_s = delay_s
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._server.getsockname()[:2]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="slowlink").start()

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                board, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(board,), daemon=True).start()

    def _relay(self, board: socket.socket) -> None:
        try:
            broker = socket.create_connection(self.target, timeout=5)
        except OSError:
            board.close()
            return
        queues: dict[socket.socket, deque[tuple[float, bytes]]] = {board: deque(), broker: deque()}
        peer = {board: broker, broker: board}
        sel = selectors.DefaultSelector()
        sel.register(board, selectors.EVENT_READ)
        sel.register(broker, selectors.EVENT_READ)
        try:
            while not self._closed:
                due = [q[0][0] for q in queues.values() if q]
                timeout = max(0.0, min(due) - time.monotonic()) if due else 0.5
                for key, _ in sel.select(timeout):
                    src = key.fileobj
                    data = src.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return  # either side closed: what is queued goes with it
                    queues[src].append((time.monotonic() + self.delay_s, data))  # type: ignore[index]
                now = time.monotonic()
                for src, q in queues.items():
                    while q and q[0][0] <= now:
                        peer[src].sendall(q.popleft()[1])
        except OSError:
            pass
        finally:
            sel.close()
            board.close()
            broker.close()


def base_image(broker: Broker | SlowLink, path: Path, device_id: str = DEVICE_ID) -> Path:
    config = dict(CONFIG, broker_host=broker.host, broker_port=broker.port, device_id=device_id)
    return img.build_image(path, board="unix_sim", config=config)


def cut_seed(seed: int, n: int) -> int:
    """The tear's seed for cut point n of a campaign seeded `seed`."""
    return random.Random(f"{seed}:{n}").getrandbits(32)


@dataclass
class Reference:
    """The scenario without a cut: its flash operations, in order, with their categories."""

    total: int
    by_category: dict[str, int]
    categories: list[str]  # of operation 1, 2, ... (index 0 is operation 1)


def reference_ops(work: Path, image: Path, scenario_s: float) -> Reference:
    """Flash operations the scenario makes from power-on without a cut, and per category
    (the tags themselves go to reference/ops_by_tag.json)."""
    copy = work / "reference.img"
    shutil.copyfile(image, copy)
    vb = VirtualBoard(
        name="reference",
        workdir=work / "reference",
        image=copy,
        modem="none",
        flash_tags=True,
        bench_setup=fit_distinct_sensor,
    )
    vb.start()
    try:
        time.sleep(scenario_s)
        assert vb.supervisor is not None
        status = vb.supervisor.status()
        trace = list(vb.supervisor.flash_trace)
    finally:
        vb.stop()
    (work / "reference" / "ops_by_tag.json").write_text(json.dumps(status["ops_by_tag"], indent=1))
    by_category: Counter[str] = Counter()
    for tag, n in status["ops_by_tag"].items():
        by_category[category(tag)] += n
    flash = status["flash"]
    return Reference(
        flash["programs"] + flash["erases"],
        dict(by_category),
        [category(tag) for _, tag in trace],
    )


def _config_intact(image: Path, broker: Broker | SlowLink) -> bool:
    try:
        stored = json.loads(img.read_file(image, "config.json"))
    except (img.ImageError, ValueError):
        return False
    return (
        stored.get("device_id") == DEVICE_ID
        and stored.get("interval_s") == CONFIG["interval_s"]
        and stored.get("batch_size") == CONFIG["batch_size"]
        and stored.get("broker_port") == broker.port
    )


def run_cut(
    broker: Broker,
    link: SlowLink,
    work: Path,
    image: Path,
    n: int,
    seed: int,
    *,
    settle_s: float,
    deliver_s: float,
) -> CutResult:
    t_start = time.monotonic()
    name = f"cut{n}"
    copy = work / f"{name}.img"
    shutil.copyfile(image, copy)
    got = _Received()
    client = subscribe(broker.url, got.feed, f"albatross/{DEVICE_ID}/telemetry")
    vb = VirtualBoard(
        name=name,
        workdir=work / name,
        image=copy,
        modem="none",
        cut_after=n,
        cut_seed=seed,
        bench_setup=fit_distinct_sensor,
    )
    result = CutResult(cut_at=n, seed=seed, cut_happened=False)
    vb.start()
    try:
        sv = vb.supervisor
        sensor = vb.bench.sht4x if vb.bench else None
        assert sv is not None and isinstance(sensor, DistinctReadings)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and not sv.status()["cuts"]:
            time.sleep(0.02)
        cuts = sv.status()["cuts"]
        if not cuts:
            return result
        cut = cuts[0]
        result.cut_happened = True
        result.kind, result.tag = cut["kind"], cut["tag"]
        result.category = category(cut["tag"])
        result.block, result.offset = cut["block"], cut["offset"]
        result.length, result.bytes_torn = cut["length"], cut["bytes_torn"]
        console = (vb.workdir / "console.log").read_bytes()
        before_text = console[: cut["console_bytes"]].decode(errors="replace")
        before = {
            int(m.group(1)): (reading_index(float(m.group(2))), round(float(m.group(3)) * 100))
            for m in STORED.finditer(before_text)
        }
        result.stored_before_cut = len(before)

        def done() -> bool:
            copies = got.snapshot()
            delivered = {(s, i) for _, s, i, _ in copies}
            return _measured_after(copies, sensor, cut["at"]) and all(
                (s, i) in delivered for s, (i, _) in before.items()
            )

        deadline = time.monotonic() + deliver_s
        while time.monotonic() < deadline and not done():
            time.sleep(0.05)
        status = sv.status()
    finally:
        vb.stop()
        client.loop_stop()
        client.disconnect()
    copies = got.snapshot()
    first_seen: dict[tuple[int, int], float] = {}
    contents: dict[int, set[tuple[int, int]]] = {}
    seqs_of: dict[int, set[int]] = {}
    for t, s, i, rh in copies:
        first_seen.setdefault((s, i), t)
        contents.setdefault(s, set()).add((i, rh))
        seqs_of.setdefault(i, set()).add(s)
    for s, (i, rh) in sorted(before.items()):
        if (i, rh) not in contents.get(s, set()):
            result.lost.append(s)
        if first_seen.get((s, i), float("inf")) > cut["at"]:
            result.at_risk += 1
    result.conflicts = sorted(s for s, c in contents.items() if len({i for i, _ in c}) > 1)
    result.renumbered = sorted(i for i, ss in seqs_of.items() if len(ss) > 1)
    result.duplicates = len(copies) - len(first_seen)
    result.new_reading = _measured_after(copies, sensor, cut["at"])
    text = vb.console_text()
    after = text[len(before_text) :]
    result.torn_tails_cut = after.count(TORN_TAIL)
    result.corrupt_records = after.count(CORRUPT)
    # The firmware resets the board (hard) after a crash it caught; a crash before its guard
    # leaves a traceback and the REPL; a hung app ends in a watchdog reset. A board that did
    # not store and deliver a reading taken after the cut did not come back either.
    result.failed_boot = (
        status["resets"].get("watchdog", 0) > 0
        or status["resets"].get("hard", 0) > 0
        or status["unexpected_exits"] > 0
        or "Traceback" in text
        or not result.new_reading
    )
    result.config_intact = _config_intact(copy, link)
    result.seconds = round(time.monotonic() - t_start, 2)
    return result


def _measured_after(copies: list, sensor: DistinctReadings, at: float) -> bool:
    """Did the broker deliver a reading the sensor measured after `at`?"""
    taken = sensor.taken
    return any(0 <= i < len(taken) and taken[i] > at for _, _, i, _ in copies)


RARE = ("config", "cursor", "rollover", "segment_delete", "tail_cut")


def choose_cut_points(ref: Reference, points: int, seed: int, targeted: int = 0) -> list[int]:
    """`points` flash operations spread evenly over 1..total, plus a tenth as many at random,
    plus up to `targeted` of the operations the reference run spent on the rare categories
    (config save, cursor, roll-over, segment delete: a few operations among hundreds of
    appends, which an even spread would mostly miss); all distinct. The run with the cut is
    not the reference to the operation (acknowledgements come when they come), so what a
    cut hit is taken from the cut itself."""
    total = ref.total
    if total <= points:
        chosen = set(range(1, total + 1))
    else:
        step = total / points
        chosen = {max(1, int(i * step) + 1) for i in range(points)}
        chosen |= set(random.Random(seed).sample(range(1, total + 1), points // 10))
    rare = [i + 1 for i, c in enumerate(ref.categories) if c.removeprefix("alarm_") in RARE]
    rare = [n for n in rare if n not in chosen]
    if len(rare) > targeted:
        rare = sorted(random.Random(seed + 1).sample(rare, targeted))
    return sorted(chosen | set(rare))


def run_campaign(
    broker: Broker,
    work: Path,
    *,
    points: int,
    targeted: int = 0,
    scenario_s: float = 6.0,
    seed: int = 1,
    deliver_s: float = 30.0,
    link_delay_s: float = 0.1,
    log: Callable[[str], None] = print,
    keep: bool = False,
) -> CampaignResult:
    """Cut the power at `points` (or so) flash operations of the scenario; see the module
    docstring. The board reaches the broker through a SlowLink of `link_delay_s` each way.
    Each cut point's image and logs are kept only when something went wrong (or `keep`)."""
    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    link = SlowLink(broker.host, broker.port, link_delay_s)
    try:
        return _campaign(
            broker, link, work, points, targeted, scenario_s, seed, deliver_s, log, keep, t0
        )
    finally:
        link.close()


def _campaign(
    broker: Broker,
    link: SlowLink,
    work: Path,
    points: int,
    targeted: int,
    scenario_s: float,
    seed: int,
    deliver_s: float,
    log: Callable[[str], None],
    keep: bool,
    t0: float,
) -> CampaignResult:
    image = base_image(link, work / "base.img")
    ref = reference_ops(work, image, scenario_s)
    result = CampaignResult(total_ops=ref.total, seed=seed, reference_ops=ref.by_category)
    cut_points = choose_cut_points(ref, points, seed, targeted)
    log(
        f"reference run: {ref.total} flash operations in {scenario_s:g} s "
        f"({', '.join(f'{k} {v}' for k, v in sorted(ref.by_category.items()))}); "
        f"{len(cut_points)} cut points"
    )
    for k, n in enumerate(cut_points):
        r = run_cut(
            broker,
            link,
            work,
            image,
            n,
            cut_seed(seed, n),
            settle_s=scenario_s * 2 + 5,
            deliver_s=deliver_s,
        )
        result.results.append(r)
        result.wall_s = time.monotonic() - t0
        if r.bad:
            log(
                f"  cut {k + 1}/{len(cut_points)} at op {n} (seed {r.seed}, {r.kind} "
                f"{r.tag}): LOST {r.lost[:10]} conflicts {r.conflicts[:10]} renumbered "
                f"{r.renumbered[:10]} failed_boot {r.failed_boot} new_reading {r.new_reading} "
                f"config_ok {r.config_intact}; kept in {work / f'cut{n}'}"
            )
        elif k % 10 == 0 or k == len(cut_points) - 1:
            what = (
                f"{r.kind} {r.bytes_torn}/{r.length} bytes, {r.category}, "
                f"{r.stored_before_cut} stored, {r.at_risk} at risk"
                if r.cut_happened
                else "no cut (the run ended first)"
            )
            log(f"  cut {k + 1}/{len(cut_points)} at op {n}: ok ({what}) {r.seconds:.1f} s")
        if not (r.bad or keep):
            shutil.rmtree(work / f"cut{n}", ignore_errors=True)
            (work / f"cut{n}.img").unlink(missing_ok=True)
    result.wall_s = time.monotonic() - t0
    return result


def write_json(result: CampaignResult, path: Path) -> None:
    """The summary and every cut's result, as JSON."""
    doc = {"summary": result.summary(), "cuts": [asdict(r) for r in result.results]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
