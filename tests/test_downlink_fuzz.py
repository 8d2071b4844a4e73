"""Fuzzing the firmware's downlink (tracker/uplink/downlink.py) on CPython: 10,000+ payloads
of random bytes, random JSON, mutated valid requests, wrong types, huge numbers, unicode and
deep nesting. Nothing but a clean DownlinkError or an answer ever comes out; a refused config
request changes neither the config in memory nor its file; a valid one changes exactly its
keys."""

import asyncio
import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))

from tests.fuzz_budget import examples  # noqa: E402
from tracker import log  # noqa: E402
from tracker.config import SCHEMA, Config, key  # noqa: E402
from tracker.settings import Settings  # noqa: E402
from tracker.uplink import downlink as d  # noqa: E402
from tracker.uplink.downlink import Downlink, DownlinkError  # noqa: E402

log.echo = False
KEYS = [k.name for k in SCHEMA]
# Keys whose valid values are easy to draw from the schema (no format beyond type/range).
SIMPLE = [k for k in SCHEMA if getattr(k, "check", None) is None and k.name != "mqtt_password"]
FAST = settings(
    max_examples=examples(2500), deadline=None, suppress_health_check=list(HealthCheck)
)


def parse_cleanly(payload):
    for parse in (d.parse_config_request, d.parse_command):
        try:
            parse(payload)
        except DownlinkError as e:
            assert isinstance(e.reason, str) and e.reason
            json.dumps({"e": e.reason, "errors": e.errors})  # answerable as it is


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)


def valid_value(k):
    if k.enum:
        return st.sampled_from(k.enum)
    if k.type is bool:
        return st.booleans()
    if k.type is int:
        return st.integers(k.min, k.max)
    if k.type is float:
        return st.floats(k.min, k.max, allow_nan=False)
    alphabet = st.sampled_from(
        [chr(c) for c in range(ord(" "), ord("~") + 1) if k.char_ok(chr(c))]
    )
    return st.text(alphabet, min_size=k.min or 0, max_size=min(k.max, 40))


@st.composite
def valid_requests(draw):
    picked = draw(st.lists(st.sampled_from(SIMPLE), max_size=6, unique_by=lambda k: k.name))
    changes = {k.name: draw(valid_value(k)) for k in picked}
    unset = draw(st.lists(st.sampled_from([k for k in KEYS if k not in changes]), max_size=3))
    return {
        "id": draw(
            st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=64)
        ),
        "set": changes,
        "unset": unset,
    }


bad_values = (
    json_values
    | st.integers(-(10**400), 10**400)
    | st.sampled_from([1e308, -1e308, 2**64, "1e999", "NaN", "inf", "", " ", "\u202e", "0x10"])
    | st.text(st.characters(), max_size=20)
)


@st.composite
def hostile_requests(draw):
    """Shapes an operator's tool, an old firmware or an attacker may send."""
    body = {}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=70) | json_values)
    if draw(st.booleans()):
        names = st.sampled_from(KEYS) | st.text(max_size=10)
        body["set"] = draw(
            st.dictionaries(
                names, bad_values | valid_value(draw(st.sampled_from(SIMPLE))), max_size=6
            )
            | json_values
        )
    if draw(st.booleans()):
        body["unset"] = draw(
            st.lists(st.sampled_from(KEYS) | st.text(max_size=8), max_size=4) | json_values
        )
    if draw(st.booleans()):
        body[draw(st.sampled_from(["config", "cmd", "args", "version", "x"]))] = draw(json_values)
    return body


def mutate(data: bytes, draw) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        i = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == 0 and buf:
            buf[i] = draw(st.integers(0, 255))
        elif op == 1:
            buf.insert(i, draw(st.sampled_from(b'{}[]",:\\ 0e-')))
        elif buf:
            del buf[i]
    return bytes(buf)


@FAST
@given(st.binary(max_size=3000))
def test_random_bytes_are_refused_cleanly(payload):
    parse_cleanly(payload)


@FAST
@given(json_values)
def test_random_json_is_refused_or_parsed_cleanly(value):
    parse_cleanly(json.dumps(value).encode())


