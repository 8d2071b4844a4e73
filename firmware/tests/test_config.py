import os

from mptest import TempDir, exists, raises, read, write

from tracker import config, log
from tracker.config import SCHEMA, Config, ConfigError, schema_doc

log.echo = False


def message(fn, *args):
    with raises(ConfigError) as err:
        fn(*args)
    return err.value


# -- schema and defaults --


def test_defaults():
    cfg = Config()
    assert cfg["device_id"] == ""
    assert cfg["broker_host"] == "127.0.0.1"
    assert cfg["broker_port"] == 1883
    assert cfg["mqtt_keepalive_s"] == 60 and cfg["interval_s"] == 60
    assert cfg["log_level"] == "info" and cfg["sht4x_precision"] == "high"
    assert cfg["temperature_offset_c"] == 0.0
    assert cfg.keys() == [k.name for k in SCHEMA]


def test_every_default_is_valid_for_its_own_key():
    for k in SCHEMA:
        assert k.parse(k.default) == k.default, k.name


def test_schema_doc_for_host_tools():
    doc = schema_doc()
    assert [d["key"] for d in doc] == Config().keys()
    port = doc[[d["key"] for d in doc].index("broker_port")]
    assert port["type"] == "int" and port["min"] == 1 and port["max"] == 65535
    assert port["default"] == 1883 and port["secret"] is False and port["help"]
    level = [d for d in doc if d["key"] == "log_level"][0]
    assert level["enum"] == ["debug", "info", "warning", "error"]
    dev = [d for d in doc if d["key"] == "device_id"][0]
    assert dev["chars"] == "A-Za-z0-9_-" and dev["max_len"] == 32 and dev["min"] is None
    assert [d["key"] for d in doc if d["secret"]] == ["mqtt_password"]


# -- set: typed values and strings as a technician types them --


def test_set_parses_technician_strings():
    cfg = Config()
    assert cfg.set("mqtt_keepalive_s", "30") == 30 and cfg["mqtt_keepalive_s"] == 30
    assert cfg.set("mqtt_keepalive_s", " 45 ") == 45
    assert cfg.set("mqtt_keepalive_s", "1e1") == 10
    assert cfg.set("mqtt_keepalive_s", 120.0) == 120
    assert isinstance(cfg["mqtt_keepalive_s"], int)
    assert cfg.set("interval_s", "0.5") == 0.5 and cfg.set("interval_s", 30) == 30.0
    assert cfg.set("temperature_offset_c", "-1.5") == -1.5
    assert cfg.set("temperature_offset_c", 2) == 2.0
    assert isinstance(cfg["temperature_offset_c"], float)
    assert cfg.set("log_level", "DEBUG") == "debug"
    assert cfg.set("device_id", "tracker-07_a") == "tracker-07_a"
    assert cfg.set("broker_host", "mqtt.example.com") == "mqtt.example.com"
    assert cfg.set("device_id", "") == ""  # back to "derive from the board id"


def test_set_rejects_with_messages_naming_key_and_limits():
    cfg = Config()
    err = message(cfg.set, "broker_port", "70000")
    assert err.key == "broker_port" and "1..65535" in str(err) and "70000" in str(err)
    assert str(err).startswith("broker_port:")
    err = message(cfg.set, "broker_port", 0)
    assert "1..65535" in err.reason
    err = message(cfg.set, "mqtt_keepalive_s", "abc")
    assert "integer" in err.reason and "10..3600" in err.reason
    err = message(cfg.set, "interval_s", "0.001")
    assert "0.02..86400.0" in err.reason
    err = message(cfg.set, "log_level", "verbose")
    assert "debug, info, warning, error" in str(err)
    err = message(cfg.set, "device_id", "bad id!")
    assert "A-Za-z0-9_-" in str(err)
    err = message(cfg.set, "device_id", "x" * 33)
    assert "32" in str(err)
    err = message(cfg.set, "temperature_offset_c", "10.5")
    assert "-10.0..10.0" in str(err)
    err = message(cfg.set, "no_such_key", 1)
    assert err.key == "no_such_key" and "unknown" in str(err)
    assert cfg.to_dict() == Config().to_dict()  # nothing changed by failed sets


def test_set_rejects_values_that_only_look_numeric():
    cfg = Config()
    for bad in (True, False, None, 30.5, "30.5", "", "nan", "inf", [30], {"a": 1}):
        message(cfg.set, "mqtt_keepalive_s", bad)
    for bad in ("nan", "-inf", float("nan"), True, "1e999"):
        message(cfg.set, "temperature_offset_c", bad)
    message(cfg.set, "broker_host", 1234)
    message(cfg.set, "broker_host", "")
    message(cfg.set, "broker_host", "evil host\n")
    message(cfg.set, "mqtt_user", "tab\tuser")
    err = message(cfg.set, "sht4x_precision", 2)
    assert "high, medium, low" in err.reason


