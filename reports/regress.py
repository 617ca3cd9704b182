"""Regression gate for CI: fail when a BD-rate saving worsens beyond a tolerance.

Baseline file (JSON, committed next to the CI config and reviewed like code)::

    {"schema": 1, "kind": "gfvc-bdrate-baseline",
     "condition": "gfvc-demo", "condition_fingerprint": "<sha256>",
     "anchor": "vvenc", "method": "jvet", "aggregation": "mean-of-sequences",
     "tolerance_pct": 0.5,
     "entries": {"s2d": {"dists": -74.54, "lpips": -73.68, "fvd": null}}}

Values are BD-rates in percent (negative = saving). An entry regresses when
the current value is more than ``tolerance`` percentage points above the
baseline, or when it has no ok value now (non-monotonic curve, missing
codec, metric not computed) while the baseline had one. ``null`` entries
(no value when the baseline was written) are reported as skipped. A gate
that compared none of the values it was asked to check fails (InputError,
exit 2): passing it would prove nothing. ``metrics`` restricts the gate to
some metrics.
"""
from __future__ import annotations

import difflib
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import metrics
from gfvc.errors import InputError
from reports.model import ReportModel

BASELINE_KIND = "gfvc-bdrate-baseline"
DEFAULT_TOLERANCE = 0.5  # percentage points


