# What `status` shows: one dict (the --json form) gathered from the running app, and its
# lines for a person.
from tracker import VERSION
from tracker.aio import ticks_diff, ticks_ms, unix_time

REFRESH_TIMEOUT_MS = 3000
# +COPS <AcT> (3GPP 27.007) as a person says it.
RAT_NAMES = {0: "GSM", 2: "UTRAN", 3: "GSM/EGPRS", 7: "LTE", 8: "LTE-M", 9: "NB-IoT"}


async def modem_facts(device, refresh):
    """The modem's identity and network; with refresh, signal and operator read now unless
    the modem is busy or off (then the last values read)."""
    link = device.link
    m = getattr(link, "modem", None)
    if m is None:
        return None
    cache = device.modem_cache
    if refresh:
        why = device.modem_busy()
        if why:
            cache["refresh_error"] = why
        else:
            from tracker.errors import ModemError

            try:
                cache.update(await m.signal())
                op = await m.operator()
                cache["operator"] = op["name"] if op else None
                cache["rat"] = RAT_NAMES.get(op["act"], op["act"]) if op else None
                cache["refresh_error"] = None
            except ModemError as e:
                cache["refresh_error"] = "%s: %s" % (type(e).__name__, e)
    info = m.info
    out = {
        "family": m.family,
        "model": info.get("model"),
        "fw": info.get("fw"),
        "imei": info.get("imei"),
        "iccid": info.get("iccid"),
        "registration": m.registration,
        "pdp_active": m.pdp_active,
        "powered": m.powered,
    }
    for k in ("operator", "rat", "rssi_dbm", "rsrp_dbm", "rsrq_db", "refresh_error"):
        out[k] = cache.get(k)
    return out


def _age_s(t):
    return None if t is None else ticks_diff(ticks_ms(), t) // 1000


async def status_data(device):
    base = device.status()  # what the retained MQTT status message says
    up = device.uplink
    link = device.link.status()
    sample = device.last_sample
    return {
        "fw": VERSION,
        "board": base["board"],
        "device_id": device.device_id,
        "uptime_s": base["uptime_s"],
        "reset_cause": base["reset_cause"],
        "time": unix_time(),
        "config_error": base["config_error"],
        "pending_reboot": device.settings.pending_reboot,
        "modem": await modem_facts(device, refresh=True),
        "link": {
            "kind": link["kind"],
            "failures": link["failures"],
            "last_error": link["last_error"],
            "ladder": link.get("ladder"),
            "last_recovery": link.get("last_recovery"),
        },
        "uplink": {
            "connected": up.connected,
            "last_publish_age_s": _age_s(up.last_publish),
            "last_error": up.last_error,
            "sent": up.counters["sent"],
            "messages": up.counters["messages"],
        },
        "store": base["store"],
        "last_reading": sample,
        "last_reading_age_s": _age_s(device.last_sample_at),
        "gnss": _gnss(device.location),
        "sensors": base["sensors"],
        "heap": base["heap"],
        "log": base["log"],
        "memory_errors": base["memory_errors"],
        "crashes": base["crashes"],
        "last_crash": base["last_crash"],
    }


def _gnss(loc):
    if loc is None:
        return None
    from tracker.location.fix import degrees_text

    out = loc.status()
    fix = loc.last
    out["position"] = None if fix is None else {
        "lat": degrees_text(fix.lat), "lon": degrees_text(fix.lon), "alt": fix.alt,
        "speed": fix.speed, "heading": fix.heading, "sats": fix.sats, "hdop": fix.hdop,
    }  # fmt: skip
    return out


def _v(x, unit=""):
    return "-" if x is None else "%s%s" % (x, unit)


def _ago(s):
    return "never" if s is None else "%d s ago" % s


