# Pure AT-stream logic: an incremental line assembler over raw UART bytes and the
# classifier/parsers for the lines it produces. No I/O, no asyncio: the AT engine (at.py)
# feeds it what the UART delivered, in whatever pieces the UART delivered it.
#
# Wire facts it relies on (3GPP 27.007 section 4, plus SIMCom/Quectel socket manuals):
# - lines end in CR LF (V1 mode); echo lines end in CR only ("AT\r\r\nOK\r\n");
# - the data prompt "> " and SIMCom's "DOWNLOAD" arrive WITHOUT a line end, and the modem
#   then waits, so "no more bytes in this read" is the only end marker they have;
# - received socket data ("+CIPRXGET: 2,0,<n>,<left>" / "+QIRD: <n>") is n raw bytes after
#   the header's CR LF and may hold CR, LF, "OK" or ">": the consumer says how many bytes
#   are raw (expect_raw) and they bypass line parsing.
from tracker.aio import const

LINE = const(1)  # value: str, one line without CR/LF
PROMPT = const(2)  # value: ">" or "DOWNLOAD"
RAW = const(3)  # value: bytearray/memoryview with the raw payload (see expect_raw)

# Kinds returned by classify().
INFO = const(0)  # an information line or a URC
OK = const(1)
ERROR = const(2)
CME = const(3)
CMS = const(4)
SEND_OK = const(5)
SEND_FAIL = const(6)
NO_CARRIER = const(7)
CONNECT = const(8)

_CR = const(13)
_LF = const(10)
_SP = const(32)
_GT = const(62)
_QM = const(63)  # "?" replaces unprintable bytes inside a line

# Unsolicited result codes of the families we support (MODEMS.md; SIMCom and Quectel AT
# manuals; the corpus). A line starting with one of these is never taken as the value line
# of a command in flight unless it carries that command's own "+XYZ:" prefix.
URC_PREFIXES = (
    # boot banners and power
    "RDY",
    "APP RDY",
    "*ATREADY",
    "SMS DONE",
    "PB DONE",
    "POWERED DOWN",
    "NORMAL POWER DOWN",
    "UNDER-VOLTAGE",
    "OVER-VOLTAGE",
    "+CPIN:",
    "+CFUN:",
    "+QIND:",
    "+QUSIM:",
    "+QSIMSTAT:",
    # network and time
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+CGEV:",
    "+CPSI:",
    "*PSUTTZ",
    "DST:",
    "+CTZV:",
    "+CTZE:",
    "+CTZU:",
    "+APP PDP:",
    # sockets, MQTT, ping (late results of commands that already said OK)
    "+NETOPEN:",
    "+NETCLOSE:",
    "+CIPOPEN:",
    "+CIPSEND:",
    "+CIPCLOSE:",
    "+CIPRXGET: 1",
    "+IPCLOSE:",
    "+CIPEVENT:",
    "+CAOPEN:",
    "+CASEND:",
    "+CADATAIND:",
    "+CASTATE:",
    "+QIOPEN:",
    "+QIURC:",
    "+QMTOPEN:",
    "+QMTCONN:",
    "+QMTSTAT:",
    "+QMTRECV:",
    "+QMTPUB:",
    "+CMQTTSTART:",
    "+CMQTTCONNECT:",
    "+CMQTTCONNLOST:",
    "+CMQTTRX",
    "+CPING:",
    "+QPING:",
    # SMS, calls, GNSS
    "+CMTI:",
    "+CMT:",
    "+CDS:",
    "+CUSD:",
    "RING",
    "+CLIP:",
    "+CGNSSPWR:",
    "+UGNSINF:",
    "+QGPSURC:",
)

# Lines a modem prints right before the ERROR final of the command in flight, saying why:
# they belong to that command whatever its own prefix ("+IP ERROR: <err_info>", SIMCom
# TCP/IP AT manual; corpus sim7600-http-setup-ip-error).
ERROR_INFO = ("+IP ERROR:",)

# Commands whose answer is free text like ATI's, never lines with their own "+XYZ:" prefix:
# every non-URC line belongs, "+GCAP: ..." included (SIMCom AT manual, AT+SIMCOMATI; corpus
# a7670-gnss-cgnssinfo-nofix-then-fix).
_TEXT_ANSWERS = ("+SIMCOMATI",)

_FINAL_TOKENS = ("SEND OK", "SEND FAIL", "NO CARRIER", "ERROR", "OK")
_AT = ("AT", "at")


