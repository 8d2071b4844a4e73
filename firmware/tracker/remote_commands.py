# What each command on the `cmd` topic does (tracker/uplink/downlink.py parses and acks them;
# docs/remote.md lists them). `device` is the running Tracker. Loaded at the first command.
from tracker import VERSION
from tracker.aio import unix_time
from tracker.uplink.downlink import CommandError


async def run(device, name, args):
    if name == "ping":
        return {"fw": VERSION, "uptime_s": device.uptime.seconds(), "time": unix_time()}
    if name == "reboot":
        return {"after_ack": device.reboot}  # the ack first, then the reset
    if name == "report-now":
        device.report_now()
        return {"next_seq": device.store.next_seq}
    if name == "locate":
        return _locate(device)
    if name == "selftest":
        from tracker.cli.selftest import run_all

        lines = []
        await run_all(device, lines.append)
        return {"passed": lines[-1].endswith("passed"), "lines": lines}
    if name in ("trip-start", "trip-stop"):
        keeper = device.alarms
        if keeper is None:
            raise CommandError("this tracker keeps no cold-chain statistics")
        try:
            if name == "trip-start":
                return keeper.start_trip(unix_time())
            return keeper.stop_trip(unix_time())
        except ValueError as e:
            raise CommandError(str(e))
    raise CommandError("command %s is not implemented" % name)


def _locate(device):
    loc = device.location
    if loc is None:
        raise CommandError("this board has no GNSS")
    if device.cfg["gnss"] == "off":
        raise CommandError("GNSS is off by config (gnss = off)")
    loc.locate()  # a search now; its fix is reported in a reading of its own
    from tracker.location.fix import degrees_text

    fix, reason, age = loc.snapshot()
    out = {"state": loc.state, "reason": reason, "searching": True}
    if fix is not None:
        out["last"] = {"lat": degrees_text(fix.lat), "lon": degrees_text(fix.lon),
                       "fix_age_s": age}  # fmt: skip
    return out
