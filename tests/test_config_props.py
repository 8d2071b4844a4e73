"""Property tests for the firmware config schema and persistence (CPython only)."""

import json
import math
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))

from tracker import config, log  # noqa: E402
from tracker.config import SCHEMA, Config, ConfigError  # noqa: E402

log.echo = False
KEYS = [k.name for k in SCHEMA]
DOC = {d["key"]: d for d in config.schema_doc()}
NUMERIC_KEYS = [k for k in KEYS if DOC[k]["type"] in ("int", "float")]
CHECKED_EXAMPLES = {
    "geofences": ["", "depot:c:48.8566,2.3522,500", "a:c:0,0,1;b:p:1,1 1,2 2,2"],
}

# tmp_path is reused across hypothesis examples on purpose: each example overwrites the file.
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def valid_value(doc: dict) -> st.SearchStrategy:
    """Values the schema allows, built from the published doc rather than the parser."""
    if doc["enum"]:
        return st.sampled_from(doc["enum"])
    if config.key(doc["key"]).check is not None:
        # A format beyond the characters (geofences): valid text is not a random string.
        return st.sampled_from(CHECKED_EXAMPLES.get(doc["key"], [doc["default"]]))
    if doc["type"] == "int":
        return st.integers(doc["min"], doc["max"])
    if doc["type"] == "float":
        return st.floats(doc["min"], doc["max"], allow_nan=False, allow_infinity=False)
    if doc["type"] == "bool":
        return st.booleans()
    alphabet = st.from_regex(re.compile(f"[{doc['chars']}]"), fullmatch=True)
    return st.lists(alphabet, min_size=doc["min_len"], max_size=doc["max_len"]).map("".join)


def assert_allowed(name: str, value: object) -> None:
    """Check a stored value against the published schema doc, independently of config.py."""
    doc = DOC[name]
    kind = {"str": str, "int": int, "float": float, "bool": bool}[doc["type"]]
    assert type(value) is kind, (name, value)
    if doc["enum"]:
        assert value in doc["enum"]
    elif kind is str:
        assert doc["min_len"] <= len(value) <= doc["max_len"]
        assert re.fullmatch(f"[{doc['chars']}]*", value), (name, value)
    elif kind in (int, float):
        assert math.isfinite(value)
        assert doc["min"] <= value <= doc["max"], (name, value)


@SETTINGS
@given(data=st.binary(max_size=600))
def test_any_bytes_as_config_file_load_without_raising(tmp_path, data):
    path = tmp_path / "config.json"
    path.write_bytes(data)
    cfg = Config.load(str(path))
    for name in KEYS:
        assert_allowed(name, cfg[name])


@SETTINGS
@given(
    values=st.dictionaries(
        st.sampled_from(KEYS + ["unknown", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=40),
            st.lists(st.integers(), max_size=3),
        ),
    )
)
def test_any_json_object_loads_to_allowed_values(tmp_path, values):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    cfg = Config.load(str(path))
    # NaN and Infinity are not JSON (RFC 8259): MicroPython's json refuses them, and so does
    # the firmware's structure check on every interpreter; any other object loads.
    finite = all(not isinstance(v, float) or math.isfinite(v) for v in values.values())
    assert (cfg.load_error is None) == finite, cfg.load_error
    for name in KEYS:
        assert_allowed(name, cfg[name])


@SETTINGS
@given(values=st.fixed_dictionaries({d["key"]: valid_value(d) for d in DOC.values()}))
def test_valid_values_round_trip_through_save_and_load(tmp_path, values):
    path = str(tmp_path / "config.json")
    cfg = Config()
    cfg.update(values)
    cfg.save(path)
    back = Config.load(path)
    assert back.load_error is None and back.load_warnings == []
    assert back.to_dict(secrets=True) == values


@SETTINGS
@given(name=st.sampled_from(KEYS), text=st.text(max_size=50))
def test_set_from_any_string_gives_allowed_value_or_config_error(name, text):
    cfg = Config()
    try:
        stored = cfg.set(name, text)
    except ConfigError as err:
        assert err.key == name
        assert str(err).startswith(name + ": ")
        assert cfg[name] == DOC[name]["default"]  # a rejected set changes nothing
        return
    assert stored == cfg[name]
    assert_allowed(name, stored)


