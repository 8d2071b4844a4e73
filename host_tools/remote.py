"""Remote configuration and commands over MQTT: publish a request, wait for the device's
answer with the same id (README "Remote configuration and commands").

    result = set_config("mqtt://broker:1883", "alb-0a1b2c", {"interval_s": "300"})
    if not result.ok:
        print(result.errors)                      # {"interval_s": "must be ..."}
    ack = send_command("mqtt://broker:1883", "alb-0a1b2c", "ping")

Topics under `albatross/<device_id>/`:

- `config/set` (retained, QoS 1) `{"id", "set": {key: value}, "unset": [key]}` is answered on
  `config/reported` (retained) `{"id", "ok", "errors", "changed", "config", "pending_reboot"}`.
  Retained, because it is the desired state: a device that is offline applies it when it
  connects. It stays on the broker (secrets included, as the broker's ACLs protect them)
  until the next request replaces it; the device answers an id once, so it is not applied
  twice.
- `cmd` (not retained, QoS 1) `{"id", "cmd", "args"}` is answered on `cmd/ack`
  `{"id", "cmd", "ok", "result"}` or `{"id", "cmd", "ok": false, "error"}`. Not retained: a
  reboot queued for a device that is away would surprise whoever meets it next.

Values are checked with the firmware's own schema (host_tools/fwconfig.py) before anything
is published, so a bad value never reaches the broker. When no answer comes in time,
`NoAnswer` says why it may not have: the device's retained `status` (online, offline, or
never connected to this broker).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

from host_tools.console import values as schema_values
from host_tools.console.protocol import CliError
from host_tools.fwconfig import firmware_config
from host_tools.monitor import subscribe

ROOT = "albatross"
DEFAULT_TIMEOUT_S = 30.0
MAX_ID = 64  # the device refuses longer request ids (wire format)
# What each of the firmware's commands does, for --help (tests check the names match
# tracker/uplink/downlink.py COMMANDS). The CLI refuses a name the firmware does not know
# before publishing; the library sends any name, and the device answers with an error ack.
COMMANDS = {
    "ping": "answer at once (a round trip check)",
    "report-now": "take a reading and send it now",
    "locate": "get a fresh GNSS fix and report it",
    "selftest": "check sensors, modem and storage; the result lists each",
    "trip-start": "start a cold-chain trip (statistics from now on)",
    "trip-stop": "end the trip; the result has its statistics",
    "reboot": "acknowledge, then restart",
}
_PUBLISH_TIMEOUT_S = 10.0
# After SUBACK, how long to wait for retained messages when the probe (below) is lost.
_RETAINED_GRACE_S = 5.0


@cache
def firmware_downlink() -> ModuleType:
    """The firmware's tracker/uplink/downlink.py: its command names and payload limit."""
    firmware_config()  # firmware/ on sys.path
    from tracker.uplink import downlink

    return downlink


class RemoteError(Exception):
    """A request the host refuses before publishing it, or a broker exchange that failed.
    str() is one line; `key` names the config key when one is to blame."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class NoAnswer(RemoteError):
    """The device did not answer in time. `status` is its retained status (None: it never
    connected to this broker); for config the request stays retained and is applied later."""

    def __init__(self, message: str, *, request_id: str, status: dict | None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.status = status


@dataclass
class ConfigResult:
    """The device's `config/reported` answer to one request."""

    device: str
    request_id: str
    ok: bool
    errors: dict[str, str]
    changed: dict[str, Any]
    config: dict[str, Any]
    pending_reboot: list[str]
    elapsed_s: float
    requested: dict[str, Any] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "id": self.request_id,
            "ok": self.ok,
            "errors": self.errors,
            "changed": self.changed,
            "config": self.config,
            "pending_reboot": self.pending_reboot,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class CommandResult:
    """The device's `cmd/ack` for one command."""

    device: str
    request_id: str
    cmd: str
    ok: bool
    result: dict[str, Any]
    error: str | None
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device": self.device,
            "id": self.request_id,
            "cmd": self.cmd,
            "ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if self.ok:
            out["result"] = self.result
        else:
            out["error"] = self.error
        return out


# --- checks on the host, before anything is published ---------------------------------------


