# Line assembler and classifier tests; run under CPython (pytest) and the Unix port.
from tracker.modem import at_lines as L
from tracker.modem.at_lines import LINE, PROMPT, RAW, LineAssembler

# A realistic SIMCom exchange with echo on: a command, a URC in the middle of its answer,
# a glued URC after the final, a prompt, an answer after the prompt.
EXCHANGE = (
    b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\n+CGEV: ME PDN ACT 1\r\n\r\nOK\r\n"
    b'+QIURC: "recv",0\r\n'
    b"AT+CIPSEND=0,5\r\r\n> "
)
EXPECTED = [
    (LINE, "AT+CSQ"),
    (LINE, "+CSQ: 20,99"),
    (LINE, "+CGEV: ME PDN ACT 1"),
    (LINE, "OK"),
    (LINE, '+QIURC: "recv",0'),
    (LINE, "AT+CIPSEND=0,5"),
    (PROMPT, ">"),
]


class Collector:
    def __init__(self, max_line=512, raw_after=None, raw_n=0, raw_buf=None):
        self.events = []
        self.raw_after = raw_after
        self.raw_n = raw_n
        self.raw_buf = raw_buf
        self.asm = LineAssembler(self.sink, max_line)

    def sink(self, kind, value):
        if kind == RAW:
            value = bytes(value)
        self.events.append((kind, value))
        if kind == LINE and self.raw_after and value.startswith(self.raw_after):
            self.asm.expect_raw(self.raw_n, self.raw_buf)


def feed_pieces(col, data, cuts):
    last = 0
    for c in list(cuts) + [len(data)]:
        col.asm.feed(data[last:c])
        last = c
    return col.events


def test_whole_exchange():
    assert feed_pieces(Collector(), EXCHANGE, []) == EXPECTED


def test_every_single_split_gives_the_same_events():
    for k in range(1, len(EXCHANGE)):
        got = feed_pieces(Collector(), EXCHANGE, [k])
        assert got == EXPECTED, "split at %d: %r" % (k, got)


def test_byte_by_byte():
    col = Collector()
    for i in range(len(EXCHANGE)):
        col.asm.feed(EXCHANGE[i : i + 1])
    assert col.events == EXPECTED


def test_every_pair_of_splits_on_a_short_answer():
    data = b"\r\n+CPIN: READY\r\n\r\nOK\r\n"
    want = [(LINE, "+CPIN: READY"), (LINE, "OK")]
    for a in range(1, len(data)):
        for b in range(a, len(data)):
            assert feed_pieces(Collector(), data, [a, b]) == want, (a, b)


def test_feed_counts_only_n_bytes_of_a_reused_buffer():
    col = Collector()
    buf = bytearray(b"OK\r\nXXXXXXXX")
    col.asm.feed(buf, 4)
    assert col.events == [(LINE, "OK")]
    assert col.asm.buffered == 0


def test_prompt_forms():
    for data in (b"\r\n> ", b"\r\n>", b">", b"> \r\n"):
        assert feed_pieces(Collector(), data, []) == [(PROMPT, ">")], data
    # ">" then its space in the next read: one prompt, and the space is not a line
    col = Collector()
    feed_pieces(col, b"\r\n>", [])
    col.asm.feed(b" ")
    col.asm.feed(b"\r\nSEND OK\r\n")
    assert col.events == [(PROMPT, ">"), (LINE, "SEND OK")]


def test_prompt_followed_by_urc_without_line_end():
    got = feed_pieces(Collector(), b"\r\n> +CIPRXGET: 1,0\r\n", [])
    assert got == [(PROMPT, ">"), (LINE, "+CIPRXGET: 1,0")]


def test_greater_than_inside_a_line_is_not_a_prompt():
    got = feed_pieces(Collector(), b"a>b\r\n>-----BEGIN\r\n", [])
    assert got == [(LINE, "a>b"), (LINE, ">-----BEGIN")]


def test_download_prompt():
    assert feed_pieces(Collector(), b"\r\nDOWNLOAD", []) == [(PROMPT, "DOWNLOAD")]
    assert feed_pieces(Collector(), b"\r\nDOWNLOAD\r\n", []) == [(PROMPT, "DOWNLOAD")]


def test_glued_final_and_next_line_are_split():
    got = feed_pieces(Collector(), b'SEND OKAT+QIRD=0,0\r\nOK+QIURC: "recv",0\r\nOKAY\r\n', [])
    assert got == [
        (LINE, "SEND OK"),
        (LINE, "AT+QIRD=0,0"),
        (LINE, "OK"),
        (LINE, '+QIURC: "recv",0'),
        (LINE, "OKAY"),
    ]


def test_raw_payload_bypasses_line_parsing_at_every_split():
    payload = b"ab\r\nOK\r\n> \r\n+QIURC: x\rz"
    data = ("\r\n+QIRD: %d\r\n" % len(payload)).encode() + payload + b"\r\nOK\r\n"
    want = [(LINE, "+QIRD: %d" % len(payload)), (RAW, payload), (LINE, "OK")]
    for k in range(1, len(data)):
        col = Collector(raw_after="+QIRD:", raw_n=len(payload))
        assert feed_pieces(col, data, [k]) == want, k


