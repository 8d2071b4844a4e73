"""Cold-chain statistics (firmware/tracker/alarms/coldchain.py) against values computed here,
independently, in plain CPython double precision straight from the definitions: on CPython
(hypothesis series) and on the ESP32-faithful MicroPython, whose single-precision floats are
what the device computes with.

Tolerances on the device (single precision: 24-bit mantissa, relative step 6e-8):
- The inputs are rounded to single precision here first (struct "f"), so the reference sees
  exactly the values the device holds.
- mean: the device sums deviations from the first reading with Kahan compensation, so its
  error is a few steps of the deviations (~1e-5 degC for |t| < 100); allowed 1e-3 degC.
- MKT = a / (a/Tr - ln M): a/Tr ~ 36 carries 2e-6 of rounding, ln M a few 1e-7 per term
  (Kahan again), and dMKT = MKT^2/a * d(...) ~ 8 K per unit: ~2e-5 K; allowed 2e-3 degC.
- counts, times and excursions compare exactly: readings lie on a 0.01 degC grid and the
  limits and hysteresis on 0.5, so no reading is within rounding of a boundary.
"""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.vboard import runtime as rt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "firmware"))

from tracker.alarms.coldchain import Stats  # noqa: E402

R = 8.3144598


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def reference(series, high, low, kj, hyst) -> dict:
    """The statistics from their definitions. series: [(unix_s, temp_c or None)]."""
    temps = [t for _, t in series if t is not None]
    out = {"n": len(temps), "above_s": 0, "below_s": 0, "excursions": 0}
    # Time: each reading holds until the next one (a failed reading holds nothing).
    for (t0, v0), (t1, _) in zip(series, series[1:], strict=False):
        if v0 is not None and v0 > high:
            out["above_s"] += t1 - t0
        elif v0 is not None and v0 < low:
            out["below_s"] += t1 - t0
    # Excursions: a reading beyond a limit while no excursion on that side runs starts one;
    # it runs until a reading is back within the limit by the hysteresis.
    side = 0
    for t in temps:
        if (side > 0 and t <= high - hyst) or (side < 0 and t >= low + hyst):
            side = 0
        now = 1 if t > high else (-1 if t < low else 0)
        if now and now != side:
            side = now
            out["excursions"] += 1
    if temps:
        a = kj * 1000.0 / R
        total = sum(math.exp(-a / (t + 273.15)) for t in temps)
        out["mkt"] = a / -math.log(total / len(temps)) - 273.15
        out["mean"] = math.fsum(temps) / len(temps)
        out["min"] = min(temps)
        out["max"] = max(temps)
    return out


def firmware(series, high, low, kj, hyst) -> Stats:
    s = Stats(high, low, kj, hyst)
    for t, v in series:
        s.add(v, t)
    return s


def check(got: dict, ref: dict, tol_mean: float, tol_mkt: float) -> None:
    for k in ("n", "above_s", "below_s", "excursions"):
        assert got[k] == ref[k], (k, got[k], ref[k])
    if ref["n"]:
        assert got["min"] == ref["min"] and got["max"] == ref["max"]
        assert abs(got["mean"] - ref["mean"]) <= tol_mean, (got["mean"], ref["mean"])
        assert abs(got["mkt"] - ref["mkt"]) <= tol_mkt, (got["mkt"], ref["mkt"])


# -- CPython: the same code in double precision, on hypothesis series --

grid_temps = st.integers(-4000, 6000).map(lambda c: c / 100)  # -40.00 .. 60.00 degC
series_strategy = st.lists(
    st.tuples(st.integers(1, 3600), st.one_of(grid_temps, grid_temps, grid_temps, st.none())),
    min_size=0,
    max_size=300,
)


def timed(steps, t0=1_700_000_000):
    out = []
    t = t0
    for gap, v in steps:
        t += gap
        out.append((t, v))
    return out


