# Remote config and commands (tracker/uplink/downlink.py) on a real Settings in a temporary
# "flash" directory. Runs under pytest and firmware/tests/run_mp.py (MicroPython).
import json

from mptest import TempDir, raises, read, run, write

from tracker import log
from tracker.aio import sleep_ms
from tracker.config import Config, key
from tracker.settings import Settings
from tracker.uplink import downlink as d
from tracker.uplink.downlink import CommandError, Downlink, DownlinkError
from tracker.uplink.mqtt import MqttLinkDead

log.echo = False  # refusals are logged as warnings; expected here


class Answers:
    """The publish callable the uplink hands process(): records, or fails like a dead link."""

    def __init__(self):
        self.sent = []
        self.fail = False

    async def __call__(self, suffix, payload, retain):
        if self.fail:
            raise MqttLinkDead("link gone")
        self.sent.append((suffix, json.loads(payload), retain))


class Clock:
    def __init__(self):
        self.t = 1000

    def __call__(self):
        return self.t


class Device:
    """A Downlink with its Settings in `path`, and a run_command that records its calls."""

    def __init__(self, path, clock=None):
        self.cfg = Config()
        self.live = {}
        self.settings = Settings(self.cfg, path + "/config.json", self.live.update)
        self.ran = []
        self.after = []
        clock = clock or Clock()
        self.dl = Downlink(self.settings, self.run_command, path + "/downlink.json", clock)
        self.pub = Answers()

    async def run_command(self, name, args):
        self.ran.append((name, args))
        if name == "selftest":
            raise CommandError("sensor missing")
        if name == "locate":
            raise RuntimeError("bug")
        if name == "reboot":
            return {"in_ms": 500, "after_ack": lambda: self.after.append(len(self.pub.sent))}
        return {"pong": args.get("n", 1)} if name == "ping" else None

    def send(self, suffix, obj, retain=False):
        payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return self.dl.receive(suffix, payload, retain)

    async def settle(self):
        """Handle everything queued, letting command tasks run."""
        dl = self.dl
        for _ in range(200):
            if dl.pending():
                await dl.process(self.pub)
            elif dl._running is not None:
                await sleep_ms(1)
            else:
                return
        raise AssertionError("downlink never settled")

    def answers(self):
        out = self.pub.sent
        self.pub.sent = []
        return out


def cfg_request(rid="r1", **kw):
    body = {"id": rid}
    body.update(kw)
    return body


# ---- parsing --------------------------------------------------------------------------------


def refusal(payload, parse=d.parse_config_request):
    if not isinstance(payload, (bytes, type(None))):
        payload = json.dumps(payload).encode()
    with raises(DownlinkError) as e:
        parse(payload)
    return e.value


def test_a_valid_request_parses_to_typed_values():
    rid, changes, unset = d.parse_config_request(
        b'{"id": "r-1", "set": {"interval_s": 30, "rat": "LTE", "batch_size": "5"},'
        b' "unset": ["apn", "apn"]}'
    )
    assert rid == "r-1"
    assert changes == {"interval_s": 30.0, "rat": "lte", "batch_size": 5}
    assert unset == ["apn"]


def test_bad_keys_are_refused_each_with_the_cli_message():
    e = refusal(
        cfg_request(set={"interval_s": 0, "batch_size": "many", "nope": 1, "mqtt_password": 5})
    )
    assert e.rid == "r1"
    assert e.errors["interval_s"] == _cli_reason("interval_s", 0)
    assert e.errors["batch_size"] == _cli_reason("batch_size", "many")
    assert e.errors["nope"] == "unknown key"
    assert e.errors["mqtt_password"] == "must be text"  # a secret's value is never echoed
    e = refusal(cfg_request(set={"apn": "x"}, unset=["apn", "bogus"]))
    assert e.errors == {"apn": "both set and unset", "bogus": "unknown key"}


def _cli_reason(name, value):
    try:
        key(name).parse(value)
    except ValueError as err:
        return err.reason
    raise AssertionError("accepted")