def topic(device: str, leaf: str) -> str:
    return f"{ROOT}/{device}/{leaf}"


def check_device_id(device: str) -> str:
    """A device id as the firmware's schema allows one (it is also an MQTT topic level, so
    no `+`, `#` or `/` can get in)."""
    if not device:
        raise RemoteError("--device is empty; give the device id (e.g. alb-0a1b2c3d4e5f)")
    try:
        schema_values.check("device_id", device)
    except CliError as e:
        raise RemoteError(f"--device: {e}") from None
    return device


def check_request_id(request_id: str) -> str:
    if not 1 <= len(request_id) <= MAX_ID or not all(" " <= c <= "~" for c in request_id):
        raise RemoteError(f"a request id is 1..{MAX_ID} printable ASCII characters")
    return request_id


def new_request_id(kind: str) -> str:
    """Unique per request, so the answer can be told from the retained one of an older
    request, and short enough to read in a log."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def check_key(name: str) -> str:
    """A key the firmware's schema has; RemoteError with the device's "did you mean"."""
    try:
        schema_values.check_key(name)
    except CliError as e:
        raise RemoteError(str(e), key=e.key) from None
    return name


def config_request(
    values: Mapping[str, object], unset: Iterable[str] = (), request_id: str | None = None
) -> dict[str, Any]:
    """The `config/set` payload, every key and value checked with the firmware's schema;
    RemoteError naming the first key the device would refuse. Values are sent typed as the
    schema stores them ("300" for interval_s goes as 300.0)."""
    unset = list(unset)
    if not values and not unset:
        raise RemoteError("nothing to set or unset")
    typed: dict[str, Any] = {}
    try:
        for name in values:  # keys first, then values: the device's order of complaints
            schema_values.check_key(name)
        for name in unset:
            schema_values.check_key(name)
        for name, value in values.items():
            typed[name] = schema_values.check(name, value)
    except CliError as e:
        raise RemoteError(str(e), key=e.key) from None
    for name in unset:
        if name in typed:
            raise RemoteError(f"{name} is both set and unset", key=name)
    if len(set(unset)) != len(unset):
        raise RemoteError("a key is unset twice")
    request_id = check_request_id(request_id or new_request_id("cfg"))
    return _fits({"id": request_id, "set": typed, "unset": unset})


def _fits(body: dict[str, Any]) -> dict[str, Any]:
    """The body, if the device will read it: it refuses payloads over its limit unread."""
    limit = firmware_downlink().MAX_PAYLOAD
    size = len(json.dumps(body).encode())
    if size > limit:
        raise RemoteError(f"the request is {size} bytes, the device reads at most {limit}")
    return body


def parse_assignments(words: Iterable[str]) -> dict[str, str]:
    """`KEY=VALUE` words as {key: text}; the text is parsed later by whoever knows the type
    (the schema for config). RemoteError for a word without `=` or a key given twice."""
    out: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise RemoteError(f"expected KEY=VALUE, got {word!r}")
        if name in out:
            raise RemoteError(f"{name} given twice", key=name)
        out[name] = value
    return out


def command_args(words: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` command arguments, each value as JSON if it parses (5, 2.5, true, null,
    [1, 2]) and as text otherwise."""
    args: dict[str, Any] = {}
    for name, text in parse_assignments(words).items():
        try:
            args[name] = json.loads(text)
        except ValueError:
            args[name] = text
    return args


def command_request(
    name: str, args: Mapping[str, Any] | None = None, request_id: str | None = None
) -> dict[str, Any]:
    if not name or len(name) > 32 or not all(c.isalnum() or c in "-_" for c in name):
        raise RemoteError(f"a command name is 1..32 letters, digits, - or _, got {name!r}")
    body = {
        "id": check_request_id(request_id or new_request_id("cmd")),
        "cmd": name,
        "args": dict(args or {}),
    }
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RemoteError(f"command arguments are not JSON: {e}") from None
    return _fits(body)


# --- the exchange over the broker -------------------------------------------------------------


