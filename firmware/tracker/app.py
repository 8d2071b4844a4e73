# Composition root: read the board and the config, build drivers and modules, start the
# tasks, and own the global exception policy (tracker/watchdog.py: an unexpected failure is
# recorded and resets the board, a hung task starves the machine.WDT, rather than leaving a
# half-dead tracker in the field).
import gc

from tracker import VERSION, compat, log
from tracker.aio import (
    asyncio,
    sleep_ms,
    ticks_add,
    ticks_diff,
    ticks_ms,
    unix_time,
)
from tracker.config import Config
from tracker.records import encode, make_record
from tracker.sensing.sensors import Battery, Sensors
from tracker.sensing.sht4x import Sht4x
from tracker.settings import Settings
from tracker.store.layout import remove_quietly
from tracker.store.queue import Store
from tracker.timing import Every, Uptime
from tracker.uplink.delivery import OPEN_TIMEOUT_MS, Uplink
from tracker.uplink.downlink import Downlink
from tracker.uplink.tcp import TcpLink
from tracker.watchdog import (
    CRASH_PATH,
    HEALTHY_AFTER_MS,
    SAFE_MODE_AFTER,
    Guard,
    Watch,
    supervise,
)

_TAG = "app"
CONFIG_PATH = "config.json"
STORE_ROOT = "data"
ALARM_ROOT = "alarms"  # the priority lane: its own store, sequence numbers and cursor
ALARM_CAPACITY = 1000  # unsent alarm events kept (each excursion makes two)
DOWNLINK_PATH = "downlink.json"  # the last remote config request answered
ALARM_STATE_PATH = "alarms.json"  # rule, window and trip state (tracker/alarms/keeper.py)
HEAP_CHECK_MS = 5000
# How long each watched task may go without progress before the WDT is starved: the sampler
# twice its interval plus the sensors' slowest retries; the uplink its longest bounded wait
# (a modem bring-up) plus the longest backoff; the AT reader only between two reads.
SAMPLE_SLACK_MS = 10000
RETIME_CHECK_MS = 1000  # how soon a sleeping sampler sees a new interval_s
UPLINK_STALL_MS = OPEN_TIMEOUT_MS + 120000
AT_READER_STALL_MS = 10000
# Why the sampler woke: its beat, a new interval_s, or movement (tracker/location).
_DUE = 0
_RETIMED = 1
_MOVED = 2


def _where(position):
    fix = position[0] if position else None
    if fix is None:
        return " gnss=%s" % position[1] if position and position[1] else ""
    from tracker.location.fix import degrees_text

    return " at %s,%s" % (degrees_text(fix.lat), degrees_text(fix.lon))


