# The command line on the console (docs/console.md), built by tracker/cli/port.py at the
# first key. It shows `albatross> `, echoes and edits the line, and keeps it intact under
# log lines (cleared, the log line printed, the prompt and the line drawn again); while a
# command runs, log lines wait and follow its output. The commands themselves
# (tracker/cli/commands.py) are imported at the first Enter. After IDLE_MS without a key it
# goes quiet and the port drops it.
import sys

from tracker.aio import ticks_diff, ticks_ms
from tracker.cli.lineedit import COMPLETE, INTERRUPT, LineEditor, Rejected
from tracker.config import SCHEMA

PROMPT = "albatross> "
IDLE_MS = 300000  # without a key for this long, an empty prompt goes dormant again
MAX_DEFERRED = 12  # log lines kept back while a command runs; the rest: see `log`


def secret_mask(text):
    """Where the echo of `text` turns to "*": after a secret key's name, as a word of its
    own (quoted or not), anywhere in a `config set` line, however it is spaced. Masking too
    much costs a technician nothing; too little shows a password on the screen."""
    w = text.split()
    if len(w) < 2 or w[0].strip("\"'") != "config" or w[1].strip("\"'") != "set":
        return None
    for k in SCHEMA:
        if not k.secret:
            continue
        i = text.find(k.name)
        while i >= 0:
            end = i + len(k.name)
            if (i == 0 or text[i - 1] in " \t\"'") and (end == len(text) or text[end] in " \t\"'"):
                return end + 1  # the separator after the name still shows
            i = text.find(k.name, end)
    return None


class Ask:
    """A command's question: the next line is its answer (`then(answer, out)`)."""

    def __init__(self, prompt, then, hidden=False):
        self.prompt = prompt
        self.then = then
        self.hidden = hidden


class Console:
    def __init__(self, device, write=None, clock=ticks_ms, on_idle=None):
        self.device = device  # the app (tracker.app.Tracker): what commands act on
        self._out = write or sys.stdout.write
        self._on_idle = on_idle  # called when it goes quiet (the port drops it)
        self._clock = clock
        self.editor = LineEditor(self._out, PROMPT, clock)
        self.editor.masker = secret_mask
        self.shell = None
        self.active = False
        self.busy = False
        self._ask = None
        self._deferred = []
        self._dropped = 0
        self._last_key = clock()

    # ---- input ----------------------------------------------------------------------

    async def feed(self, b):
        """One byte from the console."""
        self._last_key = self._clock()
        ed = self.editor
        if not self.active:
            self.active = True
            self._out(ed.prompt)
            if b == 13 or b == 10:
                ed.woken_by(b)  # the Enter that woke the command line (a CRLF's LF too)
                return
        r = ed.feed(b)
        if r is None:
            return
        if r is INTERRUPT:
            self._out("^C\n")
            raise KeyboardInterrupt
        if r is COMPLETE:
            self._complete()
            return
        if isinstance(r, Rejected):
            self._end(["error: %s" % r])
            return
        await self._line(r)

    # ---- running lines ---------------------------------------------------------------

    async def _line(self, text):
        ask = self._ask
        self._ask = None
        ed = self.editor
        ed.prompt = PROMPT
        ed.hidden = False
        if ask is None:
            if not text.strip():
                self._end([])
                return
            mask = secret_mask(text)
            if mask is None or mask >= len(text):
                ed.remember(text)
        lines = []
        self.busy = True
        try:
            shell = self._shell(lines)
            if shell is not None:
                if ask is not None:
                    result = await shell.answer(ask, text, lines.append)
                else:
                    result = await shell.run(text, lines.append)
                if isinstance(result, Ask):
                    self._ask = result
                    ed.prompt = result.prompt
                    ed.hidden = result.hidden
        except MemoryError:
            lines.append("error: out of memory running that command; the app goes on")
        finally:
            self.busy = False
        self._end(lines)

    def _shell(self, lines):
        if self.shell is None:
            try:
                from tracker.cli.commands import Shell

                self.shell = Shell(self.device)
            except MemoryError:
                lines.append("error: out of memory for the command line; try again later")
        return self.shell

    def _end(self, lines):
        """Print a command's output, the log lines it held back, and the prompt."""
        out = self._out
        for line in lines:
            out(line + "\n")
        deferred, self._deferred = self._deferred, []
        for line in deferred:
            out(line)
        if self._dropped:
            out("(%d more log lines: see `log`)\n" % self._dropped)
            self._dropped = 0
        out(self.editor.prompt)

    def _complete(self):
        if self._ask is not None:
            return  # an answer (a secret, perhaps) is not completed, nor shown
        shell = self._shell([])
        if shell is None:
            return
        ed = self.editor
        text = ed.line()
        done, choices = shell.complete(text)
        if done != text:
            ed.replace(done)
        elif len(choices) > 1:
            self._out("\n" + "  ".join(choices) + "\n")
            ed.redraw()

    # ---- log lines (log.sink) --------------------------------------------------------

    def log_line(self, text):
        """A log line (ending in "\\n") while the console is ours."""
        if self.busy:
            if len(self._deferred) < MAX_DEFERRED:
                self._deferred.append(text)
            else:
                self._dropped += 1
            return
        ed = self.editor
        if not self.active:
            self._out(text)
            return
        idle = ticks_diff(self._clock(), self._last_key) >= IDLE_MS
        if idle and not ed.line() and self._ask is None:
            self.active = False  # nobody typed for a while: let the log scroll freely
            ed.erase()
            self._out(text)
            if self._on_idle is not None:
                self._on_idle()
            return
        ed.erase()
        self._out(text)
        ed.redraw()
