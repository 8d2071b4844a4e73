"""Replay every real modem transcript of the shared corpus through the AT engine (CPython).

URCs: for each file the test finds the unsolicited lines itself (known URC prefixes per
family, and the command context: a line carrying the in-flight command's own "+XYZ:" prefix
is that command's answer) and checks the engine hands each of them to its handler exactly
once, or, with no handlers registered, reports each of them as unknown.

Answers: for each command of each file, the final result (OK, ERROR, +CME/+CMS ERROR and its
code, SEND OK, ...), the information lines and the data prompt as the log shows them
(tests/at_answers.py reads them without the engine) must be what the engine returned for
that command; one changed final, code, line or prompt must be reported at its command.

The corpus lives beside the repository (../shared/corpus/at-transcripts); without it the
per-file tests skip and test_every_corpus_log_has_its_answers_listed fails.
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
from tests.at_answers import (  # noqa: E402
    QUECTEL,
    SIMCOM,
    compare,
    is_cmd,
    mutants,
    mutate,
    own_prefix,
    read_answers,
    replay_answers,
    text_of,
)
from tests.at_answers import family as family_of  # noqa: E402
from tracker import log  # noqa: E402
from tracker.modem.at import AtEngine  # noqa: E402

log.echo = False

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "at-transcripts"
FILES = sorted(CORPUS.glob("*.txt")) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not FILES, reason=f"AT transcript corpus not found at {CORPUS}")

FINALS = ("OK", "ERROR", "SEND OK", "SEND FAIL", "NO CARRIER")

# The separator a poster's program printed in place of line ends, per log (its note says so).
JOINED = {"bg77-every-command-error-1.txt": ";"}


def load(path: Path) -> list[tuple[str, bytes]]:
    return parse_corpus(path.read_text(encoding="utf-8"), joined=JOINED.get(path.name))


def family(path: Path) -> tuple[str, ...]:
    return family_of(path.name)


def _lines(buf: bytes) -> tuple[list[str], bytes]:
    parts = buf.replace(b"\r", b"\n").split(b"\n")
    return [t for t in map(text_of, parts[:-1]) if t], parts[-1]


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
                    if is_cmd(line):
                        pending = line.strip()
            continue
        rx += data
        done, rx = _lines(rx)
        for line in done:
            s = line.strip()
            if from_echo and is_cmd(s) and s != pending:
                pending = s
            elif s == pending:
                continue  # echo
            elif s in FINALS or s.startswith(("+CME ERROR", "+CMS ERROR", "CONNECT")):
                pending = None
            elif line.startswith(prefixes):
                own = own_prefix(pending) if pending else None
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
    chunks = load(path)
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
    chunks = load(path)
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
    chunks = load(path)
    prefixes = family(path)
    want = Counter(expected_urcs(chunks, prefixes, issue=False))
    delivered, _, eng = run_replay(chunks, prefixes, issue=False, piece=1)
    assert Counter(delivered) == want, path
    assert eng.counters["bytes_rx"] == sum(len(b) for d, b in chunks if d == "rx"), path.name


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_jsonl_round_trip(path):
    chunks = load(path)
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


def test_poster_framings_around_answers_are_decoded():
    # a7670-pdp-reject-verbose-cme: the poster's program printed "Risposta ricevuta: " before
    # each echo; bg77-every-command-error: it printed ";" for each line end; certdown: the
    # prompt ">" and the host's PEM share a line (the modem waited after the prompt).
    assert parse_corpus("# s\nRisposta ricevuta: AT+CSQ\nOK\n") == [
        ("rx", b"AT+CSQ\r\n"),
        ("rx", b"OK\r\n"),
    ]
    assert parse_corpus("ATI;Quectel;ERROR\n", joined=";") == [
        ("rx", b"ATI\r\n"),
        ("rx", b"Quectel\r\n"),
        ("rx", b"ERROR\r\n"),
    ]
    assert parse_corpus("AT+CSUB;+CVERSION\n") == [("rx", b"AT+CSUB;+CVERSION\r\n")]
    assert parse_corpus(">-----BEGIN CERTIFICATE-----\n") == [
        ("rx", b">"),
        ("rx", b"-----BEGIN CERTIFICATE-----\r\n"),
    ]


# ---- command answers: final result, error code, information lines, prompt ---------------

# What each log's commands were answered, counted by hand from the logs: the reading below
# (tests/at_answers.py) must find exactly this, so a change to a log or to the reading that
# makes a command checkable, or uncheckable, fails here first.
ANSWERED = {
    "a7670-boot-gnss-cgnsinf-error-1.txt": {"OK": 3, "ERROR": 3},
    "a7670-boot-sim-failure-urc-interleave-1.txt": {"OK": 6, "+CME ERROR: SIM failure": 1},
    "a7670-gnss-cgnssinfo-nofix-then-fix-1.txt": {"OK": 10},
    "a7670-pdp-reject-verbose-cme-1.txt": {
        "OK": 12,
        "ERROR": 1,
        "+CME ERROR: requested service option not subscribed (#33)": 1,
    },
    "bg77-every-command-error-1.txt": {"ERROR": 5},
    "bg96-boot-app-rdy-cme-error-1.txt": {"OK": 4, "+CME ERROR: 23": 1, "+CME ERROR: 0": 1},
    "bg96-init-mqttcfg-qiact-escaped-1.txt": {"OK": 20},
    "bg96-reset-powered-down-pdpdeact-rdy-1.txt": {"OK": 6},
    "ec25-ril-init-cpin-cme13-1.txt": {"OK": 11, "ERROR": 1, "+CME ERROR: 13": 1},
    "eg25g-urc-and-gnss-config-queries-1.txt": {"OK": 7},
    "sim7000-garbage-after-cfun-reset-1.txt": {"OK": 12},
    "sim7070-gnss-cgnsinf-stale-1.txt": {"OK": 5},
    "sim7080-caopen-timeout-no-memory-1.txt": {"OK": 4},
    "sim7600-boot-mqtt-certdown-1.txt": {"OK": 9, "+CME ERROR: SIM busy": 1},
    "sim7600-boot-netopen-error-1.txt": {"OK": 12, "ERROR": 3},
    "sim7600-http-setup-ip-error-1.txt": {"OK": 9, "ERROR": 3},
    "sim7600-no-response-then-reboot-hexdump-1.txt": {},
}

# Commands whose final result the log does not show, in log order, and why. For these the
# replay checks only that the engine did not make one up (and, where shown, took the prompt).
UNANSWERED = {
    "sim7000-garbage-after-cfun-reset-1.txt": [
        ("AT+CFUN=0", "the modem resets: garbage bytes, no answer (what the log shows)"),
        ("AT+CFUN=1", "no answer within the 10 s before the host gives up"),
        ('AT+CGDCONT=1,"IP","m2m64.com.attz","0.0.0.0",0,0,0,0', "log TRUNCATED by the index"),
    ],
    "sim7080-caopen-timeout-no-memory-1.txt": [
        ('AT+CAOPEN=0,0,"TCP","ntfy.adminforge.de",443', "no result in 75 s (the issue)"),
        ("AT", "the first AT after power-on gets no answer"),
    ],
    "sim7600-boot-mqtt-certdown-1.txt": [
        ("AT+CSQ", "the poster trimmed its OK (note)"),
        ("AT+SIMCOMATI", "the poster trimmed its OK (note)"),
        ('AT+CCERTDOWN="ca_cert.pem",1970', "prompt shown; log TRUNCATED inside the PEM"),
    ],
    "sim7600-boot-netopen-error-1.txt": [
        ("at", "typed, no answer in the paste"),
        ("at+cgact=?", "no OK before the next command, as pasted (note)"),
    ],
    "sim7600-http-setup-ip-error-1.txt": [
        ('AT+HTTPPARA="URL","http://www', "log TRUNCATED by the index inside the command"),
    ],
    "sim7600-no-response-then-reboot-hexdump-1.txt": [
        ("AT", "the modem is rebooting; log TRUNCATED mid-boot"),
        ("AT", "the modem is rebooting; log TRUNCATED mid-boot"),
        ("AT", "the modem is rebooting; log TRUNCATED mid-boot"),
    ],
}
PROMPTED = {"sim7600-boot-mqtt-certdown-1.txt": ['AT+CCERTDOWN="ca_cert.pem",1970']}


def test_every_corpus_log_has_its_answers_listed():
    # Fails (does not skip) without the corpus: the answer checks below would run on nothing.
    assert [p.name for p in FILES] == sorted(ANSWERED), f"corpus at {CORPUS}"
    assert set(UNANSWERED) <= set(ANSWERED) and set(PROMPTED) <= set(ANSWERED)


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_command_gets_the_final_code_and_lines_the_modem_gave(path):
    chunks = load(path)
    want = read_answers(chunks, family(path))
    answered = Counter(e.final for e in want if e.kind)
    assert answered == Counter(ANSWERED[path.name]), path.name
    assert [e.cmd for e in want if not e.kind] == [c for c, _ in UNANSWERED.get(path.name, [])]
    assert [e.cmd for e in want if e.prompt] == PROMPTED.get(path.name, [])
    problems = compare(want, replay_answers(chunks))
    assert not problems, f"{path}:\n" + "\n".join(problems)


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_one_changed_answer_is_caught_at_its_command(path):
    # The comparison must be able to fail: the engine replays a log with one final result,
    # one error code, one information line or one prompt changed, the expectation stays
    # the original log's, and exactly that command must be reported.
    chunks = load(path)
    want = read_answers(chunks, family(path))
    # Every answered command gets its final changed (and its first line, its prompt), every
    # unanswered one with an echo in the log gets a made-up OK after it.
    for i, what, at, old, new in mutants(want):
        changed = mutate(chunks, at, old, new)
        assert changed is not None, (path.name, i, what)
        problems = compare(read_answers(chunks, family(path)), replay_answers(changed))
        assert [p.split(" ", 1)[0] for p in problems] == [f"#{i}"], (path.name, what, problems)


def test_answer_reading_of_a_handmade_log():
    # The reading itself, on a log whose answers are known: echo, a URC inside an answer,
    # own-prefix lines, verbose and numeric CME codes, CMS, prompts (">" and DOWNLOAD) with
    # SEND OK / SEND FAIL / OK after them, ERROR instead of a prompt, lines before ERROR,
    # CONNECT, NO CARRIER, a command never answered.
    text = "\n".join(
        [
            "# source: handmade",
            "AT+CPIN?",
            "+CPIN: READY",
            "+CREG: 1",
            "OK",
            "AT+CSQ",
            "AT+CSQ",
            "+CSQ: 20,99",
            "",
            "+CME ERROR: 10",
            'AT+CMGS="123"',
            "+CMS ERROR: 500",
            "AT+QISEND=0,5",
            "< > ",
            "SEND OK",
            "AT+CGATT=1",
            "+CME ERROR: SIM not inserted",
            "ATI",
            "Quectel",
            "+GCAP: +CGSM",
            "ERROR",
            "ATD*99#",
            "CONNECT 150000000",
            "AT+HTTPDATA=5,1000",
            "DOWNLOAD",
            "OK",
            "AT+QISEND=0,3",
            "< > ",
            "SEND FAIL",
            "AT+CIPSEND=0,5",
            "ERROR",
            "ATD123;",
            "NO CARRIER",
            "AT+COPS?",
            "",
        ]
    )
    want = read_answers(parse_corpus(text), QUECTEL)
    assert [(e.cmd, e.final, e.lines, e.prompt) for e in want] == [
        ("AT+CPIN?", "OK", ["+CPIN: READY"], False),
        ("AT+CSQ", "+CME ERROR: 10", ["+CSQ: 20,99"], False),
        ('AT+CMGS="123"', "+CMS ERROR: 500", [], False),
        ("AT+QISEND=0,5", "SEND OK", [], True),
        ("AT+CGATT=1", "+CME ERROR: SIM not inserted", [], False),
        ("ATI", "ERROR", ["Quectel", "+GCAP: +CGSM"], False),
        ("ATD*99#", "CONNECT", [], False),
        ("AT+HTTPDATA=5,1000", "OK", [], True),
        ("AT+QISEND=0,3", "SEND FAIL", [], True),
        ("AT+CIPSEND=0,5", "ERROR", [], False),  # refused before the prompt
        ("ATD123;", "NO CARRIER", [], False),
        ("AT+COPS?", None, [], False),
    ]
    assert [e.code for e in want][1:5] == [10, 500, None, "SIM not inserted"]
    chunks = parse_corpus(text)
    assert compare(want, replay_answers(chunks)) == []
    for i, what, at, old, new in mutants(want):
        problems = compare(want, replay_answers(mutate(chunks, at, old, new)))
        assert [p.split(" ", 1)[0] for p in problems] == [f"#{i}"], (what, problems)