def test_bool_keys_accept_the_usual_spellings():
    flag = config.Key("flag", bool, False, "test flag")
    for text in ("true", "TRUE", "1", "yes", "on", True, 1):
        assert flag.parse(text) is True
    for text in ("false", "0", "no", "off", False, 0):
        assert flag.parse(text) is False
    for bad in ("maybe", 2, None, ""):
        with raises(ConfigError):
            flag.parse(bad)


def test_secret_value_is_never_echoed_in_errors():
    cfg = Config()
    err = message(cfg.set, "mqtt_password", "hunter2\x01" + "z" * 200)
    assert "hunter2" not in str(err) and "mqtt_password" in str(err)


def test_update_is_all_or_nothing():
    cfg = Config()
    with raises(ConfigError) as err:
        cfg.update({"interval_s": 30, "broker_port": 0})
    assert err.value.key == "broker_port"
    assert cfg["interval_s"] == 60
    with raises(ConfigError):
        cfg.update({"interval_s": 30, "bogus": 1})
    assert cfg["interval_s"] == 60
    with raises(ConfigError):
        cfg.update(["interval_s", 30])  # e.g. a malformed remote config message
    changed = cfg.update({"interval_s": "30", "broker_port": 1883})
    assert changed == {"interval_s": 30}
    assert cfg["interval_s"] == 30


def test_to_dict_masks_secrets_when_set():
    cfg = Config()
    assert cfg.to_dict()["mqtt_password"] == ""  # unset shows as unset
    cfg.set("mqtt_password", "s3cret")
    assert cfg.to_dict()["mqtt_password"] == "***"
    assert cfg.to_dict(secrets=True)["mqtt_password"] == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg["mqtt_password"] == "s3cret"


def test_reset_one_key():
    cfg = Config()
    cfg.set("interval_s", 5)
    assert cfg.reset("interval_s") == 60 and cfg["interval_s"] == 60


# -- persistence --


def changed_config():
    cfg = Config()
    cfg.update(
        {
            "device_id": "dev-1",
            "broker_host": "10.0.0.2",
            "broker_port": 8883,
            "mqtt_user": "user with space",
            "mqtt_password": 'p"a\\ss',
            "interval_s": 300,
            "log_level": "warning",
            "sht4x_precision": "low",
            "temperature_offset_c": -1.25,
        }
    )
    return cfg


def test_save_load_round_trip():
    with TempDir() as d:
        path = d + "/config.json"
        cfg = changed_config()
        cfg.save(path)
        back = Config.load(path)
        assert back.to_dict(secrets=True) == cfg.to_dict(secrets=True)
        assert back.load_error is None and back.load_warnings == []
        assert not exists(path + ".tmp")
        # saving again replaces the file
        back.set("interval_s", 7)
        back.save(path)
        assert Config.load(path)["interval_s"] == 7


def test_missing_file_gives_defaults_silently():
    with TempDir() as d:
        cfg = Config.load(d + "/config.json")
        assert cfg.to_dict() == Config().to_dict()
        assert cfg.load_error is None and cfg.load_warnings == []


def test_corrupt_file_gives_defaults_and_load_error():
    cases = (b"{not json", b"", b"[1, 2]", b"\xff\xfe\x00garbage", b"null", b'"text"')
    with TempDir() as d:
        path = d + "/config.json"
        for data in cases:
            write(path, data)
            cfg = Config.load(path)
            assert cfg.to_dict() == Config().to_dict(), data
            assert cfg.load_error and path in cfg.load_error, data


