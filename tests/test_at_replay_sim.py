"""Record and replay: a transcript the modem simulator wrote (or a log pasted from a real
modem in the same JSON-lines form) replays against the firmware's AT engine on the host, so a
field log reproduces its bug in a unit test."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware" / "tests"))

from fake_uart import FakeUart  # noqa: E402
from test_at_engine import Seen, session  # noqa: E402

from host_tools.at_replay import parse, parse_jsonl, replay  # noqa: E402
from host_tools.vboard.modem import ModemSimulator, Timings  # noqa: E402
from host_tools.vboard.modem.probe import AtProbe, power_on, wait_registered  # noqa: E402
from tests.at_answers import (  # noqa: E402
    compare,
    family,
    mutants,
    mutate,
    read_answers,
    replay_answers,
)
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
    # Each command's final, code and lines as the simulator's transcript shows them.
    want = read_answers(chunks, family(dialect))
    assert want and all(e.kind for e in want), [e.cmd for e in want if not e.kind]
    assert not compare(want, outcomes), compare(want, outcomes)
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


class _Sink:
    """A TCP server on 127.0.0.1 that takes one connection and reads it to the end."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                while data := conn.recv(4096):
                    self.received += data
        except OSError:
            return


def _record_answers(dialect: str, workdir: Path) -> Path:
    """A session with every kind of answer the firmware meets: numeric and verbose CME
    errors, ERROR, ERROR with a reason line, a plain value line, a data prompt and the final
    after the payload (SEND OK on Quectel, OK then +CIPSEND on SIMCom)."""
    sink = _Sink()
    try:
        with ModemSimulator(dialect, workdir, timings=Timings.fast()) as sim:
            probe = AtProbe(sim.uart_path)
            try:
                power_on(sim, probe)
                probe.cmd("ATE0")
                wait_registered(probe)
                for command in ("AT+CMEE=1", "AT+CPIN=1234", "AT+CMEE=2", "AT+CPIN=1234"):
                    probe.cmd(command)
                probe.cmd("AT+NOSUCH")
                probe.cmd("AT+CGSN")
                if dialect == "bg96":
                    probe.cmd('AT+QICSGP=1,1,"internet","","",1')
                    probe.cmd("AT+QIACT=1")
                    probe.cmd(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{sink.port},0,0')
                    probe.expect(rb"\+QIOPEN: 0,0\r\n")
                    probe.write("AT+QISEND=0,5\r")
                    probe.expect(rb"> ")
                    probe.write(b"hello")
                    probe.expect(rb"\r\nSEND OK\r\n")
                else:
                    probe.cmd("AT+IPADDR")  # +IP ERROR: Network not opened, ERROR
                    probe.cmd("AT+NETOPEN")
                    probe.expect(rb"\+NETOPEN: 0\r\n")
                    probe.cmd(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{sink.port}')
                    probe.expect(rb"\+CIPOPEN: 0,0\r\n")
                    probe.write("AT+CIPSEND=0,5\r")
                    probe.expect(rb">")
                    probe.write(b"hello")
                    probe.expect(rb"\+CIPSEND: 0,5,5\r\n")
                probe.cmd("AT+CSQ")
            finally:
                probe.close()
            return sim.transcript_path
    finally:
        sink.sock.close()


@pytest.mark.parametrize("dialect", ["sim7600", "a7670", "bg96"])
def test_simulator_answers_replay_with_each_final_code_and_line(
    dialect: str, tmp_path: Path
) -> None:
    chunks = parse_jsonl(_record_answers(dialect, tmp_path).read_text())
    want = read_answers(chunks, family(dialect))
    finals = Counter(e.final for e in want)
    send = "AT+QISEND=0,5" if dialect == "bg96" else "AT+CIPSEND=0,5"
    # What the session asked for is in the transcript (so the comparison checks it) ...
    assert finals["+CME ERROR: 3"] == 1 and finals["+CME ERROR: operation not allowed"] == 1
    assert finals["ERROR"] == (1 if dialect == "bg96" else 2) and finals["OK"] >= 8, finals
    assert None not in finals, [e.cmd for e in want if not e.kind]
    assert [(e.cmd, e.final) for e in want if e.prompt] == [
        (send, "SEND OK" if dialect == "bg96" else "OK")
    ]
    by_cmd = {e.cmd: e for e in want}
    assert by_cmd["AT+CGSN"].lines and by_cmd["AT+CGSN"].lines[0].isdigit()
    if dialect != "bg96":
        assert by_cmd["AT+IPADDR"].lines == ["+IP ERROR: Network not opened"]
    # ... and the engine returned the same for every command.
    answers = replay_answers(chunks)
    assert not compare(want, answers), compare(want, answers)
    # One changed final, code, line or prompt is caught at its command.
    for i, what, at, old, new in mutants(want):
        changed = mutate(chunks, at, old, new)
        assert changed is not None, (i, what)
        problems = compare(want, replay_answers(changed))
        assert [p.split(" ", 1)[0] for p in problems] == [f"#{i}"], (what, problems)