@SETTINGS
@given(
    name=st.sampled_from(NUMERIC_KEYS),
    # What a technician types: ASCII digits, optional sign, fraction, exponent and spaces.
    text=st.from_regex(
        r" ?[-+]?([0-9]{1,6}(\.[0-9]{0,4})?|\.[0-9]{1,4})([eE][-+]?[0-9]{1,3})? ?", fullmatch=True
    ),
)
def test_numeric_strings_parse_like_python_numbers(name, text):
    doc = DOC[name]
    number = float(text)
    fits = math.isfinite(number) and doc["min"] <= number <= doc["max"]
    if doc["type"] == "int":
        fits = fits and number == int(number)
    cfg = Config()
    if fits:
        assert cfg.set(name, text) == number
    else:
        with pytest.raises(ConfigError):
            cfg.set(name, text)


# -- strict structure: a cut or malformed config.json is refused whole (tracker/compat.py) --

LAYOUTS = st.sampled_from(
    [{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False, "indent": "\t"}]
)


def json_objects(strings: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """JSON objects nested a few levels, with keys and strings from `strings`."""
    if strings is None:
        strings = st.text(max_size=8)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(-1e9, 1e9) | strings
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
        max_leaves=10,
    )
    return st.dictionaries(strings, values, max_size=5)


@SETTINGS
@given(obj=json_objects(), layout=LAYOUTS, pad=st.sampled_from(["", "\n", " \r\n\t"]))
def test_structure_check_accepts_every_json_object(obj, layout, pad):
    text = pad + json.dumps(obj, **layout) + pad
    assert config.json_object_problem(text.encode()) is None, text


@SETTINGS
@given(obj=json_objects(), layout=LAYOUTS, data=st.data())
def test_structure_check_refuses_every_cut(obj, layout, data):
    text = json.dumps(obj, **layout).encode()
    cut = data.draw(st.integers(0, len(text) - 1), label="cut")
    assert config.json_object_problem(text[:cut]) is not None


@SETTINGS
@given(
    obj=json_objects(),
    layout=LAYOUTS,
    # Something besides JSON whitespace (trailing whitespace is allowed, checked above).
    tail=st.text(min_size=1, max_size=5).filter(lambda t: t.strip(" \t\r\n")),
)
def test_structure_check_refuses_anything_after_the_object(obj, layout, tail):
    text = json.dumps(obj, **layout) + "\n" + tail
    assert config.json_object_problem(text.encode()) is not None


# Strings without structural characters, so every one of them in the text is structural.
PLAIN = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters='{}[],:"\\'), max_size=6
)


@SETTINGS
@given(obj=json_objects(PLAIN).filter(bool), layout=LAYOUTS, data=st.data())
def test_structure_check_refuses_a_lost_bracket_colon_or_object_comma(obj, layout, data):
    # MicroPython's json.loads accepts most of these (it skips "," and ":").
    text = json.dumps(obj, **layout)
    open_ = []
    lost = []
    for i, ch in enumerate(text):
        if ch in "{[":
            open_.append(ch)
        elif ch in "}]":
            open_.pop()
        if ch in "{}[]:" or (ch == "," and open_[-1] == "{"):
            lost.append(i)
    i = data.draw(st.sampled_from(lost), label="position")
    assert config.json_object_problem((text[:i] + text[i + 1 :]).encode()) is not None


@SETTINGS
@given(text=st.text(alphabet='{}[],: "a1tn', max_size=24))
def test_what_the_structure_check_accepts_cpython_parses_as_an_object(text):
    if config.json_object_problem(text.encode()) is None:
        assert isinstance(json.loads(text), dict), text


@SETTINGS
@given(
    values=st.fixed_dictionaries({d["key"]: valid_value(d) for d in DOC.values()}), data=st.data()
)
def test_a_cut_config_file_is_refused_and_left_alone(tmp_path, values, data):
    path = str(tmp_path / "config.json")
    cfg = Config()
    cfg.update(values)
    cfg.save(path)
    full = Path(path).read_bytes()
    cut = data.draw(st.integers(0, full.rindex(b"}")), label="cut")
    Path(path).write_bytes(full[:cut])
    back = Config.load(path)
    assert back.load_error and back.to_dict(secrets=True) == Config().to_dict(secrets=True)
    assert Path(path).read_bytes() == full[:cut]
