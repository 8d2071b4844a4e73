# The technician's commands (docs/console.md). Imported at the first Enter on the console.
# Each command prints through `out(line)`; a failure is one line starting "error: " and
# changes nothing. The device is the running app (tracker.app.Tracker).
import json

from tracker import config, log
from tracker.aio import asyncio, sleep_ms
from tracker.cli import words
from tracker.cli.console import Ask
from tracker.cli.status import modem_facts, status_data, status_lines
from tracker.settings import StoreError

HELP = (
    ("help", "[COMMAND]", "the commands, or how to use one"),
    ("status", "[--json]", "firmware, modem, store, uplink, sensors, battery, heap"),
    ("config", "show|get|set|unset|reset|help ...", "see and change the settings"),
    ("sensor", "", "a fresh reading"),
    ("modem", "[at CMD [--timeout MS]]", "identity, network and counters; or one AT command"),
    ("log", "[N]", "the last N log lines (default 20)"),
    ("selftest", "", "check sensor, modem, SIM, network, flash and clock"),
    ("trip", "[start|stop] [--json]", "the cold-chain trip: its statistics, start or stop one"),
    ("alarms", "[--json]", "alarms pending or raised now, and the alarm lane"),
    ("reboot", "", "reset the board"),
    ("factory-reset", "[--yes]", "erase config, unsent readings and crash record; reboot"),
)
CONFIG_HELP = (
    "config show [--json]          every key and its value",
    "config get KEY [--json]       one key",
    "config set KEY VALUE [KEY VALUE ...]   change keys (all or none); a secret key alone asks",
    "config unset KEY [KEY ...]    back to the default",
    "config reset [--yes]          every key back to its default",
    "config help KEY               type, range, default and meaning of a key",
)
CONFIG_SUBS = ("show", "get", "set", "unset", "reset", "help")
MODEM_FIELDS = (
    "family model fw imei iccid registration operator rat rssi_dbm rsrp_dbm rsrq_db"
    " pdp_active powered"
).split()
AT_TIMEOUT_MS = 5000
RESET_DELAY_MS = 200  # the answer reaches the terminal (the UART's TX buffer) before a reset
AT_TIMEOUT_MAX_MS = 180000
LOG_DEFAULT = 20


class Usage(Exception):
    """A command used wrongly: str() is the error line without "error: "."""


def _value_text(k, value):
    if k.secret:
        return '"***"' if value else '""'
    return json.dumps(value)


def _flag(args, name):
    """Whether `name` is in args (removed from them)."""
    if name in args:
        args.remove(name)
        return True
    return False


def _no_more(args, usage):
    if args:
        raise Usage("unexpected %s (usage: %s)" % (words.quote(args[0]), usage))


