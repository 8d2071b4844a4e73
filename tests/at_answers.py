"""What each command in an AT transcript was answered, read straight from the transcript, and
the comparison with what the firmware's AT engine returned for it in a replay.

The reading is deliberately simple and shares no code with the engine (firmware/tracker/
modem/at.py, at_lines.py): it splits the modem's bytes at CR/LF and applies the documented
final result syntax (ITU-T V.250 5.7 / 3GPP TS 27.007 9.2 / 27.005 3.2.5, SIMCom and Quectel
manuals): a command's answer is every line after it (its echo aside) up to the first of
OK, ERROR, +CME ERROR: <err>, +CMS ERROR: <err>, NO CARRIER, CONNECT[ <text>], SEND OK,
SEND FAIL; <err> is a number (AT+CMEE=1) or the verbose text (AT+CMEE=2). A data prompt is
">" or "DOWNLOAD" with no line end (the modem waits), and the host's next write is its
payload. Known URCs (lists below, from the vendors' URC tables) are not answer lines unless
they carry the command's own "+XYZ:" prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    "+NETCLOSE:",
    "+CIPOPEN:",
    "+CIPSEND:",
    "+CIPCLOSE:",
    "+IPCLOSE:",
    "+CIPEVENT:",
    "+CIPRXGET: 1",
    "+CAOPEN:",  # SIM7080: the late result of AT+CAOPEN (sim7080-caopen-timeout-no-memory)
    "+CGNSSPWR:",
    "+CPING:",
    "+CMQTTSTART:",
    "NORMAL POWER DOWN",
)
QUECTEL = COMMON + ("APP RDY", "+QIND:", "+QIURC:", "POWERED DOWN", "+QIOPEN:", "+QMTSTAT:")

PLAIN_FINALS = ("OK", "ERROR", "SEND OK", "SEND FAIL", "NO CARRIER")
SUCCESS = ("OK", "SEND OK", "CONNECT")


def family(name: str) -> tuple[str, ...]:
    return QUECTEL if name.startswith(("bg", "ec", "eg")) else SIMCOM


def text_of(raw: bytes) -> str:
    """A line as text: unprintable bytes dropped at both ends, "?" inside."""
    ok = [32 <= b < 127 or b == 9 for b in raw]
    lo = ok.index(True) if True in ok else len(raw)
    hi = len(raw) - ok[::-1].index(True) if True in ok else lo
    return "".join(chr(b) if 32 <= b < 127 or b == 9 else "?" for b in raw[lo:hi])


def split_lines(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The complete lines of buf as (offset, raw bytes), and where the unfinished rest starts."""
    out, start = [], 0
    for i, b in enumerate(buf):
        if b in (10, 13):
            if i > start:
                out.append((start, buf[start:i]))
            start = i + 1
    return out, start


def is_cmd(s: str) -> bool:
    return s.strip()[:2].upper() == "AT"


def own_prefix(cmd: str) -> str | None:
    c = cmd.strip().upper()
    if len(c) > 3 and c[2] in "+^*%$#":
        for stop in "=?;":
            c = c.split(stop, 1)[0]
        return c[2:].strip() + ":"
    return None


def read_final(line: str) -> tuple[str, int | str | None] | None:
    """(kind, code) when line is a final result code, else None."""
    s = line.strip()
    if s in PLAIN_FINALS:
        return s, None
    if s == "CONNECT" or s.startswith("CONNECT "):
        return "CONNECT", None
    for kind in ("+CME ERROR", "+CMS ERROR"):
        if s.startswith(kind):
            err = s[len(kind) :].lstrip(":").strip()
            return kind, int(err) if err.isdigit() else err
    return None


