# Changing the config while the tracker runs, as the technician CLI (and remote config)
# does: every value checked against the schema first, all or nothing, stored atomically on
# flash, and only then applied: at once, at the next connection to the broker or at the
# next reboot, as each key's `applies` says. A refused change leaves the config, the file
# and the running app as they were.
from tracker import log
from tracker.config import SCHEMA, ConfigError, check_together, key

_TAG = "config"
NOW = "applied now"
CONNECT = "takes effect at the next connection to the broker"
REBOOT = "takes effect at the next reboot"
_HOW = {"now": NOW, "connect": CONNECT, "reboot": REBOOT}
UNCHANGED = "unchanged"


class StoreError(ConfigError):
    """The flash refused the new config (full, worn): nothing was changed."""


class Settings:
    def __init__(self, cfg, path, apply_live=None):
        """cfg: the running Config; path: its file; apply_live(changed): called with
        {name: value} of the changed live keys once they are stored."""
        self.cfg = cfg
        self.path = path
        self._apply_live = apply_live
        self.pending_reboot = []  # keys changed since boot that wait for a reboot

    def change(self, changes):
        """Set {name: value} (typed, or text as typed). Returns [(name, value, how)] in the
        given order, how being NOW, REBOOT or UNCHANGED. Raises ConfigError (nothing
        changed) for the first bad key or value, StoreError if the flash refuses."""
        parsed = []
        for name in changes:
            parsed.append((name, key(name).parse(changes[name])))
        return self._store(parsed)

    def unset(self, names):
        """Put keys back to their defaults, as change() does."""
        return self._store([(n, key(n).default) for n in names])

    def reset_all(self):
        return self._store([(k.name, k.default) for k in SCHEMA])

    def _store(self, parsed):
        cfg = self.cfg
        old = {}
        for name, value in parsed:
            if cfg[name] != value and name not in old:
                old[name] = cfg[name]
        if old:
            after = {}
            for k in SCHEMA:
                after[k.name] = cfg[k.name]
            for name, value in parsed:
                after[name] = value
            check_together(after, old)  # before anything changes
            for name, value in parsed:
                cfg.set(name, value)
            try:
                cfg.save(self.path)
            except OSError as e:
                for name in old:
                    cfg.set(name, old[name])
                raise StoreError("config", "could not be stored (%s); nothing changed" % e)
        out = []
        live = {}
        for name, value in parsed:
            applies = key(name).applies
            if name not in old:
                how = UNCHANGED
            else:
                how = _HOW[applies]
                if applies == "now":
                    live[name] = value
                elif applies == "reboot" and name not in self.pending_reboot:
                    self.pending_reboot.append(name)
            out.append((name, value, how))
        if old:
            log.i(_TAG, "changed: " + ", ".join(sorted(old)))
        if live and self._apply_live is not None:
            self._apply_live(live)
        return out
