"""Stage lines and progress bars, and esptool's own output kept off the screen.

esptool reports through one global logger (esp_pylib's EspLog.instance). While albatross
flashes, `esptool_output()` installs a logger that hands each thread's progress to that
thread's callback and keeps its text in that thread's transcript, so a tray of boards
flashed by threads never mixes up whose bar moved, and the screen shows only our lines."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from esp_pylib.logger import EspLog, EspLogBase

BAR_WIDTH = 24


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#########---------------]  37%`"""
    frac = 1.0 if total <= 0 else max(0.0, min(1.0, done / total))
    filled = int(frac * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {frac:4.0%}"


def human_bytes(n: float) -> str:
    for unit, size in (("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


class _Thread(threading.local):
    on_progress: Callable[[int, int], None] | None = None
    transcript: list[str] | None = None


_here = _Thread()
_lock = threading.Lock()
_users = 0
_previous: EspLogBase | None = None


class _Bridge(EspLogBase):
    """esptool's logger while albatross drives it: text to the calling thread's transcript,
    progress bars to its callback, nothing to the terminal."""

    def _text(self, *args: Any) -> None:
        if _here.transcript is not None:
            _here.transcript.append(" ".join(str(a) for a in args))

    def print(self, *args: Any, **kwargs: Any) -> None:
        self._text(*args)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        self._text("error:", *args)

    def warn(self, *args: Any, suggestion: str | None = None) -> None:
        self._text("warning:", *args)

    warning = warn
    error = err

    def note(self, *args: Any) -> None:
        self._text("note:", *args)

    def hint(self, *args: Any) -> None:
        self._text("hint:", *args)

    def debug(self, *args: Any) -> None:
        pass

    def set_verbosity(self, mode: int | str) -> None:
        pass

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        if _here.on_progress is not None:
            _here.on_progress(cur_iter, total_iters)


@contextmanager
def esptool_output(
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[list[str]]:
    """While inside, esptool's output on this thread goes to the list this yields and its
    progress to `on_progress(done, total)`; other threads' to theirs."""
    global _users, _previous
    with _lock:
        if _users == 0:
            _previous = EspLog.instance
            EspLog.instance = _Bridge()
        _users += 1
    transcript: list[str] = []
    saved = (_here.on_progress, _here.transcript)
    _here.on_progress, _here.transcript = on_progress, transcript
    try:
        yield transcript
    finally:
        _here.on_progress, _here.transcript = saved
        with _lock:
            _users -= 1
            if _users == 0:
                EspLog.instance = _previous
                _previous = None


@contextmanager
def progress_to(on_progress: Callable[[int, int], None] | None) -> Iterator[None]:
    """Send this thread's esptool progress somewhere else for a while (one stage's bar)."""
    saved = _here.on_progress
    _here.on_progress = on_progress
    try:
        yield
    finally:
        _here.on_progress = saved


class StageLines:
    """One board's stages on a terminal: `flash: write    [####----]  40%` redrawn in place
    while a stage runs (only on a tty), then its final line."""

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "flash") -> None:
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open = False

    def _line(self, stage: str, text: str) -> str:
        return f"{self.prefix}: {stage:9} {text}"

    def progress(self, stage: str, done: int, total: int) -> None:
        if not self.tty:
            return
        text = f"{bar(done, total)}  {human_bytes(done)} of {human_bytes(total)} sent"
        self.stream.write("\r\x1b[K" + self._line(stage, text))
        self.stream.flush()
        self._open = True

    def done(self, stage: str, text: str) -> None:
        lead = "\r\x1b[K" if self._open else ""
        self._open = False
        self.stream.write(lead + self._line(stage, text) + "\n")
        self.stream.flush()
