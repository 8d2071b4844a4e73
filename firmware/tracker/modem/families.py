# Which driver a modem family needs (board.json "modem.family" -> make_modem), and the pure
# parsers of the 27.007 answers every family shares (registration, signal, operator, clock):
# text in, values out, so they are tested on both interpreters without a modem. A family
# module is imported only when asked for, so a board loads one driver.
from tracker.modem.at_lines import params
from tracker.timing import days_from_civil

FAMILIES = {
    "sim7600": ("simcom", "Sim7600"),
    "a7670": ("simcom", "A76xx"),
    "a76xx": ("simcom", "A76xx"),
    "a7608": ("simcom", "A76xx"),
    "bg96": ("quectel", "Bg96"),
    "bg95": ("quectel", "Bg95"),
    "ec25": ("quectel", "Ec25"),
    "eg25": ("quectel", "Ec25"),
}


def modem_class(family):
    try:
        mod, name = FAMILIES[family.lower()]
    except KeyError:
        raise ValueError("unknown modem family %r (%s)" % (family, ", ".join(sorted(FAMILIES))))
    if mod == "simcom":
        from tracker.modem import simcom as m
    else:
        from tracker.modem import quectel as m
    return getattr(m, name)


def make_modem(family, at, **pins_and_options):
    """The driver for `family` on AtEngine `at`; keywords: pwrkey, pwrkey_active, power,
    power_active, status, status_active, apn, rat and any `*_ms` timeout to override."""
    return modem_class(family)(at, **pins_and_options)


# ---- 27.007 answers --------------------------------------------------------------------

# <stat> of +CREG/+CGREG/+CEREG; REG_PRIORITY decides the combined state when the EPS and
# GPRS domains disagree (registered anywhere wins, then still searching).
REG_NAMES = ("not_registered", "home", "searching", "denied", "unknown", "roaming")
REG_PRIORITY = (1, 5, 2, 3, 0, 4)
REGISTERED = ("home", "roaming")  # the states in which the modem is on the network


def answer_value(line):
    """The value of a one-line answer: `+CGMR: X` / `+ICCID: "X"` / `X` -> "X"."""
    if line[:1] == "+" and ":" in line:
        line = line[line.find(":") + 1 :]
    return line.strip().strip('"')


def reg_stat(line):
    """<stat> of `+CEREG: <n>,<stat>[,"tac",...]` (an answer) or `+CEREG: <stat>[,"tac",...]`
    (a URC): in an answer the second field is a bare number, in a URC a quoted TAC."""
    parts = line[line.find(":") + 1 :].strip().split(",", 2)
    try:
        if len(parts) >= 2 and parts[1] and parts[1][0] != '"':
            return int(parts[1])
        return int(parts[0])
    except ValueError:
        return None


def registration_name(stats):
    """The combined state of the domains' <stat> values."""
    for s in REG_PRIORITY:
        if s in stats:
            return REG_NAMES[s]
    return "unknown"


def signal_values(csq, cesq=None):
    """`+CSQ: <rssi>,<ber>` (rssi 0..31 -> -113 + 2*rssi dBm, 99 unknown) and optionally
    `+CESQ: ...,<rsrq>,<rsrp>` (rsrq n -> -20 + n/2 dB, rsrp n -> n - 141 dBm, 255 unknown)."""
    rssi = params(csq)[0]
    ok = isinstance(rssi, int) and 0 <= rssi < 32
    out = {"csq": rssi, "rssi_dbm": -113 + 2 * rssi if ok else None}
    p = params(cesq) if cesq else ()
    if len(p) >= 6:
        rsrq, rsrp = p[4], p[5]
        out["rsrq_db"] = -20 + rsrq / 2 if isinstance(rsrq, int) and rsrq < 35 else None
        out["rsrp_dbm"] = rsrp - 141 if isinstance(rsrp, int) and rsrp < 98 else None
    return out


def operator_value(cops):
    """`+COPS: 0,0,"name",7` -> {"name", "act"} (act 7 LTE, 8 LTE-M, 9 NB-IoT); None when
    not registered (`+COPS: 0`)."""
    p = params(cops)
    if len(p) < 3:
        return None
    return {"name": p[2], "act": p[3] if len(p) > 3 else None}


def cclk_to_unix(line, min_year=2020):
    """`+CCLK: "24/03/01,12:00:00-20"` (local time, zone in quarter hours) -> unix seconds
    UTC; None when malformed or before min_year (a modem without network time counts from
    1980 (SIMCom) or 2000/2004 (Quectel))."""
    i = line.find('"')
    s = line[i + 1 : line.find('"', i + 1)] if i >= 0 else line[line.find(":") + 1 :].strip()
    if len(s) < 17 or s[2] != "/" or s[5] != "/" or s[8] != "," or s[11] != ":":
        return None
    try:
        yy, mo, d = int(s[0:2]), int(s[3:5]), int(s[6:8])
        h, mi, sec = int(s[9:11]), int(s[12:14]), int(s[15:17])
        zone = int(s[17:]) if len(s) > 17 else 0
    except ValueError:
        return None
    year = 2000 + yy if yy < 70 else 1900 + yy
    if year < min_year or not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60):
        return None
    if sec > 60 or not -96 <= zone <= 96:
        return None
    return days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + sec - zone * 900
