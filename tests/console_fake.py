"""A fake tracker console for host-tool tests on CPython: a pyserial-like port with the
technician command line's manners (docs/console.md): it echoes what is typed, answers
Backspace with "\\b \\b", redraws the typed line around log lines, masks a secret as it is
typed, answers `error: ` and `ok: ` lines, asks `[y/N] `, and can sit in the REPL. Its
config is the firmware's own Config, so values are checked as on the device."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from host_tools.console.protocol import PROMPT
from host_tools.fwconfig import firmware_config

firmware_config()  # puts firmware/ on sys.path: the device's own word splitting
from tracker.cli import words  # noqa: E402
from tracker.settings import Settings  # noqa: E402


class FakeConsole:
    def __init__(self, *, log_every: int = 0, repl: bool = False) -> None:
        self.port = "fake"
        self.timeout = 0.05
        self.config = firmware_config().Config()
        # The device's own change logic (checks, all or nothing, atomic save, effects).
        self._flash = tempfile.TemporaryDirectory(prefix="fake-console-")
        self.settings = Settings(self.config, str(Path(self._flash.name) / "config.json"))
        self.log_every = log_every  # a log line after every N typed characters (0: none)
        self.repl = repl
        self.commands: list[str] = []  # every line run, as typed
        self.closed = False
        self._out = bytearray()
        self._line = ""
        self._typed = 0
        self._asking: str | None = None  # the command waiting for an answer
        self._prompt = PROMPT  # or the question being asked

    # ---- the pyserial side ------------------------------------------------------------

    @property
    def in_waiting(self) -> int:
        return len(self._out)

    def read(self, n: int = 1) -> bytes:
        if not self._out:
            time.sleep(0.002)
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def write(self, data: bytes) -> int:
        for b in data:
            self._key(chr(b))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    # ---- the device side --------------------------------------------------------------

    def _print(self, text: str) -> None:
        self._out += text.encode()

    def _key(self, c: str) -> None:
        if self.repl:
            self._print("\r\n>>> " if c == "\r" else c)
        elif c == "\r":
            line, self._line = self._line, ""
            self._print("\r\n")
            self._enter(line)
        elif c == "\x15":  # Ctrl-U: clear the line, draw it again
            self._line = ""
            self._print("\r\x1b[K" + self._prompt)
        elif c in "\b\x7f":
            if self._line:
                self._line = self._line[:-1]
                self._print("\b \b")
        elif " " <= c <= "~":
            self._line += c
            self._print("*" if self._masked() else c)
            self._typed += 1
            if self.log_every and self._typed % self.log_every == 0:
                self.log("I", "app", f"stored seq {self._typed}")

    def log(self, level: str, tag: str, msg: str) -> None:
        """A log line as the device prints one while a line is being typed."""
        self._print(f"\r\x1b[K{level} {tag}: {msg}\r\n{self._prompt}{self._line}")

    def _masked(self) -> bool:
        if self._asking == "config set mqtt_password":
            return True
        head = self._line[:-1].split(" ")
        return len(head) > 3 and head[:2] == ["config", "set"] and head[-2] == "mqtt_password"

    def _enter(self, line: str) -> None:
        if self._asking is not None:
            command, self._asking, self._prompt = self._asking, None, PROMPT
            if command.startswith("config set "):
                self.config.set(command.split()[2], line)
            else:
                self._print("ok: done\r\n" if line == "y" else "cancelled\r\n")
            self.commands.append(f"{command} (answer {line})")
        elif line.strip():
            self.commands.append(line)
            out = self._run(words.split(line))
            if out is None:
                self._print(self._prompt)
                return  # waiting for an answer
            for text in out:
                self._print(text + "\r\n")
        if self.log_every:
            self._print("W app: waited while the command ran\r\n")
        self._print(self._prompt)

    def _run(self, argv: list[str]) -> list[str] | None:
        as_json = "--json" in argv
        argv = [w for w in argv if w not in ("--json", "--yes")] + (
            ["--yes"] if "--yes" in argv else []
        )
        if argv == ["status"]:
            status = {"fw": "0.1.0", "device_id": "fake", "uptime_s": 12}
            return [json.dumps(status)] if as_json else ["fw       0.1.0", "uptime   12 s"]
        if argv[:2] == ["config", "show"]:
            shown = self.config.to_dict()
            return [json.dumps(shown)] if as_json else [f"{k} = {v}" for k, v in shown.items()]
        if argv == ["config", "set", "mqtt_password"]:
            return self._ask("config set mqtt_password", "mqtt_password (not shown): ")
        if argv[:2] == ["config", "set"]:
            return self._set(argv[2:])
        if argv[0] == "factory-reset":
            if argv[-1] == "--yes":
                return ["ok: factory reset"]
            return self._ask("factory-reset", "delete the config and unsent readings? [y/N] ")
        return [f'error: unknown command "{argv[0]}"']

    def _ask(self, command: str, question: str) -> None:
        self._asking, self._prompt = command, question

    def _set(self, pairs: list[str]) -> list[str]:
        config = firmware_config()
        changes = dict(zip(pairs[::2], pairs[1::2], strict=False))
        try:
            done = self.settings.change(changes)
        except config.ConfigError as e:
            return [f"error: {e.key} {e.reason}"]
        shown = self.config.to_dict()
        return [f"ok: {name} = {json.dumps(shown[name])} ({how})" for name, _, how in done]
