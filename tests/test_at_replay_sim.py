"""Record and replay: a transcript the modem simulator wrote (or a log pasted from a real
modem in the same JSON-lines form) replays against the firmware's AT engine on the host, so a
field log reproduces its bug in a unit test."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware" / "tests"))

from fake_uart import FakeUart  # noqa: E402
from test_at_engine import Seen, session  # noqa: E402

from host_tools.at_replay import parse, parse_jsonl, replay  # noqa: E402
from host_tools.vboard.modem import ModemSimulator, Timings  # noqa: E402
from host_tools.vboard.modem.probe import AtProbe, power_on, wait_registered  # noqa: E402
from tracker.modem.at import (  # noqa: E402
    AtEngine,
    AtResponse,
    CmeError,  # noqa: E402
)


def _record(dialect: str, workdir: Path) -> Path:
    """A short real session on the simulator: boot, queries, a network drop and back."""
    with ModemSimulator(dialect, workdir, timings=Timings.fast()) as sim:
        probe = AtProbe(sim.uart_path)
        try:
            power_on(sim, probe)
            probe.cmd("ATE0")
            probe.cmd("AT+CEREG=2")
            wait_registered(probe)
            probe.cmd("AT+CSQ")
            probe.cmd("AT+CEREG?")
            sim.fault("deregister")  # unsolicited +CEREG: 2 ...
            time.sleep(0.2)
            sim.fault("deregister", on=False)  # ... and back: +CEREG: 1 ...
            time.sleep(0.3)
            probe.cmd("AT+COPS?")
        finally:
            probe.close()
        return sim.transcript_path


@pytest.mark.parametrize("dialect", ["sim7600", "a7670", "bg96"])
def test_simulator_transcript_replays_with_every_urc_delivered(
    dialect: str, tmp_path: Path
) -> None:
    path = _record(dialect, tmp_path)
    chunks = parse_jsonl(path.read_text())
    assert any(d == "tx" for d, _ in chunks) and any(d == "rx" for d, _ in chunks)
    rx = b"".join(data for d, data in chunks if d == "rx").decode("latin-1")
    cereg_lines = [ln for ln in rx.split("\r\n") if ln.startswith("+CEREG: ")]
    delivered: list[str] = []

    async def main() -> list:
        uart = FakeUart()
        engine = AtEngine(uart, default_timeout_ms=5000)
        engine.on_urc("+CEREG:", delivered.append)
        engine.start()
        try:
            return await replay(engine, uart, chunks)
        finally:
            engine.stop()

    outcomes = asyncio.run(main())
    answered = {cmd: result for cmd, result in outcomes}
    for cmd in ("AT+CSQ", "AT+CEREG?", "AT+COPS?"):
        assert isinstance(answered[cmd], AtResponse), (cmd, answered[cmd])
    assert answered["AT+CSQ"].lines and answered["AT+CSQ"].lines[0].startswith("+CSQ: ")
    # Every +CEREG line reaches the firmware exactly once: as the answer to AT+CEREG?, or as
    # an unsolicited line to the handler. (A URC that lands while AT+CEREG? is in flight
    # joins that answer; the driver tells the two forms apart by their fields.)
    answers = [line for cmd, result in outcomes if cmd == "AT+CEREG?" for line in result.lines]
    assert answers
    assert sorted(delivered + answers) == sorted(cereg_lines)
    unsolicited = [
        ln
        for ln in cereg_lines
        if not ln.startswith("+CEREG: 2,") or ln.split(",")[1].startswith('"')
    ]
    assert len(unsolicited) >= 2  # the drop and the return


def test_replay_of_both_transcript_formats() -> None:
    # Both transcript forms (the simulator's JSON lines, a log pasted from a modem) replay
    # to the same commands, answers and URCs.
    jsonl = "\n".join(
        [
            '{"t": 0.0, "dir": "tx", "data": "AT+CPIN?\\r"}',
            '{"t": 0.1, "dir": "rx", "data": "\\r\\n+CPIN: READY\\r\\n\\r\\nOK\\r\\n\\r\\nRDY"}',
            '{"t": 0.2, "dir": "rx", "data": "\\r\\n"}',
            '{"t": 0.3, "dir": "tx", "data": "AT+CSQ\\r"}',
            '{"t": 0.4, "dir": "rx", "data": "\\r\\n+CME ERROR: 10\\r\\n"}',
        ]
    )
    corpus = "# source: x\nAT+CPIN?\n\n+CPIN: READY\n\nOK\n\nRDY\nAT+CSQ\n+CME ERROR: 10\n"
    for text in (jsonl, corpus):

        async def t(e, u, text=text):
            rdy, cpin = Seen(), Seen()
            e.on_urc("RDY", rdy)
            e.on_urc("+CPIN:", cpin)
            out = await replay(e, u, parse(text))
            assert [c for c, _ in out] == ["AT+CPIN?", "AT+CSQ"]
            assert out[0][1].lines == ["+CPIN: READY"]
            assert isinstance(out[1][1], CmeError) and out[1][1].code == 10
            assert rdy.lines == ["RDY"] and cpin.lines == []
            assert u.writes == [b"AT+CPIN?\r", b"AT+CSQ\r"]

        session(t)
