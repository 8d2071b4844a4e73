"""Replay every real modem transcript of the shared corpus through the AT engine (CPython).

For each file the test finds the unsolicited lines itself (known URC prefixes per family,
and the command context: a line carrying the in-flight command's own "+XYZ:" prefix is that
command's answer) and checks the engine hands each of them to its handler exactly once, or,
with no handlers registered, reports each of them as unknown. The corpus lives beside the
repository (../shared/corpus/at-transcripts); without it the corpus tests skip.
"""

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware" / "tests"))

from fake_uart import FakeUart  # noqa: E402

from host_tools.at_replay import jsonl_record, parse, parse_corpus, parse_jsonl, replay  # noqa: E402
from tracker import log  # noqa: E402
from tracker.modem.at import AtEngine  # noqa: E402

log.echo = False

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "at-transcripts"
FILES = sorted(CORPUS.glob("*.txt")) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not FILES, reason=f"AT transcript corpus not found at {CORPUS}")

# Written from the vendors' URC lists, not from the engine's table.
COMMON = ("RDY", "+CPIN:", "+CREG:", "+CGREG:", "+CEREG:", "+CGEV:", "+CMTI:", "+CTZV:")
SIMCOM = COMMON + (
    "*ATREADY",
    "SMS DONE",
    "PB DONE",
    "*PSUTTZ",
    "DST:",
    "+CPSI:",
    "+NETOPEN:",
    "+IPCLOSE:",
    "+CIPEVENT:",
    "+CIPRXGET: 1",
    "+CGNSSPWR:",
    "+CPING:",
    "+CMQTTSTART:",
    "NORMAL POWER DOWN",
)
QUECTEL = COMMON + ("APP RDY", "+QIND:", "+QIURC:", "POWERED DOWN", "+QIOPEN:", "+QMTSTAT:")
FINALS = ("OK", "ERROR", "SEND OK", "SEND FAIL", "NO CARRIER")


def family(path: Path) -> tuple[str, ...]:
    return QUECTEL if path.name.startswith(("bg", "ec", "eg")) else SIMCOM


def _text(raw: bytes) -> str:
    ok = [32 <= b < 127 or b == 9 for b in raw]
    lo = ok.index(True) if True in ok else len(raw)
    hi = len(raw) - ok[::-1].index(True) if True in ok else lo
    return "".join(chr(b) if 32 <= b < 127 or b == 9 else "?" for b in raw[lo:hi])


def _lines(buf: bytes) -> tuple[list[str], bytes]:
    parts = buf.replace(b"\r", b"\n").split(b"\n")
    return [t for t in map(_text, parts[:-1]) if t], parts[-1]


def _is_cmd(s: str) -> bool:
    return s.strip()[:2].upper() == "AT"


def _own_prefix(cmd: str) -> str | None:
    c = cmd.strip().upper()
    if len(c) > 3 and c[2] in "+^*%$#":
        for stop in "=?;":
            c = c.split(stop, 1)[0]
        return c[2:].strip() + ":"
    return None


def expected_urcs(chunks, prefixes, issue=True) -> list[str]:
    """The URC lines of a transcript, found without the engine."""
    from_echo = issue and not any(d == "tx" for d, _ in chunks)
    pending = None
    rx = tx = b""
    found = []
    for d, data in chunks:
        if d == "tx":
            if issue:
                tx += data
                done, tx = _lines(tx)
                for line in done:
                    if _is_cmd(line):
                        pending = line.strip()
            continue
        rx += data
        done, rx = _lines(rx)
        for line in done:
            s = line.strip()
            if from_echo and _is_cmd(s) and s != pending:
                pending = s
            elif s == pending:
                continue  # echo
            elif s in FINALS or s.startswith(("+CME ERROR", "+CMS ERROR", "CONNECT")):
                pending = None
            elif line.startswith(prefixes):
                own = _own_prefix(pending) if pending else None
                if not (own and line.startswith(own)):
                    found.append(line)
    return found


def run_replay(chunks, prefixes, issue=True, piece=0):
    """Replay; returns (lines delivered to handlers, unknown lines, engine)."""
    delivered, unknown = [], []

    async def main():
        uart = FakeUart(piece=piece)
        eng = AtEngine(uart, default_timeout_ms=60000)
        for p in prefixes:
            eng.on_urc(p, delivered.append)
        eng.on_unknown = unknown.append
        eng.start()
        try:
            await replay(eng, uart, chunks, issue=issue)
        finally:
            eng.stop()
        return eng

    eng = asyncio.run(main())
    return delivered, unknown, eng


