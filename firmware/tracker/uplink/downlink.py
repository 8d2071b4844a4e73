# Downlink: remote configuration (config/set -> config/reported) and commands (cmd ->
# cmd/ack) under albatross/<device_id>/ (docs/remote.md).
#
# Config is desired state, published retained by the operator, so the broker hands it over
# at every connect: the id of the last request answered is kept on flash and the same id is
# neither applied nor answered twice. Changes go through Settings.change(), the CLI's one
# checked, all-or-nothing, atomically stored way. Commands are not retained (a retained
# reboot would loop) and run through a callable the app passes in.
#
# Untrusted input all the way: the parsers raise DownlinkError with a reason for anything
# else than a well-formed request, and Downlink answers every refusal on its topic.
import json

from tracker import log
from tracker.aio import asyncio, ticks_add, ticks_diff, ticks_ms, wait_for_ms
from tracker.config import ConfigError, json_object_problem, key
from tracker.settings import UNCHANGED
from tracker.store.layout import write_atomic

_TAG = "downlink"
CONFIG_SET = "config/set"
CONFIG_REPORTED = "config/reported"
CMD = "cmd"
CMD_ACK = "cmd/ack"
TOPICS = (CONFIG_SET, CMD)  # subscribed with QoS 1 at every connect

MAX_PAYLOAD = 2048  # bytes; a request is a few hundred, anything larger is refused unread
# What the MQTT client buffers of one incoming packet: the payload limit plus its topic
# (albatross/<id of up to 32>/config/set: 53 bytes) and headers, with room to spare. A
# bigger PUBLISH is skipped unread (mqtt_codec.Parser skip_big) and reaches receive() as None.
MAX_PACKET = MAX_PAYLOAD + 256
MAX_DEPTH = 4  # nesting of objects/arrays: request > set > value (or args > value)
MAX_ID = 64
MAX_QUEUED = 4  # messages received, not yet handled
MAX_QUEUED_BYTES = 4096  # and their payloads together (one may always wait, up to 2 KB)
# Token bucket for what the operator may send (retained requests, once per connect, are
# exempt): a burst of BURST, then one per REFILL_MS. More is dropped unanswered and counted,
# so a flood costs neither heap nor airtime. 16 then one per 2 s: an operator's session of
# changes and pings goes through; a script gone wild does not.
BURST = 16
REFILL_MS = 2000
COMMAND_TIMEOUT_MS = 600000  # the longest command (a GNSS fix) has its own, shorter deadline
COMMANDS = ("reboot", "report-now", "locate", "selftest", "trip-start", "trip-stop", "ping")
_REQUEST = "*"  # the errors key of a problem with the request as a whole
_CONFIG_FIELDS = ("id", "set", "unset")
_CMD_FIELDS = ("id", "cmd", "args")


class DownlinkError(ValueError):
    """A request that cannot be taken; str() is the reason sent back. `rid` is its id when
    that much could be read (else None), `errors` the per-key reasons of a config request."""

    def __init__(self, reason, rid=None, errors=None):
        super().__init__(reason)
        self.reason = reason
        self.rid = rid
        self.errors = errors
        self.cmd = None  # a command's (known) name, for its ack


class CommandError(ValueError):
    """Raised by run_command to report a command's failure as its ack's error."""


def _show(value):
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 32 else text[:28] + '..."'


def _too_deep(raw):
    # CPython's json recurses per level (RecursionError near 1000); ours refuses at once.
    depth = 0
    in_str = esc = False
    for c in raw:
        if in_str:
            if esc:
                esc = False
            elif c == 92:  # backslash
                esc = True
            elif c == 34:
                in_str = False
        elif c == 34:
            in_str = True
        elif c == 123 or c == 91:  # { [
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif c == 125 or c == 93:
            depth -= 1
    return False


