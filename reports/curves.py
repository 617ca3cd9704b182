"""RD curves of a results table and the BD-rate of one codec against another on them.

The building block shared by the report model (every test codec vs the anchor), the vertex section
(vertex codecs against each other) and `gfvc compare` (codecs of two runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reports import bdrate as bd


@dataclass
class Pair:
    """BD-rates of one test codec against the anchor for one metric."""

    test: str
    metric: str
    lower_is_better: bool
    per_sequence: dict[str, bd.BdResult]
    mean: bd.Aggregate
    curve: bd.Aggregate

    def primary(self, aggregation: str) -> bd.Aggregate:
        return self.mean if aggregation == "mean-of-sequences" else self.curve


def curve(df: Any, codec: str, sequence: str, metric: str) -> tuple[list[float], list[float]]:
    """(kbps, metric) of one codec and sequence, ordered from the lowest rate point (highest QP)."""
    sub = df[(df["codec"] == codec) & (df["sequence"] == sequence)]
    if "qp" in sub.columns and sub["qp"].notna().all():
        sub = sub.sort_values("qp", ascending=False, kind="stable")
    else:
        sub = sub.sort_values("kbps", kind="stable")
    return [float(v) for v in sub["kbps"]], [float(v) for v in sub[metric]]


def compare_pair(df_anchor: Any, df_test: Any, anchor: str, test: str, metric: str, *, method: str,
                 lower: bool | None = None, bootstrap: int = 0, seed: int = 0, anchor_note: str = "") -> Pair:
    """BD-rates of ``test`` (from df_test) vs ``anchor`` (from df_anchor) for one metric."""
    lower = bd.lower_is_better(metric) if lower is None else lower
    seqs_a = set(df_anchor.loc[df_anchor["codec"] == anchor, "sequence"])
    seqs_t = set(df_test.loc[df_test["codec"] == test, "sequence"])
    per: dict[str, bd.BdResult] = {}
    ca: dict[str, tuple[list[float], list[float]]] = {}
    ct: dict[str, tuple[list[float], list[float]]] = {}
    for s in sorted(seqs_a | seqs_t):
        if s not in seqs_a or s not in seqs_t:
            who = anchor if s not in seqs_a else test
            reason = anchor_note or f"no records of {who} for this sequence"
            per[s] = bd.BdResult(bd.TOO_FEW_POINTS, None, method, reason=reason)
            continue
        ca[s] = curve(df_anchor, anchor, s, metric)
        ct[s] = curve(df_test, test, s, metric)
        per[s] = bd.bd_rate(ca[s][0], ca[s][1], ct[s][0], ct[s][1], method=method, lower_is_better=lower)
    mean = bd.mean_of_sequences(per, method=method, bootstrap=bootstrap, seed=seed)
    if anchor_note and not ca:
        mean = bd.Aggregate("mean-of-sequences", bd.TOO_FEW_POINTS, None, method, 0, len(per), anchor_note)
    curve_agg = bd.bd_rate_average_curve(ca, ct, method=method, lower_is_better=lower)
    if anchor_note and not ca:
        curve_agg = bd.Aggregate("average-curve", bd.TOO_FEW_POINTS, None, method, 0, len(per), anchor_note)
    return Pair(test=test, metric=metric, lower_is_better=lower, per_sequence=per, mean=mean, curve=curve_agg)
