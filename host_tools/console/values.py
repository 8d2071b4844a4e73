"""Config values checked on the host with the firmware's own schema (host_tools/fwconfig.py),
so a bad value is refused before the port is touched, in the words the device would use; and
provisioning files (a flat TOML or JSON table of key = value) read and checked the same way."""

from __future__ import annotations

import json
import tomllib
from functools import cache
from pathlib import Path

from host_tools.console.protocol import CliError, device_text
from host_tools.fwconfig import firmware_config


@cache
def schema_keys() -> tuple[str, ...]:
    return tuple(k.name for k in firmware_config().SCHEMA)


def _closest(name: str) -> str | None:
    firmware_config()  # firmware/ on sys.path: the device's own "did you mean"
    from tracker.cli import words

    return words.closest(name, list(schema_keys()))


def is_secret(name: str) -> bool:
    return bool(firmware_config().key(name).secret)


def unknown_key(name: str) -> CliError:
    """Worded as tracker/cli/commands.py words it."""
    near = _closest(name) or "config show"
    return CliError(f"unknown key {json.dumps(name)} (try: {near})", key=name)


def check_key(name: str) -> None:
    if name not in schema_keys():
        raise unknown_key(name)


def check(name: str, value: object) -> object:
    """The stored (typed) form of `value` for key `name`; CliError naming the key, worded
    as the device words a refusal (`interval_s must be a number in ..., got "0"`)."""
    config = firmware_config()
    check_key(name)
    try:
        return config.key(name).parse(value)
    except config.ConfigError as e:
        raise CliError(f"{e.key} {e.reason}", key=e.key) from None


def check_pairs(words: list[str]) -> list[tuple[str, str]]:
    """`KEY VALUE [KEY VALUE ...]` from a command line as checked (key, text) pairs."""
    if not words or len(words) % 2:
        raise CliError("usage: config set KEY VALUE [KEY VALUE ...]")
    pairs = list(zip(words[::2], words[1::2], strict=True))
    seen: set[str] = set()
    for name, _ in pairs:  # keys first, then values: the device's order of complaints
        check_key(name)
        if name in seen:
            raise CliError(f"{name} given twice", key=name)
        seen.add(name)
    for name, value in pairs:
        check(name, value)
    return pairs


def load_file(path: Path) -> dict[str, object]:
    """The key = value table of a provisioning file (.toml or .json), every key known and
    every value valid; CliError naming the file and the offending key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read {path}: {e}") from None
    table = _parse(path, text)
    for name, value in table.items():
        if isinstance(value, dict | list) or value is None:
            kind = (
                "a table" if isinstance(value, dict) else "a list" if value is not None else "null"
            )
            raise CliError(
                f"{path}: {name} is {kind}; expected a flat key = value table", key=name
            )
        try:
            check(name, value)
        except CliError as e:
            raise CliError(f"{path}: {e}", key=e.key) from None
    return table


def _parse(path: Path, text: str) -> dict:
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            table = json.loads(text)
            if not isinstance(table, dict):
                raise CliError(f"{path}: expected one JSON object of key: value pairs")
            return table
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise CliError(f"{path}: not valid {suffix[1:].upper()}: {e}") from None
    raise CliError(f"{path}: a provisioning file is .toml or .json")


def as_text(name: str, value: object) -> str:
    """What to type on the device for a checked value."""
    return device_text(check(name, value))