@settings(max_examples=300, deadline=None)
@given(
    steps=series_strategy,
    high=st.integers(-10, 40).map(lambda h: h / 2),
    width=st.integers(1, 40).map(lambda w: w / 2),
    hyst=st.integers(0, 6).map(lambda h: h / 2),
    kj=st.sampled_from([40.0, 83.144, 120.0, 250.0]),
)
def test_cpython_matches_the_definitions(steps, high, width, hyst, kj):
    series = timed(steps)
    low = high - width
    s = firmware(series, high, low, kj, hyst)
    got = {k: getattr(s, k) for k in ("n", "above_s", "below_s", "excursions", "min", "max")}
    got["mean"] = s.mean()
    got["mkt"] = s.mkt()
    check(got, reference(series, high, low, kj, hyst), 1e-9, 1e-6)
    d = s.as_dict()
    if d["n"]:
        assert d["mkt"] == round(s.mkt(), 2) and d["mean"] == round(s.mean(), 2)
        assert d["from"] == next(t for t, v in series if v is not None)
        assert d["to"] == series[-1][0]


# -- the device: single precision, one interpreter for a batch of generated series --

MP_SCRIPT = """
import json, sys
sys.path.insert(0, "firmware")
from tracker.alarms.coldchain import Stats
s = None
for line in open(sys.argv[1]):  # streamed: a device-sized heap holds one reading at a time
    w = line.split()
    if w[0] == "case":
        s = Stats(float(w[1]), float(w[2]), float(w[3]), float(w[4]))
    elif w[0] == "end":
        print(json.dumps([s.n, s.above_s, s.below_s, s.excursions, s.min, s.max, s.mean(),
                          s.mkt()]))
    else:
        s.add(None if w[1] == "-" else float(w[1]), int(w[0]))
"""


def case_text(cases) -> str:
    lines = []
    for high, low, kj, hyst, series in cases:
        lines.append(f"case {high!r} {low!r} {kj!r} {hyst!r}")
        lines.extend(f"{t} {'-' if v is None else repr(v)}" for t, v in series)
        lines.append("end")
    return "\n".join(lines) + "\n"


def device_cases() -> list:
    rng = random.Random(20261206)
    cases = []
    for i in range(60):
        high = rng.randint(-10, 40) / 2
        low = high - rng.randint(1, 40) / 2
        kj = rng.choice([40.0, 83.144, 120.0, 250.0, 500.0])
        hyst = rng.randint(0, 6) / 2
        n = rng.choice([1, 2, 10, 100, 1000, 5000])
        # A fridge drifting around its set point with door openings, or pure noise.
        t = 1_700_000_000
        temp = rng.uniform(-30, 50)
        series = []
        for _ in range(n):
            t += rng.randint(1, 900)
            if rng.random() < 0.03:
                series.append((t, None))
                continue
            temp += rng.gauss(0, 1.5 if i % 2 else 0.2)
            temp = min(max(temp, -80.0), 125.0)
            series.append((t, f32(round(temp, 2))))
        cases.append([high, low, kj, hyst, series])
    # Extremes: the sensor's whole range at the highest activation energy, both orders.
    for first, second in ((-80.0, 125.0), (125.0, -80.0)):
        series = [(1_700_000_000 + 60 * k, first if k % 2 else second) for k in range(200)]
        cases.append([8.0, 2.0, 500.0, 0.5, series])
    return cases


def test_single_precision_device_matches_the_definitions(tmp_path):
    runtime = rt.resolve()
    cases = device_cases()
    data = tmp_path / "cases.json"
    data.write_text(case_text(cases))
    script = tmp_path / "stats.py"
    script.write_text(MP_SCRIPT)
    result = subprocess.run(
        [runtime.path, "-X", "heapsize=144k", str(script), str(data)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == len(cases)
    worst_mean = worst_mkt = 0.0
    for (high, low, kj, hyst, series), line in zip(cases, lines, strict=True):
        n, above, below, exc, lo, hi, mean, mkt = json.loads(line)
        got = {"n": n, "above_s": above, "below_s": below, "excursions": exc}
        got.update({"min": lo, "max": hi, "mean": mean, "mkt": mkt})
        ref = reference(series, high, low, kj, hyst)
        if n:
            # The device prints 7 significant digits: its min/max are the readings to that.
            for k in ("min", "max"):
                assert math.isclose(got[k], ref[k], rel_tol=1e-6, abs_tol=1e-6), (k, got, ref)
                got[k] = ref[k]
            worst_mean = max(worst_mean, abs(mean - ref["mean"]))
            worst_mkt = max(worst_mkt, abs(mkt - ref["mkt"]))
        check(got, ref, 1e-3, 2e-3)
    print(f"worst single-precision error: mean {worst_mean:.2e} degC, MKT {worst_mkt:.2e} degC")
