"""The `board` fixture's handle, the same on every target, and what the serial target does
with a real board: provision it through its console as a technician would, keep it in a
known state between tests, and say what it showed when a test fails.

A `Board` has the device id, the console (`hil_tests.console_kit.Console`: typing, commands,
everything printed since it was opened), the broker watch (`MqttWatch`, with marks), the
power switch if the bench has one, and `bench`: the virtual board (its simulators, its
supervisor) on the vboard target, None on a real one.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hil_tests.console_kit import PROMPT, REPL_PROMPT, Console
from hil_tests.plugin.benchfile import BoardSpec, PowerSpec
from host_tools.broker import connect_url
from host_tools.console import protocol
from host_tools.mqtt_watch import Message, MqttWatch
from host_tools.vboard.runner import VirtualBoard

REPORT_TAIL = 4000  # characters of each log attached to a failure
REBOOT_EFFECT = "takes effect at the next reboot"
UPTIME_SLACK_S = 5  # the device counts whole seconds from its own start


class BoardError(Exception):
    """A board that does not do what the bench needs (no prompt, no birth, a refused
    provisioning value); str() names the board."""


class PowerSwitch:
    """The bench's switch on a board's supply: off, wait, on."""

    def __init__(
        self, describe: str, off: Callable[[], None], on: Callable[[], None], off_s: float
    ) -> None:
        self.describe = describe
        self.off = off
        self.on = on
        self.off_s = off_s

    def cycle(self, off_s: float | None = None) -> None:
        self.off()
        time.sleep(self.off_s if off_s is None else off_s)
        self.on()


def command_switch(name: str, spec: PowerSpec) -> PowerSwitch:
    """A switch driven by two shell commands (bench.yaml `power: {on: CMD, off: CMD}`)."""

    def run(which: str, command: str) -> None:
        done = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BoardError(
                f"board {name}: power {which} command {shlex.quote(command)} exited "
                f"{done.returncode}: {why[0]}"
            )

    return PowerSwitch(
        f"shell commands (on: {spec.on}; off: {spec.off})",
        lambda: run("off", spec.off),
        lambda: run("on", spec.on),
        spec.off_s,
    )


class Board:
    """One board under test, whatever the target."""

    def __init__(
        self,
        *,
        target: str,
        name: str,
        device_id: str,
        console: Console,
        mqtt: MqttWatch,
        broker_url: str,
        modem: str | None,
        boot_timeout_s: float,
        bench: VirtualBoard | None = None,
        power: PowerSwitch | None = None,
        broker_log: Path | None = None,
        console_log: Path | None = None,
        reopen: Callable[[], Console] | None = None,
    ) -> None:
        self.target = target
        self.name = name
        self.device_id = device_id
        self.console = console
        self.mqtt = mqtt
        self.broker_url = broker_url
        self.modem = modem
        self.boot_timeout_s = boot_timeout_s
        self.bench = bench
        self.power = power
        self.broker_log = broker_log
        self.console_log = console_log
        self._reopen = reopen

    def __repr__(self) -> str:
        return f"<Board {self.name} ({self.target}) device {self.device_id}>"

    # ---- the broker side -------------------------------------------------------------

    def topic(self, leaf: str) -> str:
        return f"albatross/{self.device_id}/{leaf}"

    def mark(self) -> int:
        return self.mqtt.mark()

    def readings(self) -> list[dict]:
        """Every reading the broker delivered from this board (duplicates included)."""
        return self.mqtt.telemetry(self.device_id)

    def wait_telemetry(
        self,
        pred: Callable[[dict], bool] = lambda record: True,
        *,
        after: int = 0,
        timeout: float | None = None,
        what: str = "telemetry",
    ) -> Message:
        """The first telemetry message after mark `after` holding a reading that meets
        `pred`."""
        topic = self.topic("telemetry")
        return self.mqtt.wait_for(
            lambda m: m.topic == topic and any(pred(r) for r in m.records),
            timeout or self.boot_timeout_s,
            what=f"{what} from {self.name}",
            after=after,
            logs=self.where(),
        )

    def wait_online(
        self, *, after: int = 0, since: float | None = None, timeout: float | None = None
    ) -> dict:
        """The board's birth (status online) after mark `after`; with `since` (a
        time.monotonic() taken before the reset), one from a boot that began after it."""
        topic = self.topic("status")

        def birth(m: Message) -> bool:
            if m.topic != topic or m.json.get("state") != "online":
                return False
            if since is None:
                return True
            return m.json["uptime_s"] <= m.at - since + UPTIME_SLACK_S

        return self.mqtt.wait_for(
            birth, timeout or self.boot_timeout_s, what=f"birth of {self.name}", after=after,
            logs=self.where(),
        ).json  # fmt: skip

    def status(self) -> dict:
        """The last online status the board published."""
        topic = self.topic("status")
        for m in reversed(self.mqtt.messages[:]):
            if m.topic == topic and m.json.get("state") == "online":
                return m.json
        raise AssertionError(f"{self.name} published no online status; {self.where()}")

    # ---- resets ----------------------------------------------------------------------

    def reboot(self) -> dict:
        """`reboot` typed at the console; the new boot's birth status once it is back."""
        mark, since = self.mark(), time.monotonic()
        self.console.wake()
        at = self.console.mark()
        self.console.type("reboot\r", 0.02)
        self.console.wait_for("rebooting", 10, after=at)
        return self.wait_online(after=mark, since=since)

    def power_cycle(self, off_s: float | None = None) -> dict:
        """The supply off and on again; the new boot's birth status."""
        if self.power is None:
            raise BoardError(f"board {self.name} has no power switch")
        mark, since = self.mark(), time.monotonic()
        self.power.cycle(off_s)
        return self.wait_online(after=mark, since=since)

    # ---- the console -----------------------------------------------------------------

    def cli(self, command: str, timeout: float = 20.0) -> list[str]:
        """`command` at the prompt (the console woken first); the lines it printed."""
        self.console.wake()
        return self.console.command(command, timeout)

    def cli_json(self, command: str, timeout: float = 20.0) -> dict:
        return protocol.json_of(self.cli(command, timeout), command)

    @contextmanager
    def released(self) -> Iterator[str]:
        """The console port let go of (for mpremote, esptool, a terminal); its URL. The
        console kit opens it again afterwards, recording from then on."""
        if self._reopen is None:
            raise BoardError(f"board {self.name}: its console cannot be opened again")
        self.console.close()
        try:
            yield self.console.url
        finally:
            self.console = self._reopen()

    # ---- failure reports -------------------------------------------------------------

    def where(self) -> str:
        """Which board, and the files to read."""
        files = [str(p) for p in (self.console_log, self.broker_log) if p]
        if self.bench is not None and self.bench.modem:
            files.append(str(self.bench.workdir / f"at-{self.bench.modem}.jsonl"))
        return f"board {self.name} ({self.target}, device {self.device_id}): " + ", ".join(files)

    def report_sections(self) -> list[tuple[str, str]]:
        """(title, text) to attach to a failure: console log, AT transcript, broker log."""
        return [
            (f"board {self.name}: console log", _tail(self.console.text())),
            (f"board {self.name}: AT transcript", self._at_transcript()),
            (f"board {self.name}: broker log", self._broker_log()),
        ]

    def _at_transcript(self) -> str:
        if self.bench is not None:
            if not self.bench.modem:
                return "(no modem: the virtual board uses the host's TCP)"
            path = self.bench.workdir / f"at-{self.bench.modem}.jsonl"
            text = path.read_text(errors="replace") if path.exists() else ""
            return f"{path}\n{_tail(text)}" if text else f"{path}: empty"
        if not self.modem:
            return "(no modem on this board)"
        # A real board keeps no AT transcript; its console can show the modem's state and
        # the log's recent lines (warnings and errors of the AT engine among them).
        out = ["unavailable on a real board (no wire tap on the modem's UART); its console shows:"]
        for command in ("modem", "log 40"):
            try:
                self.console.write(protocol.CTRL_U.encode())
                self.console.wake(5)
                out.append(f"{PROMPT}{command}")
                out += self.console.command(command, 10)
            except AssertionError as e:
                out.append(f"(no answer to {command!r}: {str(e).splitlines()[0]})")
                break
        return _tail("\n".join(out))

    def _broker_log(self) -> str:
        return broker_log_text(self.device_id, self.mqtt, self.broker_log)


