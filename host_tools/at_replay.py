# AT transcripts for replay: parse them into (direction, bytes) chunks and play the modem's
# side into the firmware's LineAssembler or AtEngine (CPython). Used by tests and failure
# reports; host-only, so it lives here and not on the device. Direction is the host's point
# of view: "tx" = host -> modem, "rx" = modem -> host.
#
# Two formats:
# (a) the corpus (../shared/corpus/at-transcripts): leading "# ..." header lines, then
#     log lines; "> " marks a host line, "< " a modem line, unmarked lines are the modem
#     stream (echoes included). The framings the corpus logs carry are decoded so bytes are
#     exact where the log had them: Arduino "hh:mm:ss.mmm -> " stamps, RIL "AT> "/"AT< ",
#     "[SEND][n][...]"/"[RECV][n][...]" and "<<< '...'" escapes, "Response: [...]", and
#     ESP-IDF "uart-rx:" hex dumps. Text lines get CR LF (rx) or CR (tx) appended.
# (b) JSON lines {"t": seconds, "dir": "tx"|"rx", "data": "<text, \r\n as JSON escapes>"}
#     as the modem simulator and jsonl_record() write them; characters U+0000..U+00FF are
#     single bytes, so binary payloads survive.
import json
import sys

from host_tools.image import FIRMWARE_DIR

if str(FIRMWARE_DIR) not in sys.path:
    sys.path.insert(0, str(FIRMWARE_DIR))

from tracker.aio import asyncio, sleep_ms  # noqa: E402

_HEX = "0123456789abcdefABCDEF"
_ESC = {"r": 13, "n": 10, "t": 9, "0": 0, "\\": 92, "'": 39, '"': 34}


def unescape(s):
    """Bytes of a log's escaped text: \\r \\n \\t \\0 \\\\ \\' \\" \\xHH."""
    out = bytearray()
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n:
            e = s[i + 1]
            if e in _ESC:
                out.append(_ESC[e])
                i += 2
                continue
            if e == "x" and i + 3 < n and s[i + 2] in _HEX and s[i + 3] in _HEX:
                out.append(int(s[i + 2 : i + 4], 16))
                i += 4
                continue
        out.extend(c.encode())
        i += 1
    return bytes(out)


def _hexdump(rest):
    cut = rest.find("|")
    toks = (rest if cut < 0 else rest[:cut]).split()
    out = bytearray()
    for t in toks[1:]:  # toks[0] is the buffer address
        if len(t) != 2 or t[0] not in _HEX or t[1] not in _HEX:
            break
        out.append(int(t, 16))
    return bytes(out)


def _between(s, start, end_char):
    i = s.find(start)
    if i < 0:
        return None
    j = s.rfind(end_char)
    i += len(start)
    return s[i:j] if j >= i else None


def _unframe(body):
    """(text, None) for a plain log line, (None, bytes) where the log framed exact bytes."""
    for tag in ("uart-rx:", "uart-tx:"):
        i = body.find(tag)
        if i >= 0:
            return None, _hexdump(body[i + len(tag) :])
    for tag in ("[SEND][", "[RECV]["):
        i = body.find(tag)
        if i >= 0:
            inner = _between(body[i + len(tag) :], "][", "]")
            return (body, None) if inner is None else (None, unescape(inner))
    i = body.find("<<< '")
    if i >= 0:
        inner = _between(body[i:], "'", "'")
        if inner is not None:
            return None, unescape(inner)
    i = body.find("Response: [")
    if i >= 0:
        inner = _between(body[i:], "[", "]")
        if inner is not None:
            return None, b"\r\n" + unescape(inner) + b"\r\n"
    for tag in (
        ">>> ",
        "Successfully sent command: ",
        "-|Command issued ",
        "AT> ",
        "AT< ",
        "Risposta ricevuta: ",  # a7670-pdp-reject-verbose-cme: the poster's print before each echo
    ):
        i = body.find(tag)
        if i >= 0:
            return body[i + len(tag) :], None
    s = body
    if len(s) >= 15 and s[2] == ":" and s[5] == ":" and s[8] == "." and s[12:15] == " ->":
        return s[16:], None  # Arduino serial monitor timestamp
    return body, None