@FAST
@given(valid_requests() | hostile_requests(), st.data())
def test_mutated_requests_are_refused_or_parsed_cleanly(body, data):
    parse_cleanly(mutate(json.dumps(body).encode(), data.draw))
    cmd = {"id": "c", "cmd": data.draw(st.sampled_from(d.COMMANDS)), "args": {}}
    parse_cleanly(mutate(json.dumps(cmd).encode(), data.draw))


def test_deep_nesting_and_huge_numbers_are_refused_cleanly():
    for n in (5, 100, 1000, 1020):
        parse_cleanly(b'{"id": "x", "set": ' + b"[" * n + b"]" * n + b"}")
        parse_cleanly(b"{" * n)
    parse_cleanly(b'{"id": "x", "set": {"batch_size": ' + b"9" * 2000 + b"}}")
    parse_cleanly(b'{"id": "x", "set": {"interval_s": 1' + b"0" * 400 + b".5}}")


# ---- through a Downlink, on a Settings in a temporary directory ------------------------------


class Bench:
    def __init__(self, path):
        self.path = path
        self.file = str(path / "config.json")
        self.n = 0

    def handle(self, payload):
        """Apply one request through a fresh Downlink; its answer, the config before/after."""
        self.n += 1
        cfg = Config.load(self.file)
        settings_ = Settings(cfg, self.file)
        dl = Downlink(settings_, None, str(self.path / "downlink.json"))
        dl.config_id = None  # every example is a new request
        before = cfg.to_dict(secrets=True)
        raw_before = _read(self.file)
        sent = []

        async def publish(suffix, body, retain):
            sent.append((suffix, json.loads(body), retain))

        dl.receive("config/set", payload, True)

        async def go():
            while dl.pending():
                await dl.process(publish)

        asyncio.run(go())
        return sent, before, raw_before, cfg


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


@settings(max_examples=examples(1500), deadline=None, suppress_health_check=list(HealthCheck))
@given(valid_requests() | hostile_requests(), st.booleans(), st.data())
def test_a_request_applies_exactly_its_keys_or_nothing(tmp_path_factory, body, mutated, data):
    bench = Bench(tmp_path_factory.mktemp("dl"))
    if data.draw(st.booleans()):  # start from a non-default config sometimes
        bench.handle(json.dumps({"id": "seed", "set": {"batch_size": 9, "apn": "a.b"}}).encode())
    payload = json.dumps(body).encode()
    if mutated:
        payload = mutate(payload, data.draw)
    sent, before, raw_before, cfg = bench.handle(payload)
    if payload == b"":
        assert sent == []
        return
    [(suffix, answer, retain)] = sent
    assert suffix == "config/reported" and retain
    after = cfg.to_dict(secrets=True)
    event("applied" if answer["ok"] else "refused")
    if not answer["ok"]:
        assert after == before and _read(bench.file) == raw_before
        assert answer["errors"] and answer["changed"] == {}
        return
    # Accepted: exactly the requested keys changed, to their parsed values or defaults.
    sent_obj = json.loads(payload)
    want = dict(before)
    for name, value in sent_obj.get("set", {}).items():
        want[name] = key(name).parse(value)
    for name in sent_obj.get("unset", []):
        want[name] = key(name).default
    assert after == want
    assert Config.load(bench.file).to_dict(secrets=True) == want
    assert set(answer["changed"]) == {k for k in want if want[k] != before[k]}
    assert answer["config"]["mqtt_password"] in ("", "***")


@settings(max_examples=examples(500), deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_requests() | json_values, st.sampled_from(d.COMMANDS))
def test_commands_answer_every_payload_with_one_ack(body, name):
    ran = []

    async def run_command(n, args):
        ran.append(n)
        return {}

    dl = Downlink(None, run_command, "/nonexistent/downlink.json")
    if isinstance(body, dict) and "cmd" not in body:
        body = dict(body, cmd=name)
    sent = []

    async def publish(suffix, b, retain):
        sent.append((suffix, json.loads(b), retain))

    async def go():
        dl.receive("cmd", json.dumps(body).encode(), False)
        for _ in range(50):
            if dl.pending():
                await dl.process(publish)
            elif dl._running is not None:
                await asyncio.sleep(0)
            else:
                break

    asyncio.run(go())
    [(suffix, ack, retain)] = sent
    assert suffix == "cmd/ack" and not retain and ack["ok"] == bool(ran)
    assert set(ack) == {"id", "cmd", "ok", "result" if ack["ok"] else "error"}
