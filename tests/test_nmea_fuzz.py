"""Property tests for the firmware's NMEA parser (CPython, hypothesis), about 12,000 inputs.

Inputs: random bytes; real sentences from the gpsd corpus (when present) and generated ones,
mutated byte by byte; valid sentences whose fields hypothesis draws. Properties: the parser's
inner _feed (the catch-all in feed() would hide a bug) never raises; a sentence whose checksum
does not match changes nothing; a position generated from integers comes back exact to the
microdegree, rounded half away from zero.
"""

import sys
from fractions import Fraction
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "firmware"))

from tests.fuzz_budget import examples  # noqa: E402
from tracker.location.nmea import Nmea  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "gpsd-nmea"
SETTINGS = settings(
    max_examples=examples(3000),
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure is always reproducible
    suppress_health_check=[HealthCheck.too_slow],
)


def checksum(body: bytes) -> int:
    x = 0
    for ch in body:
        x ^= ch
    return x


def sentence(body: str) -> bytes:
    raw = body.encode()
    return b"$%s*%02X\r\n" % (raw, checksum(raw))


def _corpus_sentences() -> list[bytes]:
    out = [
        sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
        sentence("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"),
        sentence("GNGNS,101010.00,5000.0000,N,00000.0030,W,AAN,12,0.8,100.25,47.0,,,S"),
        sentence("GPGLL,4916.45,N,12311.12,W,225444,A,A"),
        sentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A"),
        sentence("GNGSA,A,3,01,02,03,04,,,,,,,,,1.8,1.0,1.5"),
        sentence("GPZDA,201530.00,04,07,2002,00,00"),
    ]
    for path in sorted(CORPUS.glob("*.log"))[::8] if CORPUS.is_dir() else []:
        lines = [raw for raw in path.read_bytes().split(b"\n") if raw.startswith(b"$")]
        out.extend(lines[:20])
    return out


SENTENCES = _corpus_sentences()


def state(p: Nmea) -> tuple:
    return (
        p.mode, p.lat, p.lon, p.alt, p.speed, p.track, p.sats, p.hdop, p.quality, p.date,
        p.tod_ms, p.unix_time(), p.fixed(),
        p._day, p._tod, p._frac, p._gga_talker, p._gga_time, p._latch, p._gsa_talker,
        p._gsa_used, p._gsa_other, p._last_mode, p._last_alt, p._old_alt,
    )  # fmt: skip


def warmed() -> Nmea:
    """A parser holding a 3D fix, a date and some history, so that changes would show."""
    p = Nmea()
    for raw in SENTENCES[:7]:
        p._feed(raw)
    return p


@SETTINGS
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_random_bytes_never_raise(lines: list[bytes]) -> None:
    p = warmed()
    for raw in lines:
        kind = p._feed(raw)
        assert kind is None or kind in ("GGA", "RMC", "GNS", "GLL", "VTG", "GSA", "ZDA")
    c = p.counters
    assert c["taken"] + c["bad_checksum"] + c["malformed"] + c["unknown"] <= c["sentences"]


MUTATION = st.tuples(
    st.sampled_from(("flip", "insert", "delete", "truncate")),
    st.integers(min_value=0, max_value=200),
    st.integers(min_value=0, max_value=255),
)


@SETTINGS
@given(st.sampled_from(SENTENCES), st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_sentences_never_raise_and_a_wrong_checksum_changes_nothing(
    raw: bytes, mutations: list
) -> None:
    data = bytearray(raw)
    for op, where, value in mutations:
        i = where % (len(data) + 1)
        if op == "flip" and i < len(data):
            data[i] ^= value or 1
        elif op == "insert":
            data.insert(i, value)
        elif op == "delete" and i < len(data):
            del data[i]
        elif op == "truncate":
            del data[i:]
    mutated = bytes(data)
    p = warmed()
    before = state(p)
    bad = p.counters["bad_checksum"]
    p._feed(mutated)
    if p.counters["bad_checksum"] > bad:
        assert state(p) == before


def _knots_field(value: int) -> str:
    whole, cents = divmod(value, 100)
    return f"{whole}.{cents:02d}"


@SETTINGS
@given(
    st.integers(min_value=-90_000_000, max_value=90_000_000),
    st.integers(min_value=-180_000_000, max_value=180_000_000),
    st.integers(min_value=0, max_value=86_399),
    st.integers(min_value=0, max_value=99_999),
    st.integers(min_value=0, max_value=35_999),
    st.sampled_from(("GP", "GN", "GL", "GA", "GB", "BD", "GQ")),
    st.integers(min_value=1, max_value=255),
)
def test_generated_rmc_round_trips_exactly(
    lat: int, lon: int, seconds: int, knots100: int, track10: int, talker: str, wrong: int
) -> None:
    # Microdegrees are exact as minutes with 5 decimals: udeg * 60 / 1e6 = udeg * 6 / 1e5.
    def angle(udeg: int, width: int) -> str:
        a = abs(udeg)
        deg, rest = divmod(a, 1_000_000)
        minutes = rest * 6  # hundred-thousandths of a minute
        return f"{deg:0{width}d}{minutes // 100_000:02d}.{minutes % 100_000:05d}"

    hh, rem = divmod(seconds, 3600)
    mm, ss = divmod(rem, 60)
    body = (
        f"{talker}RMC,{hh:02d}{mm:02d}{ss:02d}.00,A,"
        f"{angle(lat, 2)},{'S' if lat < 0 else 'N'},{angle(lon, 3)},{'W' if lon < 0 else 'E'},"
        f"{_knots_field(knots100)},{track10 // 10}.{track10 % 10},150624,,,A"
    )
    raw = sentence(body)
    p = Nmea()
    assert p._feed(raw) == "RMC"
    assert (p.lat, p.lon) == (lat, lon)
    assert p.tod_ms == seconds * 1000 and p.date == (2024, 6, 15)
    assert abs(p.speed - knots100 / 100 * 1852 / 3600) < 1e-9
    assert abs(p.track - track10 / 10) < 1e-9
    assert p.fixed() and p.mode == 2
    # the same sentence with any other checksum changes nothing
    before = state(p)
    good = checksum(body.encode())
    forged = raw[:-4] + b"%02X\r\n" % (good ^ wrong)
    assert p._feed(forged) is None
    assert state(p) == before


@SETTINGS
@given(
    st.integers(min_value=0, max_value=89),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=8).flatmap(
        lambda k: st.tuples(st.just(k), st.integers(min_value=0, max_value=10**k - 1))
    ),
    st.booleans(),
)
def test_any_digits_round_half_away_from_zero(
    deg: int, minutes: int, frac: tuple, south: bool
) -> None:
    k, digits = frac
    text = f"{deg:02d}{minutes:02d}" + (f".{digits:0{k}d}" if k else "")
    exact = deg + (minutes + Fraction(digits, 10**k)) / 60  # degrees, exactly
    expected = int(exact * 1_000_000 + Fraction(1, 2))  # floor(x + 1/2): half goes up
    if south:
        expected = -expected
    body = f"GNGGA,101010.00,{text},{'S' if south else 'N'},01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    p = Nmea()
    assert p._feed(sentence(body)) == "GGA"
    assert p.lat == expected
