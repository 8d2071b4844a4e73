"""Provisioning: make a device's config match a file, sending only what differs, then read
it back and check every key.

    report = provision(cli, values.load_file(Path("device.toml")))
    print(report.format())

The keys to change go out in `config set` lines of at most 480 characters; the device stores
each line all or nothing. Secrets read back as "***", so for them only "set" or "empty" is
checked, and whether one changed is what the device's ok line says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from host_tools.console import protocol as p
from host_tools.console import values
from host_tools.console.device_config import apply_line, read_config
from host_tools.console.protocol import CliError
from host_tools.console.session import CliSession

_MASK = "***"
_REBOOT = "takes effect at the next reboot"
_CONNECT = "takes effect at the next connection to the broker"
_LATER = {_REBOOT: "yes (next reboot)", _CONNECT: "yes (next connection)"}


@dataclass
class Row:
    key: str
    before: object
    after: object
    changed: bool
    effect: str | None = None  # from the device's ok line, when the key was sent


@dataclass
class Report:
    port: str
    rows: list[Row] = field(default_factory=list)
    lines_sent: int = 0

    @property
    def changed(self) -> list[str]:
        return [r.key for r in self.rows if r.changed]

    @property
    def at_reboot(self) -> list[str]:
        return [r.key for r in self.rows if r.changed and r.effect == _REBOOT]

    def summary(self) -> str:
        n_changed = len(self.changed)
        later = f" ({len(self.at_reboot)} at the next reboot)" if self.at_reboot else ""
        return (
            f"provisioned {self.port}: {n_changed} changed{later}, "
            f"{len(self.rows) - n_changed} unchanged; read back and verified"
        )

    def format(self) -> str:
        table = [("key", "before", "after", "changed")]
        for r in self.rows:
            mark = _LATER.get(r.effect, "yes") if r.changed else "-"
            table.append((r.key, json.dumps(r.before), json.dumps(r.after), mark))
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
        return "\n".join([*(line.rstrip() for line in lines), self.summary()])

    def to_json(self) -> dict:
        return {
            "port": self.port,
            "changed": self.changed,
            "at_reboot": self.at_reboot,
            "unchanged": [r.key for r in self.rows if not r.changed],
            "keys": {
                r.key: {"before": r.before, "after": r.after, "changed": r.changed}
                for r in self.rows
            },
            "lines_sent": self.lines_sent,
            "verified": True,
        }


def provision(cli: CliSession, wanted: dict[str, object]) -> Report:
    """Make the device's config hold `wanted` (checked with values.load_file or
    values.check); CliError naming the key the device refuses or reads back wrong."""
    typed = {name: values.check(name, value) for name, value in wanted.items()}
    before = read_config(cli)
    for name in typed:
        if name not in before:
            raise CliError(f"the device has no config key {name} (older firmware?)", key=name)
    pairs = [(n, p.device_text(v)) for n, v in typed.items() if _differs(n, v, before[n])]
    effects: dict[str, str] = {}
    report = Report(cli.name)
    for i, line in enumerate(p.config_set_lines(pairs)):
        try:
            oks = apply_line(cli, line)
        except CliError as e:
            stored = sorted(k for k, effect in effects.items() if effect != "unchanged")
            raise _refused(e, stored) from None
        effects.update({ok.key: ok.effect for ok in oks})
        report.lines_sent = i + 1
    after = read_config(cli)
    for name, value in typed.items():
        _verify(name, value, after.get(name))
        if values.is_secret(name):  # "***" before and after: only the device can tell
            changed = effects.get(name, "unchanged") != "unchanged"
        else:
            changed = not p.same_value(before[name], after[name])
        report.rows.append(Row(name, before[name], after[name], changed, effects.get(name)))
    return report


def _differs(name: str, value: object, current: object) -> bool:
    if values.is_secret(name):
        # Hidden on the device: send it unless both are empty (the device then says
        # whether it was already so).
        return value != "" or current != ""
    return not p.same_value(value, current)


def _verify(name: str, value: object, shown: object) -> None:
    if values.is_secret(name):
        ok = shown == (_MASK if value != "" else "")
        want = "set" if value != "" else "empty"
    else:
        ok = p.same_value(value, shown)
        want = json.dumps(value)
    if not ok:
        raise CliError(
            f"{name} reads back as {json.dumps(shown)} after provisioning, expected {want}",
            key=name,
        )


def _refused(e: CliError, stored: list[str]) -> CliError:
    done = f"; already stored by earlier lines: {', '.join(stored)}" if stored else ""
    return CliError(f"refused by the device: {e}{done}", key=e.key)