def _object(payload):
    """The JSON object in `payload` (bytes), or DownlinkError."""
    if payload is None:
        raise DownlinkError("payload over %d bytes: refused unread" % MAX_PAYLOAD)
    if len(payload) > MAX_PAYLOAD:
        raise DownlinkError(
            "payload of %d bytes over the %d byte limit: refused unread"
            % (len(payload), MAX_PAYLOAD)
        )
    # MicroPython's json is lenient (a truncated object loads half of it, "," and ":" are
    # skipped like spaces): the structure is checked first, as config files are.
    problem = json_object_problem(payload)
    if problem is not None:
        raise DownlinkError("not a JSON object: " + problem)
    if _too_deep(payload):
        raise DownlinkError("nested deeper than %d levels" % MAX_DEPTH)
    try:
        text = payload.decode()
        obj = json.loads(text)
    except (ValueError, UnicodeError) as e:  # bad UTF-8, 5000-digit integers, ...
        raise DownlinkError("not valid JSON: %s" % (e,))
    if not isinstance(obj, dict):
        raise DownlinkError("not a JSON object")
    return obj


def _request_id(obj):
    rid = obj.get("id")
    if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_ID:
        raise DownlinkError(
            "id must be text of 1..%d printable ASCII characters, got %s"
            % (MAX_ID, "nothing" if rid is None else _show(rid))
        )
    for ch in rid:
        if not " " <= ch <= "~":
            raise DownlinkError("id must be printable ASCII, got %s" % _show(rid))
    return rid


def _unknown_fields(obj, known, rid):
    for name in obj:
        if name not in known:
            # Most likely a request for another firmware version: say what this one reads.
            raise DownlinkError(
                "unknown field %s; this firmware reads %s" % (_show(name), ", ".join(known)),
                rid,
            )


def parse_config_request(payload):
    """(id, {key: parsed value}, [keys to unset]) of a config/set payload, every key checked
    against the schema with the CLI's messages; DownlinkError (with .errors per key when
    keys were at fault) otherwise."""
    obj = _object(payload)
    rid = _request_id(obj)
    _unknown_fields(obj, _CONFIG_FIELDS, rid)
    changes = obj.get("set", {})
    unset = obj.get("unset", [])
    if not isinstance(changes, dict):
        raise DownlinkError('"set" must be an object of key: value', rid)
    if not isinstance(unset, list):
        raise DownlinkError('"unset" must be a list of keys', rid)
    errors = {}
    parsed = {}
    for name in changes:
        try:
            parsed[name] = key(name).parse(changes[name])
        except ConfigError as e:
            errors[name] = e.reason
    names = []
    for name in unset:
        if not isinstance(name, str):
            raise DownlinkError('"unset" must be a list of keys, got %s' % _show(name), rid)
        if name in changes:
            errors[name] = "both set and unset"
            continue
        try:
            key(name)
        except ConfigError as e:
            errors[name] = e.reason
            continue
        if name not in names:
            names.append(name)
    if errors:
        raise DownlinkError("refused, nothing changed", rid, errors)
    return rid, parsed, names


def parse_command(payload):
    """(id, name, args) of a cmd payload, or DownlinkError."""
    obj = _object(payload)
    rid = _request_id(obj)
    _unknown_fields(obj, _CMD_FIELDS, rid)
    name = obj.get("cmd")
    if not isinstance(name, str):
        raise DownlinkError('"cmd" must be the command name', rid)
    if name not in COMMANDS:
        raise DownlinkError(
            "unknown command %s; known: %s" % (_show(name), ", ".join(COMMANDS)), rid
        )
    args = obj.get("args", {})
    if not isinstance(args, dict):
        e = DownlinkError('"args" must be an object', rid)
        e.cmd = name
        raise e
    return rid, name, args


def config_answer(rid, cfg, settings, ok, errors=None, changed=None):
    """The config/reported payload: the effective config (secrets "***") whatever happened."""
    return json.dumps(
        {
            "id": rid,
            "ok": ok,
            "errors": errors or {},
            "changed": changed or {},
            "config": cfg.to_dict(),
            "pending_reboot": settings.pending_reboot,
        }
    ).encode()


def command_answer(rid, name, result=None, error=None):
    body = {"id": rid, "cmd": name if name in COMMANDS else None, "ok": error is None}
    if error is None:
        body["result"] = result if result is not None else {}
    else:
        body["error"] = error
    return json.dumps(body).encode()


