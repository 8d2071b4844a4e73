"""The device's config through its command line: read it whole, set pairs atomically."""

from __future__ import annotations

import json

from host_tools.console import protocol as p
from host_tools.console import values
from host_tools.console.protocol import CliError
from host_tools.console.session import CliSession


def read_config(cli: CliSession) -> dict[str, object]:
    """Every key and its value as the device stores it (secrets as "***" when set)."""
    return cli.run_json("config show --json")


def set_pairs(cli: CliSession, pairs: list[tuple[str, str]]) -> list[p.Ok]:
    """Store `pairs` with one `config set` line, all or none (the device's rule); the
    device's ok lines. CliError when they do not fit one line or the device refuses one."""
    lines = p.config_set_lines(pairs)
    if len(lines) > 1:
        raise CliError(
            f"these values make a command line over {p.MAX_LINE} characters and one line "
            "is what the device stores all or nothing; set them in parts or use "
            "`albatross provision`"
        )
    return apply_line(cli, lines[0])


def apply_line(cli: CliSession, line: str) -> list[p.Ok]:
    out = cli.run_lines(line)
    oks = p.ok_lines(out)
    if not oks:
        raise CliError(f"no ok: lines from the device for {line[:60]!r}: {out[:3]!r}")
    return oks


def secret_without_value(op: str, words: list[str]) -> str | None:
    """The secret key that ends `config set K V ... SECRET` without its value, if one does."""
    if op != "set" or len(words) % 2 == 0 or words[-1] not in values.schema_keys():
        return None
    return words[-1] if values.is_secret(words[-1]) else None


def check_request(op: str, words: list[str]) -> list[tuple[str, str]]:
    """`config show|get KEY|set KEY VALUE ...` checked on the host with the firmware's
    schema; the (key, value) pairs of a set."""
    if op == "show" and words:
        raise CliError("usage: config show [--json]")
    if op == "get":
        if len(words) != 1:
            raise CliError("usage: config get KEY [--json]")
        values.check_key(words[0])
    if op == "set":
        return values.check_pairs(words)
    return []


def config_command(cli: CliSession, op: str, words: list[str], *, as_json: bool = False) -> str:
    """What `albatross config` prints: the device's answer to `config show|get|set`."""
    pairs = check_request(op, words)
    if op == "set":
        oks = set_pairs(cli, pairs)
        if as_json:
            return json.dumps({ok.key: {"value": ok.value, "effect": ok.effect} for ok in oks})
        return "\n".join(f"ok: {ok.key} = {ok.value} ({ok.effect})" for ok in oks)
    command = " ".join(["config", op, *words])
    if as_json:
        return json.dumps(cli.run_json(command))
    return cli.run(command)