def test_truncated_file_gives_defaults_and_load_error():
    with TempDir() as d:
        path = d + "/config.json"
        changed_config().save(path)
        full = read(path)
        for cut in (1, len(full) // 2, len(full) - 3):
            write(path, full[:cut])
            cfg = Config.load(path)
            assert cfg["interval_s"] == 60 and cfg.load_error, cut


def test_oversized_file_is_refused_without_reading_it_all():
    with TempDir() as d:
        path = d + "/config.json"
        write(path, b'{"interval_s": 30, "pad": "' + b"x" * 5000 + b'"}')
        cfg = Config.load(path)
        assert cfg["interval_s"] == 60 and "limit" in cfg.load_error


def test_invalid_value_falls_back_for_that_key_only():
    with TempDir() as d:
        path = d + "/config.json"
        write(path, b'{"interval_s": -5, "broker_port": 8883, "log_level": "loud"}')
        cfg = Config.load(path)
        assert cfg["interval_s"] == 60 and cfg["log_level"] == "info"
        assert cfg["broker_port"] == 8883
        assert cfg.load_error is None
        assert len(cfg.load_warnings) == 2
        assert "interval_s" in " ".join(cfg.load_warnings)


def test_unknown_keys_are_dropped_with_a_warning():
    with TempDir() as d:
        path = d + "/config.json"
        write(path, b'{"wifi_ssid": "home", "interval_s": 10}')
        cfg = Config.load(path)
        assert cfg["interval_s"] == 10 and "wifi_ssid" not in cfg
        assert len(cfg.load_warnings) == 1 and "wifi_ssid" in cfg.load_warnings[0]
        with raises(ConfigError):
            cfg["wifi_ssid"]


def test_invalid_secret_in_file_is_not_logged():
    with TempDir() as d:
        path = d + "/config.json"
        write(path, b'{"mqtt_password": "topsecret\\u0007"}')
        cfg = Config.load(path)
        assert cfg["mqtt_password"] == ""
        # The refusal is said (warning and log ring), without the value.
        assert any("mqtt_password" in w for w in cfg.load_warnings), cfg.load_warnings
        assert "topsecret" not in " ".join(cfg.load_warnings)
        said = [e[3] for e in log.recent() if "mqtt_password" in e[3]]
        assert said and not any("topsecret" in m for m in said), said


# -- atomic save: a crash at any step leaves the old or the new config --


def test_interrupted_write_of_tmp_keeps_old_file_and_cleans_up():
    with TempDir() as d:
        path = d + "/config.json"
        changed_config().save(path)
        newer = changed_config()
        newer.set("interval_s", 999)
        write(path + ".tmp", newer._serialise()[:40].encode())  # power cut mid-write
        cfg = Config.load(path)
        assert cfg["interval_s"] == 300 and cfg.load_error is None
        assert not exists(path + ".tmp")


def test_complete_tmp_without_target_is_the_newest_config():
    # The remove-then-rename fallback was cut between its two steps.
    with TempDir() as d:
        path = d + "/config.json"
        newer = changed_config()
        newer.set("interval_s", 999)
        write(path + ".tmp", newer._serialise().encode())
        cfg = Config.load(path)
        assert cfg["interval_s"] == 999 and cfg.load_error is None
        assert exists(path) and not exists(path + ".tmp")
        assert Config.load(path)["interval_s"] == 999


def test_partial_tmp_from_a_first_save_gives_defaults_quietly():
    with TempDir() as d:
        path = d + "/config.json"
        write(path + ".tmp", b'{\n  "device_id": "ab')
        cfg = Config.load(path)
        assert cfg.to_dict() == Config().to_dict()
        assert cfg.load_error is None
        assert not exists(path + ".tmp")


class FatLikeOs:
    """os whose rename refuses an existing target (as on FAT); can cut power after remove."""

    def __init__(self, cut_after_remove=False):
        self.cut_after_remove = cut_after_remove
        self.removed = False

    def stat(self, p):
        return os.stat(p)

    def remove(self, p):
        os.remove(p)
        self.removed = True

    def rename(self, a, b):
        if exists(b):
            raise OSError(17)  # EEXIST
        if self.cut_after_remove and self.removed:
            raise OSError(5)  # the device died here; nothing after this runs
        os.rename(a, b)


def with_os(fake, fn):
    real = config.os
    config.os = fake
    try:
        return fn()
    finally:
        config.os = real


def test_save_on_a_vfs_that_will_not_rename_over_a_file():
    with TempDir() as d:
        path = d + "/config.json"
        Config().save(path)
        cfg = changed_config()
        with_os(FatLikeOs(), lambda: cfg.save(path))
        assert Config.load(path).to_dict(secrets=True) == cfg.to_dict(secrets=True)
        assert not exists(path + ".tmp")


def test_power_cut_between_remove_and_rename_keeps_new_config():
    with TempDir() as d:
        path = d + "/config.json"
        Config().save(path)
        cfg = changed_config()
        with raises(OSError):
            with_os(FatLikeOs(cut_after_remove=True), lambda: cfg.save(path))
        assert not exists(path)  # the worst moment: only the .tmp exists
        assert Config.load(path).to_dict(secrets=True) == cfg.to_dict(secrets=True)


def test_failed_save_keeps_old_file_and_removes_its_tmp():
    class ReadOnly(FatLikeOs):
        def remove(self, p):
            if p.endswith(".json"):
                raise OSError(30)  # EROFS: the old file cannot be replaced
            os.remove(p)

    with TempDir() as d:
        path = d + "/config.json"
        changed_config().save(path)
        cfg = Config()
        cfg.set("interval_s", 5)
        with raises(OSError):
            with_os(ReadOnly(), lambda: cfg.save(path))
        assert Config.load(path)["interval_s"] == 300
        assert not exists(path + ".tmp")