def test_raw_payload_starting_with_lf_after_a_cr_terminated_header():
    payload = b"\n\nX"
    col = Collector(raw_after="+CIPRXGET: 2", raw_n=3)
    feed_pieces(col, b"+CIPRXGET: 2,0,3,0\r\n" + payload + b"\r\nOK\r\n", [19])
    assert col.events[1] == (RAW, payload)


def test_raw_into_small_buffer_is_truncated_and_counted():
    col = Collector(raw_after="+QIRD:", raw_n=6, raw_buf=bytearray(4))
    feed_pieces(col, b"+QIRD: 6\r\nabcdef\r\nOK\r\n", [])
    assert col.events == [(LINE, "+QIRD: 6"), (RAW, b"abcd"), (LINE, "OK")]
    assert col.asm.counters["raw_truncated"] == 1


def test_overlong_line_is_truncated_counted_and_memory_stays_bounded():
    col = Collector(max_line=16)
    size = len(col.asm._buf)
    col.asm.feed(b"+X: " + b"9" * 1000)
    assert col.asm.buffered <= 16
    col.asm.feed(b"\r\nOK\r\n")
    assert col.events == [(LINE, "+X: 999999999999"), (LINE, "OK")]
    assert col.asm.counters["overlong_lines"] == 1
    assert len(col.asm._buf) == size


def test_garbage_never_raises_and_is_counted():
    col = Collector()
    col.asm.feed(b"\x00\xff\xfe\r\n\xff\x00RDY\xff\r\n+CSQ: \xc3\x28 1\r\n\x00\x00\x00\r\nOK\r\n")
    assert col.events == [(LINE, "RDY"), (LINE, "+CSQ: ?( 1"), (LINE, "OK")]
    assert col.asm.counters["garbage_lines"] == 4


def test_reset_drops_a_half_line():
    col = Collector()
    col.asm.feed(b"+CPIN: RE")
    col.asm.reset()
    col.asm.feed(b"OK\r\n")
    assert col.events == [(LINE, "OK")]


def test_classify():
    c = L.classify
    assert c("OK") == L.OK and c("OK ") == L.OK
    assert c("ERROR") == L.ERROR
    assert c("+CME ERROR: 10") == L.CME and c("+CME ERROR: SIM failure") == L.CME
    assert c("+CMS ERROR: 500") == L.CMS
    assert c("SEND OK") == L.SEND_OK and c("SEND FAIL") == L.SEND_FAIL
    assert c("NO CARRIER") == L.NO_CARRIER
    assert c("CONNECT") == L.CONNECT and c("CONNECT 115200") == L.CONNECT
    for info in ("OKAY", "+CSQ: 1,2", "CONNECTED", "+IP ERROR: Network not opened", "RDY"):
        assert c(info) == L.INFO, info


def test_error_code_numeric_and_verbose():
    assert L.error_code("+CME ERROR: 10") == 10
    assert L.error_code("+CME ERROR:23") == 23
    assert L.error_code("+CMS ERROR: 500") == 500
    assert L.error_code("+CME ERROR: SIM failure") == "SIM failure"
    text = "requested service option not subscribed (#33)"
    assert L.error_code("+CME ERROR: " + text) == text
    assert L.error_code("+CME ERROR") == ""


def test_params():
    p = L.params
    assert p('+XYZ: a,"b,c",3') == ["a", "b,c", 3]
    assert p("+CSQ: 20,99") == [20, 99]
    assert p("+CGNSSINFO: ,,,") == ["", "", "", ""]
    assert p('+QIURC: "recv",0') == ["recv", 0]
    assert p("+CGACT: (0,1)") == ["(0,1)"]
    assert p("+CPSI: LTE,Online,460-11,0x775C,-84") == ["LTE", "Online", "460-11", "0x775C", -84]
    assert p("+CGNSINF: 1,,44.06") == [1, "", "44.06"]
    assert p("0,1") == [0, 1]
    assert p('+CCLK: "24/01/02,03:04:05+08"') == ["24/01/02,03:04:05+08"]


def test_cmd_prefix():
    assert L.cmd_prefix("AT+CSQ") == "+CSQ"
    assert L.cmd_prefix("at+cgact=?") == "+CGACT"
    assert L.cmd_prefix("AT+CPIN?") == "+CPIN"
    assert L.cmd_prefix('AT+QIOPEN=1,0,"TCP"') == "+QIOPEN"
    assert L.cmd_prefix("AT+CSUB;+CVERSION") == "+CSUB"
    assert L.cmd_prefix("AT^DSCI=1") == "^DSCI"
    for none in ("AT", "ATI", "AT&FZE0", "ATE0", "AT+", "AT+SIMCOMATI", "at+simcomati"):
        assert L.cmd_prefix(none) is None, none


def test_is_urc():
    assert L.is_urc("RDY") and L.is_urc('+QIURC: "closed",0') and L.is_urc("+CIPRXGET: 1,0")
    assert not L.is_urc("+CIPRXGET: 2,0,5,0") and not L.is_urc("862771076818015")
