# The AT engine on MicroPython before v1.25, where str.startswith/endswith take one str
# only (tracker/compat.py): lines are made StrictStr, which refuses what those releases
# refuse. CPython (pytest) and the Unix port.
from fake_uart import FakeUart
from mptest import run
from old_mp import StrictStr, strict_lines

from tracker import log
from tracker.aio import sleep_ms
from tracker.modem import at_lines as L
from tracker.modem.at import AtEngine

log.echo = False


def test_strict_str_behaves_like_micropython_before_1_25():
    s = StrictStr("OKRDY")
    assert s.startswith("OK") and s.startswith("RDY", 2) and not s.startswith("X")
    assert s.endswith("DY") and not s.endswith("OK")
    for call in (lambda: s.startswith(("OK", "X")), lambda: s.endswith(("DY",))):
        try:
            call()
        except TypeError:
            continue
        raise AssertionError("a tuple was accepted")


def test_line_classifier_with_one_prefix_per_startswith():
    for line in ("RDY", '+QIURC: "closed",0', "+CIPRXGET: 1,0"):
        assert L.is_urc(StrictStr(line)), line
    assert not L.is_urc(StrictStr("+CIPRXGET: 2,0,5,0"))
    assert L.classify(StrictStr("OK ")) == L.OK
    assert L.classify(StrictStr("+CME ERROR: 10")) == L.CME
    # a final glued to an echo, to a "+..." line and to a URC without "+"
    assert L.split_glued(StrictStr("SEND OKAT+QIRD=0,0")) == 7
    assert L.split_glued(StrictStr("OKat+csq")) == 2
    assert L.split_glued(StrictStr('OK+QIURC: "recv",0')) == 2
    assert L.split_glued(StrictStr("OKRDY")) == 2
    assert L.split_glued(StrictStr("OKAY")) == 0
    assert L.starts_any(StrictStr("xxAT"), ("at", "AT"), 2)
    assert not L.starts_any(StrictStr("xxAT"), ("at", "AT"), 3)


def test_assembler_splits_glued_lines_made_of_strict_strs():
    events = []
    asm = L.LineAssembler(lambda kind, value: events.append((kind, value)))
    with strict_lines():
        asm.feed(b"SEND OKAT+QIRD=0,0\r\nOKRDY\r\n+CSQ: 20,99\r\n")
    assert [v for _, v in events] == ["SEND OK", "AT+QIRD=0,0", "OK", "RDY", "+CSQ: 20,99"]
    assert type(events[-1][1]) is StrictStr  # the patch reached the assembler


def test_engine_with_one_prefix_per_startswith():
    # A tuple `expect` selects the command's lines; a final glued to a URC neither loses
    # the URC nor kills the reader task (the next command is still answered).
    async def t():
        u = FakeUart()
        e = AtEngine(u, default_timeout_ms=500)
        boots = []
        e.on_urc("RDY", boots.append)
        e.start()
        try:
            u.when("AT+CSUB", "\r\nSubEdition: V02\r\n+CVERSION: x\r\n\r\nOK\r\n")
            r = await e.cmd("AT+CSUB;+CVERSION", expect=("SubEdition", "+CVERSION"))
            assert r.lines == ["SubEdition: V02", "+CVERSION: x"], r.lines
            u.when("AT+CFUN=1,1", "\r\nOKRDY\r\n")
            assert (await e.cmd("AT+CFUN=1,1")).final == "OK"
            u.when("AT+CSQ", "\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
            assert (await e.cmd("AT+CSQ")).lines == ["+CSQ: 20,99"]
            assert boots == ["RDY"]
            assert e.counters["handler_errors"] == 0 and e.counters["read_errors"] == 0
        finally:
            e.stop()
            await sleep_ms(0)

    with strict_lines():
        run(t())
