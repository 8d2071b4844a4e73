"""AT command lines as a modem parses them (ITU-T V.250) and the replies it frames.

A command line is "AT" (or "at") followed by one or more commands and ended by CR (S3):
basic commands (`E0`, `Q0`, `V1`, `&F`, `Z`, `I`, `S0=0`) may follow each other directly,
extended commands (`+CSQ`, `+QIACT=1`, `*...`, `$...`) are separated by ';'
(`AT+CSUB;+CVERSION` in the EC25 transcript, `AT&FZE0` in the BG96 one). Each extended
command is an action (`+CSQ`), a read (`+CEREG?`), a test (`+CEREG=?`) or a set (`+CEREG=2`).

Replies with V1 (verbose, the default): an information block is CR LF, its lines separated
by CR LF, CR LF (`\\r\\n+CGDCONT: 1,...\\r\\n+CGDCONT: 2,...\\r\\n`, as in the SIM7600
transcript); the final result code is `\\r\\nOK\\r\\n`, `\\r\\nERROR\\r\\n` or
`\\r\\n+CME ERROR: <err>\\r\\n`. With V0 a final result is its number and CR (`0\\r`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# 27.007 section 9.2 +CME ERROR codes we use, with the verbose texts printed under CMEE=2.
CME_TEXT = {
    0: "phone failure",
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    23: "memory failure",
    30: "no network service",
    31: "network timeout",
    50: "incorrect parameters",
    100: "unknown",
    # Quectel TCP/IP error codes (Quectel "TCP/IP AT Commands Manual", error code table).
    550: "unknown error",
    552: "invalid parameters",
    561: "open PDP context failed",
    563: "socket identity has been used",
    565: "DNS parse failed",
    566: "socket connect failed",
    567: "socket has been closed",
    569: "operation timeout",
    572: "operation not allowed",
    # Quectel GNSS error codes (Quectel GNSS AT manual, check): modem/gnss_at.py.
    504: "Session is ongoing",
    505: "Session not active",
    516: "Not fixed now",
}

# V.250 numeric result codes (ATV0).
NUMERIC_RESULT = {"OK": "0", "CONNECT": "1", "NO CARRIER": "3", "ERROR": "4"}


class CommandError(Exception):
    """The command fails with a plain ERROR (unknown command, wrong syntax)."""


class CmeError(Exception):
    """The command fails with +CME ERROR: <code>. `code` is a number or a verbose text."""

    def __init__(self, code: int | str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Command:
    """One command of a command line."""

    name: str  # upper case, with its prefix: "+CSQ", "E", "&F", "S", "I"
    kind: str  # "exec" | "read" | "test" | "set"
    args: list[str | None] = field(default_factory=list)  # set: arguments, quotes removed
    quoted: list[bool] = field(default_factory=list)
    value: str = ""  # basic commands: the number after the letter ("0" in E0)
    text: str = ""  # the command as typed

    @property
    def at_name(self) -> str:
        """The name counters and fault rules use: "AT+CSQ", "ATE", "AT&F"."""
        return "AT" + self.name

    def int_arg(self, index: int, default: int | None = None) -> int:
        """Argument `index` as an integer; missing -> default; bad -> +CME ERROR: 50."""
        value = self.args[index] if index < len(self.args) else None
        if value is None or value == "":
            if default is None:
                raise CmeError(50)
            return default
        try:
            return int(value)
        except ValueError:
            raise CmeError(50) from None

    def str_arg(self, index: int, default: str | None = None) -> str:
        value = self.args[index] if index < len(self.args) else None
        if value is None:
            if default is None:
                raise CmeError(50)
            return default
        return value


def cme_text(code: int | str) -> str:
    if isinstance(code, str):
        return code
    return CME_TEXT.get(code, "unknown")


_EXT_PREFIXES = "+*$^#%"
_NAME_END = "=?;"


def parse_line(line: str) -> list[Command]:
    """Commands of one command line (the text after AT, without the CR).

    Raises CommandError for text a modem would answer with ERROR.
    """
    commands: list[Command] = []
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c in " ;":
            i += 1
            continue
        start = i
        if c in _EXT_PREFIXES:
            j = i + 1
            while j < n and line[j] not in _NAME_END and line[j] != " ":
                j += 1
            name = line[i:j].upper()
            if len(name) < 2:
                raise CommandError(line)
            while j < n and line[j] == " ":
                j += 1
            if line.startswith("=?", j):
                cmd = Command(name, "test")
                j += 2
            elif line.startswith("?", j):
                cmd = Command(name, "read")
                j += 1
            elif line.startswith("=", j):
                j += 1
                end = _args_end(line, j)
                cmd = Command(name, "set")
                cmd.args, cmd.quoted = split_args(line[j:end])
                j = end
            else:
                cmd = Command(name, "exec")
            cmd.text = line[start:j]
            commands.append(cmd)
            i = j
            continue
        if c == "&" and i + 1 < n and line[i + 1].isalpha():
            name = "&" + line[i + 1].upper()
            i += 2
        elif c.isalpha():
            name = c.upper()
            i += 1
        else:
            raise CommandError(line)
        if name == "D":  # dial: the rest of the line is its argument
            commands.append(Command("D", "set", [line[i:]], [False], text=line[start:]))
            break
        if name == "S":
            j = i
            while j < n and line[j].isdigit():
                j += 1
            if j == i:
                raise CommandError(line)
            name = "S" + line[i:j]
            i = j
        if line.startswith("?", i):
            commands.append(Command(name, "read", text=line[start : i + 1]))
            i += 1
            continue
        if line.startswith("=", i):
            i += 1
        j = i
        while j < n and line[j].isdigit():
            j += 1
        commands.append(Command(name, "exec", value=line[i:j], text=line[start:j]))
        i = j
    return commands


def _args_end(line: str, i: int) -> int:
    """Index of the ';' that ends an argument list starting at i (quotes respected)."""
    quoted = False
    while i < len(line):
        if line[i] == '"':
            quoted = not quoted
        elif line[i] == ";" and not quoted:
            return i
        i += 1
    return i


def split_args(text: str) -> tuple[list[str | None], list[bool]]:
    """'1,"IP","apn",,0' -> ["1", "IP", "apn", None, "0"], and which were quoted."""
    args: list[str | None] = []
    quoted: list[bool] = []
    cur: list[str] = []
    in_quotes = False
    was_quoted = False
    for ch in text:
        if ch == '"':
            in_quotes = not in_quotes
            was_quoted = True
        elif ch == "," and not in_quotes:
            args.append(_arg_value(cur, was_quoted))
            quoted.append(was_quoted)
            cur, was_quoted = [], False
        else:
            cur.append(ch)
    args.append(_arg_value(cur, was_quoted))
    quoted.append(was_quoted)
    if args == [None]:
        return [], []
    return args, quoted


def _arg_value(chars: list[str], was_quoted: bool) -> str | None:
    value = "".join(chars)
    if was_quoted:
        return value
    value = value.strip()
    return value or None


class Reply:
    """The bytes of one command line's answer, built as its commands run."""

    def __init__(self, verbose: bool = True) -> None:
        self.verbose = verbose
        self.body = bytearray()

    def info(self, *lines: str) -> None:
        """An information block (one or more lines)."""
        if not lines:
            return
        text = "\r\n".join(lines)
        if self.verbose:
            self.body += b"\r\n" + text.encode("latin-1") + b"\r\n"
        else:
            self.body += text.encode("latin-1") + b"\r\n"

    def raw(self, data: bytes) -> None:
        """Bytes that bypass line framing (a received payload)."""
        self.body += data

    def final(self, code: str) -> bytes:
        """The whole answer with its final result code ("OK", "ERROR", "SEND OK", ...)."""
        return bytes(self.body) + frame_final(code, self.verbose)