class Tracker:
    def __init__(self, board, cfg, clock=ticks_ms, guard=None, config_path=CONFIG_PATH):
        self.board = board
        self._clock = clock  # ticks_ms, or a test's clock started near the wrap
        self.guard = guard or Guard(board, clock=clock)
        self.sampling = Watch()
        self.cfg = cfg
        # The CLI's (and remote config's) way to change cfg: checked, stored, then applied.
        self.settings = Settings(cfg, config_path, self._apply_live)
        self._config_path = config_path
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
        self.alarm_store = Store(ALARM_ROOT, capacity_records=ALARM_CAPACITY)
        self.alarms = make_alarms(cfg, self.alarm_store, self.device_id)
        self.link = make_link(board, cfg)
        self.location = make_location(board, cfg, self.link, clock)
        self.downlink = Downlink(self.settings, self.run_command, DOWNLINK_PATH, clock)
        self.uplink = Uplink(
            self.link,
            cfg,
            self.device_id,
            self.store,
            self.status,
            alarms=self.alarm_store,
            downlink=self.downlink,
        )
        modem = getattr(self.link, "modem", None)
        self.at = modem.at if modem is not None else None  # the AT engine make_link started
        self.uptime = Uptime(clock)
        self._last_error = None
        self._status_at = clock()
        self.heap = {"used": 0, "used_max": 0, "free": 0}
        self._failed = asyncio.Event()
        self._failure = None
        self._retimed = False  # interval_s changed: the sampler starts a new beat
        self._report_now = False  # a remote report-now: one reading at once
        self.last_sample = None  # the last stored reading's values, and its ticks_ms()
        self.last_sample_at = None
        self.modem_cache = {}  # signal and operator as last read for the CLI
        self.console = None

    def status(self):
        store = self.store.info()
        store.update(self.store.counters)  # in place: dict(a, **b) builds a third map
        return {
            "fw": VERSION,
            "board": self.board.name,
            "reset_cause": self.reset_cause,
            "uptime_s": self.uptime.seconds(),
            "config_error": self.cfg.load_error,
            "sensors": self.sensors.counters(),
            "store": store,
            "heap": self.heap,
            "log": {"warnings": log.counts[log.WARNING], "errors": log.counts[log.ERROR]},
            "memory_errors": self.memory_errors(),
            "crashes": self.guard.record.streak,
            "last_crash": self.last_crash(),
            "gnss": self.location.status() if self.location else None,
            "alarms": self.alarms.status(unix_time()) if self.alarms else None,
        }

    def memory_errors(self):
        n = self.guard.memory.count
        if self.at is not None:
            n += self.at.counters["memory_errors"]
        return n

    def last_crash(self):
        """What ended the last failed run ("hung: sampling made no progress ..."), or None."""
        r = self.guard.record
        return "%s: %s" % (r.error, r.message) if r.error else None

    def _interval_ms(self):
        return int(self.cfg["interval_s"] * 1000)

    async def sample_loop(self):
        every = Every(self._interval_ms(), self._clock)
        while True:
            await self._reading()
            due = ticks_add(self._clock(), every.wait_ms())
            while True:
                why = await self._nap(due)
                if why == _RETIMED:  # the next reading one new interval after the change
                    every = Every(self._interval_ms(), self._clock)
                    due = ticks_add(self._clock(), every.wait_ms())
                elif why == _MOVED:
                    await self._reading()  # an extra reading; the beat goes on
                else:
                    break

    async def _reading(self):
        sample = await self.sensors.sample()
        loc = self.location
        position = loc.snapshot() if loc else None
        now_s = unix_time()
        window = None
        if self.alarms is not None:
            fix = position[0] if position else None
            # Alarm events reach the priority lane before the reading is stored.
            window, _ = self.alarms.reading(
                sample, now_s, (fix.lat, fix.lon) if fix is not None else None
            )
        rec = make_record(self.device_id, self.store.next_seq, now_s, sample, position)
        if window is not None:
            rec["window"] = window
        self.store.append(encode(rec))
        self.sampling.beat()  # stored: progress, as the watchdog's feeder sees it
        if loc:
            loc.reported(position[0])
        self.last_sample = sample
        self.last_sample_at = self._clock()
        self.uplink.wake()
        error = sample.get("sensor_error")
        if error != self._last_error:
            # A fault started, changed or cleared: say so in the retained status, once.
            self._last_error = error
            self.uplink.status_changed()
        log.i(
            _TAG,
            "stored seq %d T=%s RH=%s bat=%s%s%s"
            % (
                rec["seq"],
                rec["temperature"],
                rec["humidity"],
                rec["battery"],
                " error=" + sample["sensor_error"] if sample.get("sensor_error") else "",
                _where(position),
            ),
        )

    async def _nap(self, due):
        """Sleep until `due`; _RETIMED when interval_s changes first, _MOVED when the
        location module asks for a reading (at least report_min_s after the last one).
        Slices of RETIME_CHECK_MS rather than wait_for() on an event: that allocates a task
        and two exceptions per reading, and the churn fragments a PSRAM-less heap
        (hil_tests/test_fit.py)."""
        loc = self.location
        while True:
            if self._retimed:
                self._retimed = False
                return _RETIMED
            if self._report_now:
                self._report_now = False
                return _MOVED
            now = self._clock()
            if (
                loc is not None
                and loc.triggered
                and ticks_diff(now, self.last_sample_at) >= self.cfg["report_min_s"] * 1000
            ):
                return _MOVED
            left = ticks_diff(due, now)
            if left <= 0:
                return _DUE
            await sleep_ms(left if left < RETIME_CHECK_MS else RETIME_CHECK_MS)

    def _apply_live(self, changed):
        """Config keys marked live (tracker/config.py), stored by self.settings: apply now."""
        if "log_level" in changed:
            log.set_level(changed["log_level"])
        if "sht4x_precision" in changed or "temperature_offset_c" in changed:
            self.sensors.configure(
                precision=changed.get("sht4x_precision"),
                temperature_offset_c=changed.get("temperature_offset_c"),
            )
        if self.alarms is not None:
            for name in changed:
                if name.startswith("alarm_") or name in ("geofences", "mkt_activation_kj"):
                    self.alarms.configure(unix_time())
                    break
        if "interval_s" in changed:
            feeder = self.guard.feeder
            if feeder is not None:
                feeder.set_limit("sampling", 2 * self._interval_ms() + SAMPLE_SLACK_MS)
            self._retimed = True
        # batch_size and status_interval_s are read where they are used.

    def report_now(self):
        """A reading now (remote report-now), and a fresh status."""
        self._report_now = True
        self.uplink.status_changed()

    async def run_command(self, name, args):
        """A command from the cmd topic (tracker/remote_commands.py, loaded at the first)."""
        from tracker import remote_commands

        return await remote_commands.run(self, name, args)

    async def fresh_sample(self):
        """A reading for the technician (not stored: the sampling loop stores its own)."""
        return await self.sensors.sample()

    def modem_busy(self):
        """Why an AT command from the CLI must wait now, or None."""
        if self.at is None:
            return "this board has no modem"
        m = self.link.modem
        if m.changing_power:
            return "the modem is powering on or off"
        if m.off():
            return "the modem is powered off"
        if self.at.busy():
            return "the modem is busy with a command (sending or reading)"
        return None

    def reboot(self):
        self.store.close()  # the acknowledged cursor, so nothing is sent twice
        self.alarm_store.close()
        if self.alarms is not None:
            self.alarms.flush()
        self.board.reset()

    def factory_reset(self):
        """Erase the config (keeping a configured device id), every stored reading and the
        crash record, then reset."""
        keep = self.cfg["device_id"]
        self.store.erase()
        self.alarm_store.erase()
        # The last remote request id goes too: the fleet's retained desired config is then
        # applied again, as to a new device.
        for path in (
            self._config_path,
            self._config_path + ".tmp",
            CRASH_PATH,
            DOWNLINK_PATH,
            ALARM_STATE_PATH,
            ALARM_STATE_PATH + ".tmp",
        ):
            remove_quietly(path)
        if keep:
            cfg = Config()
            cfg.set("device_id", keep)
            cfg.save(self._config_path)
        log.w(_TAG, "factory reset: config, readings and crash record erased")
        self.board.reset()

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
                self.guard.record.healthy()
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

    def _fail(self, err):
        if self._failure is None:
            self._failure = err
            self._failed.set()

    async def run(self, console=False):
        """console: also run the technician's command line on the console (tracker/cli)."""
        log.i(
            _TAG,
            "albatross %s on %s as %s, reset cause %s"
            % (VERSION, self.board.name, self.device_id, self.reset_cause),
        )
        g = self.guard
        for name, start in (
            ("sampling", self.sample_loop),
            ("uplink", self.uplink.run),
            ("health", self.health_loop),
        ):
            asyncio.create_task(supervise(name, start, g.memory, self._fail, self._clock))
        # Fed only while sampling, the uplink and the AT reader all get work done.
        feeder = g.watchdog(self.cfg["watchdog_s"] * 1000)
        interval_ms = int(self.cfg["interval_s"] * 1000)
        feeder.watch("sampling", self.sampling, 2 * interval_ms + SAMPLE_SLACK_MS)
        feeder.watch("uplink", self.uplink, UPLINK_STALL_MS)
        if self.at is not None:
            feeder.watch("at_reader", self.at, AT_READER_STALL_MS)
        loc = self.location
        if loc is not None:
            asyncio.create_task(supervise("location", loc.run, g.memory, self._fail, self._clock))
            reader = getattr(loc.receiver, "run", None)
            if reader is not None:  # a UART receiver's resident reader
                asyncio.create_task(
                    supervise("gnss_uart", lambda: reader(self._clock), g.memory, self._fail,
                              self._clock)
                )  # fmt: skip
        asyncio.create_task(feeder.run(g.hung))
        if console:
            from tracker.cli.port import ConsolePort

            self.console = ConsolePort(self)
            asyncio.create_task(self.console.run())
        await self._failed.wait()
        raise self._failure