class _Exchange:
    """One paho client subscribed to a device's answers and status; collects what arrives."""

    def __init__(self, url: str, device: str, answers: Iterable[str]) -> None:
        self.url = url
        self.device = device
        self._cond = threading.Condition()
        self.messages: list[tuple[str, bytes, float]] = []
        # A message to ourselves after SUBACK: the broker sends a subscription's retained
        # messages before it handles our next packet, so when the probe is back every
        # retained answer and status is in.
        self._probe = f"{ROOT}-host/{uuid.uuid4().hex}/probe"
        filters = [topic(device, leaf) for leaf in (*answers, "status")] + [self._probe]
        self.client = subscribe(url, self._on_message, filters)

    def _on_message(self, msg_topic: str, payload: bytes) -> None:
        with self._cond:
            self.messages.append((msg_topic, payload, time.monotonic()))
            self._cond.notify_all()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def publish(self, leaf: str, body: Mapping[str, Any], *, retain: bool) -> None:
        info = self.client.publish(
            topic(self.device, leaf), json.dumps(body), qos=1, retain=retain
        )
        try:
            info.wait_for_publish(_PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError) as e:
            raise RemoteError(f"could not publish to {self.url}: {e}") from None
        if not info.is_published():
            raise RemoteError(f"no PUBACK from {self.url} within {_PUBLISH_TIMEOUT_S:.0f} s")

    def settle_retained(self) -> None:
        self.client.publish(self._probe, b"probe", qos=1)
        self.wait(lambda t, _p: t == self._probe, _RETAINED_GRACE_S)

    def wait(self, match: Callable[[str, bytes], bool], timeout: float) -> tuple | None:
        """The first message so far or within `timeout` s that matches, else None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for m in self.messages[seen:]:
                    if match(m[0], m[1]):
                        return m
                seen = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                # In slices: a Ctrl-C the kernel hands to paho's thread interrupts no wait of
                # the main thread, which must come back often to raise KeyboardInterrupt.
                self._cond.wait(min(left, 0.2))

    def status(self) -> dict | None:
        """The device's newest status (retained or live); None if it never sent one."""
        with self._cond:
            found = None
            for t, payload, _at in self.messages:
                if t == topic(self.device, "status"):
                    found = _json_object(payload) if payload else None  # b"": cleared
            return found

    def answer(self, leaf: str, request_id: str, timeout: float) -> tuple[dict, float] | None:
        """The answer on `leaf` carrying `request_id`, and when it arrived."""
        want = topic(self.device, leaf)

        def match(t: str, payload: bytes) -> bool:
            body = _json_object(payload) if t == want else None
            return body is not None and body.get("id") == request_id

        found = self.wait(match, timeout)
        return None if found is None else (_json_object(found[1]) or {}, found[2])


def _json_object(payload: bytes) -> dict | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def describe_status(status: dict | None, url: str) -> str:
    """`is online`, `is offline (last seen ...)` or `has never connected to URL ...`."""
    if status is None:
        return f"has never connected to {url} (no retained status: check the device id)"
    state = status.get("state")
    seen = last_seen(status)
    when = f" (last seen {seen})" if seen else " (its status does not say since when)"
    if state == "online":
        return "is online"  # yet silent: busy, or over its request rate (docs/remote.md)
    if state == "offline":
        return "is offline" + when
    return f"has an unexpected status {json.dumps(status)[:60]}"


def last_seen(status: dict) -> str | None:
    """The time a status carries, if any (`ts`, `since` or `last_seen`, Unix seconds)."""
    for name in ("last_seen", "ts", "since"):
        value = status.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))
    return None


# --- the operations ---------------------------------------------------------------------------


def _request(
    url: str,
    device: str,
    leaf: str,
    answer_leaf: str,
    request: dict[str, Any],
    retain: bool,
    timeout: float,
    on_sent: Callable[[str, dict | None], None] | None,
) -> tuple[tuple[dict, float] | None, dict | None, float]:
    """Publish `request` on `leaf` and wait for the answer carrying its id on `answer_leaf`:
    (the answer and when it came, or None; the device's status; when it was published)."""
    with _Exchange(url, device, [answer_leaf]) as ex:
        ex.settle_retained()
        ex.publish(leaf, request, retain=retain)
        sent = time.monotonic()
        if on_sent is not None:
            on_sent(request["id"], ex.status())
        got = ex.answer(answer_leaf, request["id"], timeout)
        status = ex.status()
    return got, status, sent