@dataclass
class Expected:
    """One command of a transcript and its answer as the transcript shows it."""

    cmd: str
    kind: str | None = None  # None: no final result in the transcript
    code: int | str | None = None
    lines: list[str] = field(default_factory=list)
    prompt: bool = False
    final_at: tuple[int, bytes] | None = None  # (offset in the modem's byte stream, raw)
    lines_at: list[tuple[int, bytes]] = field(default_factory=list)
    prompt_at: tuple[int, bytes] | None = None
    open_at: int | None = None  # where the modem's bytes for it may start (after its echo)

    @property
    def final(self) -> str | None:
        """The final as a label: "OK", "+CME ERROR: 13", "+CME ERROR: SIM busy"."""
        if self.kind in ("+CME ERROR", "+CMS ERROR"):
            return f"{self.kind}: {self.code}"
        return self.kind

    def verdict(self, takes_prompt: bool) -> tuple:
        """(kind, code, success, lines, prompt). A command that takes a data prompt only
        succeeds when the prompt came (an OK without one means nothing was sent)."""
        if self.kind is None:
            return (None, None, None, None, self.prompt)
        ok = self.kind in SUCCESS and (self.prompt or not takes_prompt)
        return (self.kind, self.code, ok, self.lines, self.prompt)


def read_answers(chunks: list[tuple[str, bytes]], urcs: tuple[str, ...]) -> list[Expected]:
    """Each command the host issued in the transcript, with its answer."""
    from_echo = not any(d == "tx" for d, _ in chunks)
    answers: list[Expected] = []
    cur: Expected | None = None  # the command whose answer is being read
    last = None  # the latest command, whose echo may come even after its final
    rx = b""
    rx_at = 0  # offset of rx[0] in the modem's byte stream
    tx = b""
    payload_due = False

    def issue(text: str) -> None:
        nonlocal cur, last
        cur = Expected(text.strip())
        last = cur.cmd
        answers.append(cur)

    for d, data in chunks:
        if d == "tx":
            if payload_due:
                payload_due = False  # the host's write after a prompt is the payload
                continue
            tx += data
            done, rest = split_lines(tx)
            tx = tx[rest:]
            for _, raw in done:
                line = text_of(raw)
                if is_cmd(line):
                    issue(line)
            continue
        rx += data
        done, rest = split_lines(rx)
        for off, raw in done:
            line = text_of(raw)
            s = line.strip()
            if not s:
                continue
            pending = cur is not None and cur.kind is None
            if from_echo and is_cmd(s) and not (pending and s == cur.cmd):
                issue(s)  # the host's line (or the echo of a command the log did not show)
                cur.open_at = rx_at + off + len(raw)
                continue
            if s == last:
                if pending:
                    cur.open_at = rx_at + off + len(raw)
                continue  # echo (in the host-marked logs it may come after the final)
            if cur is None or cur.kind is not None:
                continue  # not part of any command's answer
            if line.startswith(">") or s == "DOWNLOAD":
                cur.prompt = True  # the prompt (and what the host typed after it)
                cur.prompt_at = (rx_at + off, raw[:1] if raw[:1] == b">" else raw)
                payload_due = True
                continue
            final = read_final(line)
            if final:
                cur.kind, cur.code = final
                cur.final_at = (rx_at + off, raw)
                continue
            own = own_prefix(cur.cmd)
            if line.startswith(urcs) and not (own and line.startswith(own)):
                continue
            cur.lines.append(line)
            cur.lines_at.append((rx_at + off, raw))
        rx_at += rest
        rx = rx[rest:]
        if text_of(rx).strip() in (">", "DOWNLOAD") and cur is not None and cur.kind is None:
            # The prompt has no line end: the modem stops after it and waits for data.
            cur.prompt = True
            cur.prompt_at = (rx_at, rx)
            payload_due = True
            rx_at += len(rx)
            rx = b""
    return answers


def engine_verdict(outcome: object, prompt: bool) -> tuple:
    """The engine's outcome in the form of Expected.verdict()."""
    from host_tools.at_replay import Unanswered
    from tracker.modem.at import AtError, AtResponse, CmeError, CmsError

    if isinstance(outcome, AtResponse):
        return (
            "CONNECT" if outcome.final.startswith("CONNECT") else outcome.final,
            None,
            True,
            list(outcome.lines),
            prompt,
        )
    if isinstance(outcome, AtError):
        # The lines the modem printed before the error final, as the exception carries them
        # ("missing" for an engine whose errors carry none).
        lines = getattr(outcome, "lines", None)
        lines = "missing" if lines is None else list(lines)
        if isinstance(outcome, CmeError):
            return ("+CME ERROR", outcome.code, False, lines, prompt)
        if isinstance(outcome, CmsError):
            return ("+CMS ERROR", outcome.code, False, lines, prompt)
        return (outcome.final, None, False, lines, prompt)
    if isinstance(outcome, Unanswered):
        return (None, None, None, None, prompt)
    return ("unexpected " + repr(outcome), None, None, None, prompt)