def starts_any(line, prefixes, start=0):
    """Whether line[start:] begins with `prefixes` (one str) or with any str in it (a tuple
    or list). str.startswith takes a tuple only from MicroPython v1.25 (tracker/compat.py);
    before, it raises TypeError: the line would be lost, or the AT reader task killed."""
    if isinstance(prefixes, str):
        return line.startswith(prefixes, start)
    for p in prefixes:
        if line.startswith(p, start):
            return True
    return False


def is_urc(line):
    return starts_any(line, URC_PREFIXES)


def classify(line):
    """The final-result kind of a line (OK, ERROR, CME, ...) or INFO for anything else."""
    if line.endswith(" "):
        line = line.rstrip()
    if line == "OK":
        return OK
    if line == "ERROR":
        return ERROR
    if line.startswith("+CME ERROR"):
        return CME
    if line.startswith("+CMS ERROR"):
        return CMS
    if line == "SEND OK":
        return SEND_OK
    if line == "SEND FAIL":
        return SEND_FAIL
    if line == "NO CARRIER":
        return NO_CARRIER
    if line.startswith("CONNECT") and (len(line) == 7 or line[7] == " "):
        return CONNECT
    return INFO


def _int_or_none(s):
    if not s:
        return None
    i = 1 if s[0] in "+-" else 0
    if i == len(s):
        return None
    for c in s[i:]:
        if c < "0" or c > "9":
            return None
    return int(s)


def error_code(line):
    """`+CME ERROR: 10` -> 10; `+CME ERROR: SIM failure` -> "SIM failure" (verbose mode,
    AT+CMEE=2, or modems that ignore CMEE=1); a bare `+CME ERROR` -> ""."""
    i = line.find(":")
    if i < 0:
        return ""
    text = line[i + 1 :].strip()
    n = _int_or_none(text)
    return text if n is None else n


def _value(tok):
    tok = tok.strip()
    if len(tok) >= 2 and tok[0] == '"' and tok[-1] == '"':
        return tok[1:-1]
    n = _int_or_none(tok)
    return tok if n is None else n


def params(line):
    """`+XYZ: a,"b,c",3` -> ["a", "b,c", 3]. Commas inside quotes or parentheses do not
    split; quotes are removed; decimal integers become int, everything else stays str
    (floats, hex "0x775C", empty fields "")."""
    start = 0
    if line and line[0] in "+*^$%#":
        i = line.find(":")
        if i > 0:
            start = i + 1
    out = []
    quoted = False
    depth = 0
    s = start
    for i in range(start, len(line)):
        c = line[i]
        if c == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1 if depth else 0
        elif c == "," and not depth:
            out.append(_value(line[s:i]))
            s = i + 1
    out.append(_value(line[s:]))
    return out


def cmd_prefix(cmd):
    """The `+XYZ` a command's information lines start with: AT+CSQ -> "+CSQ",
    at+cgact=? -> "+CGACT", AT+CSUB;+CVERSION -> "+CSUB"; None for ATI, AT&F, ATE0 and
    the free-text answers (AT+SIMCOMATI)."""
    if len(cmd) > 3 and cmd[0] in "aA" and cmd[1] in "tT" and cmd[2] in "+^*%$#":
        end = len(cmd)
        for ch in "=?;":
            j = cmd.find(ch, 3)
            if 0 <= j < end:
                end = j
        p = cmd[2:end].strip().upper()
        return p if len(p) > 1 and p not in _TEXT_ANSWERS else None
    return None


def split_glued(line):
    """Where a final result code is glued to the next line ("SEND OKAT+QIRD=0,0",
    "OK+QIURC: ...") the index to split at, else 0."""
    for tok in _FINAL_TOKENS:
        if line.startswith(tok) and len(line) > len(tok):
            k = len(tok)
            c = line[k]
            if c in "+*^" or starts_any(line, _AT, k) or starts_any(line, URC_PREFIXES, k):
                return k
            return 0
    return 0


def _printable(b):
    return 32 <= b < 127 or b == 9