def test_prefix_lists_do_not_overlap():
    for fam in (SIMCOM, QUECTEL):
        for a in fam:
            assert not any(b != a and b.startswith(a) for b in fam), a


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_urc_reaches_its_handler_exactly_once(path):
    chunks = parse_corpus(path.read_text(encoding="utf-8"))
    prefixes = family(path)
    want = Counter(expected_urcs(chunks, prefixes))
    delivered, unknown, eng = run_replay(chunks, prefixes)
    got = Counter(delivered)
    assert got == want, f"{path}: missing {want - got}, extra {got - want}"
    assert eng.counters["urcs"] == sum(want.values()), path.name
    assert not [u for u in unknown if u.startswith(prefixes)], path.name


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_without_handlers_every_urc_is_reported_unknown(path):
    chunks = parse_corpus(path.read_text(encoding="utf-8"))
    prefixes = family(path)
    want = Counter(expected_urcs(chunks, prefixes))
    delivered, unknown, eng = run_replay(chunks, ())
    got = Counter(u for u in unknown if u.startswith(prefixes))
    assert got == want, f"{path}: missing {want - got}, extra {got - want}"
    assert eng.counters["unknown_urcs"] >= sum(want.values()), path.name


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_modem_stream_alone_byte_by_byte(path):
    # No commands issued: every URC-looking line is unsolicited.
    chunks = parse_corpus(path.read_text(encoding="utf-8"))
    prefixes = family(path)
    want = Counter(expected_urcs(chunks, prefixes, issue=False))
    delivered, _, eng = run_replay(chunks, prefixes, issue=False, piece=1)
    assert Counter(delivered) == want, path
    assert eng.counters["bytes_rx"] == sum(len(b) for d, b in chunks if d == "rx"), path.name


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_jsonl_round_trip(path):
    chunks = parse_corpus(path.read_text(encoding="utf-8"))
    text = "\n".join(jsonl_record(i * 0.1, d, b) for i, (d, b) in enumerate(chunks))
    assert parse_jsonl(text) == chunks, path.name
    assert parse(text) == chunks, path.name


def test_corpus_framings_are_decoded_to_wire_bytes():
    text = "\n".join(
        [
            "# source: x",
            "# note: y",
            "> [SEND][   8][AT+CFUN=]",
            "< [RECV][   9][AT\\r\\r\\nOK\\r\\n]",
            "< D (42990) uart-rx: 0x3ffc962c   0d 0a 52 44 59 0d 0a 0d  |..RDY...|",
            "11:41:17.697 -> +CPIN: READY",
            "11:41:17.697 -> ",
            "> [15.7s - M] >>> AT+CGMR",
            "< [5.8s - M] <<< 'AT+CGMR\\r\\r\\nRevision:1951B17SIM7080\\r\\n'",
            "< AT< +CFUN: 1",
            '<   Jan 03 eg25manager: Response: [+QCFG: "urc/delay",0\\r\\n\\r\\nOK]',
            ">  -|Command issued AT+COPS?",
            "PB DONE",
            "",
        ]
    )
    assert parse_corpus(text + "\n") == [
        ("tx", b"AT+CFUN="),
        ("rx", b"AT\r\r\nOK\r\n"),
        ("rx", b"\r\nRDY\r\n\r"),
        ("rx", b"+CPIN: READY\r\n"),
        ("rx", b"\r\n"),
        ("tx", b"AT+CGMR\r"),
        ("rx", b"AT+CGMR\r\r\nRevision:1951B17SIM7080\r\n"),
        ("rx", b"+CFUN: 1\r\n"),
        ("rx", b'\r\n+QCFG: "urc/delay",0\r\n\r\nOK\r\n'),
        ("tx", b"AT+COPS?\r"),
        ("rx", b"PB DONE\r\n"),
        ("rx", b"\r\n"),
    ]


def test_replay_matches_answers_to_commands_sent_in_pieces():
    chunks = parse_corpus(
        "> [SEND][   8][AT+CPIN]\n> [SEND][   2][?\\r]\n"
        "< [RECV][  30][\\r\\n+CPIN: READY\\r\\n\\r\\n+CPIN: READY\\r\\nOK\\r\\n]\n"
        "< [RECV][  16][\\r\\n+CPIN: SIM REMOVED\\r\\n]\n"
    )
    delivered, _, _ = run_replay(chunks, ("+CPIN:",))
    # Both lines before OK answer AT+CPIN?; only the one after it is unsolicited.
    assert delivered == ["+CPIN: SIM REMOVED"]
    assert expected_urcs(chunks, ("+CPIN:",)) == delivered
