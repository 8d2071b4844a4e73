"""What `albatross config --broker` and `albatross cmd` print for a person: the device's
answers in the words the serial `albatross config set` uses (`ok: KEY = VALUE (effect)`)."""

from __future__ import annotations

import json
from typing import Any

from host_tools.fwconfig import firmware_config
from host_tools.remote import CommandResult, ConfigResult

# The schema's `applies` (and what a device may put in `changed`) in the console's words.
_EFFECTS = {
    "now": "applied now",
    "connect": "takes effect at the next connection to the broker",
    "reboot": "takes effect at the next reboot",
}


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _effect(name: str, how: Any) -> str:
    if isinstance(how, str) and how:
        return _EFFECTS.get(how, how)
    try:
        return _EFFECTS[firmware_config().key(name).applies]
    except (ValueError, KeyError):  # a key this host's schema does not know
        return "changed"


def config_result_lines(result: ConfigResult) -> list[str]:
    """One `ok:` line per key of the request (changed or unchanged), then what waits for a
    reboot. None for a refusal: `refusal()` says it on stderr, in one line."""
    if not result.ok:
        return []
    lines = []
    for name in [*result.requested, *result.unset]:
        value = result.config.get(name, result.requested.get(name))
        if name in result.changed:
            effect = _effect(name, result.changed[name])
        else:
            effect = "unchanged"
        verb = "reset to default" if name in result.unset else "="
        lines.append(f"ok: {name} {verb} {_value(value)} ({effect})")
    # A device may report changes the request did not name (e.g. a key another one implies).
    for name in sorted(set(result.changed) - set(result.requested) - set(result.unset)):
        lines.append(f"ok: {name} = {_value(result.config.get(name))} ({_effect(name, None)})")
    if result.pending_reboot:
        lines.append(
            "pending reboot: " + ", ".join(result.pending_reboot) + " (albatross cmd ... reboot)"
        )
    return lines


def refusal(result: ConfigResult) -> str:
    """The one-line error for a refused request, naming each key."""
    reasons = "; ".join(f"{_culprit(k)}{why}" for k, why in sorted(result.errors.items()))
    return (
        f"{result.device} refused request {result.request_id}, nothing was applied: "
        f"{reasons or 'no reason given'}"
    )


def _culprit(name: str) -> str:
    # The device files a problem with the request as a whole under "*" (downlink.py).
    return "" if name == "*" else f"{name}: "


def config_lines(config: dict[str, Any], name: str | None = None) -> list[str]:
    """`KEY = VALUE` lines of a reported config, in schema order (keys the host's schema
    does not know at the end)."""
    if name is not None:
        return [_value(config[name])]
    order = [k.name for k in firmware_config().SCHEMA]
    names = [k for k in order if k in config] + sorted(set(config) - set(order))
    return [f"{k} = {_value(config[k])}" for k in names]


def command_lines(result: CommandResult) -> list[str]:
    """`DEVICE: NAME ok (0.42 s)` and the result's items, one per line."""
    head = f"{result.device}: {result.cmd} ok ({result.elapsed_s:.2f} s)"
    return [head] + [f"  {k}: {_value(v)}" for k, v in result.result.items()]