def test_requests_that_are_not_requests_are_refused_with_a_reason():
    cases = (
        (b"{not json", None, "not a JSON object"),
        (b'{"id": "x", "set": {}', None, "truncated"),
        (b'{"id" "x"}', None, "not a JSON object"),  # MicroPython's json would take it
        (b"[1, 2]", None, "not a JSON object"),
        (b'"text"', None, "not a JSON object"),
        (b'{"id": "x", "set": {"interval_s": NaN}}', None, "not a JSON object"),
        (b'{"id": "x", "set": {"a": "\xff"}}', None, "not valid JSON"),
        (b'{"set": {}}', None, "id must be text"),
        (b'{"id": ""}', None, "id must be text"),
        (b'{"id": 7}', None, "id must be text"),
        (json.dumps({"id": "x" * 65}).encode(), None, "id must be text"),
        (b'{"id": "a\\nb"}', None, "printable"),
        (b'{"id": "x", "config": {"interval_s": 5}}', "x", 'unknown field "config"'),
        (b'{"id": "x", "set": [1]}', "x", '"set" must be an object'),
        (b'{"id": "x", "unset": "apn"}', "x", '"unset" must be a list'),
        (b'{"id": "x", "unset": [1]}', "x", '"unset" must be a list'),
        (b'{"id": "x", "set": {"a": [[[[1]]]]}}', None, "nested deeper"),
        (b"{" + b" " * 2048 + b"}", None, "2050 bytes over the 2048 byte limit"),
        (None, None, "refused unread"),
    )
    for payload, rid, reason in cases:
        e = refusal(payload)
        assert reason in e.reason, (payload, e.reason)
        assert e.rid == rid, payload


def test_commands_parse_and_unknown_ones_are_refused():
    assert d.parse_command(b'{"id": "c1", "cmd": "ping"}') == ("c1", "ping", {})
    got = d.parse_command(b'{"id": "c1", "cmd": "locate", "args": {"timeout_s": 5}}')
    assert got == ("c1", "locate", {"timeout_s": 5})
    e = refusal({"id": "c2", "cmd": "format-flash"}, d.parse_command)
    assert "unknown command" in e.reason and e.rid == "c2"
    e = refusal({"id": "c3", "cmd": "ping", "args": [1]}, d.parse_command)
    assert e.cmd == "ping" and "args" in e.reason
    assert "unknown field" in refusal({"id": "c", "cmd": "ping", "x": 1}, d.parse_command).reason
    assert "cmd" in refusal({"id": "c", "cmd": 3}, d.parse_command).reason


# ---- remote config --------------------------------------------------------------------------


def test_a_request_is_applied_stored_and_reported_with_secrets_masked():
    with TempDir() as path:
        dev = Device(path)
        req = cfg_request(
            set={"interval_s": 30, "rat": "lte", "mqtt_user": "u", "mqtt_password": "pw"}
        )
        assert dev.send("config/set", req, retain=True)
        run(dev.settle())
        [(topic, ans, retain)] = dev.answers()
        assert (topic, retain) == ("config/reported", True)
        assert ans["id"] == "r1" and ans["ok"] is True and ans["errors"] == {}
        assert ans["changed"] == {
            "interval_s": "applied now",
            "rat": "takes effect at the next reboot",
            "mqtt_user": "takes effect at the next connection to the broker",
            "mqtt_password": "takes effect at the next connection to the broker",
        }
        assert ans["config"]["interval_s"] == 30 and ans["config"]["mqtt_password"] == "***"
        assert sorted(ans["config"]) == sorted(dev.cfg.keys())
        assert ans["pending_reboot"] == ["rat"]
        assert dev.live == {"interval_s": 30.0}
        stored = Config.load(path + "/config.json")
        assert stored["interval_s"] == 30.0 and stored["mqtt_password"] == "pw"
        assert json.loads(read(path + "/downlink.json")) == {"config_id": "r1"}
        assert dev.dl.counters["applied"] == 1 and dev.dl.counters["received"] == 1


def test_the_same_request_again_is_neither_applied_nor_answered_even_after_a_reboot():
    with TempDir() as path:
        dev = Device(path)
        req = cfg_request(set={"interval_s": 30})
        dev.send("config/set", req, retain=True)
        run(dev.settle())
        dev.answers()
        dev.settings.change({"interval_s": 45})  # the technician's CLI, later
        dev.send("config/set", req, retain=True)  # the broker's retained copy, next connect
        run(dev.settle())
        assert dev.answers() == [] and dev.cfg["interval_s"] == 45.0
        assert dev.dl.counters["duplicates"] == 1
        rebooted = Device(path)
        rebooted.cfg.set("interval_s", 45)
        rebooted.send("config/set", req, retain=True)
        run(rebooted.settle())
        assert rebooted.answers() == [] and rebooted.cfg["interval_s"] == 45.0
        rebooted.send("config/set", cfg_request("r2", set={"interval_s": 30}), retain=True)
        run(rebooted.settle())
        assert rebooted.answers()[0][1]["changed"] == {"interval_s": "applied now"}