def parse_corpus(text, *, joined=None):
    """Corpus file text -> [(direction, bytes)], one chunk per log line.

    joined: the separator a poster's program printed in place of line ends (the note of
    bg77-every-command-error says ";"): each piece becomes a line of its own. A modem
    line that starts with ">" and goes on ("<prompt>-----BEGIN ...": the data prompt,
    which has no line end, then what the host typed after it) becomes a ">" chunk and a
    chunk with the rest, as the modem had to wait after its prompt."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    chunks = []
    header = True
    for raw in lines:
        line = raw[:-1] if raw.endswith("\r") else raw
        if header and line.startswith("#"):
            continue
        header = False
        if line.startswith("> ") or line == ">":
            d, body = "tx", line[2:]
        elif line.startswith("< ") or line == "<":
            d, body = "rx", line[2:]
        else:
            d, body = "rx", line
        txt, data = _unframe(body)
        if data is not None:
            chunks.append((d, data))
            continue
        end = b"\r" if d == "tx" else b"\r\n"
        for piece in txt.split(joined) if joined else (txt,):
            if d == "rx" and len(piece) > 1 and piece[0] == ">":
                chunks.append((d, b">"))
                piece = piece[1:]
            chunks.append((d, piece.encode() + end))
    return chunks


def _latin1(s):
    out = bytearray()
    for c in s:
        o = ord(c)
        if o < 256:
            out.append(o)
        else:
            out.extend(c.encode())
    return bytes(out)


def parse_jsonl(text):
    """JSON-lines transcript -> [(direction, bytes)]; blank lines are skipped."""
    chunks = []
    for line in text.split("\n"):
        line = line.strip()
        if line:
            rec = json.loads(line)
            chunks.append((rec["dir"], _latin1(rec["data"])))
    return chunks


def parse(text):
    """Either format, told apart by the first non-blank character."""
    s = text.lstrip()
    return parse_jsonl(text) if s.startswith("{") else parse_corpus(text)


def jsonl_record(t, direction, data):
    """One JSON line for an AtEngine recorder: jsonl_record(seconds, "rx", b"OK\\r\\n")."""
    return json.dumps({"t": t, "dir": direction, "data": "".join(chr(b) for b in data)})


def command_lines(data):
    """The AT commands among the complete lines of data ("AT..." in any case, stripped)."""
    out = []
    for part in data.replace(b"\r", b"\n").split(b"\n"):
        s = "".join(chr(b) if 32 <= b < 127 else "?" for b in part).strip()
        if len(s) >= 2 and s[:2].upper() == "AT":
            out.append(s)
    return out


def feed_lines(assembler, chunks):
    """Feed the modem's side of a transcript into a LineAssembler."""
    for d, data in chunks:
        if d == "rx":
            assembler.feed(data)


# Commands the modem answers with a data prompt (">" or "DOWNLOAD") before their final
# (SIMCom and Quectel AT manuals); the replay sends them as the firmware does, through
# send_with_prompt, so the engine must take the prompt for the payload to be written.
PROMPT_COMMANDS = (
    "AT+CIPSEND=",
    "AT+CASEND=",
    "AT+CCERTDOWN=",
    "AT+CMQTTTOPIC=",
    "AT+CMQTTSUBTOPIC=",
    "AT+CMQTTPAYLOAD=",
    "AT+CMQTTWILLTOPIC=",
    "AT+CMQTTWILLMSG=",
    "AT+HTTPDATA=",
    "AT+QISEND=",
    "AT+QSSLSEND=",
    "AT+QMTPUBEX=",
    "AT+CMGS=",
)


