"""Bjontegaard-delta rate (BD-rate): one engine, four interpolation methods, typed outcomes.

BD-rate compares two rate-quality curves by the average horizontal distance
between them in log-rate, over the quality interval both curves cover
(G. Bjontegaard, "Calculation of average PSNR differences between
RD-curves", VCEG-M33, 2001):

    avg  = 1/(hi - lo) * integral_lo^hi [ log10 R_test(q) - log10 R_anchor(q) ] dq
    BD   = (10**avg - 1) * 100   [%]   (negative = the test codec saves bits)

Methods (``method=``):

- ``"jvet"``: the piecewise cubic Hermite interpolation of the JCT-VC / JVET
  CTC spreadsheet (JCTVC-L1100, JVET-T2010): interior slopes in the weighted
  harmonic form ``(w1 + w2) / (w1/d_left + w2/d_right)`` with
  ``w1 = 2 h_right + h_left``, ``w2 = h_right + 2 h_left``; end slopes from the
  3-point formula ``((2 h1 + h2) d1 - h1 d2) / (h1 + h2)``, set to 0 when its
  sign differs from ``d1`` and clamped to ``3 d1`` when ``d1``/``d2`` change
  sign and it exceeds ``3 |d1|``; each cubic piece integrated exactly over
  its part of the overlap. Implemented here from those formulas.
- ``"pchip"``: :class:`scipy.interpolate.PchipInterpolator` integrated exactly.
  On monotonic data (the only data accepted in strict mode) it equals
  ``"jvet"`` to rounding (CTC_FACTS section 5).
- ``"cubic"``: VCEG-M33, a least-squares cubic polynomial of log-rate in
  quality (exact interpolation for four points), integrated exactly.
  Quality is centred and scaled before the fit so affine re-maps such as
  ``5000 - FVD`` do not cost accuracy.
- ``"akima"``: :class:`scipy.interpolate.Akima1DInterpolator` integrated
  exactly (Herglotz et al., "Beyond Bjontegaard", ICIP 2022).

Quality polarity: for lower-is-better metrics (DISTS, LPIPS, FVD) quality is
negated; any affine re-map with a negative slope (``1 - DISTS``,
``5000 - FVD``) gives the same BD-rate, because BD-rate is an average over
quality and does not depend on its origin or scale.

A result is never a silent 0 or NaN: :class:`BdResult` carries a status
(``ok``, ``non_monotonic``, ``no_overlap``, ``too_few_points``, ``nan_input``)
and the reason, and only ``ok`` results carry a value.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import metrics
from gfvc.errors import ConfigError

METHODS: tuple[str, ...] = ("jvet", "pchip", "cubic", "akima")
# Fewest rate points each method can use: the Hermite end-slope formula needs 3
# points, a cubic fit needs 4 (JVET CTCs always use 4).
MIN_POINTS: dict[str, int] = {"jvet": 3, "pchip": 3, "cubic": 4, "akima": 3}

OK = "ok"
NON_MONOTONIC = "non_monotonic"
NO_OVERLAP = "no_overlap"
TOO_FEW_POINTS = "too_few_points"
NAN_INPUT = "nan_input"
STATUSES: tuple[str, ...] = (OK, NON_MONOTONIC, NO_OVERLAP, TOO_FEW_POINTS, NAN_INPUT)

# Polarity of the suite's metric value names; used when metrics.LOWER_IS_BETTER
# is not importable (the metrics area owns the authoritative table).
_FALLBACK_LOWER_IS_BETTER: dict[str, bool] = {
    "psnr": False, "psnr_y": False, "ssim": False, "dists": True, "lpips": True, "fvd": True,
}


def lower_is_better(metric: str) -> bool:
    """Polarity of a metric value name; unknown names raise ConfigError."""
    table = dict(_FALLBACK_LOWER_IS_BETTER)
    try:  # the metrics area's table wins where it exists
        table.update(getattr(metrics, "LOWER_IS_BETTER", {}) or {})
    except Exception:  # pragma: no cover - metrics area unavailable
        pass
    if metric not in table:
        raise ConfigError(f"unknown polarity of metric {metric!r}: pass lower_is_better explicitly "
                          f"(known: {', '.join(sorted(table))})")
    return bool(table[metric])


@dataclass(frozen=True)
class BdResult:
    """Outcome of one BD-rate computation.

    ``value`` is the BD-rate in percent and is set only when ``status == "ok"``.
    ``overlap`` is the length of the common quality interval divided by the
    length of the union of both quality ranges (1.0 = identical ranges, 0 = none).
    ``unchecked_value`` is what the method gives when the data fail the
    monotonicity check (what a spreadsheet without checks would print); it is
    for diagnosis only and never shown as a result.
    """

    status: str
    value: float | None
    method: str
    overlap: float = 0.0
    reason: str = ""
    interval: tuple[float, float] | None = None
    n_anchor: int = 0
    n_test: int = 0
    unchecked_value: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def cell(self, digits: int = 2) -> str:
        """Text for a table cell: the value, or the status with its reason."""
        if self.ok and self.value is not None:
            return f"{self.value:.{digits}f}"
        return f"n/a ({self.status}: {self.reason})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval else None
        return d


def _fail(status: str, method: str, reason: str, **kw: Any) -> BdResult:
    return BdResult(status=status, value=None, method=method, reason=reason, **kw)


# --------------------------------------------------------------------------- JVET
def _jvet_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Node slopes of the CTC spreadsheet's Hermite interpolant (see module doc)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.empty(n)
    for k in range(1, n - 1):
        w1 = 2.0 * h[k] + h[k - 1]
        w2 = h[k] + 2.0 * h[k - 1]
        d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0] = _jvet_end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _jvet_end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _jvet_end_slope(h1: float, h2: float, del1: float, del2: float) -> float:
    """Three-point end slope with the shape-preserving clamps."""
    d = ((2.0 * h1 + h2) * del1 - h1 * del2) / (h1 + h2)
    if np.sign(d) != np.sign(del1):
        return 0.0
    if np.sign(del1) != np.sign(del2) and abs(d) > abs(3.0 * del1):
        return 3.0 * del1
    return float(d)


def _jvet_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral over [lo, hi] of the piecewise cubic Hermite interpolant.

    Each piece is written in local coordinate s = q - x_i as
    y_i + d_i s + c_i s^2 + b_i s^3 and integrated in closed form over the part
    of [x_i, x_{i+1}] inside [lo, hi].
    """
    d = _jvet_slopes(x, y)
    h = np.diff(x)
    delta = np.diff(y) / h
    total = 0.0
    for i in range(len(x) - 1):
        c = (3.0 * delta[i] - 2.0 * d[i] - d[i + 1]) / h[i]
        b = (d[i] - 2.0 * delta[i] + d[i + 1]) / (h[i] * h[i])
        s0 = min(max(x[i], lo), hi) - x[i]
        s1 = min(max(x[i + 1], lo), hi) - x[i]
        if s1 <= s0:
            continue
        total += ((s1 - s0) * y[i] + (s1**2 - s0**2) * d[i] / 2.0
                  + (s1**3 - s0**3) * c / 3.0 + (s1**4 - s0**4) * b / 4.0)
    return float(total)


