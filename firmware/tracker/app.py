# Composition root: read the board and the config, build drivers and modules, start the
# tasks, and own the global exception policy (an unexpected task failure reboots the board,
# as the watchdog would, rather than leaving a half-dead tracker in the field).
import gc
import json
import os

from tracker import VERSION, compat, log
from tracker.aio import asyncio, sleep_ms, ticks_diff, ticks_ms, unix_time
from tracker.config import Config
from tracker.link import TcpLink
from tracker.records import encode, make_record
from tracker.sensors import Battery, Sensors
from tracker.sht4x import Sht4x
from tracker.store import Store
from tracker.timing import Every, Uptime
from tracker.uplink import Uplink

_TAG = "app"
CONFIG_PATH = "config.json"
STORE_ROOT = "data"
CRASH_COUNT_PATH = "crashes.json"
SAFE_MODE_AFTER = 5  # consecutive watchdog/crash reboots before main.py stops starting the app
HEALTHY_AFTER_MS = 60000
HEAP_CHECK_MS = 5000


class Tracker:
    def __init__(self, board, cfg, clock=ticks_ms):
        self.board = board
        self._clock = clock  # ticks_ms, or a test's clock started near the wrap
        self.cfg = cfg
        self.reset_cause = board.reset_cause()
        self.device_id = cfg["device_id"] or "alb-" + board.unique_id()
        info = board.info
        sht = Sht4x(board.i2c(), info.get("sht4x_addr", 0x44))
        battery = Battery(board.battery_adc(), board.battery_divider)
        self.sensors = Sensors(
            sht,
            battery,
            precision=cfg["sht4x_precision"],
            temperature_offset_c=cfg["temperature_offset_c"],
        )
        # Every reading goes to flash before any send is tried; only a PUBACK releases it.
        self.store = Store(STORE_ROOT, capacity_records=cfg["store_capacity"])
        self.link = make_link(board, cfg)
        self.uplink = Uplink(self.link, cfg, self.device_id, self.store, self.status)
        self.uptime = Uptime(clock)
        self._last_error = None
        self._status_at = clock()
        self.heap = {"used": 0, "used_max": 0, "free": 0}
        self._failed = asyncio.Event()
        self._failure = None

    def status(self):
        return {
            "fw": VERSION,
            "board": self.board.name,
            "reset_cause": self.reset_cause,
            "uptime_s": self.uptime.seconds(),
            "config_error": self.cfg.load_error,
            "sensors": self.sensors.counters(),
            "store": dict(self.store.info(), **self.store.counters),
            "heap": self.heap,
            "log": {"warnings": log.counts[log.WARNING], "errors": log.counts[log.ERROR]},
        }

    async def sample_loop(self):
        every = Every(int(self.cfg["interval_s"] * 1000), self._clock)
        while True:
            sample = await self.sensors.sample()
            rec = make_record(self.device_id, self.store.next_seq, unix_time(), sample)
            self.store.append(encode(rec))
            self.uplink.wake()
            error = sample.get("sensor_error")
            if error != self._last_error:
                # A fault started, changed or cleared: say so in the retained status, once.
                self._last_error = error
                self.uplink.status_changed()
            log.i(
                _TAG,
                "stored seq %d T=%s RH=%s bat=%s%s"
                % (
                    rec["seq"],
                    rec["temperature"],
                    rec["humidity"],
                    rec["battery"],
                    " error=" + sample["sensor_error"] if sample.get("sensor_error") else "",
                ),
            )
            await sleep_ms(every.wait_ms())

    async def health_loop(self):
        started = self._clock()
        healthy = False
        while True:
            self.measure_heap()
            self.uptime.seconds()  # often enough that it never misses a wrap
            if ticks_diff(self._clock(), self._status_at) >= self.cfg["status_interval_s"] * 1000:
                self._status_at = self._clock()
                self.uplink.status_changed()
            if not healthy and ticks_diff(self._clock(), started) >= HEALTHY_AFTER_MS:
                healthy = True
                clear_crash_count()
            await sleep_ms(HEAP_CHECK_MS)

    def measure_heap(self):
        """Live heap after a collection; its maximum over the run is the steady-state high
        water mark the status reports (what a smaller board must still fit)."""
        gc.collect()
        used = gc.mem_alloc()
        self.heap["used"] = used
        self.heap["free"] = gc.mem_free()
        if used > self.heap["used_max"]:
            self.heap["used_max"] = used

    async def _guard(self, coro):
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._failure = e
            self._failed.set()

    async def run(self):
        log.i(
            _TAG,
            "albatross %s on %s as %s, reset cause %s"
            % (VERSION, self.board.name, self.device_id, self.reset_cause),
        )
        for coro in (self.sample_loop(), self.uplink.run(), self.health_loop()):
            asyncio.create_task(self._guard(coro))
        await self._failed.wait()
        raise self._failure


