# How the uplink reaches the network. A link hands out streams for MQTT sessions, hears how
# each session went, and decides how long to wait before the next try. The uplink never
# knows whether bytes go through a cellular modem or the host's TCP stack.
#
#   stream = await link.open_stream(host, port)   # may repair the path first
#   link.session_up()                             # a PUBACK proved the path works
#   link.session_failed(reason)                   # the session died; the link escalates
#   await link.backoff()                          # wait before the next try (jittered)
import random

from tracker import log
from tracker.aio import sleep_ms

_TAG = "link"


def jittered(base_ms, failures, max_ms):
    """Exponential backoff with full jitter over the upper half, so a fleet that lost the
    same cell does not come back in lockstep."""
    top = min(base_ms << min(failures, 16), max_ms)
    return top // 2 + random.getrandbits(20) % (top // 2 + 1)


class TcpLink:
    """The board's own network (the virtual board's host TCP, or Wi-Fi): nothing to repair,
    only backoff between attempts."""

    BACKOFF_BASE_MS = 1000
    BACKOFF_MAX_MS = 60000

    def __init__(self, open_stream):
        self._open = open_stream
        self.failures = 0
        self.last_error = None

    async def open_stream(self, host, port):
        return await self._open(host, port)

    def session_up(self):
        self.failures = 0

    def session_failed(self, reason):
        self.failures += 1
        self.last_error = reason

    async def backoff(self):
        delay = jittered(self.BACKOFF_BASE_MS, self.failures - 1, self.BACKOFF_MAX_MS)
        log.i(_TAG, "next try in %d ms" % delay)
        await sleep_ms(delay)

    def status(self):
        return {"kind": "tcp", "failures": self.failures, "last_error": self.last_error}
