# The oldest supported MicroPython (tracker/compat.py): the version check and the app's
# refusal to start below it. CPython (pytest) and the Unix port.
from old_mp import patched

from tracker import compat, log

log.echo = False
MIN = compat.MIN_MICROPYTHON


# -- the version check --


def test_too_old_micropython_is_named_with_the_minimum_in_one_line():
    msg = compat.problem((1, 21, 0), "micropython")  # 3 items, as before v1.22
    assert msg and "\n" not in msg
    assert "1.21.0" in msg and compat.version_text(MIN) in msg
    assert "not started" in msg
    older = (MIN[0], MIN[1] - 1, 9, "")  # 4 items, as since v1.22: the minor version counts
    msg = compat.problem(older, "micropython")
    assert msg is not None and compat.version_text(older) in msg and "not started" in msg


def test_minimum_and_newer_micropython_are_fine():
    assert compat.problem(MIN, "micropython") is None
    assert compat.problem(tuple(MIN) + ("",), "micropython") is None
    assert compat.problem((MIN[0], MIN[1] + 6, 0, ""), "micropython") is None
    assert compat.problem((2, 0, 0, "preview"), "micropython") is None


def test_cpython_and_this_interpreter_have_no_problem():
    assert compat.problem((3, 11, 7), "cpython") is None
    assert compat.problem() is None  # the interpreter these tests run on


def test_app_is_not_started_on_a_too_old_micropython():
    from tracker import app

    def no_board():
        raise AssertionError("the app started on a MicroPython older than the minimum")

    with patched(compat, "problem", lambda: "MicroPython 1.21.0 is too old (test)"):
        with patched(app, "load_board", no_board):
            assert app.run() is None
    assert log.recent()[-1][1:] == ("E", "app", "MicroPython 1.21.0 is too old (test)")
