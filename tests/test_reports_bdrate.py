"""BD-rate engine: hand-checked vectors, method agreement, invariance, typed outcomes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.interpolate import PchipInterpolator

from reports import bdrate as bd

# Classic 4-point pair of the FAU-LMS bjontegaard package (x265 presets, PSNR).
FAU_RA = [9487.76, 4593.60, 2486.44, 1358.24]
FAU_QA = [40.037, 38.615, 36.845, 34.851]
FAU_RT = [9787.80, 4469.00, 2451.52, 1356.24]
FAU_QT = [40.121, 38.651, 36.970, 34.987]
# A second published 4-point pair (test +31 %).
S1_RA = [686.76, 309.58, 157.11, 85.95]
S1_QA = [40.28, 37.18, 34.24, 31.42]
S1_RT = [893.34, 407.8, 204.93, 112.75]
S1_QT = [40.39, 37.21, 34.17, 31.24]


def hermite_integral(h: list[float], y: list[float], d: list[float]) -> float:
    """Closed form: integral of a cubic Hermite piece = h (y0 + y1) / 2 + h^2 (d0 - d1) / 12."""
    return sum(h[i] * (y[i] + y[i + 1]) / 2 + h[i] ** 2 * (d[i] - d[i + 1]) / 12 for i in range(len(h)))


# ------------------------------------------------------------------ hand-checked vectors
@pytest.mark.parametrize("method", bd.METHODS)
def test_constant_rate_ratio_is_exact(method):
    q = [30.0, 33.0, 36.5, 40.0]
    ra = [100.0, 180.0, 350.0, 700.0]
    r = bd.bd_rate(ra, q, [0.8 * v for v in ra], q, method=method)
    assert r.ok and r.value == pytest.approx(-20.0, abs=1e-9)
    assert r.overlap == 1.0 and r.interval == (30.0, 40.0)


@pytest.mark.parametrize("method", bd.METHODS)
def test_linear_log_rate_shift(method):
    # log10 R = 0.1 q + 1 for both curves; the test reaches the same rate at 1 dB more quality.
    qa = np.array([30.0, 32.0, 34.0, 36.0, 38.0])
    qt = qa + 1.0
    ra = 10 ** (0.1 * qa + 1.0)
    rt = 10 ** (0.1 * (qt - 1.0) + 1.0)
    r = bd.bd_rate(ra, qa, rt, qt, method=method)
    assert r.value == pytest.approx((10 ** -0.1 - 1) * 100, abs=1e-9)  # -20.5672 %
    assert r.overlap == pytest.approx(7.0 / 9.0)
    assert r.interval == (31.0, 38.0)


def test_jvet_three_point_hand_computed():
    # Anchor log-rates 0, 1, 3 at q = 0, 1, 2: slopes by hand d = (0.5, 4/3, 2.5), integral 7/3.
    # Test is linear, log-rate 1.5 q - 0.5, integral 2 -> mean difference -1/6.
    ra, q = [1.0, 10.0, 1000.0], [0.0, 1.0, 2.0]
    rt = [10 ** -0.5, 10.0, 10 ** 2.5]
    assert hermite_integral([1, 1], [0, 1, 3], [0.5, 4 / 3, 2.5]) == pytest.approx(7 / 3)
    expected = (10 ** (-1 / 6) - 1) * 100  # -31.8707 %
    for method in ("jvet", "pchip"):
        assert bd.bd_rate(ra, q, rt, q, method=method).value == pytest.approx(expected, abs=1e-12)


def test_jvet_end_slope_zeroed_when_sign_flips():
    # Anchor log-rates 0, 0.1, 2: the 3-point end slope (3*0.1 - 1.9)/2 = -0.8 has the wrong sign -> 0.
    ra, q = [1.0, 10 ** 0.1, 100.0], [0.0, 1.0, 2.0]
    d1 = 6 / (3 / 0.1 + 3 / 1.9)
    ia = hermite_integral([1, 1], [0, 0.1, 2], [0.0, d1, 2.8])
    assert ia == pytest.approx(1.1 - 2.8 / 12)
    rt = [10 ** -0.2, 10 ** 0.8, 10 ** 1.8]  # linear, integral 1.6
    expected = (10 ** ((1.6 - ia) / 2) - 1) * 100
    unclamped = (10 ** ((1.6 - hermite_integral([1, 1], [0, 0.1, 2], [-0.8, d1, 2.8])) / 2) - 1) * 100
    got = bd.bd_rate(ra, q, rt, q, method="jvet").value
    assert got == pytest.approx(expected, abs=1e-10)  # 132.6 %
    assert abs(got - unclamped) > 1.0


def test_jvet_interior_slope_not_zeroed_and_3delta_clamp():
    # Non-monotonic anchor (strict=False computes what the spreadsheet would print):
    # q = 0, 1, 4; log-rate 0, 1, -29 -> deltas 1, -10. The end slope (5*1 + 10)/4 = 3.75 > 3*1
    # is clamped to 3; the interior slope keeps the harmonic form 12 / (7/1 + 5/-10) (not zeroed).
    qa = [0.0, 1.0, 4.0]
    ya = [0.0, 1.0, -29.0]
    d = [3.0, 12 / 6.5, ((2 * 3 + 1) * -10 - 3 * 1) / 4]
    ia = hermite_integral([1, 3], ya, d)
    qt = [0.0, 2.0, 4.0]
    rt = [1.0, 10.0, 100.0]  # linear log-rate q/2, integral 4
    r = bd.bd_rate([10 ** v for v in ya], qa, rt, qt, method="jvet", strict=False)
    assert r.status == bd.NON_MONOTONIC and r.value is None
    assert r.unchecked_value == pytest.approx((10 ** ((4 - ia) / 4) - 1) * 100, rel=1e-12)
    pchip = bd.bd_rate([10 ** v for v in ya], qa, rt, qt, method="pchip", strict=False)
    assert abs(pchip.unchecked_value - r.unchecked_value) > 1.0  # scipy zeroes the interior slope


def test_classic_four_point_vectors():
    fau = {m: bd.bd_rate(FAU_RA, FAU_QA, FAU_RT, FAU_QT, method=m).value for m in bd.METHODS}
    # VCEG-M33 value published with an independent implementation: -4.420462706090111
    assert fau["cubic"] == pytest.approx(-4.420462706090111, abs=1e-8)
    assert fau["jvet"] == pytest.approx(-4.417485350589, abs=1e-9)
    assert fau["akima"] == pytest.approx(-4.425245157, abs=1e-8)
    s1 = {m: bd.bd_rate(S1_RA, S1_QA, S1_RT, S1_QT, method=m).value for m in bd.METHODS}
    assert s1["cubic"] == pytest.approx(31.397374054908013, abs=1e-8)  # published VCEG-M33 value
    assert s1["jvet"] == pytest.approx(31.379878202398, abs=1e-9)
    assert s1["akima"] == pytest.approx(31.383988984, abs=1e-8)


@pytest.mark.parametrize("pair", [(FAU_RA, FAU_QA, FAU_RT, FAU_QT), (S1_RA, S1_QA, S1_RT, S1_QT)])
def test_jvet_matches_independent_numeric_integration(pair):
    ra, qa, rt, qt = (np.asarray(v, dtype=float) for v in pair)
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())

    def integral(r, q):
        o = np.argsort(q)
        f = PchipInterpolator(q[o], np.log10(r[o]))
        return quad(lambda x: float(f(x)), lo, hi, epsabs=1e-13, epsrel=1e-13, limit=200)[0]

    ref = (10 ** ((integral(rt, qt) - integral(ra, qa)) / (hi - lo)) - 1) * 100
    assert bd.bd_rate(ra, qa, rt, qt, method="jvet").value == pytest.approx(ref, abs=1e-9)


def test_cubic_matches_direct_polyfit_and_quadrature():
    ra, qa, rt, qt = (np.asarray(v, dtype=float) for v in (FAU_RA, FAU_QA, FAU_RT, FAU_QT))
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    pa, pt = np.polyfit(qa, np.log10(ra), 3), np.polyfit(qt, np.log10(rt), 3)
    diff = quad(lambda x: np.polyval(pt, x) - np.polyval(pa, x), lo, hi, epsabs=1e-14)[0] / (hi - lo)
    assert bd.bd_rate(ra, qa, rt, qt, method="cubic").value == pytest.approx((10 ** diff - 1) * 100, abs=1e-7)


# ----------------------------------------------------------------------- agreement
def test_jvet_equals_scipy_pchip_on_monotonic_data():
    rng = np.random.default_rng(1234)
    worst = 0.0
    for _ in range(300):
        n = int(rng.integers(3, 7))
        qa = np.cumsum(rng.uniform(0.2, 3.0, n)) + rng.uniform(20, 30)
        qt = np.cumsum(rng.uniform(0.2, 3.0, n)) + qa[0] + rng.uniform(-2, 2)
        ra = 10 ** np.cumsum(rng.uniform(0.05, 0.5, n))
        rt = 10 ** (np.cumsum(rng.uniform(0.05, 0.5, n)) + rng.uniform(-0.5, 0.5))
        a = bd.bd_rate(ra, qa, rt, qt, method="jvet")
        b = bd.bd_rate(ra, qa, rt, qt, method="pchip")
        assert a.status == b.status
        if a.ok:
            worst = max(worst, abs(a.value - b.value) / max(1.0, abs(a.value)))
    assert worst < 1e-12


@pytest.mark.parametrize("method", bd.METHODS)
def test_polarity_invariance(method):
    rng = np.random.default_rng(7)
    dists_a = np.array([0.30, 0.24, 0.19, 0.15])
    dists_t = np.array([0.27, 0.22, 0.18, 0.145])
    ra, rt = np.array([20.0, 40.0, 80.0, 160.0]), np.array([8.0, 17.0, 30.0, 64.0])
    base = bd.bd_rate(ra, dists_a, rt, dists_t, method=method, lower_is_better=True)
    flipped = bd.bd_rate(ra, 1 - dists_a, rt, 1 - dists_t, method=method, lower_is_better=False)
    assert base.ok and flipped.value == pytest.approx(base.value, abs=1e-9)
    assert flipped.interval == pytest.approx((1 - base.interval[1], 1 - base.interval[0]))
    fvd_a, fvd_t = 300 + 2000 * dists_a, 300 + 2000 * dists_t  # same shape, FVD-like range
    raw = bd.bd_rate(ra, fvd_a, rt, fvd_t, method=method, lower_is_better=True)
    mapped = bd.bd_rate(ra, 5000 - fvd_a, rt, 5000 - fvd_t, method=method)
    assert raw.value == pytest.approx(base.value, abs=1e-8)
    assert mapped.value == pytest.approx(base.value, abs=1e-8)
    order = rng.permutation(4)  # point order does not matter
    shuffled = bd.bd_rate(ra[order], dists_a[order], rt, dists_t, method=method, lower_is_better=True)
    assert shuffled.value == pytest.approx(base.value, abs=1e-12)


def test_wrong_polarity_is_flagged_not_silent():
    dists = [0.30, 0.24, 0.19, 0.15]  # falls as rate rises: fine only as lower-is-better
    r = bd.bd_rate([20, 40, 80, 160], dists, [10, 20, 40, 80], dists, lower_is_better=False)
    assert r.status == bd.NON_MONOTONIC and r.value is None


# ---------------------------------------------------------------------- outcomes
def test_outcomes_are_typed_with_reasons():
    q = [30.0, 33.0, 36.0, 39.0]
    r = [100.0, 200.0, 400.0, 800.0]
    cases = {
        bd.NON_MONOTONIC: bd.bd_rate(r, [30, 35, 33, 39], r, q),
        bd.NO_OVERLAP: bd.bd_rate(r, q, r, [40.0, 41, 42, 43]),
        bd.TOO_FEW_POINTS: bd.bd_rate(r[:2], q[:2], r[:2], q[:2]),
        bd.NAN_INPUT: bd.bd_rate(r, [30, math.nan, 36, 39], r, q),
    }
    for status, res in cases.items():
        assert res.status == status and res.value is None and res.reason
        assert res.cell().startswith(f"n/a ({status}:")
        assert not res.cell()[0].isdigit() and not res.cell().startswith("-")  # never a number
    assert bd.bd_rate(r[:3], q[:3], r[:3], q[:3], method="cubic").status == bd.TOO_FEW_POINTS
    assert bd.bd_rate(r[:3], q[:3], r[:3], q[:3], method="jvet").ok
    assert bd.bd_rate([0, 1, 2, 3], q, r, q).status == bd.NAN_INPUT  # log of 0
    assert bd.bd_rate(r, q, [1, math.inf, 3, 4], q).status == bd.NAN_INPUT
    assert bd.bd_rate(r, q[:3], r, q).status == bd.NAN_INPUT  # length mismatch
    assert bd.bd_rate(r, [30, 30, 36, 39], r, q).status == bd.NON_MONOTONIC  # equal quality
    touching = bd.bd_rate(r, q, r, [39.0, 40, 41, 42])
    assert touching.status == bd.NO_OVERLAP and touching.overlap == 0.0


def test_unknown_method_raises():
    from gfvc.errors import ConfigError

    with pytest.raises(ConfigError):
        bd.bd_rate([1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3], method="spline")


# ------------------------------------------------------------------- aggregation
def _three_sequences():
    base_r = np.array([10.0, 20.0, 40.0, 80.0])
    anchor, test = {}, {}
    for s, (k, c, q0) in {"a": (1.0, 0.2, 30.0), "b": (1.0, 0.5, 32.0), "c": (10.0, 0.9, 34.0)}.items():
        q = q0 + np.array([0.0, 2.0, 4.0, 6.0])
        anchor[s] = (k * base_r, q)
        test[s] = (c * k * base_r, q)
    return anchor, test


def test_mean_of_sequences_vs_average_curve_differ():
    anchor, test = _three_sequences()
    per = {s: bd.bd_rate(*anchor[s], *test[s]) for s in anchor}
    assert [round(per[s].value, 9) for s in "abc"] == [-80.0, -50.0, -10.0]
    mean = bd.mean_of_sequences(per, method="jvet")
    curve = bd.bd_rate_average_curve(anchor, test)
    assert mean.ok and mean.value == pytest.approx(-46.666666667, abs=1e-8)
    # Averaged rates are dominated by the 10x-rate sequence: ratio (0.2 + 0.5 + 9) / 12 per QP.
    assert curve.ok and curve.value == pytest.approx(((0.2 + 0.5 + 9.0) / 12.0 - 1) * 100, abs=1e-9)
    assert abs(mean.value - curve.value) > 20


def test_partial_and_failed_aggregates_are_flagged():
    anchor, test = _three_sequences()
    per = {s: bd.bd_rate(*anchor[s], *test[s]) for s in anchor}
    per["c"] = bd.bd_rate(anchor["c"][0], [1, 3, 2, 4], *test["c"])
    m = bd.mean_of_sequences(per, method="jvet")
    assert m.status == "partial" and m.n_ok == 2 and m.value == pytest.approx(-65.0)
    assert "c: non_monotonic" in m.reason and m.cell().startswith("-65.00*")
    none = bd.mean_of_sequences({"c": per["c"]}, method="jvet")
    assert none.value is None and none.status == bd.NON_MONOTONIC and none.cell().startswith("n/a")


def test_bootstrap_ci_is_seeded():
    per = {f"s{i}": bd.BdResult(bd.OK, v, "jvet") for i, v in enumerate([-60, -55, -70, -40, -65, -50])}
    a = bd.mean_of_sequences(per, method="jvet", bootstrap=500, seed=3)
    b = bd.mean_of_sequences(per, method="jvet", bootstrap=500, seed=3)
    c = bd.mean_of_sequences(per, method="jvet", bootstrap=500, seed=4)
    assert a.ci == b.ci and a.ci != c.ci
    assert a.ci[0] < a.value < a.ci[1] and -70 <= a.ci[0] and a.ci[1] <= -40


def test_polarity_table():
    assert bd.lower_is_better("fvd") and bd.lower_is_better("dists") and not bd.lower_is_better("psnr")
    from gfvc.errors import ConfigError

    with pytest.raises(ConfigError):
        bd.lower_is_better("vmaf_neg")