def make_link(board, cfg):
    """Through the board's cellular modem when it has one, else the board's own TCP."""
    info = getattr(board, "modem_info", None)
    if not info:
        return TcpLink(board.open_stream)
    from tracker.at import AtEngine
    from tracker.modem_link import ModemLink
    from tracker.modems import make_modem

    at = AtEngine(board.modem_stream())
    at.start()
    modem = make_modem(info["family"], at, apn=cfg["apn"], rat=cfg["rat"], **board.modem_pins())
    return ModemLink(
        modem,
        reset_mcu=board.reset,
        apn=cfg["apn"],
        rat=cfg["rat"],
        on_network_time=lambda t: sync_clock(board, t),
    )


CLOCK_TOLERANCE_S = 5


def sync_clock(board, network_s):
    """An ESP32's RTC starts at 2000-01-01 after power-on: timestamps would be decades off.
    The network's clock (AT+CCLK) sets it when the board can be set (set_time)."""
    drift = network_s - unix_time()
    if -CLOCK_TOLERANCE_S <= drift <= CLOCK_TOLERANCE_S:
        return
    setter = getattr(board, "set_time", None)
    if setter is None:
        log.w(_TAG, "clock is %d s off the network's and this board cannot set it" % drift)
        return
    setter(network_s)
    log.i(_TAG, "clock set from the network (was %d s off)" % drift)


def normalise_config(cfg, path=CONFIG_PATH):
    """Keep the stored config complete and canonical: a file written by host tools or by an
    older firmware (keys missing, other order) is rewritten once, atomically, so every key a
    technician sees on the device is there. A bad file is left for inspection."""
    if cfg.load_error is not None:
        return
    try:
        with open(path) as f:
            stored = f.read()
    except OSError:
        stored = None
    if stored != cfg.text():
        cfg.save(path)
        log.i(_TAG, "config stored in canonical form")


def load_board():
    import board  # board.py of the board this filesystem was built for

    return board.create()


def _read_crash_count():
    try:
        with open(CRASH_COUNT_PATH) as f:
            return int(json.load(f)["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _write_crash_count(n):
    tmp = CRASH_COUNT_PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"count": n}, f)
    os.rename(tmp, CRASH_COUNT_PATH)


def clear_crash_count():
    if _read_crash_count():
        _write_crash_count(0)


def safe_mode(board):
    """True when the last SAFE_MODE_AFTER boots all ended in a crash or watchdog reset: then
    main.py leaves the REPL to the technician instead of crashing again."""
    if board.reset_cause() != "watchdog":
        clear_crash_count()
        return False
    n = _read_crash_count() + 1
    _write_crash_count(n)
    return n >= SAFE_MODE_AFTER


def run():
    too_old = compat.problem()
    if too_old:  # refuse before touching anything: the REPL stays free for a reflash
        log.e(_TAG, too_old)
        return
    board = load_board()
    cfg = Config.load(CONFIG_PATH)
    log.set_level(cfg["log_level"])
    normalise_config(cfg)
    if safe_mode(board):
        log.e(
            _TAG,
            "safe mode: %d crash reboots in a row; app not started. "
            "Fix it, then machine.reset()" % SAFE_MODE_AFTER,
        )
        return
    asyncio.run(Tracker(board, cfg).run())