def test_a_refused_request_changes_nothing_and_reports_every_bad_key():
    with TempDir() as path:
        dev = Device(path)
        dev.settings.change({"interval_s": 20})
        before = read(path + "/config.json")
        req = cfg_request(set={"interval_s": 99999999, "batch_size": 10, "apn": "bad apn!"})
        dev.send("config/set", req, retain=True)
        run(dev.settle())
        [(topic, ans, retain)] = dev.answers()
        assert ans["ok"] is False and ans["id"] == "r1" and ans["changed"] == {}
        assert sorted(ans["errors"]) == ["apn", "interval_s"]
        assert ans["config"]["interval_s"] == 20 and ans["config"]["batch_size"] == 20
        assert read(path + "/config.json") == before and dev.cfg["batch_size"] == 20
        assert dev.dl.counters["refused"] == 1
        dev.send("config/set", req, retain=True)  # answered once, not at every connect
        run(dev.settle())
        assert dev.answers() == []


def test_a_combination_the_tracker_cannot_use_is_refused_whole():
    with TempDir() as path:
        dev = Device(path)
        dev.send("config/set", cfg_request(set={"mqtt_password": "pw", "interval_s": 5}))
        run(dev.settle())
        ans = dev.answers()[0][1]
        assert ans["ok"] is False and "needs mqtt_user" in ans["errors"]["mqtt_password"]
        assert dev.cfg["interval_s"] == 60.0 and dev.cfg["mqtt_password"] == ""


def test_unset_puts_keys_back_to_their_defaults_with_the_set_ones_atomically():
    with TempDir() as path:
        dev = Device(path)
        dev.settings.change({"apn": "iot.example", "batch_size": 7})
        dev.send("config/set", cfg_request(set={"batch_size": 8}, unset=["apn"]))
        run(dev.settle())
        ans = dev.answers()[0][1]
        assert ans["ok"] and ans["config"]["apn"] == "" and ans["config"]["batch_size"] == 8
        assert Config.load(path + "/config.json")["apn"] == ""


def test_request_level_refusals_are_answered_with_the_reason_under_star():
    with TempDir() as path:
        dev = Device(path)
        dev.send("config/set", b"{garbage", retain=True)
        dev.dl.receive("config/set", None, True)  # skipped unread by the MQTT client
        dev.send("config/set", {"id": "old", "config": {"interval_s": 5}}, retain=True)
        run(dev.settle())
        got = [a for _t, a, _r in dev.answers()]
        assert [a["id"] for a in got] == [None, None, "old"]
        assert "not a JSON object" in got[0]["errors"]["*"]
        assert "over 2048 bytes" in got[1]["errors"]["*"]
        old = got[2]["errors"]["*"]
        assert "unknown field" in old and "this firmware reads id, set, unset" in old
        assert all(not a["ok"] and a["config"]["interval_s"] == 60 for a in got)


def test_an_empty_payload_clears_a_retained_message_and_is_not_answered():
    with TempDir() as path:
        dev = Device(path)
        assert not dev.dl.receive("config/set", b"", False)
        run(dev.settle())
        assert dev.answers() == [] and dev.dl.counters["refused"] == 0


def test_an_answer_waits_for_the_link_and_the_id_is_stored_only_once_delivered():
    with TempDir() as path:
        dev = Device(path)
        dev.send("config/set", cfg_request(set={"interval_s": 30}), retain=True)
        dev.pub.fail = True
        with raises(MqttLinkDead):
            run(dev.dl.process(dev.pub))
        assert dev.cfg["interval_s"] == 30.0  # applied and stored already
        try:
            read(path + "/downlink.json")
            raise AssertionError("id stored before its answer was delivered")
        except OSError:
            pass
        dev.send("config/set", cfg_request(set={"interval_s": 30}), retain=True)  # reconnect
        dev.pub.fail = False
        run(dev.settle())
        [(_t, ans, _r)] = dev.answers()  # one answer, not two
        assert ans["id"] == "r1" and ans["changed"] == {"interval_s": "applied now"}
        assert json.loads(read(path + "/downlink.json"))["config_id"] == "r1"


def test_a_corrupt_id_file_is_ignored():
    with TempDir() as path:
        write(path + "/downlink.json", b'{"config_id": "r1"')
        dev = Device(path)
        assert dev.dl.config_id is None
        dev.send("config/set", cfg_request(set={"interval_s": 30}), retain=True)
        run(dev.settle())
        assert dev.answers()[0][1]["ok"]


# ---- floods ---------------------------------------------------------------------------------