class Shell:
    def __init__(self, device):
        self.device = device
        self._names = tuple(h[0] for h in HELP)  # in order: MicroPython dicts keep none
        self._table = {
            "help": self.help,
            "status": self.status,
            "config": self.config,
            "sensor": self.sensor,
            "modem": self.modem,
            "log": self.log,
            "selftest": self.selftest,
            "trip": self.trip,
            "alarms": self.alarms,
            "reboot": self.reboot,
            "factory-reset": self.factory_reset,
        }

    async def run(self, line, out):
        """Run one line. Returns None, or an Ask when the command wants another line."""
        try:
            args = words.split(line)
        except words.WordError as e:
            out("error: %s" % e)
            return None
        if not args:
            return None
        name = args.pop(0)
        fn = self._table.get(name)
        if fn is None:
            near = words.closest(name, self._names)
            out("error: unknown command %s (try: %s)" % (json.dumps(name), near or "help"))
            return None
        return await self._guard(name, fn(args, out), out)

    async def answer(self, ask, text, out):
        """The answer to a command's question (an Ask it returned)."""
        return await self._guard("answer", ask.then(text, out), out)

    async def _guard(self, name, work, out):
        try:
            return await work
        except Usage as e:
            out("error: %s" % e)
        except StoreError as e:  # the flash refused the config: nothing changed
            out("error: " + e.reason)
        except config.ConfigError as e:
            out("error: " + _config_error(e))
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 -- a bug in a command must not stop the app
            log.exc("cli", e)
            out("error: %s failed: %s: %s" % (name, type(e).__name__, e))
        return None

    def complete(self, text):
        """(completed text, choices) for Tab."""
        parts = text.split(" ")
        if len(parts) == 1:
            pool = self._names
        elif len(parts) == 2 and parts[0] == "help":
            pool = self._names
        elif len(parts) == 2 and parts[0] == "config":
            pool = list(CONFIG_SUBS)
        elif len(parts) >= 3 and parts[0] == "config" and parts[1] in ("get", "unset", "help"):
            pool = [k.name for k in config.SCHEMA]
        elif len(parts) >= 3 and parts[0] == "config" and parts[1] == "set" and len(parts) % 2:
            pool = [k.name for k in config.SCHEMA]
        else:
            return text, []
        word = parts[-1]
        choices = [c for c in pool if c.startswith(word)]
        if not choices:
            return text, []
        head = " ".join(parts[:-1])
        head = head + " " if head else ""
        if len(choices) == 1:
            return head + choices[0] + " ", choices
        return head + words.common_prefix(choices), choices

    # ---- help ------------------------------------------------------------------------

    async def help(self, args, out):
        if not args:
            for name, usage, what in HELP:
                out("%-34s %s" % ((name + " " + usage).strip(), what))
            out("Ctrl-C leaves the app for the MicroPython REPL; docs/console.md has more.")
            return
        name = args[0]
        for n, usage, what in HELP:
            if n == name:
                out("usage: %s %s" % (n, usage) if usage else "usage: " + n)
                out("  " + what)
                if n == "config":
                    for line in CONFIG_HELP:
                        out("  " + line)
                return
        near = words.closest(name, [h[0] for h in HELP])
        raise Usage("no command %s (try: %s)" % (json.dumps(name), near or "help"))

    # ---- status ----------------------------------------------------------------------

    async def status(self, args, out):
        as_json = _flag(args, "--json")
        _no_more(args, "status [--json]")
        data = await status_data(self.device)
        if as_json:
            out(json.dumps(data))
        else:
            for line in status_lines(data):
                out(line)

    # ---- config ----------------------------------------------------------------------

    async def config(self, args, out):
        if not args:
            raise Usage("config needs one of: %s" % ", ".join(CONFIG_SUBS))
        sub = args.pop(0)
        fn = getattr(self, "_config_" + sub, None) if sub in CONFIG_SUBS else None
        if fn is None:
            near = words.closest(sub, CONFIG_SUBS)
            raise Usage(
                "no config command %s (try: config %s)" % (json.dumps(sub), near or "help")
            )
        return await fn(args, out)

    async def _config_show(self, args, out):
        as_json = _flag(args, "--json")
        _no_more(args, "config show [--json]")
        cfg = self.device.cfg
        if as_json:
            out(json.dumps(cfg.to_dict()))
            return
        pending = self.device.settings.pending_reboot
        for k in config.SCHEMA:
            note = "  (after reboot)" if k.name in pending else ""
            out("%s = %s%s" % (k.name, _value_text(k, cfg[k.name]), note))

    async def _config_get(self, args, out):
        as_json = _flag(args, "--json")
        if len(args) != 1:
            raise Usage("usage: config get KEY [--json]")
        k = config.key(args[0])
        v = self.device.cfg[k.name]
        if as_json:
            out(json.dumps({k.name: "***" if k.secret and v else v}))
        else:
            out("%s = %s" % (k.name, _value_text(k, v)))

    async def _config_set(self, args, out):
        if len(args) == 1:
            k = config.key(args[0])
            if not k.secret:
                raise Usage("config set %s needs a value (config help %s)" % (k.name, k.name))

            async def then(answer, out2):
                if not answer:  # an Enter by mistake must not wipe the secret
                    out2("cancelled: nothing changed (config unset %s clears it)" % k.name)
                    return
                self._print_changes(self.device.settings.change({k.name: answer}), out2)

            return Ask("%s (not shown): " % k.name, then, hidden=True)
        if not args or len(args) % 2:
            raise Usage("usage: config set KEY VALUE [KEY VALUE ...]")
        changes = {}
        for i in range(0, len(args), 2):
            config.key(args[i])  # an unknown key is named before any value is looked at
            if args[i] in changes:
                raise Usage("%s given twice" % args[i])
            changes[args[i]] = args[i + 1]
        self._print_changes(self.device.settings.change(changes), out)

    async def _config_unset(self, args, out):
        if not args:
            raise Usage("usage: config unset KEY [KEY ...]")
        for name in args:
            config.key(name)
        self._print_changes(self.device.settings.unset(args), out)

    async def _config_reset(self, args, out):
        yes = _flag(args, "--yes")
        _no_more(args, "config reset [--yes]")

        async def then(answer, out2):
            if answer.strip().lower() not in ("y", "yes"):
                out2("cancelled: nothing changed")
                return
            changes = self.device.settings.reset_all()
            self._print_changes([c for c in changes if c[2] != "unchanged"], out2)
            out2("ok: every key is at its default")

        if yes:
            return await then("yes", out)
        return Ask("reset all %d keys to their defaults? [y/N] " % len(config.SCHEMA), then)

    async def _config_help(self, args, out):
        if len(args) != 1:
            for line in CONFIG_HELP:
                out(line)
            return
        d = config.key(args[0]).doc()
        out("%s (%s): %s" % (d["key"], d["type"], d["help"]))
        if d["enum"]:
            out("  one of: " + ", ".join(d["enum"]))
        elif d["type"] == "str":
            chars = d["chars"]
            what = "" if not chars else (
                " of printable ASCII" if chars == " -~" else " of " + chars)  # fmt: skip
            out("  %s..%s characters%s" % (d["min_len"], d["max_len"], what))
        elif d["type"] != "bool":
            out("  %s..%s" % (d["min"], d["max"]))
        shown = '"***"' if d["secret"] and d["default"] else json.dumps(d["default"])
        when = {"now": "applies at once", "connect": "takes effect at the next connection to "
                "the broker"}.get(d["applies"], "takes effect at the next reboot")  # fmt: skip
        out("  default %s; a change %s" % (shown, when))
        if d["secret"]:
            out("  secret: never shown; `config set %s` alone asks for it" % d["key"])

    def _print_changes(self, changes, out):
        for name, value, how in changes:
            out("ok: %s = %s (%s)" % (name, _value_text(config.key(name), value), how))

    # ---- sensor, modem, log ----------------------------------------------------------

    async def sensor(self, args, out):
        _no_more(args, "sensor")
        s = await self.device.fresh_sample()
        t, rh, bat = s["temperature"], s["humidity"], s["battery"]
        out("temperature %s" % ("%.2f C" % t if t is not None else "none"))
        out("humidity    %s" % ("%.2f %%RH" % rh if rh is not None else "none"))
        out("battery     %s" % ("%.3f V" % bat if bat is not None else "none"))
        if s["sensor_error"]:
            out("error: sensor %s error (see `status` for the counts)" % s["sensor_error"])

    async def modem(self, args, out):
        at = self.device.at
        if args and args[0] == "at":
            return await self._modem_at(args[1:], out)
        _no_more(args, "modem [at CMD [--timeout MS]]")
        if at is None:
            out("modem: none (this board reports over its own network link)")
            return
        facts = await modem_facts(self.device, refresh=True)
        for name in MODEM_FIELDS:
            out("%-13s %s" % (name, facts.get(name)))
        if facts.get("refresh_error"):
            out("(live values not read: %s)" % facts["refresh_error"])
        m = self.device.link.modem
        out("counters      " + _pairs(m.counters))
        out("at            " + _pairs(at.counters))

    async def _modem_at(self, args, out):
        from tracker.errors import ModemError
        from tracker.modem.at import AtError, AtTimeout

        ms = AT_TIMEOUT_MS
        if "--timeout" in args:
            i = args.index("--timeout")
            try:
                ms = int(args[i + 1])
            except (IndexError, ValueError):
                ms = 0
            if not 100 <= ms <= AT_TIMEOUT_MAX_MS:
                raise Usage("--timeout must be an integer 100..%d (ms)" % AT_TIMEOUT_MAX_MS)
            del args[i : i + 2]
        if len(args) != 1 or not args[0][:2].upper() == "AT":
            raise Usage('usage: modem at CMD [--timeout MS], e.g. modem at "AT+CSQ"')
        at = self.device.at
        if at is None:
            raise Usage("this board has no modem")
        why = self.device.modem_busy()
        if why:
            raise Usage("refused: %s; try again in a moment" % why)
        try:
            r = await at.cmd(args[0], timeout_ms=ms)
        except AtTimeout:
            raise Usage("no answer within %d ms" % ms)
        except AtError as e:
            for line in getattr(e, "lines", ()) or ():
                out(line)
            raise Usage(str(e))
        except ModemError as e:
            raise Usage(str(e))
        for line in r.lines:
            out(line)
        out(r.final)

    async def log(self, args, out):
        n = LOG_DEFAULT
        if args:
            try:
                n = int(args[0])
            except ValueError:
                n = 0
            if n < 1 or len(args) > 1:
                raise Usage("usage: log [N], N a positive integer")
        entries = log.recent()
        for t, letter, tag, msg in entries[-n:]:
            out("%d.%03d %s %s: %s" % (t // 1000, t % 1000, letter, tag, msg))
        if not entries:
            out("(no log lines yet)")

    # ---- cold chain and alarms -----------------------------------------------------------

    async def trip(self, args, out):
        as_json = _flag(args, "--json")
        what = args.pop(0) if args else "show"
        _no_more(args, "trip [start|stop] [--json]")
        keeper = self.device.alarms
        if keeper is None:
            raise Usage("this tracker keeps no cold-chain statistics")
        from tracker.aio import unix_time

        now = unix_time()
        try:
            if what == "start":
                d = keeper.start_trip(now)
            elif what == "stop":
                d = keeper.stop_trip(now)
            elif what == "show":
                d = keeper.trip.summary(now)
            else:
                raise Usage("trip: %s? (start, stop or nothing)" % words.quote(what))
        except ValueError as e:
            raise Usage(str(e))
        if as_json:
            out(json.dumps(d))
        elif d is None:
            out("no trip running (trip start begins one)")
        else:
            head = (
                "trip stopped" if what == "stop" else "trip started" if what == "start" else "trip"
            )
            out("%s: %s" % (head, _pairs(d)))

    async def alarms(self, args, out):
        as_json = _flag(args, "--json")
        _no_more(args, "alarms [--json]")
        keeper = self.device.alarms
        if keeper is None:
            raise Usage("this tracker has no alarm rules")
        from tracker.aio import unix_time

        st = keeper.status(unix_time())
        if as_json:
            out(json.dumps(st))
            return
        active = st["active"]
        for name in sorted(active):
            out("%-20s %s" % (name, _pairs(active[name])))
        if not active:
            out("no alarm pending or raised")
        lane = st["lane"]
        out("alarm lane: %d unsent, next seq %d; %d events since boot"
            % (lane["pending"], lane["next_seq"], st["events"]))  # fmt: skip

    # ---- selftest, reboot, factory reset ---------------------------------------------

    async def selftest(self, args, out):
        from tracker.cli.selftest import run_all

        _no_more(args, "selftest")
        await run_all(self.device, out)

    async def reboot(self, args, out):
        _no_more(args, "reboot")
        out("rebooting")
        _after_output(self.device.reboot)

    async def factory_reset(self, args, out):
        yes = _flag(args, "--yes")
        _no_more(args, "factory-reset [--yes]")
        pending = self.device.store.pending()

        async def then(answer, out2):
            if answer.strip().lower() not in ("y", "yes"):
                out2("cancelled: nothing changed")
                return
            out2("erasing config, %d unsent readings and the crash record; rebooting" % pending)
            _after_output(self.device.factory_reset)

        if yes:
            return await then("yes", out)
        return Ask(
            "erase the config and %d unsent readings, keep only the device id, and reboot? "
            "[y/N] " % pending,
            then,
        )


def _after_output(action):
    """Run action (a reset) once the console has printed the command's answer."""

    async def later():
        await sleep_ms(RESET_DELAY_MS)
        action()

    asyncio.create_task(later())


def _config_error(e):
    if e.reason == "unknown key":
        near = words.closest(e.key, [k.name for k in config.SCHEMA])
        return "unknown key %s (try: %s)" % (
            json.dumps(e.key),
            near or "config show",
        )
    return "%s %s" % (e.key, e.reason)


def _pairs(d):
    return " ".join("%s=%s" % (k, d[k]) for k in sorted(d))
