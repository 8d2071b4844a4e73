"""Power-cut campaign: cut the virtual board's power at the N-th flash program or erase, for
many N across a scenario, and prove after every cut that the tracker boots, keeps its config,
delivers every reading it had stored before the cut, and never uses a sequence number for
two different readings.

The scenario: a fresh image, the tracker sampling fast and reporting through the host's TCP
to a real broker. A reference run counts the scenario's flash operations; then each cut point
gets its own copy of the image and its own boot with ALBATROSS_CUT_AFTER=N. "Stored before the
cut" is what the firmware printed after its store's append returned ("stored seq N"): the
console is written through a pipe the cut does not lose.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from host_tools import image as img
from host_tools.broker import Broker
from host_tools.delivery_check import DeliveryCheck
from host_tools.monitor import subscribe
from host_tools.vboard.runner import VirtualBoard

STORED = re.compile(r"stored seq (\d+)")
# Fast sampling so a few seconds cover what a cut can hit: the first boot's config save,
# store state writes, a segment roll-over (35 records a segment), cursor updates (every 32
# acknowledged records or when a segment is deleted) and the appends themselves.
CONFIG = {"interval_s": 0.1, "batch_size": 5, "status_interval_s": 3600}


@dataclass
class CutResult:
    cut_at: int
    cut_happened: bool
    stored_before_cut: int
    lost: list[int]
    conflicts: int
    duplicates: int
    failed_boot: bool
    config_intact: bool


@dataclass
class CampaignResult:
    total_ops: int
    results: list[CutResult] = field(default_factory=list)

    def summary(self) -> dict:
        cuts = [r for r in self.results if r.cut_happened]
        return {
            "flash_ops_in_scenario": self.total_ops,
            "cut_points_tried": len(self.results),
            "cuts_that_happened": len(cuts),
            "readings_stored_before_cuts": sum(r.stored_before_cut for r in cuts),
            "readings_lost": sum(len(r.lost) for r in cuts),
            "seq_conflicts": sum(r.conflicts for r in cuts),
            "duplicates_removed_by_dedupe": sum(r.duplicates for r in cuts),
            "failed_boots": sum(r.failed_boot for r in cuts),
            "config_damaged": sum(not r.config_intact for r in cuts),
        }


def stored_seqs(vb: VirtualBoard) -> list[int]:
    """Sequence numbers the firmware reported as stored on flash ("stored seq N" is printed
    after the store's append returned), from the board's console log."""
    return [int(m.group(1)) for m in STORED.finditer(vb.console_text())]


def _board(broker: Broker, work: Path, image: Path, name: str, cut_after: int) -> VirtualBoard:
    return VirtualBoard(
        name=name,
        workdir=work / name,
        image=image,
        modem="none",
        cut_after=cut_after,
    )


def base_image(broker: Broker, path: Path, device_id: str) -> Path:
    config = dict(CONFIG, broker_host=broker.host, broker_port=broker.port, device_id=device_id)
    return img.build_image(path, board="unix_sim", config=config)


def reference_ops(broker: Broker, work: Path, image: Path, scenario_s: float) -> int:
    """Flash operations the scenario makes from power-on, without a cut."""
    copy = work / "reference.img"
    shutil.copyfile(image, copy)
    vb = _board(broker, work, copy, "reference", 0)
    vb.start()
    try:
        time.sleep(scenario_s)
        assert vb.supervisor is not None
        flash = vb.supervisor.status()["flash"]
    finally:
        vb.stop()
    return flash["programs"] + flash["erases"]


def run_cut(
    broker: Broker,
    work: Path,
    image: Path,
    device_id: str,
    n: int,
    settle_s: float,
    deliver_s: float,
) -> CutResult:
    name = f"cut{n}"
    copy = work / f"{name}.img"
    shutil.copyfile(image, copy)
    checker = DeliveryCheck(first_seq=None)
    lock = threading.Lock()

    def feed(topic: str, payload: bytes) -> None:
        with lock:
            checker.feed(topic, payload)

    client = subscribe(broker.url, feed, f"albatross/{device_id}/telemetry")
    vb = _board(broker, work, copy, name, n)
    vb.start()
    try:
        assert vb.supervisor is not None
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and not vb.supervisor.status()["power_cuts"]:
            time.sleep(0.02)
        cut = bool(vb.supervisor.status()["power_cuts"])
        before = stored_seqs(vb) if cut else []
        # After the cut: wait until everything stored before it has been delivered.
        deadline = time.monotonic() + deliver_s
        while time.monotonic() < deadline:
            if set(before) <= checker.seqs(device_id):
                break
            time.sleep(0.1)
        time.sleep(0.3)
        status = vb.supervisor.status()
    finally:
        vb.stop()
        client.loop_stop()
        client.disconnect()
    lost = sorted(set(before) - checker.seqs(device_id))
    report = checker.report()["devices"].get(device_id, {})
    try:
        stored = json.loads(img.read_file(copy, "config.json"))
        config_ok = (
            stored.get("device_id") == device_id
            and stored.get("interval_s") == CONFIG["interval_s"]
            and stored.get("broker_port") == broker.port
        )
    except (img.ImageError, ValueError):
        config_ok = False
    return CutResult(
        cut_at=n,
        cut_happened=cut,
        stored_before_cut=len(before),
        lost=lost,
        conflicts=len(report.get("conflicts", [])),
        duplicates=report.get("duplicates", 0),
        # The firmware resets the board (hard) after a crash it caught; a crash before its
        # guard leaves a traceback and the REPL; a hung app ends in a watchdog reset.
        failed_boot=status["resets"].get("watchdog", 0) > 0
        or status["resets"].get("hard", 0) > 0
        or status["unexpected_exits"] > 0
        or "Traceback" in vb.console_text(),
        config_intact=config_ok,
    )


def run_campaign(
    broker: Broker, work: Path, *, points: int, scenario_s: float = 6.0, seed: int = 1, log=print
) -> CampaignResult:
    work.mkdir(parents=True, exist_ok=True)
    device_id = "campaign"
    image = base_image(broker, work / "base.img", device_id)
    total = reference_ops(broker, work, image, scenario_s)
    if total <= points:
        cut_points = list(range(1, total + 1))
    else:  # evenly spread, plus a few random ones, all distinct
        step = total / points
        cut_points = sorted(
            {max(1, int(i * step) + 1) for i in range(points)}
            | set(random.Random(seed).sample(range(1, total + 1), points // 10))
        )
    result = CampaignResult(total_ops=total)
    for i, n in enumerate(cut_points):
        r = run_cut(broker, work, image, device_id, n, settle_s=scenario_s * 2, deliver_s=30.0)
        result.results.append(r)
        if r.lost or r.conflicts or r.failed_boot or not r.config_intact:
            log(
                f"  cut at op {n}: LOST {r.lost[:10]} conflicts {r.conflicts} "
                f"failed_boot {r.failed_boot} config_ok {r.config_intact}"
            )
        elif i % 20 == 0:
            log(
                f"  cut {i + 1}/{len(cut_points)} at op {n}: ok "
                f"({r.stored_before_cut} stored before the cut)"
            )
        # Each cut point's image and logs are only kept when something went wrong.
        if not (r.lost or r.conflicts or r.failed_boot):
            shutil.rmtree(work / f"cut{n}", ignore_errors=True)
            (work / f"cut{n}.img").unlink(missing_ok=True)
    return result