def broker_log_text(device_id: str, mqtt: MqttWatch | None, log: Path | None) -> str:
    """The device's MQTT traffic as the test saw it, and the broker log's lines naming it."""
    prefix = f"albatross/{device_id}/"
    traffic = [
        f"{m.at:10.3f} {m.topic} {m.payload[:300]!r}"
        for m in (mqtt.messages[:] if mqtt is not None else [])
        if m.topic.startswith(prefix)
    ]
    text = f"MQTT traffic of {device_id} seen by the test:\n" + (
        _tail("\n".join(traffic)) if traffic else "(none)"
    )
    if log is not None and log.exists():
        lines = log.read_text(errors="replace").splitlines()
        mine = [line for line in lines if device_id in line]
        text += f"\n{log} (lines naming {device_id}):\n" + _tail("\n".join(mine) or "(none)")
    return text


def _tail(text: str, n: int = REPORT_TAIL) -> str:
    if len(text) <= n:
        return text
    return f"... ({len(text) - n} earlier characters left out)\n" + text[-n:]


# ---- the serial target: a real board, reached only through its serial port --------------


class SerialBoard:
    """A bench board for the session: its console held open (and recorded), provisioned
    once, put back to its provisioned config after each test."""

    def __init__(self, spec: BoardSpec, log_dir: Path, boot_timeout_s: float) -> None:
        self.spec = spec
        self.log_dir = log_dir
        self.boot_timeout_s = boot_timeout_s
        self.baseline: dict = {}
        self.power: PowerSwitch | None = None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.console_log = log_dir / "console.log"
        self.mqtt = MqttWatch(spec.broker)
        try:
            console = self._open()
        except BaseException:
            self.mqtt.close()
            raise
        self.board = Board(
            target="serial",
            name=spec.name,
            device_id=spec.device_id,
            console=console,
            mqtt=self.mqtt,
            broker_url=spec.broker,
            modem=spec.modem,
            boot_timeout_s=boot_timeout_s,
            console_log=self.console_log,
            reopen=self._open,
        )

    def _open(self) -> Console:
        return Console(
            self.spec.port, name=self.spec.name, record=self.console_log, logs=self.where
        )

    @property
    def console(self) -> Console:
        return self.board.console

    def where(self) -> str:
        return f"board {self.spec.name} on {self.spec.port}: {self.console_log}"

    def set_power(self, power: PowerSwitch | None) -> None:
        self.power = self.board.power = power

    def close(self) -> None:
        self.console.close()
        self.mqtt.close()

    def provision(self) -> None:
        """As a technician would: wake the console, `config set` the device id, broker and
        APN (and the bench's extra keys), reboot, and wait for the birth on the broker."""
        self._awake(self.boot_timeout_s)
        host, port = connect_url(self.spec.broker)
        wanted: dict[str, object] = {
            "device_id": self.spec.device_id,
            "broker_host": host,
            "broker_port": port,
        }
        if self.spec.apn is not None:
            wanted["apn"] = self.spec.apn
        wanted.update(self.spec.config)
        self.set_config(wanted)
        self.board.reboot()
        self.baseline = self.board.cli_json("config show --json")

    def set_config(self, values: dict[str, object]) -> bool:
        """`config set` through the console; whether a value waits for a reboot."""
        pairs = [(k, protocol.device_text(v)) for k, v in values.items()]
        reboot = False
        for line in protocol.config_set_lines(pairs):
            out = self.board.cli(line)
            error = protocol.error_of(out)
            if error is not None:
                raise BoardError(f"board {self.spec.name} refused `{line}`: {error}")
            reboot |= any(ok.effect == REBOOT_EFFECT for ok in protocol.ok_lines(out))
        return reboot

    def restore(self) -> None:
        """Back to the provisioned config after a test (and a reboot if it needs one), the
        app running with its prompt."""
        self._awake(self.boot_timeout_s)
        now = self.board.cli_json("config show --json")
        changed = {
            k: v
            for k, v in self.baseline.items()
            if v != "***" and not protocol.same_value(now.get(k), v)
        }
        reboot = self.set_config(changed) if changed else False
        status = "\n".join(self.board.cli("status"))
        if reboot or "waiting for a reboot" in status:
            self.board.reboot()

    def _awake(self, timeout: float) -> None:
        """The prompt up; a board left at the MicroPython REPL is reset as a person would
        (machine.reset()), one left without an answer is power cycled if it can be."""
        try:
            self.console.wake(min(timeout, 20))
            return
        except AssertionError:
            pass
        mark, since = self.mqtt.mark(), time.monotonic()
        if REPL_PROMPT in self.console.screen_line():
            self.console.type("import machine; machine.reset()\r", 0.01)
        elif self.power is not None:
            self.power.cycle()
        else:
            raise BoardError(
                f"board {self.spec.name} shows no {PROMPT!r} on {self.spec.port} and has no "
                f"power switch; see {self.console_log}"
            )
        self.board.wait_online(after=mark, since=since)
        self.console.wake(timeout)