def test_a_flood_is_bounded_by_the_queue_and_the_rate_and_counted():
    with TempDir() as path:
        clock = Clock()
        dev = Device(path, clock)
        taken = [dev.send("cmd", {"id": "c%d" % i, "cmd": "ping"}) for i in range(20)]
        assert taken.count(True) == d.MAX_QUEUED and dev.dl.counters["dropped"] == 16
        run(dev.settle())
        assert len(dev.answers()) == d.MAX_QUEUED
        # The bucket had BURST tokens; the queue took MAX_QUEUED of them.
        left = d.BURST - d.MAX_QUEUED
        taken = []
        for i in range(left + 1):  # one at a time: the queue never fills
            taken.append(dev.send("cmd", {"id": "n%d" % i, "cmd": "ping"}))
            run(dev.settle())
        assert taken == [True] * left + [False]
        clock.t += d.REFILL_MS
        assert dev.send("cmd", {"id": "later", "cmd": "ping"})
        assert not dev.send("cmd", {"id": "later2", "cmd": "ping"})
        # Retained messages (once per connect) are not rate limited, only queue bounded.
        assert dev.send("config/set", cfg_request(set={"batch_size": 3}), retain=True)
        run(dev.settle())
        assert dev.cfg["batch_size"] == 3
        assert dev.dl.counters["received"] == 20 + left + 1 + 2 + 1


# ---- commands -------------------------------------------------------------------------------


def test_commands_are_run_and_acked_with_their_result():
    with TempDir() as path:
        dev = Device(path)
        dev.send("cmd", {"id": "c1", "cmd": "ping", "args": {"n": 3}})
        dev.send("cmd", {"id": "c2", "cmd": "selftest"})
        dev.send("cmd", {"id": "c3", "cmd": "locate"})
        dev.send("cmd", {"id": "c4", "cmd": "trip-start"})
        run(dev.settle())
        got = dev.answers()
        assert [(t, r) for t, _a, r in got] == [("cmd/ack", False)] * 4
        a = [x for _t, x, _r in got]
        assert a[0] == {"id": "c1", "cmd": "ping", "ok": True, "result": {"pong": 3}}
        assert a[1] == {"id": "c2", "cmd": "selftest", "ok": False, "error": "sensor missing"}
        assert a[2]["ok"] is False and a[2]["error"] == "failed: RuntimeError: bug"
        assert a[3] == {"id": "c4", "cmd": "trip-start", "ok": True, "result": {}}
        assert dev.dl.counters["applied"] == 2 and dev.dl.counters["refused"] == 2


def test_bad_commands_get_an_error_ack_and_are_not_run():
    with TempDir() as path:
        dev = Device(path)
        dev.send("cmd", {"id": "c1", "cmd": "format-flash"})
        dev.send("cmd", {"cmd": "ping"})
        dev.send("cmd", {"id": "c3", "cmd": "reboot"}, retain=True)
        dev.send("cmd", b"\x00\x01garbage")
        run(dev.settle())
        a = [x for _t, x, _r in dev.answers()]
        assert dev.ran == [] and all(x["ok"] is False for x in a)
        assert (a[0]["id"], a[0]["cmd"]) == ("c1", None) and "unknown command" in a[0]["error"]
        assert a[1]["id"] is None and "id must be" in a[1]["error"]
        assert (a[2]["id"], a[2]["cmd"]) == ("c3", "reboot") and "retained" in a[2]["error"]
        assert a[3]["id"] is None


def test_reboot_is_acked_before_it_happens_and_a_duplicate_runs_once():
    with TempDir() as path:
        dev = Device(path)
        dev.send("cmd", {"id": "b1", "cmd": "reboot"})
        dev.send("cmd", {"id": "b1", "cmd": "reboot"})  # a QoS 1 redelivery
        dev.pub.fail = True
        for _ in range(5):
            try:
                run(dev.settle())
            except MqttLinkDead:
                pass
        assert dev.after == []  # never before the ack is out
        dev.pub.fail = False
        run(dev.settle())
        assert dev.after == [1] and len(dev.ran) == 1  # after the one ack was published
        [(_t, ack, _r)] = dev.answers()
        assert ack == {"id": "b1", "cmd": "reboot", "ok": True, "result": {"in_ms": 500}}
        assert dev.dl.counters["duplicates"] == 1


def test_the_queue_holds_at_most_4_kb_and_an_oversized_payload_is_not_kept():
    with TempDir() as path:
        dev = Device(path)
        big = json.dumps({"id": "b", "cmd": "ping", "args": {"pad": "x" * 1900}}).encode()
        assert 1900 < len(big) <= d.MAX_PAYLOAD
        assert [dev.send("cmd", big) for _ in range(3)] == [True, True, False]
        run(dev.settle())
        assert dev.send("cmd", b"{" + b" " * 3000 + b"}")
        assert dev.dl._inbox[0][1] is None  # queued without its 3 KB
        run(dev.settle())
        acks = [a for _t, a, _r in dev.answers()]
        assert [a["ok"] for a in acks] == [True, False]  # the second "b" is a duplicate
        assert "over 2048 bytes" in acks[1]["error"]
