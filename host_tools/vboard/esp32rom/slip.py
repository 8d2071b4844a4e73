"""SLIP framing as the ESP32 ROM loader and esptool use it (RFC 1055 with 0xC0 as the only
delimiter): a frame is 0xC0, the escaped payload, 0xC0; inside, 0xC0 travels as 0xDB 0xDC and
0xDB as 0xDB 0xDD (esptool docs, "Serial Protocol", Low Level Protocol)."""

from __future__ import annotations

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD
# The longest packet the protocol can describe: 8 header bytes and a 16-bit data size. A
# longer "frame" is a lost delimiter; it is kept short and marked corrupt, not buffered.
MAX_FRAME = 8 + 0xFFFF


def encode(payload: bytes) -> bytes:
    """One SLIP frame holding `payload`."""
    body = bytes(payload).replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


class Frame(bytes):
    """A decoded frame; `corrupt` is True when it held an escape other than DC/DD, so its
    bytes are not what the sender meant (the ROM answers such a packet with an error)."""

    corrupt: bool = False


class Decoder:
    """Incremental SLIP decoder: feed() any slice of the byte stream, get the frames it
        completed. Bytes outside a frame are line noise (or a boot log) and are dropped, counted
        in `noise_bytes` (the ROM's receiver, too, waits for an opening 0xC0 after each frame);
    empty frames (two 0xC0 back to back) are not frames."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False
        self._escape = False
        self._corrupt = False
        self.noise_bytes = 0
        self.corrupt_frames = 0

    def reset(self) -> None:
        self._buf.clear()
        self._in_frame = self._escape = self._corrupt = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for b in data:
            if b == END:
                if self._in_frame and (self._buf or self._corrupt):
                    frame = Frame(self._buf)
                    frame.corrupt = self._corrupt
                    self.corrupt_frames += self._corrupt
                    frames.append(frame)
                    self._in_frame = False  # as the ROM: the next frame needs its own 0xC0
                else:
                    self._in_frame = True  # an opening 0xC0 (or C0 C0: an empty frame)
                self._buf.clear()
                self._escape = self._corrupt = False
            elif not self._in_frame:
                self.noise_bytes += 1
            elif self._escape:
                self._escape = False
                if b == ESC_END:
                    self._buf.append(END)
                elif b == ESC_ESC:
                    self._buf.append(ESC)
                else:
                    self._corrupt = True
                    self._buf.append(b)
            elif b == ESC:
                self._escape = True
            elif len(self._buf) < MAX_FRAME:
                self._buf.append(b)
            else:
                self._corrupt = True
        return frames