def compare(expected: list[Expected], answers: list) -> list[str]:
    """Every disagreement between the transcript's answers and the engine's, one line each
    (index, command, transcript's verdict, engine's verdict)."""
    from host_tools.at_replay import takes_prompt

    problems = []
    got_cmds = [cmd for cmd, _ in answers]
    want_cmds = [e.cmd for e in expected]
    if got_cmds != want_cmds:
        problems.append(f"commands differ: transcript {want_cmds}, replay {got_cmds}")
    for i, (e, a) in enumerate(zip(expected, answers, strict=False)):
        want = e.verdict(takes_prompt(e.cmd))
        got = engine_verdict(a[1], a.prompt)
        if want != got:
            problems.append(f"#{i} {e.cmd}: transcript {want}, engine {got}")
    return problems


def mutate(chunks: list[tuple[str, bytes]], at: int, old: bytes, new: bytes):
    """chunks with the modem's bytes `old` at stream offset `at` replaced by `new` (which
    goes where `old` began, also when `old` spans several chunks), or None when the bytes
    there are not `old`."""
    out = []
    pos = 0  # stream offset of the current rx chunk
    seen = b""
    placed = False
    for d, data in chunks:
        if d == "rx":
            n = len(data)
            lo = min(max(at - pos, 0), n)
            hi = min(max(at + len(old) - pos, 0), n)
            first = not placed and pos <= at < pos + n
            if first or lo < hi:
                seen += data[lo:hi]
                data = data[:lo] + (new if first else b"") + data[hi:]
                placed = placed or first
            pos += n
        out.append((d, data))
    return out if placed and seen == old else None


def final_mutants(e: Expected) -> list[bytes]:
    """Other finals a modem could have given instead of e's."""
    kind, code = e.kind, e.code
    if kind in ("+CME ERROR", "+CMS ERROR"):
        other = "+CMS ERROR" if kind == "+CME ERROR" else "+CME ERROR"
        new_code = code + 1 if isinstance(code, int) else 100
        return [f"{kind}: {new_code}".encode(), f"{other}: {code}".encode()]
    return [
        {
            "OK": b"ERROR",
            "ERROR": b"OK",
            "SEND OK": b"SEND FAIL",
            "SEND FAIL": b"SEND OK",
            "NO CARRIER": b"OK",
            "CONNECT": b"NO CARRIER",
        }[kind]
    ]


def mutants(want: list[Expected]):
    """(index, description, offset, old bytes, new bytes) for each change of one final
    result or error code, one information line or one prompt in the modem's bytes, and a
    made-up OK after each unanswered command that has an echo in the log."""
    for i, e in enumerate(want):
        if e.final_at:
            at, raw = e.final_at
            for new in final_mutants(e):
                yield i, f"{raw!r} -> {new!r}", at, raw, new
        if e.kind and e.lines_at:  # lines count only where a final closed the answer
            at, raw = e.lines_at[0]
            yield i, f"line {raw!r} changed", at, raw, raw + b"7"
        if e.prompt_at:
            at, raw = e.prompt_at
            yield i, "prompt removed", at, raw, b""
        if not e.kind and e.open_at is not None:
            yield i, "OK made up", e.open_at, b"", b"\r\nOK"


def replay_answers(chunks: list[tuple[str, bytes]]) -> list:
    """[Answer(command, outcome)] from a replay of chunks through a fresh AtEngine."""
    import asyncio

    from fake_uart import FakeUart  # firmware/tests, on the path of the tests that use this

    from host_tools.at_replay import replay
    from tracker.modem.at import AtEngine

    async def main():
        uart = FakeUart()
        eng = AtEngine(uart, default_timeout_ms=60000)
        eng.start()
        try:
            return await replay(eng, uart, chunks)
        finally:
            eng.stop()

    return asyncio.run(main())