def make_alarms(cfg, store, device_id):
    """The alarm rules and cold-chain statistics with their state on flash."""
    from tracker.alarms.keeper import AlarmKeeper

    return AlarmKeeper(cfg, store, device_id, ALARM_STATE_PATH)


def make_location(board, cfg, link, clock=ticks_ms):
    """The location module over the board's GNSS (board.json "gnss"), or None without one:
    {"source": "uart", "uart": {...}, "enable": {...}} a standalone NMEA receiver,
    {"source": "modem"} the cellular modem's own GNSS."""
    info = board.info.get("gnss") or {}
    source = info.get("source")
    if source is None:
        return None
    from tracker.location.receivers import ModemReceiver, UartReceiver
    from tracker.location.service import Location

    if source == "uart":
        enable = info.get("enable") or {}
        receiver = UartReceiver(board.gnss_stream(), board.gnss_enable(), enable.get("active", 1))
    elif source == "modem":
        modem = getattr(link, "modem", None)
        if modem is None:
            log.w(_TAG, "board.json: gnss from the modem, but this board has none")
            return None
        try:
            receiver = ModemReceiver(modem)
        except ValueError as e:
            log.w(_TAG, str(e))
            return None
    else:
        log.w(_TAG, "board.json: unknown gnss source %r" % source)
        return None
    return Location(receiver, cfg, clock)