class LineAssembler:
    """Turns UART bytes, split anywhere, into events sink(kind, value) with kind LINE,
    PROMPT or RAW. Memory is one preallocated line buffer of max_line bytes (longer lines
    are truncated and counted), plus the raw buffer the consumer hands to expect_raw.
    Empty lines are skipped; unprintable bytes never raise: leading/trailing ones are
    dropped, inner ones become "?", and the line is counted in counters["garbage_lines"]."""

    def __init__(self, sink, max_line=512, counters=None):
        self._sink = sink
        self.max_line = max_line
        self._buf = bytearray(max_line)
        self._mv = memoryview(self._buf)
        self._n = 0
        self._dirty = False  # the current line had unprintable bytes
        self._over = False  # the current line overflowed the buffer
        self._cr = False  # the last byte was CR (its LF may follow in a later read)
        self._swallow_sp = False  # a ">" prompt was emitted; its space may come next
        self._raw_left = self._raw_total = 0
        self._raw_buf = None
        self._raw_n = 0
        self._raw_fresh = False
        c = {} if counters is None else counters
        for k in ("garbage_lines", "overlong_lines", "raw_truncated"):
            if k not in c:
                c[k] = 0
        self.counters = c

    @property
    def buffered(self):
        """Bytes held for an unfinished line (never more than max_line)."""
        return self._n

    @property
    def raw_left(self):
        return self._raw_left

    def expect_raw(self, n, buf=None):
        """The next n bytes are payload. They are stored into buf (a bytearray; bytes
        beyond its size are consumed but dropped and counted) or, without buf, into a new
        bytearray(n). Call it from the sink while handling the header line."""
        if n <= 0:
            self._sink(RAW, b"")
            return
        self._raw_left = self._raw_total = n
        self._raw_buf = bytearray(n) if buf is None else buf
        self._raw_n = 0
        self._raw_fresh = True

    def cancel_raw(self):
        self._raw_left = 0
        self._raw_buf = None

    def reset(self):
        self._n = 0
        self._dirty = self._over = self._cr = self._swallow_sp = False
        self.cancel_raw()

    def feed(self, data, n=-1):
        """Consume the first n bytes of data (all of it by default)."""
        if n < 0:
            n = len(data)
        buf = self._buf
        i = 0
        while i < n:
            if self._raw_left:
                i = self._feed_raw(data, i, n)
                continue
            b = data[i]
            i += 1
            if b == _CR or b == _LF:
                self._cr = b == _CR
                self._swallow_sp = False
                if self._n or self._dirty or self._over:
                    self._end_line()
                continue
            self._cr = False
            if self._swallow_sp:
                self._swallow_sp = False
                if b == _SP:
                    continue
            k = self._n
            if k == 0 and not _printable(b):
                self._dirty = True  # reset noise before a line: drop it
                continue
            if k >= self.max_line:
                self._over = True
                continue
            buf[k] = b
            self._n = k + 1
            if k == 1 and b == _SP and buf[0] == _GT:
                self._n = 0  # "> " at the start of a line is the data prompt
                self._dirty = False
                self._sink(PROMPT, ">")
        # A prompt has no line end: it is recognised when a read ends right after it.
        if self._raw_left == 0 and not self._over:
            k = self._n
            if k == 1 and buf[0] == _GT:
                self._n = 0
                self._swallow_sp = True
                self._dirty = False
                self._sink(PROMPT, ">")
            elif k == 8 and buf[:8] == b"DOWNLOAD":
                self._n = 0
                self._dirty = False
                self._sink(PROMPT, "DOWNLOAD")

    def _feed_raw(self, data, i, n):
        if self._raw_fresh:
            self._raw_fresh = False
            if self._cr and data[i] == _LF:
                self._cr = False  # the LF of the header's CR LF is not payload
                return i + 1
        self._cr = False
        take = min(self._raw_left, n - i)
        rb = self._raw_buf
        c = min(take, len(rb) - self._raw_n)
        if c > 0:
            rb[self._raw_n : self._raw_n + c] = data[i : i + c]
            self._raw_n += c
        self._raw_left -= take
        if self._raw_left == 0:
            got = self._raw_n
            if got < self._raw_total:
                self.counters["raw_truncated"] += 1
            self._raw_buf = None
            self._sink(RAW, rb if got == len(rb) else memoryview(rb)[:got])
        return i + take

    def _end_line(self):
        buf = self._buf
        n = self._n
        dirty = self._dirty
        while n and not _printable(buf[n - 1]):
            n -= 1
            dirty = True
        for j in range(n):
            if not _printable(buf[j]):
                buf[j] = _QM
                dirty = True
        if dirty:
            self.counters["garbage_lines"] += 1
        if self._over:
            self.counters["overlong_lines"] += 1
        self._n = 0
        self._dirty = self._over = False
        if n == 0:
            return
        line = str(self._mv[:n], "ascii")
        if line == ">" or line == "> ":
            self._sink(PROMPT, ">")
        elif line == "DOWNLOAD":
            self._sink(PROMPT, line)
        else:
            k = split_glued(line)
            if k:
                self._sink(LINE, line[:k])
                line = line[k:]
            self._sink(LINE, line)
