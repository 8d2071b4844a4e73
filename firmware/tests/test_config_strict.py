# Strict config parsing: a config.json cut short (power loss mid-write) or malformed is
# refused whole, never loaded in part and saved back, whatever the json module of the
# MicroPython in use accepts (tracker/compat.py). CPython (pytest) and the Unix port.
import os

from mptest import TempDir, exists, read, write
from old_mp import OldJson, patched

from tracker import config, log
from tracker.config import Config

log.echo = False


def changed_config():
    cfg = Config()
    cfg.update(
        {
            "device_id": "dev-1",
            "broker_host": "10.0.0.2",
            "mqtt_password": 'p"a\\ss',
            "interval_s": 300,
            "log_level": "warning",
            "temperature_offset_c": -1.25,
        }
    )
    return cfg


def truncations(full):
    """Every prefix of a saved config that is not a whole object (up to its closing brace)."""
    return range(full.rindex(b"}") + 1)


def test_every_truncation_of_a_saved_config_is_refused_and_left_alone():
    # Before v1.26 MicroPython's json.loads returns what it read of a cut object (OldJson);
    # the device must not take half a config, not even where the first keys survived.
    defaults = Config().to_dict(secrets=True)
    with TempDir() as d:
        path = d + "/config.json"
        changed_config().save(path)
        full = read(path)
        for json_module in (config.json, OldJson()):
            with patched(config, "json", json_module):
                for cut in truncations(full):
                    write(path, full[:cut])
                    cfg = Config.load(path)
                    assert cfg.load_error and path in cfg.load_error, cut
                    assert cfg.to_dict(secrets=True) == defaults, cut
                    assert cfg.load_warnings == [], cut
                    assert read(path) == full[:cut], cut
        write(path, full)
        assert Config.load(path).to_dict(secrets=True) == changed_config().to_dict(secrets=True)


def test_every_truncation_of_a_first_save_tmp_is_discarded():
    defaults = Config().to_dict(secrets=True)
    with TempDir() as d:
        path = d + "/config.json"
        changed_config().save(path)
        full = read(path)
        os.remove(path)
        with patched(config, "json", OldJson()):
            for cut in truncations(full):
                write(path + ".tmp", full[:cut])
                cfg = Config.load(path)
                assert cfg.to_dict(secrets=True) == defaults, cut
                assert not exists(path) and not exists(path + ".tmp"), cut


def test_malformed_objects_that_micropython_json_accepts_are_refused():
    # MicroPython's json.loads (v1.28 too) skips "," and ":" and takes "]" for "}".
    cases = (
        b'{"interval_s": 30 "device_id": "x"}',
        b'{"interval_s" 30}',
        b'{"interval_s": 30,}',
        b'{"interval_s": 30,, "device_id": "x"}',
        b'{"interval_s": 30]',
        b'{"interval_s": 30}\n{"interval_s": 40}',
        b'{"interval_s": 30} x',
        b'{"interval_s": "3\x010"}',
    )
    with TempDir() as d:
        path = d + "/config.json"
        for data in cases:
            write(path, data)
            cfg = Config.load(path)
            assert cfg.load_error and cfg["interval_s"] == 60, data
            assert read(path) == data, data


def test_structure_check_reasons():
    problem = config.json_object_problem
    assert problem(b' {"a": [1, {"b": null}], "c": "}\\"\\\\"}\r\n') is None
    assert problem(b"{}") is None
    assert "truncated" in problem(b'{"a": [1')
    assert "truncated" in problem(b'{"a": "x')
    assert "not a JSON object" in problem(b"[1]")
    assert "no JSON object" in problem(b"  ")
    assert "after the object" in problem(b"{} {}")
    assert "byte 7" in problem(b'{"a": 1]')


def test_boot_leaves_every_truncated_config_for_inspection():
    # app.run() stores the loaded config back in canonical form (normalise_config); from a
    # half-loaded file that would make the loss permanent.
    from tracker.app import normalise_config

    with TempDir() as d:
        path = d + "/config.json"
        changed_config().save(path)
        full = read(path)
        with patched(config, "json", OldJson()):
            for cut in truncations(full):
                write(path, full[:cut])
                normalise_config(Config.load(path), path)
                assert read(path) == full[:cut], cut
            write(path, b'{"interval_s": 30 "device_id": "x"}')
            normalise_config(Config.load(path), path)
            assert read(path) == b'{"interval_s": 30 "device_id": "x"}'