def answered_test_form(cmd: Command, reply: Reply, *test_lines: str) -> bool:
    """For a command used only in its set form: True once the test form is answered with
    `test_lines` (nothing more to do), False for the set form; the other forms are ERROR."""
    if cmd.kind == "test":
        reply.info(*test_lines)
        return True
    if cmd.kind != "set":
        raise CommandError(cmd.text)
    return False


def send_request(cmd: Command, reply: Reply, test_line: str) -> tuple[int, int] | None:
    """AT+CIPSEND / AT+QISEND=<link>,<length> -> (link, length); None once the test form is
    answered. Other forms, and sends ended by Ctrl-Z (no length), are ERROR: the simulator
    only does fixed-length sends."""
    if answered_test_form(cmd, reply, test_line):
        return None
    if len(cmd.args) < 2:
        raise CommandError(cmd.text)
    return cmd.int_arg(0), cmd.int_arg(1)


def frame_final(code: str, verbose: bool = True) -> bytes:
    if verbose:
        return b"\r\n" + code.encode("latin-1") + b"\r\n"
    return NUMERIC_RESULT.get(code, code).encode("latin-1") + b"\r"


def cme_line(code: int | str, cmee: int) -> str:
    """The final result for an error under AT+CMEE=<cmee> (0: ERROR, 1: number, 2: text)."""
    if cmee == 0:
        return "ERROR"
    if cmee == 1 and isinstance(code, int):
        return f"+CME ERROR: {code}"
    return f"+CME ERROR: {cme_text(code)}"