# ----------------------------------------------------------------- other methods
def _integral(method: str, x: np.ndarray, y: np.ndarray, lo: float, hi: float, scale: tuple[float, float]) -> float:
    if method == "jvet":
        return _jvet_integral(x, y, lo, hi)
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(x, y, extrapolate=False).integrate(lo, hi))
    if method == "akima":
        from scipy.interpolate import Akima1DInterpolator

        return float(Akima1DInterpolator(x, y).integrate(lo, hi))
    if method == "cubic":
        # Centre and scale quality with a transform shared by both curves, fit a
        # cubic in u, integrate exactly, and convert back (dq = s du).
        m, s = scale
        u = (x - m) / s
        coef = np.polynomial.polynomial.polyfit(u, y, 3)
        anti = np.polynomial.polynomial.polyint(coef)
        ulo, uhi = (lo - m) / s, (hi - m) / s
        val = np.polynomial.polynomial.polyval(uhi, anti) - np.polynomial.polynomial.polyval(ulo, anti)
        return float(val * s)
    raise ConfigError(f"unknown BD-rate method {method!r} (known: {', '.join(METHODS)})")


def _as_array(v: Iterable[float]) -> np.ndarray:
    try:
        return np.asarray(list(v), dtype=float)
    except (TypeError, ValueError):
        return np.asarray([math.nan])


def _check_curve(label: str, rate: np.ndarray, q: np.ndarray, sign: float) -> str | None:
    """Reason why a curve sorted by quality is not monotonic (rate must rise with quality), else None.

    ``sign`` turns the internal (higher-is-better) quality back into the metric's unit for the message.
    """
    dq = np.diff(q)
    if np.any(dq == 0):
        i = int(np.flatnonzero(dq == 0)[0])
        return f"{label}: two rate points have the same quality {sign * q[i]:.6g}"
    dr = np.diff(rate)
    if np.any(dr <= 0):
        i = int(np.flatnonzero(dr <= 0)[0])
        return (f"{label}: quality does not improve with rate: rate {rate[i + 1]:.6g} gives quality "
                f"{sign * q[i + 1]:.6g}, rate {rate[i]:.6g} gives {sign * q[i]:.6g}")
    return None