class Downlink:
    """Queues what the broker delivers (receive(), from MqttClient.on_message: never blocks)
    and handles it in the uplink's session loop (process()), one message per call so
    telemetry keeps its turn. Answers wait in a small outbox until their PUBACK, across
    sessions."""

    def __init__(self, settings, run_command, path, clock=ticks_ms):
        """settings: tracker.settings.Settings; run_command(name, args): async, returns a dict
        (its "after_ack": a callable run once the ack is PUBACKed) or raises
        CommandError/ValueError; path: the file keeping the last config request id."""
        self.settings = settings
        self._run = run_command
        self.path = path
        self._clock = clock
        self.wake = None  # set by the uplink: there is something to handle or publish
        self._inbox = []  # (topic suffix, payload or None if oversized, retain)
        self._queued = 0  # bytes of payload in the inbox
        self._outbox = []  # (topic suffix, payload, retain, then) until PUBACKed
        self._recent_cmds = []  # the last command ids: a QoS 1 duplicate runs once
        self._running = None  # the command task (one at a time; others wait in the inbox)
        self._tokens = BURST
        self._refill_at = clock()
        self._flooded = False
        self.counters = {"received": 0, "applied": 0, "refused": 0, "dropped": 0, "duplicates": 0}
        self.config_id = self._load_id()

    # ---- receiving (the MQTT reader task: only queue) ------------------------------------

    def receive(self, suffix, payload, retain):
        """Queue one message; False when it was dropped (queue full, or over the rate)."""
        self.counters["received"] += 1
        if suffix not in TOPICS or payload == b"":
            return False  # an empty payload clears a retained message: nothing to answer
        if payload is not None and len(payload) > MAX_PAYLOAD:
            payload = None  # refused unread anyway: do not keep it while it waits
        size = len(payload) if payload is not None else 0
        if (
            len(self._inbox) >= MAX_QUEUED
            or (self._inbox and self._queued + size > MAX_QUEUED_BYTES)
            or (not retain and not self._take_token())
        ):
            self.counters["dropped"] += 1
            if not self._flooded:  # one line per flood, not one per message
                self._flooded = True
                log.w(_TAG, "too many requests: dropping, unanswered")
            return False
        self._flooded = False
        self._queued += size
        self._inbox.append((suffix, payload, retain))
        self._wake()
        return True

    def _take_token(self):
        now = self._clock()
        elapsed = ticks_diff(now, self._refill_at)
        if elapsed < 0:  # the ticks wrapped: so long ago that the bucket is full
            elapsed = BURST * REFILL_MS
        gained = elapsed // REFILL_MS
        if gained:
            self._tokens = min(BURST, self._tokens + gained)
            if self._tokens < BURST:  # keep the part of a period already waited
                self._refill_at = ticks_add(self._refill_at, gained * REFILL_MS)
            else:
                self._refill_at = now
        if self._tokens <= 0:
            return False
        self._tokens -= 1
        return True

    def _wake(self):
        if self.wake is not None:
            self.wake()

    # ---- handling (the uplink's session loop) --------------------------------------------

    def pending(self):
        """Whether process() has something to do now."""
        return bool(self._outbox) or (bool(self._inbox) and self._running is None)

    async def process(self, publish):
        """Handle one queued message and publish its answer, or publish one waiting answer.
        publish(suffix, payload, retain): async, returns once PUBACKed (QoS 1), raises if the
        link fails, and the answer then waits for the next session."""
        if not self._outbox and self._inbox and self._running is None:
            suffix, payload, retain = self._inbox.pop(0)
            if payload is not None:
                self._queued -= len(payload)
            if suffix == CONFIG_SET:
                self._config(payload)
            else:
                self._command(payload, retain)
        if self._outbox:
            suffix, body, retain, then = self._outbox[0]
            await publish(suffix, body, retain)
            self._outbox.pop(0)
            if then is not None:
                try:
                    r = then()
                    if r is not None and hasattr(r, "send"):  # a coroutine on both ports
                        await r
                except Exception as e:  # noqa: BLE001 -- the answer is out; keep serving
                    log.exc(_TAG, e)

    def _answer(self, suffix, body, retain, then=None):
        self._outbox.append((suffix, body, retain, then))

    def _config(self, payload):
        s = self.settings
        try:
            rid, changes, unset = parse_config_request(payload)
        except DownlinkError as e:
            if e.rid is not None and e.rid == self.config_id:
                self.counters["duplicates"] += 1
                return
            self._refuse_config(e.rid, e.errors or {_REQUEST: e.reason})
            return
        if rid == self.config_id:  # the retained request, again at this connect
            self.counters["duplicates"] += 1
            return
        for name in unset:
            changes[name] = key(name).default
        try:
            done = s.change(changes)  # all or nothing, stored atomically, then applied
        except ConfigError as e:  # a combination of keys (check_together), or the flash
            self._refuse_config(rid, {e.key: e.reason}, remember=e.key != "config")
            return
        changed = {}
        for name, _value, how in done:
            if how != UNCHANGED:
                changed[name] = how
        self.counters["applied"] += 1
        log.i(_TAG, "config request %s applied" % _show(rid))
        self._remember(rid)
        self._answer(
            CONFIG_REPORTED,
            config_answer(rid, s.cfg, s, True, changed=changed),
            True,
            self._store_id,
        )

    def _refuse_config(self, rid, errors, remember=True):
        self.counters["refused"] += 1
        log.w(_TAG, "config request %s refused: %s" % (_show(rid), _show(str(errors))))
        then = None
        if rid is not None and remember:  # a flash failure is retried at the next connect
            self._remember(rid)
            then = self._store_id
        s = self.settings
        self._answer(CONFIG_REPORTED, config_answer(rid, s.cfg, s, False, errors), True, then)

    def _remember(self, rid):
        self.config_id = rid  # in RAM at once; on flash once the answer is PUBACKed

    def _command(self, payload, retain):
        try:
            rid, name, args = parse_command(payload)
        except DownlinkError as e:
            return self._refuse_command(e.rid, e.cmd, e.reason)
        if rid in self._recent_cmds:
            self.counters["duplicates"] += 1
            return
        self._recent_cmds.append(rid)
        if len(self._recent_cmds) > MAX_QUEUED:
            self._recent_cmds.pop(0)
        if retain:
            return self._refuse_command(
                rid,
                name,
                "retained commands are not run (they would run at every connect): "
                "publish without retain, and clear the retained one with an empty payload",
            )
        self._running = asyncio.create_task(self._execute(rid, name, args))

    def _refuse_command(self, rid, name, reason):
        self.counters["refused"] += 1
        log.w(_TAG, "command %s refused: %s" % (_show(rid), reason))
        self._answer(CMD_ACK, command_answer(rid, name, error=reason), False)

    async def _execute(self, rid, name, args):
        then = None
        try:
            try:
                result = await wait_for_ms(self._run(name, args), COMMAND_TIMEOUT_MS)
                if result is None:
                    result = {}
                elif not isinstance(result, dict):
                    raise TypeError("run_command returned %s, not a dict" % type(result).__name__)
                then = result.pop("after_ack", None)
                body = command_answer(rid, name, result)
                self.counters["applied"] += 1
            except asyncio.TimeoutError:
                body = command_answer(
                    rid, name, error="no result within %d s" % (COMMAND_TIMEOUT_MS // 1000)
                )
                self.counters["refused"] += 1
            except ValueError as e:  # CommandError: the command's own verdict
                body = command_answer(rid, name, error=str(e))
                self.counters["refused"] += 1
            except Exception as e:  # noqa: BLE001 -- a failing command must not stop the device
                log.exc(_TAG, e)
                body = command_answer(rid, name, error="failed: %s: %s" % (type(e).__name__, e))
                self.counters["refused"] += 1
            self._answer(CMD_ACK, body, False, then)
        finally:
            self._running = None
            self._wake()

    # ---- the last config request id on flash ---------------------------------------------

    def _load_id(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read(512)
            if json_object_problem(raw) is None:
                rid = json.loads(raw).get("config_id")
                if isinstance(rid, str):
                    return rid
            log.w(_TAG, "%s unreadable: ignored" % self.path)
        except OSError:
            pass  # none yet
        return None

    def _store_id(self):
        # Atomic (temp file + rename): a power cut leaves the old id or the new one, and the
        # worst case of losing it is answering one request twice with nothing changed.
        try:
            write_atomic(self.path, json.dumps({"config_id": self.config_id}))
        except OSError as e:
            log.w(_TAG, "could not store %s: %s" % (self.path, e))