@dataclass(frozen=True)
class Check:
    codec: str
    metric: str
    baseline: float | None
    current: float | None
    status: str  # "pass", "fail", "skipped"
    message: str


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"baseline {path} not found; create one with --update-baseline") from None
    except ValueError as e:  # includes a binary file (UnicodeDecodeError)
        raise InputError(f"baseline {path}: not valid JSON: {e}") from None
    except OSError as e:  # a folder, no permission
        raise InputError(f"baseline {path}: cannot be read: {e.strerror or e}") from None
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND or not isinstance(data.get("entries"), dict):
        raise InputError(f"baseline {path}: not a {BASELINE_KIND} file (see docs/reports.md)")
    _check_baseline_values(data, path)
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_baseline_values(data: dict[str, Any], path: Path) -> None:
    """Every value the gate reads has its type (a hand-edited baseline is reviewed like code; say which key)."""
    fix = "BD-rates are numbers in percent or null (see docs/reports.md); rewrite it with --update-baseline"
    for key in ("anchor", "method", "aggregation", "condition", "condition_fingerprint", "values"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise InputError(f"baseline {path}: key {key!r} is {data[key]!r}, expected a string")
    tol = data.get("tolerance_pct")
    if tol is not None and not (_is_number(tol) and tol >= 0):
        raise InputError(f"baseline {path}: key 'tolerance_pct' is {tol!r}, expected a number >= 0 "
                         "(percentage points)")
    for codec, values in data["entries"].items():
        if not isinstance(values, dict):
            raise InputError(f"baseline {path}: key 'entries.{codec}' is {values!r}, expected a mapping "
                             f"metric -> BD-rate; {fix}")
        for metric, v in values.items():
            if v is not None and not _is_number(v):
                raise InputError(f"baseline {path}: key 'entries.{codec}.{metric}' is {v!r}, expected a number "
                                 f"or null; {fix}")


# Baselines store BD-rates as exact floats (JSON round-trips them), so a run identical to the baseline's
# passes at tolerance 0. Baselines written before (no "values" key) hold values rounded to 6 decimals:
# the current value is compared at that precision.
EXACT = "exact"
LEGACY_DECIMALS = 6


def baseline_from_model(model: ReportModel, tolerance: float | None = None,
                        metrics: list[str] | None = None) -> dict[str, Any]:
    """A baseline holding the model's current summary values (null where there is no ok value)."""
    entries: dict[str, dict[str, float | None]] = {}
    for (test, m), pair in model.pairs.items():
        agg = pair.primary(model.aggregation)
        entries.setdefault(test, {})[m] = float(agg.value) if agg.ok and agg.value is not None else None
    for test in model.tests:  # metrics without any value: recorded as null, so the gate skips them
        for m in model.bd_metrics:
            entries.setdefault(test, {}).setdefault(m, None)
    entries = select_metrics(entries, metrics, "this run")
    return {"schema": 1, "kind": BASELINE_KIND, "condition": model.condition_name,
            "condition_fingerprint": model.fingerprint, "anchor": model.anchor, "method": model.method,
            "aggregation": model.aggregation, "values": EXACT,
            "tolerance_pct": DEFAULT_TOLERANCE if tolerance is None else tolerance, "entries": entries}


def select_metrics(entries: dict[str, dict[str, Any]], metrics: list[str] | None,
                   where: str) -> dict[str, dict[str, Any]]:
    """The entries restricted to ``metrics`` (all when None); unknown names are refused."""
    if not metrics:
        return entries
    known = sorted({m for ms in entries.values() for m in ms})
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise InputError(f"--metrics {','.join(unknown)}: not in {where} (it has {', '.join(known) or 'none'})")
    return {c: {m: v for m, v in ms.items() if m in metrics} for c, ms in entries.items()
            if any(m in metrics for m in ms)}


def compared(checks: list[Check]) -> list[Check]:
    """Checks that actually compared a current value with a baseline value (pass or fail)."""
    return [c for c in checks if c.status in ("pass", "fail")]


def summary(checks: list[Check]) -> str:
    """One line: what the gate actually compared and what it skipped."""
    done = compared(checks)
    fails = sum(c.status == "fail" for c in done)
    skipped = [c for c in checks if c.status == "skipped"]
    text = (f"gate compared {len(done)} of {len(checks)} values"
            + (f" ({', '.join(f'{c.codec} {c.metric}' for c in done)})" if done else "")
            + f": {len(done) - fails} passed, {fails} failed")
    if skipped:
        text += f"; skipped {len(skipped)} ({', '.join(f'{c.codec} {c.metric}' for c in skipped)}: no baseline value)"
    return text


def require_comparisons(checks: list[Check], baseline_path: Any) -> None:
    """A gate that compared nothing must not pass."""
    if checks and compared(checks):
        return
    if not checks:
        raise InputError(f"regress: baseline {baseline_path} has no entries to check (for the chosen --metrics)")
    raise InputError(
        f"regress: none of the {len(checks)} values asked for was compared: baseline {baseline_path} has no value "
        f"for {', '.join(f'{c.codec} {c.metric}' for c in checks)} (written where they were not computed, e.g. "
        "missing weights); write the baseline where they are computed (--update-baseline) or gate other metrics "
        "with --metrics")


def _close(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=2)
    return f"did you mean {' or '.join(close)}? " if close else ""


def check_names(model: ReportModel, entries: Any) -> None:
    """Every codec and metric a baseline names must be one this run knows: a typo (``psnrr``, codec
    ``zzz``) is the baseline's error (InputError, exit 2), never a regression (exit 1).

    Known codecs: those of the run's condition, run.json and its records (a codec of the condition
    without results is a regression, not a typo). Known metrics: every metric value name the suite
    records (:data:`metrics.METRIC_VALUES`) and those of the run.
    """
    if not isinstance(entries, dict) or any(not isinstance(v, dict) for v in entries.values()):
        raise InputError("baseline: 'entries' must map codec -> {metric: value}")
    codecs = set(model.codecs) | set(model.condition.get("codecs") or []) | set(model.run.get("codecs") or {})
    if model.completeness is not None:
        codecs |= {m.codec for m in model.completeness.missing}
    names = {v for vals in metrics.METRIC_VALUES.values() for v in vals} | set(metrics.METRIC_VALUES)
    names |= set(model.metrics) | set(model.bd_metrics) | set((model.condition.get("bdrate") or {}).get("metrics")
                                                              or [])
    for codec, values in entries.items():
        if codec not in codecs:
            raise InputError(f"baseline names codec {codec!r}, which this run has no trace of: {_close(codec, codecs)}"
                             f"(the run's codecs: {', '.join(sorted(codecs)) or 'none'}); fix the baseline file")
        for m in values:
            if m not in names:
                raise InputError(f"baseline entry {codec}.{m}: unknown metric {m!r}: {_close(m, names)}"
                                 f"(metric values: {', '.join(sorted(names))}); fix the baseline file")


def check(model: ReportModel, baseline: dict[str, Any], tolerance: float,
          metrics: list[str] | None = None) -> list[Check]:
    """Compare the model (built with the baseline's anchor/method/aggregation) with the baseline."""
    if baseline.get("condition_fingerprint") and baseline["condition_fingerprint"] != model.fingerprint:
        raise InputError(
            f"baseline was written for condition {baseline.get('condition')} "
            f"({str(baseline['condition_fingerprint'])[:12]}), this run used {model.condition_name} "
            f"({model.fingerprint[:12]}); review the change and write a new baseline with --update-baseline")
    out = []
    exact = baseline.get("values") == EXACT
    check_names(model, baseline["entries"])
    entries = select_metrics(baseline["entries"], metrics, "the baseline")
    for codec, values in sorted(entries.items()):
        for metric, base in sorted(values.items()):
            pair = model.pairs.get((codec, metric))
            agg = pair.primary(model.aggregation) if pair else None
            cur = agg.value if agg is not None and agg.ok else None
            if base is None:
                out.append(Check(codec, metric, None, cur, "skipped", "no baseline value"))
            elif pair is None:
                why = model.notes[metric].reason if metric in model.notes else "codec or metric missing from the run"
                out.append(Check(codec, metric, base, None, "fail", f"no BD-rate now: {why}"))
            elif cur is None:
                assert agg is not None  # pair exists, so its aggregate does
                out.append(Check(codec, metric, base, agg.value, "fail",
                                 f"no complete BD-rate now: {agg.status}: {agg.reason}"))
            elif (cur if exact else round(cur, LEGACY_DECIMALS)) - base > tolerance:
                out.append(Check(codec, metric, base, cur, "fail",
                                 f"BD-rate {cur:.3f}% vs baseline {base:.3f}%: worse by {cur - base:.3f} "
                                 f"percentage points (tolerance {tolerance})"))
            else:
                note = " (improved beyond tolerance: consider --update-baseline)" if base - cur > tolerance else ""
                out.append(Check(codec, metric, base, cur, "pass",
                                 f"BD-rate {cur:.3f}% vs baseline {base:.3f}%{note}"))
    return out


def junit_xml(checks: list[Check], suite: str = "gfvc.regress") -> str:
    """JUnit XML: one test case per (codec, metric); CI systems render it natively."""
    fails = sum(c.status == "fail" for c in checks)
    skips = sum(c.status == "skipped" for c in checks)
    root = ET.Element("testsuites", name=suite, tests=str(len(checks)), failures=str(fails))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)), failures=str(fails),
                       errors="0", skipped=str(skips))
    for c in checks:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{c.codec}", name=f"bdrate.{c.metric}")
        if c.status == "fail":
            ET.SubElement(tc, "failure", message=c.message, type="RegressionDetected").text = c.message
        elif c.status == "skipped":
            ET.SubElement(tc, "skipped", message=c.message)
        else:
            ET.SubElement(tc, "system-out").text = c.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
