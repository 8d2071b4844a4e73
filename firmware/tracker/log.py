# Levelled, cheap logging into a RAM ring that the CLI and the status message can show.
# Library code logs through here, never with a bare print.
import sys

from tracker.aio import ticks_ms

DEBUG = 10
INFO = 20
WARNING = 30
ERROR = 40
LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
_LETTER = {DEBUG: "D", INFO: "I", WARNING: "W", ERROR: "E"}

level = INFO
echo = True  # print each entry on the console as well
sink = None  # sink(line): where echoed lines go instead of stdout (the console's CLI)
_RING_SIZE = 32
_ring = [None] * _RING_SIZE
_next = 0
counts = {WARNING: 0, ERROR: 0}


def set_level(name):
    global level
    level = LEVELS[name]


def _log(lvl, tag, msg):
    global _next
    if lvl < level:
        return
    if lvl in counts:
        counts[lvl] += 1
    entry = (ticks_ms(), lvl, tag, msg)
    _ring[_next % _RING_SIZE] = entry
    _next += 1
    if echo:
        line = "%s %s: %s\n" % (_LETTER[lvl], tag, msg)
        if sink is not None:
            sink(line)
        else:
            sys.stdout.write(line)


def d(tag, msg):
    _log(DEBUG, tag, msg)


def i(tag, msg):
    _log(INFO, tag, msg)


def w(tag, msg):
    _log(WARNING, tag, msg)


def e(tag, msg):
    _log(ERROR, tag, msg)


def exc(tag, err):
    """Log an exception with its type, for handlers that must carry on."""
    _log(ERROR, tag, "%s: %s" % (type(err).__name__, err))


def recent():
    """The ring's entries, oldest first, as (ticks_ms, letter, tag, message)."""
    out = []
    start = max(0, _next - _RING_SIZE)
    for n in range(start, _next):
        t, lvl, tag, msg = _ring[n % _RING_SIZE]
        out.append((t, _LETTER[lvl], tag, msg))
    return out
