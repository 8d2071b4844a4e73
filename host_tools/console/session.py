"""A script's side of the technician command line: send a command and a CR, read up to the
next prompt, hand back the output (docs/console.md "For scripts").

    with open_session("/dev/ttyUSB0") as cli:      # or a pty, socket://, rfc2217://
        print(cli.run("status"))
        config = cli.run_json("config show --json")

Every read has a deadline; a reply that never comes is a CliError naming the port and what
the console last showed, never a hang.
"""

from __future__ import annotations

import codecs
import re
import time

import serial

from host_tools.console import protocol as p
from host_tools.console.protocol import CliError

_POLL_S = 0.05
# Commands that ask "[y/N] " first; a script confirms with --yes (docs/console.md).
_ASKING = ("config reset", "factory-reset")


class CliSession:
    """The command line on an open pyserial port (serial_for_url), which it then owns."""

    def __init__(self, port: serial.SerialBase, *, name: str | None = None) -> None:
        self.port = port
        self.name = name or str(port.port)
        port.timeout = _POLL_S
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> CliSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ---------------------------------------------------------------------

    def _read(self) -> str:
        """What arrived within one poll interval ("" if nothing)."""
        data = self.port.read(self.port.in_waiting or 1)
        return self._decoder.decode(data)

    def _drain(self, most_s: float = 0.5) -> None:
        """Forget what the console printed before now (log lines, old prompts): read until
        it is quiet for one poll, or for at most `most_s` while it keeps talking."""
        deadline = time.monotonic() + most_s
        while self._read() and time.monotonic() < deadline:
            pass

    def _write(self, text: str) -> None:
        self.port.write(text.encode())
        self.port.flush()

    # ---- the command line ------------------------------------------------------------

    def wake(self, timeout: float = 5.0) -> None:
        """Bring up the prompt; CliError when the console shows the MicroPython REPL, waits
        for a secret, or nothing answers.

        Ctrl-U first: it clears a half-typed line and makes the device draw its prompt, so
        a question left open shows before any Enter could answer it (an Enter at "[y/N] "
        is a no, but at a secret's prompt it would store an empty secret). Enter follows,
        once a second, for a console that drew nothing (the REPL, a board still booting)."""
        self._drain()
        deadline = time.monotonic() + timeout
        raw = ""
        self._write(p.CTRL_U)
        next_enter = time.monotonic() + 0.5
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise CliError(
                    f"no {p.PROMPT.strip()!r} prompt on {self.name} within {timeout:g} s "
                    f"(is the tracker app running, at 115200 baud?); it showed: "
                    f"{_tail(raw)}"
                )
            raw += self._read()
            shown = p.render(raw)[1]
            if shown == p.PROMPT:
                return
            if shown == p.REPL_PROMPT or "raw REPL" in raw:
                raise _repl_error(self.name)
            if shown.endswith(p.SECRET_ASK_END):
                raise CliError(
                    f"{self.name} is asking for a secret ({shown.strip()}); answer it in "
                    "`albatross console` first"
                )
            if shown.endswith(p.CONFIRM_END):
                raw = ""
                self._write("n\r")
            elif now >= next_enter:
                self._write("\r")
                next_enter = now + 1.0

    def run(self, command: str, timeout: float = 10.0) -> str:
        """The output of `command` (no echo, no log lines); CliError for an `error: ` reply."""
        return "\n".join(self.run_lines(command, timeout))

    def run_json(self, command: str, timeout: float = 10.0) -> dict:
        """The JSON object of a `--json` command (the flag is added when missing)."""
        if "--json" not in command.split():
            command += " --json"
        return p.json_of(self.run_lines(command, timeout), command)

    def run_lines(self, command: str, timeout: float = 10.0) -> list[str]:
        command = _confirmed(command.strip())
        if len(command) > p.MAX_LINE:
            raise CliError(
                f"command line of {len(command)} characters; the device takes {p.MAX_LINE}"
            )
        self._drain()
        self._write(command + "\r")
        lines = self._reply(command, timeout)
        error = p.error_of(lines)
        if error is not None:
            raise CliError(error, key=_key_in(error))
        return lines

    def _reply(self, command: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        raw = ""
        while True:
            raw += self._read()
            done, shown = p.render(raw)
            out = p.reply_lines(done, command)
            if out is not None:
                if shown == p.PROMPT:
                    return out
                if shown.endswith(p.CONFIRM_END):
                    self._write("n\r")  # never leave the device waiting for an answer
                    raise CliError(f"{command!r} asked for confirmation: {shown.strip()}")
                if shown.endswith(p.SECRET_ASK_END):
                    raise CliError(
                        f"{command!r} made {self.name} ask for the value "
                        f"({shown.strip()}); give it on the command line"
                    )
            if shown == p.REPL_PROMPT:
                raise _repl_error(self.name)
            if time.monotonic() >= deadline:
                raise CliError(
                    f"no reply to {command!r} on {self.name} within {timeout:g} s; "
                    f"it showed: {_tail(raw)}"
                )

    def reboot(self, timeout: float = 30.0) -> None:
        """Reset the board with `reboot` and wait for the prompt of the new boot. The old
        app reads no more input once `reboot` runs, so the next prompt is the new one's."""
        self._drain()
        self._write("reboot\r")
        deadline = time.monotonic() + timeout
        raw = ""
        settle = None
        while settle is None or time.monotonic() < settle:
            if time.monotonic() >= deadline:
                raise CliError(f"no reply to 'reboot' on {self.name} within {timeout:g} s")
            raw += self._read()
            out = p.reply_lines(p.render(raw)[0], "reboot")
            if out is not None:
                error = p.error_of(out)
                if error is not None:
                    raise CliError(error)
                settle = settle or time.monotonic() + 0.5
        self.wake(max(1.0, deadline - time.monotonic()))


def open_session(
    url: str, *, baud: int = 115200, wake_timeout: float = 5.0, wake: bool = True
) -> CliSession:
    """A session on `url` (a device path, a pty, socket://HOST:PORT or rfc2217://...),
    with the prompt up unless wake=False."""
    session = CliSession(open_port(url, baud), name=url)
    if wake:
        try:
            session.wake(wake_timeout)
        except BaseException:
            session.close()
            raise
    return session


def open_port(url: str, baud: int = 115200) -> serial.SerialBase:
    """The port at `url`, locked against other programs that lock it (mpremote, another
    albatross): two readers would each get half of every reply."""
    # pyserial's rfc2217 client refuses any write timeout (NotImplementedError on open).
    write_timeout = None if url.startswith("rfc2217:") else 5
    try:
        return serial.serial_for_url(
            url, baudrate=baud, timeout=_POLL_S, write_timeout=write_timeout, exclusive=True
        )
    except (serial.SerialException, ValueError) as e:
        why = str(e)
        if "exclusively lock" in why:
            why = "another program has it open (albatross console, mpremote?)"
        raise CliError(f"cannot open {url}: {why}") from None


def _confirmed(command: str) -> str:
    if command.startswith(_ASKING) and "--yes" not in command.split():
        return command + " --yes"
    return command


def _key_in(error: str) -> str | None:
    """The config key an error names (`interval_s must be ...`, `unknown key "x" ...`)."""
    from host_tools.console.values import schema_keys

    unknown = re.match(r'unknown key "([^"]*)"', error)
    if unknown:
        return unknown.group(1)
    word = error.split(" ", 1)[0]
    return word if word in schema_keys() else None


def _repl_error(name: str) -> CliError:
    return CliError(
        f"the tracker app is not running on {name}: the console shows the MicroPython "
        "REPL (>>>); machine.reset() or a power cycle starts it again"
    )


def _tail(raw: str, n: int = 160) -> str:
    """The last lines the console showed, for an error message."""
    done, cursor = p.render(raw)
    text = " | ".join(line for line in [*done[-4:], cursor] if line)
    return repr(text[-n:]) if text else "nothing"
