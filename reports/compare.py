"""Cross-run comparison: any codec of one run against any codec of another.

Two runs are comparable only when they ran the same test condition (same
condition fingerprint), the sequences with the same names have the same
sha256, and an anchor present in both runs is the same build (same
provenance). Anything else is refused with :class:`IncompatibleRuns`, because
a BD-rate across different conditions or anchors is meaningless.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gfvc.devices import check_uniform_devices
from gfvc.errors import ConfigError, InputError
from gfvc.records import iter_records, results_table
from reports import bdrate as bd
from reports.curves import Pair, compare_pair
from reports.model import load_run, metric_columns

# Provenance fields that may differ between two runs of the same build.
VOLATILE_PROVENANCE = ("timings", "host", "hostname", "created", "run_id", "workdir", "log", "logs")


class IncompatibleRuns(InputError):
    """Two runs cannot be compared: different condition, sequences or anchor build."""


@dataclass
class Comparison:
    anchor: str
    anchor_run: Path
    test: str
    test_run: Path
    method: str
    fingerprint: str
    pairs: dict[str, Pair]
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchor": self.anchor, "anchor_run": str(self.anchor_run), "test": self.test,
            "test_run": str(self.test_run), "method": self.method, "condition_fingerprint": self.fingerprint,
            "metrics": {m: {"lower_is_better": p.lower_is_better, "mean_of_sequences": p.mean.to_dict(False),
                            "average_curve": p.curve.to_dict(False),
                            "per_sequence": {s: r.to_dict() for s, r in p.per_sequence.items()}}
                        for m, p in self.pairs.items()},
            "not_computed": self.skipped,
        }


def _stable(prov: Any) -> Any:
    if isinstance(prov, dict):
        return {k: _stable(v) for k, v in prov.items() if k not in VOLATILE_PROVENANCE}
    return prov


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "(value)"]


def check_compatible(run_a: dict[str, Any], run_b: dict[str, Any], df_a: Any, df_b: Any,
                     anchor: str, test: str, names: tuple[str, str]) -> None:
    """Raise IncompatibleRuns unless the two runs may be compared (see module doc)."""
    fa, fb = run_a.get("condition_fingerprint"), run_b.get("condition_fingerprint")
    if not fa or fa != fb:
        raise IncompatibleRuns(
            f"runs used different test conditions: {names[0]} has {run_a.get('condition_name')} "
            f"({str(fa)[:12]}), {names[1]} has {run_b.get('condition_name')} ({str(fb)[:12]}); "
            "BD-rates across conditions are not comparable: rerun both with the same condition")
    sha_a = dict(zip(df_a["sequence"], df_a["sequence_sha256"], strict=True))
    sha_b = dict(zip(df_b["sequence"], df_b["sequence_sha256"], strict=True))
    bad = sorted(s for s in set(sha_a) & set(sha_b) if sha_a[s] != sha_b[s])
    if bad:
        raise IncompatibleRuns(f"sequence(s) {', '.join(bad)} have different sha256 in the two runs")
    pa = (run_a.get("codecs") or {}).get(anchor)
    pb = (run_b.get("codecs") or {}).get(anchor)
    if test != anchor and pa is not None and pb is not None and _stable(pa) != _stable(pb):
        keys = _diff_keys(_stable(pa), _stable(pb))
        raise IncompatibleRuns(
            f"anchor {anchor!r} differs between the runs (provenance fields {', '.join(keys[:6])}); "
            "a comparison needs the same anchor build in both runs")


def compare_runs(run_a: Path, run_b: Path, *, anchor_run: str = "A", test: str | None = None,
                 anchor: str | None = None, method: str | None = None,
                 metrics: list[str] | None = None, allow_mixed_devices: bool = False) -> Comparison:
    """BD-rates of ``test`` (from the other run) against ``anchor`` (from ``anchor_run``)."""
    if anchor_run not in ("A", "B"):
        raise ConfigError(f"--anchor-run must be A or B, got {anchor_run!r}")
    run_a, run_b = Path(run_a), Path(run_b)
    ra, rb = load_run(run_a), load_run(run_b)
    dfa, dfb = results_table(run_a), results_table(run_b)
    for p, df in ((run_a, dfa), (run_b, dfb)):
        if df.empty:
            raise InputError(f"{p}: no successful records")
    if anchor_run == "A":
        (ar, adf, arun), (_, tdf, trun) = (ra, dfa, run_a), (rb, dfb, run_b)
    else:
        (ar, adf, arun), (_, tdf, trun) = (rb, dfb, run_b), (ra, dfa, run_a)
    cond = ar.get("condition") or {}
    anchor = anchor or (cond.get("bdrate") or {}).get("anchor") or "vvenc"
    if anchor not in set(adf["codec"]):
        raise ConfigError(f"anchor codec {anchor!r} has no records in {arun} "
                          f"(codecs: {', '.join(sorted(set(adf['codec'])))})")
    if test is None:
        cand = [c for c in dict.fromkeys(tdf["codec"]) if c not in set(adf["codec"])]
        cand = cand or [c for c in dict.fromkeys(tdf["codec"]) if c != anchor]
        if len(cand) != 1:
            raise ConfigError(f"cannot tell which codec of {trun} to test (candidates: {', '.join(cand) or 'none'}); "
                              "pass --test CODEC")
        test = cand[0]
    if test not in set(tdf["codec"]):
        raise ConfigError(f"test codec {test!r} has no records in {trun} "
                          f"(codecs: {', '.join(sorted(set(tdf['codec'])))})")
    names = ("A", "B")
    check_compatible(ra, rb, dfa, dfb, anchor, test, names)
    _check_devices(arun, anchor, trun, test, allow_mixed_devices)
    method = method or (cond.get("bdrate") or {}).get("method") or "jvet"
    avail = [m for m in metric_columns(adf) if m in metric_columns(tdf)]
    wanted = metrics or list((cond.get("bdrate") or {}).get("metrics") or ("dists", "lpips", "fvd"))
    use = [m for m in wanted if m in avail]
    if not use:
        raise InputError(f"no metric in common among {', '.join(wanted)} (available: {', '.join(avail)})")
    pairs, skipped = {}, {}
    for m in [m for m in wanted if m not in avail]:
        skipped[m] = "not in the records of both runs"
    for m in use:
        empty = [name for name, df in ((str(arun), adf), (str(trun), tdf)) if df[m].isna().all()]
        if empty:  # stated, not computed as a column of NaN outcomes
            skipped[m] = f"not computed in {', '.join(empty)}"
            continue
        pairs[m] = compare_pair(adf, tdf, anchor, test, m, method=method)
    return Comparison(anchor=anchor, anchor_run=arun, test=test, test_run=trun, method=method,
                      fingerprint=str(ar.get("condition_fingerprint")), pairs=pairs, skipped=skipped)


def _check_devices(arun: Path, anchor: str, trun: Path, test: str, allow: bool) -> None:
    """The anchor's and the test's records must come from one device type (gfvc.devices)."""
    recs = [r for r in iter_records(arun) if r.get("codec") == anchor and r.get("status") == "ok"]
    recs += [r for r in iter_records(trun) if r.get("codec") == test and r.get("status") == "ok"]
    check_uniform_devices(recs, allow=allow, what=f"{anchor} ({arun}) and {test} ({trun})")


def bdrate_from_csv(path: Path, *, anchor: str, test: str, metric: str, method: str = "jvet",
                    lower: bool | None = None) -> Pair:
    """BD-rates from a contributor's CSV (columns codec, sequence, rate_kbps and one per metric)."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise InputError(f"{path}: not a readable CSV: {e}") from None
    except OSError as e:  # a folder, no permission
        raise InputError(f"{path}: cannot be read: {e.strerror or e}") from None
    if "rate_kbps" not in df.columns and "kbps" in df.columns:  # the suite's own rd_data.csv
        df = df.rename(columns={"kbps": "rate_kbps"})
    need = ["codec", "sequence", "rate_kbps", metric]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(map(str, df.columns))})")
    for name in (anchor, test):
        if name not in set(df["codec"].astype(str)):
            raise InputError(f"{path}: no rows for codec {name!r} "
                             f"(codecs: {', '.join(sorted(set(df['codec'].astype(str))))})")
    df = df.rename(columns={"rate_kbps": "kbps"})
    df["codec"] = df["codec"].astype(str)
    df["sequence"] = df["sequence"].astype(str)
    df["kbps"] = pd.to_numeric(df["kbps"], errors="coerce")
    df[metric] = pd.to_numeric(df[metric], errors="coerce")
    df = df.drop(columns=[c for c in ("qp",) if c in df.columns])  # order by rate, not QP semantics
    if lower is None:
        lower = bd.lower_is_better(metric)
    return compare_pair(df, df, anchor, test, metric, method=method, lower=lower)