def set_config(
    url: str,
    device: str,
    values: Mapping[str, object],
    unset: Iterable[str] = (),
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    request_id: str | None = None,
    on_sent: Callable[[str, dict | None], None] | None = None,
) -> ConfigResult:
    """Publish a checked `config/set` request (retained) and wait for the device's answer.

    Returns the answer whether the device applied it (`ok`) or refused it (`errors` per key,
    nothing applied). RemoteError before publishing for a key or value the schema refuses;
    NoAnswer after `timeout` seconds (the request stays retained: the device applies it
    when it connects); BrokerError when the broker cannot be reached. `on_sent(id, status)`
    is called once the broker has the request, with the device's status as then known.
    """
    check_device_id(device)
    request = config_request(values, unset, request_id)
    got, status, sent = _request(
        url, device, "config/set", "config/reported", request, True, timeout, on_sent
    )
    if got is None:
        raise NoAnswer(
            f"no answer from {device} within {timeout:g} s: it {describe_status(status, url)}; "
            f"request {request['id']} stays retained on the broker and will be applied when "
            "the device reconnects",
            request_id=request["id"],
            status=status,
        )
    reply, at = got
    return _config_result(device, reply, max(0.0, at - sent), request)


def _config_result(
    device: str, reply: dict, elapsed: float, request: dict | None = None
) -> ConfigResult:
    def mapping(name: str) -> dict:
        value = reply.get(name)
        return value if isinstance(value, dict) else {}

    pending = reply.get("pending_reboot")
    return ConfigResult(
        device=device,
        request_id=str(reply.get("id")),
        ok=reply.get("ok") is True,
        errors={str(k): str(v) for k, v in mapping("errors").items()},
        changed=mapping("changed"),
        config=mapping("config"),
        pending_reboot=[str(k) for k in pending] if isinstance(pending, list) else [],
        elapsed_s=elapsed,
        requested=dict(request["set"]) if request else {},
        unset=list(request["unset"]) if request else [],
    )


def get_config(url: str, device: str) -> ConfigResult:
    """The device's last `config/reported` (retained): its effective config, secrets masked,
    and the answer to the last request. RemoteError if it never reported one here."""
    check_device_id(device)
    with _Exchange(url, device, ["config/reported"]) as ex:
        ex.settle_retained()
        want = topic(device, "config/reported")
        found = ex.wait(lambda t, p: t == want and _json_object(p) is not None, 0)
        status = ex.status()
    if found is None:
        raise RemoteError(
            f"no config reported by {device} on {url}: it {describe_status(status, url)}; "
            "it reports its config when it answers `albatross config set --broker`"
        )
    return _config_result(device, _json_object(found[1]) or {}, 0.0)


def send_command(
    url: str,
    device: str,
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    request_id: str | None = None,
    on_sent: Callable[[str, dict | None], None] | None = None,
) -> CommandResult:
    """Publish a command (QoS 1, not retained) and wait for its `cmd/ack`.

    Returns the ack, ok or not (an unknown command or a failure: `error`). NoAnswer after
    `timeout` seconds: commands are not kept for a device that is away, so retry when it is
    online. BrokerError when the broker cannot be reached.
    """
    check_device_id(device)
    request = command_request(name, args, request_id)
    got, status, sent = _request(url, device, "cmd", "cmd/ack", request, False, timeout, on_sent)
    if got is None:
        online = status is not None and status.get("state") == "online"
        advice = "retry" if online else "commands are not queued: retry when it is online"
        raise NoAnswer(
            f"no ack for {name} from {device} within {timeout:g} s: it "
            f"{describe_status(status, url)}; {advice}",
            request_id=request["id"],
            status=status,
        )
    reply, at = got
    result = reply.get("result")
    error = reply.get("error")
    return CommandResult(
        device=device,
        request_id=request["id"],
        cmd=str(reply.get("cmd") or name),  # the device names no command it does not know
        ok=reply.get("ok") is True,
        result=result if isinstance(result, dict) else {},
        error=None if reply.get("ok") is True else str(error or "failed (no reason given)"),
        elapsed_s=max(0.0, at - sent),
    )