def make_link(board, cfg):
    """Through the board's cellular modem when it has one, else the board's own TCP."""
    info = getattr(board, "modem_info", None)
    if not info:
        return TcpLink(board.open_stream)
    from tracker.modem.at import AtEngine
    from tracker.modem.families import make_modem
    from tracker.modem.link import ModemLink

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


def run():
    too_old = compat.problem()
    if too_old:  # refuse before touching anything: the REPL stays free for a reflash
        log.e(_TAG, too_old)
        return
    board = load_board()
    guard = Guard(board)
    if guard.boot():  # counted from the crash record: failures in a row, not reset causes
        r = guard.record
        log.e(
            _TAG,
            "safe mode: %d crash/watchdog resets in a row (last %s: %s); app not started. "
            "Fix it, then machine.reset()" % (SAFE_MODE_AFTER, r.error, r.message),
        )
        return
    guard.run(lambda: _app(board, guard))


def _app(board, guard):
    cfg = Config.load(CONFIG_PATH)
    log.set_level(cfg["log_level"])
    normalise_config(cfg)
    try:
        asyncio.run(Tracker(board, cfg, guard=guard).run(console=True))
    finally:
        # Whatever ends the app (a Ctrl-C can leave from any task, whose finally blocks then
        # never run): the REPL gets plain stdout, not the console's redraws.
        log.sink = None
