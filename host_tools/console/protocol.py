"""The technician command line as text (docs/console.md "For scripts"), without any I/O:
quoting values as the device splits them, rendering what the console drew (echo, Backspace,
line redraws around log lines) into lines, and reading replies: output, `error: ` lines,
`ok: ` lines and the one JSON line of `--json`."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

PROMPT = "albatross> "
REPL_PROMPT = ">>> "
CONFIRM_END = "[y/N] "
SECRET_ASK_END = "(not shown): "  # `config set SECRET_KEY` alone asks for the value so
CTRL_U = "\x15"  # clears the line being typed, and the device draws the line again
MAX_LINE = 480  # the device discards longer lines (tracker/cli/lineedit.py MAX_LINE)
LOG_LINE = re.compile(r"^[DIWE] [\w.-]+: ")
# What the device prints after a command's output when it held back too many log lines.
LOG_DROPPED = re.compile(r"^\(\d+ more log lines: see `log`\)$")
OK_LINE = re.compile(
    r"^ok: (?P<key>\S+) = (?P<value>.*) \((?P<effect>applied now|"
    r"takes effect at the next connection to the broker|takes effect at the next reboot|"
    r"unchanged)\)$"
)
_CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")
_SPECIAL = " \t\"'\\"  # what makes a value need quotes on the device's command line


class CliError(Exception):
    """The device refused something, or the console did not behave as the command line
    does. str() is one line; `key` names the config key when one is to blame."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def quote(text: str) -> str:
    """`text` as one word of a device command line: bare when it can be, else in double
    quotes with \\" and \\\\ escaped (the device's tracker/cli/words.py split() rules)."""
    if text and not any(c in _SPECIAL for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def device_text(value: object) -> str:
    """A typed value (from TOML, JSON or argv) as a technician would type it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def config_set_lines(pairs: list[tuple[str, str]], max_line: int = MAX_LINE) -> list[str]:
    """`config set K V ...` lines of at most `max_line` characters holding `pairs` in order
    (each line is stored all or nothing on the device). CliError if one pair cannot fit."""
    head = "config set"
    lines: list[str] = []
    line = head
    for key, value in pairs:
        word = f" {key} {quote(value)}"
        if len(head) + len(word) > max_line:
            raise CliError(
                f"{key}: value too long for one {max_line}-character command line", key=key
            )
        if len(line) + len(word) > max_line:
            lines.append(line)
            line = head
        line += word
    if line != head:
        lines.append(line)
    return lines


def render(raw: str) -> tuple[list[str], str]:
    """What a terminal shows for `raw`: the finished lines and the line the cursor is on.
    Handles CR, LF, Backspace and the erase/cursor sequences the line editor sends. Blanks
    after the cursor (Backspace writes "\b \b") show nothing and are not part of a line."""
    lines: list[str] = []
    cells: list[str] = []
    col = 0
    pos = 0
    while pos < len(raw):
        ch = raw[pos]
        pos += 1
        if ch == "\n":
            lines.append("".join(cells).rstrip(" "))
            cells, col = [], 0
        elif ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        elif ch == "\x1b":
            match = _CSI.match(raw, pos - 1)
            if match is None:
                pos += 1  # a two-byte escape, or a sequence still arriving: skip its start
                continue
            pos = match.end()
            cells, col = _csi(cells, col, match.group(1), match.group(2))
        elif ch >= " " or ch == "\t":
            cells.extend(" " * (col - len(cells)))
            if col < len(cells):
                cells[col] = ch
            else:
                cells.append(ch)
            col += 1
    return lines, "".join(cells[:col]) + "".join(cells[col:]).rstrip(" ")


def _csi(cells: list[str], col: int, params: str, final: str) -> tuple[list[str], int]:
    n = int(params) if params.isdigit() else 0
    if final == "K":
        if n == 0:
            return cells[:col], col
        if n == 1:
            return [" "] * min(col + 1, len(cells)) + cells[col + 1 :], col
        return [], col
    if final == "C":
        return cells, col + max(n, 1)
    if final == "D":
        return cells, max(0, col - max(n, 1))
    return cells, col  # colours and the like change nothing a script reads


def is_echo(line: str, command: str) -> bool:
    """Whether a rendered line is the device's echo of `command` (secrets echo as "*")."""
    if len(line) < len(command):
        return False
    tail = line[len(line) - len(command) :]
    return all(a == b or a == "*" for a, b in zip(tail, command, strict=True))


def reply_lines(lines: list[str], command: str) -> list[str] | None:
    """The output lines of `command` among finished rendered lines: those after its echo,
    without log lines. None while the echo has not come."""
    for i, line in enumerate(lines):
        if not LOG_LINE.match(line) and is_echo(line, command):
            return [out for out in lines[i + 1 :] if not is_log(out)]
    return None


def is_log(line: str) -> bool:
    """A log line, or the device's note about log lines it held back."""
    return bool(LOG_LINE.match(line) or LOG_DROPPED.match(line))


def error_of(lines: list[str]) -> str | None:
    """The device's error message (after `error: `), or None."""
    for line in lines:
        if line.startswith("error: "):
            return line[len("error: ") :]
    return None


def json_of(lines: list[str], command: str) -> dict:
    """The one JSON object of a `--json` reply."""
    found = [line for line in lines if line.startswith("{")]
    if len(found) != 1:
        raise CliError(f"{command!r} did not answer with one JSON line: {lines[:3]!r}")
    try:
        value = json.loads(found[0])
    except ValueError as e:
        raise CliError(f"{command!r} answered with broken JSON ({e}): {found[0][:80]!r}") from None
    if not isinstance(value, dict):
        raise CliError(f"{command!r} answered with JSON that is not an object")
    return value


@dataclass(frozen=True)
class Ok:
    """One `ok: KEY = VALUE (EFFECT)` line of `config set`."""

    key: str
    value: str
    effect: str

    @property
    def changed(self) -> bool:
        return self.effect != "unchanged"


def ok_lines(lines: list[str]) -> list[Ok]:
    return [Ok(**m.groupdict()) for line in lines if (m := OK_LINE.match(line))]


def same_value(a: object, b: object) -> bool:
    """Whether two stored values are the same setting. Floats compare to a float32's
    precision: the ESP32 stores single-precision floats and prints 7 significant digits."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b