def takes_prompt(cmd):
    return cmd.upper().startswith(PROMPT_COMMANDS)


class Unanswered(Exception):
    """No final result came for `cmd` before the transcript's next command or its end:
    the replay cancelled it (an old log has no timing to wait for)."""

    def __init__(self, cmd):
        super().__init__(f"{cmd}: no final result in the transcript")
        self.cmd = cmd


class Answer(tuple):
    """(command, outcome) as replay() returns them; outcome is the AtResponse, the typed
    error the engine raised, or Unanswered. `prompt`: whether the engine took a data
    prompt for the command and wrote its payload."""

    def __new__(cls, cmd, outcome, prompt=False):
        self = tuple.__new__(cls, (cmd, outcome))
        self.prompt = prompt
        return self


async def _settle(engine, task, cmd):
    """Cancel a command still waiting for its answer; return its outcome. A command whose
    final arrived (pending is None) is left to finish: it only has not resumed yet."""
    if not task.done() and engine.pending is not None:
        task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return Unanswered(cmd)
    except Exception as e:  # the command's typed error
        return e


async def replay(engine, uart, chunks, *, issue=True, timeout_ms=60000, max_spins=20000):
    """Play a transcript's modem bytes into a started AtEngine over a fake UART with
    `inject(data)`, `await idle()` and a `writes` list (firmware/tests/fake_uart.py).

    issue=True also issues the host's commands so answers are matched to commands: from
    "tx" chunks when the transcript has any, else from the echo lines in the modem stream
    (a line equal to the command in flight is its echo, not a new command). Commands in
    PROMPT_COMMANDS go through send_with_prompt with the next "tx" chunk as payload (none
    when the host's side is not marked). A command still unanswered when the next is due
    is cancelled (an old log has no timing to replay), so resync is switched off for the
    replay. Returns [Answer(command, AtResponse / typed error / Unanswered)]."""
    from_echo = issue and not any(d == "tx" for d, _ in chunks)
    saved = engine.resync_ms
    engine.resync_ms = 0
    outcomes = []
    task = prev = None
    writes = 0  # len(uart.writes) once the command in flight was written
    payload_at = -1  # the chunk a prompted command takes as its payload
    txbuf = b""

    async def settle():
        out = await _settle(engine, task, prev)
        outcomes.append(Answer(prev, out, takes_prompt(prev) and len(uart.writes) > writes))

    try:
        for i, (d, data) in enumerate(chunks):
            cmds = ()
            if d == "tx":
                if issue and i != payload_at:
                    txbuf += data
                    cut = max(txbuf.rfind(b"\r"), txbuf.rfind(b"\n")) + 1
                    cmds = command_lines(txbuf[:cut])
                    txbuf = txbuf[cut:]
            elif from_echo:
                cmds = [c for c in command_lines(data) if c != engine.pending]
            for c in cmds:
                if task is not None:
                    await settle()
                if takes_prompt(c):
                    nxt = [j for j in range(i + 1, len(chunks)) if chunks[j][0] == "tx"]
                    payload_at = nxt[0] if nxt else -1
                    payload = chunks[payload_at][1] if nxt else b""
                    coro = engine.send_with_prompt(c, payload, timeout_ms=timeout_ms)
                else:
                    coro = engine.cmd(c, timeout_ms=timeout_ms)
                task = asyncio.create_task(coro)
                prev = c
                for _ in range(max_spins):
                    if engine.pending == c:
                        break
                    await sleep_ms(0)
                writes = len(uart.writes)
            if d == "rx":
                uart.inject(data)
                await uart.idle(max_spins)
                if task is not None and takes_prompt(prev):
                    # A modem waits after its prompt: let the command write its payload
                    # before the transcript's next bytes (the final) go in.
                    for _ in range(50):
                        if task.done() or len(uart.writes) > writes:
                            break
                        await sleep_ms(0)
        if task is not None:
            await settle()
    finally:
        engine.resync_ms = saved
    return outcomes
