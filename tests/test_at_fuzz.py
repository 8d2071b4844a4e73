"""Property tests for the AT line assembler and engine (CPython, hypothesis).

Real transcripts (the shared corpus when present, plus a built-in SIMCom/Quectel session)
are split at random points and have random garbage bytes (unprintable, no CR/LF: what a
UART shows around a modem reset) inserted. Properties: nothing raises; every URC line whose
text the garbage did not land inside is still delivered; the assembler's memory is bounded.
"""

import asyncio
import sys
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware" / "tests"))

from fake_uart import FakeUart  # noqa: E402

from host_tools.at_replay import parse_corpus  # noqa: E402
from tracker import log  # noqa: E402
from tracker.modem.at import AtEngine  # noqa: E402
from tracker.modem.at_lines import LINE, URC_PREFIXES, LineAssembler  # noqa: E402

log.echo = False

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "at-transcripts"

BUILTIN = (
    b"\x00\xff\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\nAT+CSQ\r\r\n+CSQ: 20,99\r\n"
    b'\r\nPB DONE\r\n\r\nOK\r\n\r\n+CEREG: 1,"1A2B","01C2D3E4",7\r\nAT+CIPSEND=0,5\r\r\n> '
    b'\r\n+QIURC: "recv",0\r\n\r\nOK\r\n\r\n+CIPSEND: 0,5,5\r\n+CIPRXGET: 1,0\r\n'
    b'SEND OK\r\n+QIURC: "closed",0\r\n*PSUTTZ: 24/01/02,03:04:05,"+08",0\r\nDST: 0\r\n'
    b"\r\n+CGEV: ME PDN DEACT 1\r\nPOWERED DOWN\r\n"
)


def _streams():
    out = [BUILTIN]
    for path in sorted(CORPUS.glob("*.txt")) if CORPUS.is_dir() else []:
        chunks = parse_corpus(path.read_text(encoding="utf-8"))
        out.append(b"".join(b for d, b in chunks if d == "rx"))
    return out


STREAMS = _streams()
GARBAGE = st.binary(min_size=1, max_size=8).map(
    lambda b: bytes(x for x in b if not (32 <= x < 127 or x in (9, 10, 13))) or b"\x00"
)


def urc_lines(stream: bytes) -> list[tuple[int, int, str]]:
    """(start, end, text) of each complete URC-looking line of stream."""
    out, start = [], 0
    for i, b in enumerate(stream):
        if b in (10, 13):
            text = stream[start:i].decode("latin-1")
            if text.startswith(URC_PREFIXES) and all(32 <= c < 127 for c in stream[start:i]):
                out.append((start, i, text))
            start = i + 1
    return out


@st.composite
def mangled(draw):
    """A transcript stream with garbage inserted and cut into pieces, plus the URC lines
    that must survive."""
    stream = draw(st.sampled_from(STREAMS))
    inserts = draw(
        st.lists(st.tuples(st.integers(0, len(stream)), GARBAGE), max_size=12).map(sorted)
    )
    out, last = bytearray(), 0
    for pos, junk in inserts:
        out += stream[last:pos] + junk
        last = pos
    out += stream[last:]
    hit = [p for p, _ in inserts]
    want = [t for s, e, t in urc_lines(stream) if not any(s < p < e for p in hit)]
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(out) - 1)), max_size=40)))
    pieces, last = [], 0
    for c in cuts + [len(out)]:
        if c > last:
            pieces.append(bytes(out[last:c]))
            last = c
    return pieces, want


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled())
def test_assembler_never_loses_an_undamaged_urc(case):
    pieces, want = case
    lines = []
    asm = LineAssembler(lambda k, v: lines.append(v) if k == LINE else None, 512)
    size = len(asm._buf)
    for p in pieces:
        asm.feed(p)
        assert asm.buffered <= asm.max_line
    assert len(asm._buf) == size
    missing = Counter(want) - Counter(lines)
    assert not missing, missing


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled())
def test_engine_delivers_every_undamaged_urc(case):
    pieces, want = case
    got = []

    async def main():
        uart = FakeUart()
        eng = AtEngine(uart)
        for p in URC_PREFIXES:
            eng.on_urc(p, got.append)
        eng.start()
        try:
            for p in pieces:
                uart.inject(p)
                await uart.idle()
        finally:
            eng.stop()
        return eng

    eng = asyncio.run(main())
    missing = Counter(want) - Counter(got)
    assert not missing, missing
    assert eng.counters["bytes_rx"] == sum(map(len, pieces))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=12), st.data())
def test_memory_is_bounded_for_any_bytes(blobs, data):
    events = []
    asm = None

    def sink(kind, value):
        events.append((kind, value))
        if kind == LINE and value.startswith("+QIRD:"):
            asm.expect_raw(data.draw(st.integers(0, 300)), bytearray(64))

    asm = LineAssembler(sink, 128)
    for blob in blobs:
        asm.feed(blob)
        assert asm.buffered <= 128 and len(asm._buf) == 128
    for kind, value in events:
        if kind == LINE:
            assert 0 < len(value) <= 128 and "\r" not in value and "\n" not in value
        else:
            assert len(value) <= 64