def bd_rate(rate_anchor: Sequence[float], quality_anchor: Sequence[float],
            rate_test: Sequence[float], quality_test: Sequence[float], *,
            method: str = "jvet", lower_is_better: bool = False, strict: bool = True) -> BdResult:
    """BD-rate of the test curve against the anchor curve, in percent.

    Rates are in any common unit (kbps); quality in the metric's own unit.
    ``lower_is_better`` negates quality (DISTS, LPIPS, FVD). Points may come in
    any order; they are sorted by quality. With ``strict=False`` a
    non-monotonic curve is interpolated anyway (as the CTC spreadsheet does),
    and the result is still reported with status ``non_monotonic`` and the
    number in ``unchecked_value`` only.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown BD-rate method {method!r} (known: {', '.join(METHODS)})")
    ra, qa, rt, qt = (_as_array(v) for v in (rate_anchor, quality_anchor, rate_test, quality_test))
    kw: dict[str, Any] = {"n_anchor": int(ra.size), "n_test": int(rt.size)}
    for label, r, q in (("anchor", ra, qa), ("test", rt, qt)):
        if r.size != q.size:
            return _fail(NAN_INPUT, method, f"{label}: {r.size} rates but {q.size} quality values", **kw)
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
            return _fail(NAN_INPUT, method, f"{label}: rate or quality is NaN/inf (metric not computed?)", **kw)
        if np.any(r <= 0):
            return _fail(NAN_INPUT, method, f"{label}: rate <= 0 has no logarithm", **kw)
        need = MIN_POINTS[method]
        if r.size < need:
            return _fail(TOO_FEW_POINTS, method,
                         f"{label}: {r.size} rate points, method {method} needs at least {need}", **kw)
    if lower_is_better:
        qa, qt = -qa, -qt
    curves = []
    for r, q in ((ra, qa), (rt, qt)):
        o = np.argsort(q, kind="stable")
        curves.append((q[o], r[o]))
    (xa, rra), (xt, rrt) = curves
    sgn = -1.0 if lower_is_better else 1.0
    problems = [p for p in (_check_curve("anchor", rra, xa, sgn), _check_curve("test", rrt, xt, sgn)) if p]
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    union = max(xa[-1], xt[-1]) - min(xa[0], xt[0])
    overlap = max(0.0, (hi - lo) / union) if union > 0 else 0.0
    kw.update(overlap=float(overlap))

    def span(x: np.ndarray) -> str:  # a quality range in the metric's own unit
        a, b = sorted((-x[0], -x[-1]) if lower_is_better else (x[0], x[-1]))
        return f"{a:.6g}..{b:.6g}"

    if problems and strict:
        return _fail(NON_MONOTONIC, method, "; ".join(problems), **kw)
    if hi <= lo:
        return _fail(NO_OVERLAP, method,
                     f"quality ranges do not overlap (anchor {span(xa)}, test {span(xt)})", **kw)
    interval = (float(-hi), float(-lo)) if lower_is_better else (float(lo), float(hi))
    kw.update(interval=interval)
    ya, yt = np.log10(rra), np.log10(rrt)
    scale = ((lo + hi) / 2.0, (hi - lo) / 2.0)

    def compute() -> float | None:
        with np.errstate(all="ignore"):
            try:
                ia = _integral(method, xa, ya, lo, hi, scale)
                it = _integral(method, xt, yt, lo, hi, scale)
            except (ValueError, ZeroDivisionError, np.linalg.LinAlgError):
                return None
            avg = (it - ia) / (hi - lo)
            v = (10.0**avg - 1.0) * 100.0
        return float(v) if math.isfinite(v) else None

    if problems:  # strict=False: compute what an unchecked spreadsheet would print, still flagged
        return _fail(NON_MONOTONIC, method, "; ".join(problems), unchecked_value=compute(), **kw)
    value = compute()
    if value is None:  # pragma: no cover - guarded by the checks above
        return _fail(NAN_INPUT, method, "interpolation gave a non-finite value", **kw)
    return BdResult(status=OK, value=value, method=method, **kw)


# --------------------------------------------------------------------- aggregation
@dataclass(frozen=True)
class Aggregate:
    """A BD-rate over a set of sequences.

    ``status``: ``ok`` (every sequence ok), ``partial`` (value over the ok
    sequences only; ``reason`` lists the others) or the failure status when no
    sequence is ok. ``kind`` is ``mean-of-sequences`` or ``average-curve``.
    """

    kind: str
    status: str
    value: float | None
    method: str
    n_ok: int
    n_total: int
    reason: str = ""
    ci: tuple[float, float] | None = None
    ci_level: float | None = None
    per_sequence: dict[str, BdResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def cell(self, digits: int = 2) -> str:
        if self.value is None:
            return f"n/a ({self.status}: {self.reason})"
        text = f"{self.value:.{digits}f}"
        return text if self.ok else f"{text}* ({self.n_ok}/{self.n_total} sequences: {self.reason})"

    def to_dict(self, with_sequences: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind, "status": self.status, "value": self.value, "method": self.method,
            "n_ok": self.n_ok, "n_total": self.n_total, "reason": self.reason,
            "ci": list(self.ci) if self.ci else None, "ci_level": self.ci_level,
        }
        if with_sequences:
            d["per_sequence"] = {k: v.to_dict() for k, v in self.per_sequence.items()}
        return d


def mean_of_sequences(per_sequence: Mapping[str, BdResult], *, method: str,
                      bootstrap: int = 0, seed: int = 0, level: float = 0.95) -> Aggregate:
    """Arithmetic mean of per-sequence BD-rates (JVET practice).

    Optional percentile bootstrap over sequences (``bootstrap`` resamples,
    seeded) gives a confidence interval of the mean.
    """
    n = len(per_sequence)
    good = {k: r for k, r in per_sequence.items() if r.ok and r.value is not None}
    bad = {k: r for k, r in per_sequence.items() if k not in good}
    if n == 0:
        return Aggregate("mean-of-sequences", TOO_FEW_POINTS, None, method, 0, 0, "no sequences")
    reason = "; ".join(f"{k}: {r.status}" for k, r in sorted(bad.items()))
    if not good:
        statuses = sorted({r.status for r in bad.values()})
        return Aggregate("mean-of-sequences", statuses[0] if len(statuses) == 1 else "failed", None, method,
                         0, n, reason, per_sequence=dict(per_sequence))
    vals = np.array([good[k].value for k in sorted(good)], dtype=float)
    ci = None
    if bootstrap > 0 and vals.size >= 2:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, vals.size, size=(bootstrap, vals.size))
        means = vals[idx].mean(axis=1)
        a = (1.0 - level) / 2.0
        ci = (float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a)))
    return Aggregate("mean-of-sequences", OK if not bad else "partial", float(vals.mean()), method,
                     len(good), n, reason, ci=ci, ci_level=level if ci else None, per_sequence=dict(per_sequence))


def average_curve(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Average RD curve: arithmetic mean of rate and of quality per rate-point index.

    ``curves`` maps sequence -> (rates, qualities), each ordered by rate point
    (the same rate points, e.g. QPs, in the same order for every sequence).
    """
    lens = {len(r) for r, _ in curves.values()} | {len(q) for _, q in curves.values()}
    if len(lens) != 1:
        raise ValueError(f"sequences have different numbers of rate points: {sorted(lens)}")
    rates = np.mean([np.asarray(r, dtype=float) for r, _ in curves.values()], axis=0)
    quals = np.mean([np.asarray(q, dtype=float) for _, q in curves.values()], axis=0)
    return rates, quals


def bd_rate_average_curve(anchor: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                          test: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                          method: str = "jvet", lower_is_better: bool = False) -> Aggregate:
    """BD-rate of the test codec's averaged RD curve against the anchor's averaged curve.

    Only sequences present for both codecs are averaged, so both curves describe
    the same content.
    """
    common = sorted(set(anchor) & set(test))
    n = len(set(anchor) | set(test))
    if not common:
        return Aggregate("average-curve", TOO_FEW_POINTS, None, method, 0, n, "no sequence coded by both codecs")
    try:
        ra, qa = average_curve({k: anchor[k] for k in common})
        rt, qt = average_curve({k: test[k] for k in common})
    except ValueError as e:
        return Aggregate("average-curve", TOO_FEW_POINTS, None, method, 0, n, str(e))
    r = bd_rate(list(ra), list(qa), list(rt), list(qt), method=method, lower_is_better=lower_is_better)
    missing = sorted((set(anchor) | set(test)) - set(common))
    reason = r.reason if not r.ok else ("missing for one codec: " + ", ".join(missing) if missing else "")
    status = r.status if not r.ok else (OK if not missing else "partial")
    return Aggregate("average-curve", status, r.value, method, len(common) if r.ok else 0, n, reason)
