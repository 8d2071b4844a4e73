# The console's line editor (pure logic: bytes in, text out through `write`).
#
# It echoes what is typed, edits (Backspace, Ctrl-U, Ctrl-W), recalls the last lines
# (Up/Down), can draw the line again after someone else printed (log lines), masks secrets
# as they are typed, and tells text from line noise. Only printable ASCII goes into a line:
# every config value and command is printable ASCII, and anything else is either a key we
# handle or noise (a terminal at the wrong baud rate, a loose cable).
from tracker.aio import ticks_diff, ticks_ms

CR = 13
LF = 10
BS = 8
DEL = 127
TAB = 9
ESC = 27
CTRL_C = 3
CTRL_U = 21
CTRL_W = 23

MAX_LINE = 480
HISTORY = 8
NOISE_HOLD_MS = 2000  # a Ctrl-C this soon after noise is noise too
_ESC_MAX = 8  # longest escape sequence we wait for

# What feed() returns besides None and a line (str).
INTERRUPT = 1  # a Ctrl-C from a person (or mpremote): leave the app
COMPLETE = 2  # Tab: the caller completes `line()` and calls replace()


class Rejected:
    """A line that is not run: why (str() is the one-line error)."""

    def __init__(self, why):
        self.why = why

    def __str__(self):
        return self.why


class LineEditor:
    def __init__(self, write, prompt="", clock=ticks_ms):
        self.write = write  # write(str): to the console
        self.prompt = prompt
        self.hidden = False  # every character echoed as "*" (a secret asked for alone)
        self.masker = None  # masker(text) -> index from which the echo is "*", or None
        self._clock = clock
        self._buf = bytearray()
        self._too_long = False
        self._noise = 0  # noise bytes in the current line
        self._noise_at = None  # clock() of the last noise byte
        self._esc = None  # bytes of an escape sequence being read
        self._cr = False  # the last byte was CR (a CRLF's LF is not a second Enter)
        self._history = []
        self._recall = 0  # how far back Up went (0: the line being typed)

    # ---- what the console asks -------------------------------------------------------

    def line(self):
        return str(self._buf, "ascii")

    def clear(self):
        self._buf = bytearray()
        self._too_long = False
        self._noise = 0
        self._recall = 0

    def replace(self, text):
        """Put `text` in the line (completion, history) and draw it."""
        self._buf = bytearray(text[:MAX_LINE].encode())
        self.redraw()

    def erase(self):
        """Clear the screen line (before someone else prints a line)."""
        self.write("\r\x1b[K")

    def redraw(self):
        self.write("\r\x1b[K" + self.prompt + self._shown())

    def remember(self, text):
        """Keep a run line for Up/Down (not lines holding a secret)."""
        if text and (not self._history or self._history[-1] != text):
            self._history.append(text)
            if len(self._history) > HISTORY:
                self._history.pop(0)

    def woken_by(self, b):
        """`b` (an Enter) woke the console and was not fed: a CRLF's LF follows it."""
        self._cr = b == CR

    def noisy(self):
        """Whether noise came within NOISE_HOLD_MS."""
        if self._noise_at is None:
            return False
        return 0 <= ticks_diff(self._clock(), self._noise_at) < NOISE_HOLD_MS

    # ---- input -----------------------------------------------------------------------

    def feed(self, b):
        """One byte from the console. Returns None, a line (str), INTERRUPT, COMPLETE or a
        Rejected line."""
        cr = self._cr
        self._cr = b == CR
        if self._esc is not None:
            return self._escape(b)
        if 32 <= b < 127:
            self._add(b)
            return None
        if b == CR or (b == LF and not cr):
            return self._enter()
        if b == LF:
            return None
        if b == BS or b == DEL:
            self._backspace()
        elif b == CTRL_U:
            self._buf = bytearray()
            self._too_long = False
            self._noise = 0  # gone with the line (the time of it still counts for Ctrl-C)
            self.redraw()
        elif b == CTRL_W:
            self._delete_word()
        elif b == TAB:
            return COMPLETE
        elif b == ESC:
            self._esc = bytearray()
        elif b == CTRL_C:
            if self.noisy():
                self._noise_byte()
                return None
            self.clear()
            return INTERRUPT
        elif b == 0 or b >= 128:
            self._noise_byte()
        # other control characters (Ctrl-A, Ctrl-D, ...) mean nothing here
        return None

    def _noise_byte(self):
        self._noise += 1
        self._noise_at = self._clock()

    def _add(self, b):
        if len(self._buf) >= MAX_LINE:
            self._too_long = True  # keep reading to the Enter; the line is refused there
            return
        self._buf.append(b)
        mask = self._mask_index()
        self.write("*" if mask is not None and len(self._buf) > mask else chr(b))

    def _backspace(self):
        if self._buf:
            self._buf = self._buf[:-1]
            self.write("\b \b")

    def _delete_word(self):
        buf = self._buf
        n = len(buf)
        while n and buf[n - 1] == 32:
            n -= 1
        while n and buf[n - 1] != 32:
            n -= 1
        self._buf = buf[:n]
        self.redraw()

    def _enter(self):
        self.write("\n")  # stdout is cooked: "\n" leaves the board as "\r\n"
        text = self.line()
        noise, too_long = self._noise, self._too_long
        self.clear()
        if noise:
            return Rejected(
                "%d byte%s on the line %s not text (is the terminal at 115200 baud?); "
                "line discarded"
                % (noise, "" if noise == 1 else "s", "is" if noise == 1 else "are")
            )
        if too_long:
            return Rejected("line longer than %d characters; discarded" % MAX_LINE)
        return text

    def _escape(self, b):
        seq = self._esc
        seq.append(b)
        if len(seq) == 1:
            if b != 91 and b != 79:  # not "[" or "O": a bare ESC, and `b` is a key of its own
                self._esc = None
                return self.feed(b)
            return None
        if 64 <= b <= 126:  # the final byte of a CSI/SS3 sequence
            self._esc = None
            if b == 65:
                self._history_step(1)  # Up
            elif b == 66:
                self._history_step(-1)  # Down
            return None  # cursor keys, Delete, F-keys: not supported, ignored
        if not (32 <= b <= 63) or len(seq) > _ESC_MAX:
            self._esc = None
            self._noise_byte()
        return None

    def _history_step(self, step):
        n = self._recall + step
        if n < 0 or n > len(self._history):
            return
        self._recall = n
        self._buf = bytearray(self._history[-n].encode() if n else b"")
        self.redraw()

    # ---- echo ------------------------------------------------------------------------

    def _mask_index(self):
        if self.hidden:
            return 0
        if self.masker is None:
            return None
        return self.masker(self.line())

    def _shown(self):
        text = self.line()
        mask = self._mask_index()
        if mask is None or mask >= len(text):
            return text
        return text[:mask] + "*" * (len(text) - mask)
