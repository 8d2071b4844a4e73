"""What can go wrong when flashing a board, as one line each: the CLI prints the text and
exits 2, the fleet report puts it in the board's `error` column."""

from __future__ import annotations


class FlashError(Exception):
    """A flash that did not happen or did not end well; `stage` names where it stopped."""

    stage = "flash"

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        if stage is not None:
            self.stage = stage


class PortError(FlashError):
    """The serial port is missing, busy or refused."""

    stage = "connect"


class NoAnswer(FlashError):
    """The port opened but no ROM loader answered the sync."""

    stage = "connect"


class WrongChip(FlashError):
    stage = "check"


class FlashTooSmall(FlashError):
    stage = "check"


class VerifyMismatch(FlashError):
    """The flash's MD5 differs from the image's after writing."""

    stage = "verify"


class BootFailed(FlashError):
    """The board did not come up with the firmware's status after the reset."""

    stage = "boot"
