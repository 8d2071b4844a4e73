"""The cellular network as a simulated modem sees it: SIM, registration, signal, operator, time.

This is the environment, settable by tests and the bench; the modem's own state (what it has
registered to, whether its PDP context is up) lives in `core.py` and follows these settings.

Numbers and encodings (3GPP TS 27.007):
- registration <stat> (+CREG/+CGREG/+CEREG): 0 not registered and not searching, 1 home,
  2 searching, 3 denied, 4 unknown, 5 roaming (section 7.2 / 10.1.22);
- +CSQ <rssi> 0..31 -> -113 + 2*rssi dBm, 99 unknown; <ber> 0..7, 99 unknown (8.5);
- +CESQ <rsrq> 0..34 -> rsrq/2 - 20 dB, <rsrp> 0..97 -> rsrp - 141 dBm, 255 unknown (8.69);
- +CCLK "yy/MM/dd,hh:mm:ss+zz", local time, zz = offset from UTC in quarter hours (8.15).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass

# Registration states by name -> 27.007 <stat>.
REG_STATES = {
    "not_registered": 0,
    "home": 1,
    "searching": 2,
    "denied": 3,
    "unknown": 4,
    "roaming": 5,
}
REGISTERED = (1, 5)

# Test PLMN 001-01 (ITU-T E.212 reserves MCC 001 for test networks): nothing real is named.
DEFAULT_PLMN = "00101"
DEFAULT_OPERATOR = "Albatross Sim"
DEFAULT_OPERATOR_SHORT = "AlbaSim"


def reg_code(state: str | int) -> int:
    """A registration state by name ("home") or by 27.007 number -> the number."""
    if isinstance(state, int):
        if state not in REG_STATES.values():
            raise ValueError(f"bad registration state {state}: use 0..5")
        return state
    try:
        return REG_STATES[state]
    except KeyError:
        names = ", ".join(REG_STATES)
        raise ValueError(f"bad registration state {state!r}: choose {names}") from None


@dataclass
class Signal:
    """Radio quality as the modem reports it (27.007 encodings, see the module docstring)."""

    rssi: int = 20  # -73 dBm: a decent indoor LTE signal
    ber: int = 99
    rsrp: int = 50  # -91 dBm
    rsrq: int = 20  # -10 dB

    def check(self) -> None:
        if not (0 <= self.rssi <= 31 or self.rssi == 99):
            raise ValueError(f"rssi {self.rssi} out of range: 0..31 or 99 (unknown)")
        if not (0 <= self.ber <= 7 or self.ber == 99):
            raise ValueError(f"ber {self.ber} out of range: 0..7 or 99 (unknown)")
        if not (0 <= self.rsrp <= 97 or self.rsrp == 255):
            raise ValueError(f"rsrp {self.rsrp} out of range: 0..97 or 255 (unknown)")
        if not (0 <= self.rsrq <= 34 or self.rsrq == 255):
            raise ValueError(f"rsrq {self.rsrq} out of range: 0..34 or 255 (unknown)")


class DelayLedger:
    """Seconds of waiting the simulator imposed, by kind, so a benchmark can subtract them.

    Kinds: "boot" (power-on to the first banner), "registration" (search to registered),
    "pdp" (NETOPEN / QIACT), "socket_open" (CIPOPEN / QIOPEN: the simulated part only, not
    the real TCP connect), "slow" (the slow fault).
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, kind: str, seconds: float) -> None:
        if seconds > 0:
            self._seconds[kind] += seconds
            self._counts[kind] += 1

    def totals(self) -> dict[str, float]:
        """{"boot": s, ..., "total": sum of all kinds}."""
        out = {kind: round(s, 6) for kind, s in sorted(self._seconds.items())}
        out["total"] = round(sum(self._seconds.values()), 6)
        return out

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


class Network:
    """Settings of the simulated network. Plain attributes; the simulator reads them live."""

    def __init__(self, *, registration_delay_s: float = 2.0, seed: str = "") -> None:
        self.sim_present = True
        # What the network grants once a search has lasted registration_delay_s.
        self.registration = REG_STATES["home"]
        self.registration_delay_s = registration_delay_s
        self.signal = Signal()
        self.operator = DEFAULT_OPERATOR
        self.operator_short = DEFAULT_OPERATOR_SHORT
        self.plmn = DEFAULT_PLMN
        self.tac = 0x1A2B
        self.cell_id = 0x01A2D001
        # Network time (NITZ) is sent on registration; None = the network sends none.
        self.time_offset_s: float | None = 0.0  # added to the host's UTC clock
        self.tz_quarters = 0  # local time zone of the network, quarter hours east of UTC
        digest = hashlib.sha256(f"ip:{seed}".encode()).digest()
        # Carrier-grade NAT space (RFC 6598, 100.64.0.0/10) looks like what operators hand out.
        self.ip_address = f"100.{64 + digest[0] % 64}.{digest[1]}.{1 + digest[2] % 254}"
        self.dns = ("100.64.0.1", "100.64.0.2")
        self.ledger = DelayLedger()

    @property
    def grants_registration(self) -> bool:
        return self.sim_present and self.registration in REGISTERED

    def utc_now(self) -> dt.datetime | None:
        if self.time_offset_s is None:
            return None
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.time_offset_s)
        return now.replace(microsecond=0)


def format_cclk(utc: dt.datetime, tz_quarters: int) -> str:
    """27.007 +CCLK time string (without the quotes): local time, zone in quarter hours."""
    local = utc + dt.timedelta(minutes=15 * tz_quarters)
    sign = "-" if tz_quarters < 0 else "+"
    return f"{local:%y/%m/%d,%H:%M:%S}{sign}{abs(tz_quarters):02d}"


def luhn_digit(digits: str) -> str:
    """The Luhn check digit for a string of digits (IMEI: 3GPP TS 23.003 annex B; ICCID)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right, starting with the rightmost
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_digit(number[:-1]) == number[-1]


def make_imei(tac: str, seed: str) -> str:
    """15-digit IMEI: 8-digit type allocation code, 6-digit serial from seed, Luhn digit."""
    digest = hashlib.sha256(f"imei:{seed}".encode()).hexdigest()
    serial = f"{int(digest[:12], 16) % 1_000_000:06d}"
    body = (tac + serial)[:14]
    return body + luhn_digit(body)


def make_iccid(seed: str) -> str:
    """19-digit ICCID (ITU-T E.118): 89 (telecom), country code 882 (international), issuer
    and account digits from seed, Luhn digit."""
    digest = hashlib.sha256(f"iccid:{seed}".encode()).hexdigest()
    body = "89882" + f"{int(digest[:16], 16) % 10**13:013d}"
    return body + luhn_digit(body)