def status_lines(d):
    out = [
        "firmware  albatross %s on %s, device %s" % (d["fw"], d["board"], d["device_id"]),
        "uptime    %d s, reset cause %s, crashes in a row %d%s"
        % (
            d["uptime_s"],
            d["reset_cause"],
            d["crashes"],
            ", last: " + d["last_crash"] if d["last_crash"] else "",
        ),  # fmt: skip
    ]
    if d["config_error"]:
        out.append("config    ERROR %s (defaults in use)" % d["config_error"])
    if d["pending_reboot"]:
        out.append("config    changed, waiting for a reboot: " + ", ".join(d["pending_reboot"]))
    m = d["modem"]
    if m is not None:
        out.append(
            "modem     %s %s fw %s, %s"
            % (
                m["family"],
                _v(m["model"]),
                _v(m["fw"]),
                "on" if m["powered"] else "off or unknown",
            )  # fmt: skip
        )
        out.append("          IMEI %s  ICCID %s" % (_v(m["imei"]), _v(m["iccid"])))
        out.append(
            "network   %s, operator %s, %s, RSSI %s, RSRP %s, data %s"
            % (
                m["registration"],
                _v(m["operator"]),
                _v(m["rat"]),
                _v(m["rssi_dbm"], " dBm"),
                _v(m["rsrp_dbm"], " dBm"),
                "up" if m["pdp_active"] else "down",
            )  # fmt: skip
        )
    lk = d["link"]
    ladder = lk["ladder"]
    steps = (
        ", ".join("%s %d" % (k, ladder[k]) for k in sorted(ladder) if ladder[k]) if ladder else ""
    )
    out.append(
        "recovery  failures now %d; %s; last: %s"
        % (lk["failures"], steps or "no recovery steps taken", _v(lk["last_recovery"]))
    )
    up = d["uplink"]
    out.append(
        "uplink    %s, last publish %s, %d readings in %d messages%s"
        % (
            "connected" if up["connected"] else "not connected",
            _ago(up["last_publish_age_s"]),
            up["sent"],
            up["messages"],
            ", last error: " + up["last_error"] if up["last_error"] else "",
        )  # fmt: skip
    )
    st = d["store"]
    out.append(
        "store     %d pending, %d acknowledged since boot, %d dropped, %d corrupt; "
        "capacity %d (%s)"
        % (
            st["pending"],
            st["acked"],
            st["dropped"],
            st["corrupt_records"],
            st["capacity"],
            st["capacity_by"],
        )  # fmt: skip
    )
    r = d["last_reading"]
    if r:
        out.append(
            "reading   %s C, %s %%RH, battery %s V, %s%s"
            % (
                _v(r["temperature"]),
                _v(r["humidity"]),
                _v(r["battery"]),
                _ago(d["last_reading_age_s"]),
                ", sensor error: " + r["sensor_error"] if r["sensor_error"] else "",
            )  # fmt: skip
        )
    else:
        out.append("reading   none yet")
    g = d["gnss"]
    if g is not None:
        p = g["position"]
        out.append(
            "gnss      %s (%s)%s, %s; first fix after %s, on %d s, %d fixes, %d timeouts"
            % (
                g["state"],
                g["source"],
                ", " + g["reason"] if g["reason"] else "",
                "at %s,%s (%s s old, %s sats, HDOP %s)"
                % (p["lat"], p["lon"], g["fix_age_s"], _v(p["sats"]), _v(p["hdop"]))
                if p
                else "no position yet",
                _v(g["ttff_s"], " s"),
                g["on_s"],
                g["fixes"],
                g["timeouts"],
            )  # fmt: skip
        )
    s = d["sensors"]
    out.append(
        "sensors   %d samples, %d failed, %d CRC errors, %d bus errors, %d bus recoveries"
        % (
            s["samples"],
            s["failed_samples"],
            s["crc_errors"],
            s["bus_errors"],
            s["bus_recoveries"],
        )  # fmt: skip
    )
    h = d["heap"]
    out.append(
        "heap      %d used, %d free, most used %d; %d memory errors; log %d warnings, %d errors"
        % (
            h["used"],
            h["free"],
            h["used_max"],
            d["memory_errors"],
            d["log"]["warnings"],
            d["log"]["errors"],
        )  # fmt: skip
    )
    return out
