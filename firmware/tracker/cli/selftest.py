# `selftest`: each part of the tracker checked once, one line each, PASS or FAIL and why.
import os
import time

from tracker.aio import unix_time

PROBE_FILE = "selftest.tmp"
PROBE_BYTES = 512
CLOCK_VALID_FROM = 1704067200  # 2024-01-01: a clock before it was never set
AT_TIMEOUT_MS = 5000


def _line(out, name, ok, why):
    out("%-12s %s  %s" % (name, "PASS" if ok else "FAIL", why))
    return ok


async def _sensor(device, out):
    s = await device.fresh_sample()
    if s["sensor_error"] or s["temperature"] is None:
        _line(out, "sensor", False, "no reading (%s error)" % (s["sensor_error"] or "no sensor"))
    else:
        _line(out, "sensor", True, "%.2f C, %.2f %%RH" % (s["temperature"], s["humidity"]))
    if s["battery"] is None:
        return _line(out, "battery", False, "no reading from the battery ADC")
    return _line(out, "battery", True, "%.3f V" % s["battery"])


async def _modem(device, out):
    from tracker.errors import ModemError

    at = device.at
    if at is None:
        out("%-12s SKIP  no modem: this board reports over its own network" % "modem")
        return
    why = device.modem_busy()
    if why:
        _line(out, "modem", False, "not checked: " + why)
        return
    try:
        await at.cmd("AT", timeout_ms=AT_TIMEOUT_MS)
        m = device.link.modem
        _line(out, "modem", True, "answers AT (%s %s)" % (m.family, m.info.get("model") or ""))
    except ModemError as e:
        _line(out, "modem", False, "no answer to AT: %s" % e)
        return
    try:
        r = await at.cmd("AT+CPIN?", timeout_ms=AT_TIMEOUT_MS)
        state = r.first("").split(":")[-1].strip()
        _line(out, "SIM", state == "READY", "%s, ICCID %s" % (state, m.info.get("iccid")))
    except ModemError as e:
        _line(out, "SIM", False, str(e))
    try:
        reg = await m.query_registration()
    except ModemError as e:
        _line(out, "network", False, str(e))
        return
    _line(out, "network", reg in ("home", "roaming"), "registration " + reg)


def _flash(out):
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(PROBE_BYTES))
    try:
        with open(PROBE_FILE, "wb") as f:
            f.write(pattern)
        with open(PROBE_FILE, "rb") as f:
            back = f.read()
        os.remove(PROBE_FILE)
    except OSError as e:
        return _line(out, "flash", False, "write/read failed: %s" % e)
    if back != pattern:
        return _line(out, "flash", False, "read back differs from what was written")
    free = ""
    try:
        st = os.statvfs("/")
        free = ", %d KiB free" % (st[0] * st[3] // 1024)
    except (OSError, AttributeError):
        pass
    return _line(out, "flash", True, "%d bytes written and read back%s" % (PROBE_BYTES, free))


def _clock(out):
    now = unix_time()
    if now < CLOCK_VALID_FROM:
        return _line(out, "clock", False, "not set (no network time yet)")
    t = time.gmtime()
    return _line(out, "clock", True, "%04d-%02d-%02d %02d:%02d:%02d UTC" % t[:6])


async def run_all(device, out):
    lines = []
    await _sensor(device, lines.append)
    await _modem(device, lines.append)
    _flash(lines.append)
    _clock(lines.append)
    failed = 0
    for line in lines:
        out(line)
        failed += line[13:17] == "FAIL"
    out("selftest: %s" % ("all %d passed" % len(lines) if not failed else "%d of %d FAILED"
                          % (failed, len(lines))))  # fmt: skip
