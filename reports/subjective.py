"""Subjective tests: session playlists and the analysis of score sheets (MOS, DMOS, observer screening).

Methods (docs/reports.md, "Subjective tests", gives the clauses and formulas):

- ``acr-hr``: ITU-T P.910 (04/2008) 6.1 (ACR: one clip, then vote on the
  5-grade quality scale) and 6.2 (ACR with hidden reference: the source is one
  of the clips, unannounced; differential viewer score
  DV = V(PVS) - V(REF) + 5 per viewer).
- ``dcr``: ITU-T P.910 (04/2008) 6.3 (reference, about 2 s grey, impaired
  clip, vote on the 5-grade impairment scale; its mean is P.910's DMOS).
- ``dscqs``: ITU-R BT.500 double-stimulus continuous quality scale
  (BT.500-13 Annex 1 clause 5; kept in -14/-15): reference and impaired clip as
  A and B in a random order, shown twice (A, B, A, B) with 3 s of grey between,
  both rated on a 0-100 continuous scale; the difference score is
  reference - impaired.

Statistics: every clip's score of an observer is first averaged over the
repetitions; MOS/DMOS are means over observers with a 95 % confidence interval
from Student's t with N - 1 degrees of freedom (t(0.975, N-1) S / sqrt(N),
S with N - 1), which for small panels is wider than BT.500-13 Annex 2
clause 2.2.1's 1.96 S / sqrt(N) (its large-N limit). Observers are screened
with BT.500-13 Annex 2 clause 2.3.1 (the beta-2 kurtosis test, P_i/Q_i counts,
rejection when (P_i + Q_i) / (J K R) > 0.05 and |(P_i - Q_i) / (P_i + Q_i)| < 0.3);
each observer's Pearson correlation with the MOS of the others is reported
for information (not used to reject).
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import ConfigError, InputError

GREY_LEVEL = 128  # mid-grey (R = G = B = 128) between presentations and while voting
REFERENCE = "reference"  # the codec name of hidden-reference / reference clips


@dataclass(frozen=True)
class Method:
    """A test method: its scale, presentation structure and the clauses it follows."""

    name: str
    title: str
    standard: str
    scale: tuple[float, float]
    integer: bool
    labels: dict[str, str]
    hidden_reference: bool  # the reference is rated as a clip of its own (ACR-HR)
    paired: bool  # a trial shows the reference with the impaired clip (DCR, DSCQS)
    grey_between_s: float  # grey between the stimuli of one trial
    vote_s: float  # grey shown while the observer votes, after each trial
    primary: str  # the result value plotted against rate
    primary_label: str
    primary_higher_is_better: bool
    score_columns: tuple[str, ...]


METHODS: dict[str, Method] = {
    "acr-hr": Method(
        "acr-hr", "Absolute category rating with hidden reference (ACR-HR)",
        "ITU-T P.910 (04/2008) clauses 6.1 (ACR: clip ~10 s, vote <= 10 s on the 5-grade quality scale) and "
        "6.2 (hidden reference, DV = V(PVS) - V(REF) + 5)",
        (1, 5), True, {"5": "Excellent", "4": "Good", "3": "Fair", "2": "Poor", "1": "Bad"},
        True, False, 0.0, 10.0, "dmos", "DMOS (ACR-HR)", True, ("score",)),
    "dcr": Method(
        "dcr", "Degradation category rating (DCR)",
        "ITU-T P.910 (04/2008) clause 6.3 (reference ~10 s, ~2 s grey, impaired ~10 s, vote <= 10 s on the "
        "5-grade impairment scale)",
        (1, 5), True, {"5": "Imperceptible", "4": "Perceptible but not annoying", "3": "Slightly annoying",
                       "2": "Annoying", "1": "Very annoying"},
        False, True, 2.0, 10.0, "mos", "DMOS (DCR impairment scale)", True, ("score",)),
    "dscqs": Method(
        "dscqs", "Double stimulus continuous quality scale (DSCQS)",
        "ITU-R BT.500-13 Annex 1 clause 5 (kept in BT.500-15): A, 3 s grey, B, 3 s grey, A, 3 s grey, B, vote; "
        "continuous 0-100 scale, difference score = reference - impaired",
        (0, 100), False, {"80-100": "Excellent", "60-80": "Good", "40-60": "Fair", "20-40": "Poor", "0-20": "Bad"},
        False, True, 3.0, 10.0, "dmos", "DSCQS difference (reference - impaired)", False,
        ("a_is", "score_a", "score_b")),
}

BT500_SCREENING = ("ITU-R BT.500-13 Annex 2 clause 2.3.1 (kept in BT.500-15): per presentation (clip, repetition) "
                   "mean u, S (N-1) and beta2 = m4 / m2^2; 2 <= beta2 <= 4 counts P_i if u_i >= u + 2 S and Q_i if "
                   "u_i <= u - 2 S, otherwise with sqrt(20) S; reject observer i if (P_i + Q_i) / (J K R) > 0.05 "
                   "and |(P_i - Q_i) / (P_i + Q_i)| < 0.3")
CI_TEXT = ("95 % CI = t(0.975, N-1) * S / sqrt(N) (Student's t, S with N-1) over the observers' scores, each first "
           "averaged over repetitions; BT.500-13 Annex 2 clause 2.2.1 gives 1.96 S / sqrt(N), the large-N limit")


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown subjective-test method {name!r} (known: {', '.join(METHODS)})") from None


# ---------------------------------------------------------------------------------------------- playlist
@dataclass(frozen=True)
class Stimulus:
    """A clip of the session: a decoded sequence at one codec and rate point, or a sequence's reference."""

    clip_id: str
    sequence: str
    codec: str
    rate_point: str
    qp: int | None
    kbps: float | None
    file: str  # relative to the playlist
    duration_s: float

    @property
    def reference(self) -> bool:
        return self.codec == REFERENCE


def _order(units: list[Any], seq_of: Any, rng: np.random.Generator, tries: int = 50) -> list[Any]:
    """A random order of ``units`` in which no two neighbours share a sequence where that is possible
    (P.910: avoid presenting the same source twice in a row). Greedy random draws, best of ``tries``."""
    best: list[Any] = []
    best_bad = math.inf
    for _ in range(tries):
        left = list(units)
        rng.shuffle(left)
        out: list[Any] = []
        bad = 0
        while left:
            prev = seq_of(out[-1]) if out else None
            pick = next((k for k, u in enumerate(left) if seq_of(u) != prev), 0)
            if out and seq_of(left[pick]) == prev:
                bad += 1
            out.append(left.pop(pick))
        if bad < best_bad:
            best, best_bad = out, bad
        if bad == 0:
            break
    return best


def build_playlist(m: Method, stimuli: Sequence[Stimulus], *, observers: int, repetitions: int, seed: int,
                   grey_files: dict[float, str]) -> dict[str, Any]:
    """The session plan: per observer a seeded random order of trials, each a list of items
    (clip or grey, with durations) and what to vote. ``grey_files``: duration -> grey clip file."""
    if observers < 1 or repetitions < 1:
        raise ConfigError("observers and repetitions must be >= 1")
    refs = {s.sequence: s for s in stimuli if s.reference}
    pvs = [s for s in stimuli if not s.reference]
    if not pvs:
        raise InputError("no decoded clips to test (no records with a decoded viewing copy were selected)")
    missing = sorted({s.sequence for s in pvs} - set(refs))
    if missing and (m.hidden_reference or m.paired):
        raise InputError(f"method {m.name} needs the reference of every sequence; missing: {', '.join(missing)}")

    def grey(d: float) -> dict[str, Any]:
        return {"kind": "grey", "file": grey_files[d], "duration_s": d}

    def clip(s: Stimulus, role: str = "") -> dict[str, Any]:
        d = {"kind": "clip", "clip_id": s.clip_id, "file": s.file, "duration_s": s.duration_s}
        return {**d, "role": role} if role else d

    units: list[Stimulus] = (list(stimuli) if m.hidden_reference else pvs) * repetitions
    plan = []
    for o in range(observers):
        rng = np.random.default_rng([seed, o])
        order = _order(units, lambda s: s.sequence, rng)
        trials = []
        seen: dict[str, int] = {}
        for t, s in enumerate(order, 1):
            seen[s.clip_id] = seen.get(s.clip_id, 0) + 1
            trial: dict[str, Any] = {"trial": t, "clip_id": s.clip_id, "sequence": s.sequence,
                                     "repetition": seen[s.clip_id]}
            if m.name == "acr-hr":
                items = [clip(s), grey(m.vote_s)]
            elif m.name == "dcr":
                items = [clip(refs[s.sequence], "reference"), grey(m.grey_between_s), clip(s, "impaired"),
                         grey(m.vote_s)]
            else:  # dscqs: A/B order drawn per trial
                a_ref = bool(rng.integers(0, 2))
                a, b = (refs[s.sequence], s) if a_ref else (s, refs[s.sequence])
                trial["a_is"] = "reference" if a_ref else "impaired"
                g = grey(m.grey_between_s)
                items = [clip(a, "A"), g, clip(b, "B"), g, clip(a, "A"), g, clip(b, "B"), grey(m.vote_s)]
            trial["items"] = items
            trials.append(trial)
        plan.append({"observer": observer_id(o), "seed": [seed, o], "trials": trials})
    return {"schema": 1, "kind": "gfvc-subjective-playlist", "method": m.name, "title": m.title,
            "standard": m.standard, "scale": {"min": m.scale[0], "max": m.scale[1], "integer": m.integer,
                                              "labels": m.labels},
            "seed": seed, "repetitions": repetitions, "grey_level": GREY_LEVEL,
            "timing_s": {"grey_between": m.grey_between_s, "vote": m.vote_s},
            "clips": {s.clip_id: {"sequence": s.sequence, "codec": s.codec, "rate_point": s.rate_point, "qp": s.qp,
                                  "kbps": s.kbps, "reference": s.reference, "file": s.file,
                                  "duration_s": s.duration_s} for s in stimuli},
            "observers": plan}


def observer_id(i: int) -> str:
    return f"O{i + 1:02d}"


SHEET_COMMON = ("method", "observer", "trial", "clip_id", "sequence", "codec", "rate_point", "qp", "kbps",
                "reference")


def score_sheet_rows(playlist: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the empty score sheet (one row per observer and trial)."""
    m = method(playlist["method"])
    header = list(SHEET_COMMON) + list(m.score_columns)
    rows = []
    for obs in playlist["observers"]:
        for t in obs["trials"]:
            c = playlist["clips"][t["clip_id"]]
            row = [m.name, obs["observer"], t["trial"], t["clip_id"], c["sequence"], c["codec"], c["rate_point"],
                   "" if c["qp"] is None else c["qp"], "" if c["kbps"] is None else c["kbps"],
                   int(bool(c["reference"]))]
            row += [t.get("a_is", "")] + ["", ""] if m.name == "dscqs" else [""]
            rows.append(row)
    return header, rows


# ---------------------------------------------------------------------------------------------- analysis
@dataclass
class Scores:
    """A parsed score sheet: one entry per (observer, clip) with the scores in trial order."""

    method: Method
    clips: dict[str, dict[str, Any]]  # clip_id -> sequence, codec, rate_point, qp, kbps, reference
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (observer, clip) -> per repetition
    tests: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # DSCQS: raw impaired-clip scores

    @property
    def observers(self) -> list[str]:
        return sorted({o for o, _ in self.values})


def read_scores(path: Path, method_name: str | None = None) -> Scores:
    """Parse and check a score sheet; every problem is an InputError naming the row and column."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            header = list(rows[0].keys()) if rows else []
    except OSError as e:
        raise InputError(f"{path}: cannot read score sheet ({e.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a CSV score sheet ({e})") from None
    if not rows:
        raise InputError(f"{path}: no rows (a header and one row per observer and trial)")
    name = method_name or rows[0].get("method") or ""
    if not name:
        raise InputError(f"{path}: no method column; pass --method {'|'.join(METHODS)}")
    m = method(name)
    need = ["observer", "trial", "clip_id", "sequence", "codec", "rate_point", "kbps", "reference",
            *m.score_columns]
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (method {m.name} needs: {', '.join(need)})")
    out = Scores(method=m, clips={})
    order: list[tuple[str, int, str, float, float | None]] = []
    for n, r in enumerate(rows, 2):  # line numbers as an editor shows them (header = line 1)
        where = f"{path}: line {n}"
        if r.get("method") and r["method"] != m.name:
            raise InputError(f"{where}: method {r['method']!r}, but the sheet is analysed as {m.name}")
        obs, cid = (r.get("observer") or "").strip(), (r.get("clip_id") or "").strip()
        if not obs or not cid:
            raise InputError(f"{where}: empty observer or clip_id")
        try:
            trial = int(r["trial"])
        except (TypeError, ValueError):
            raise InputError(f"{where}: trial {r.get('trial')!r} is not an integer") from None

        ref = (r.get("reference") or "").strip().lower() in ("1", "true", "yes")
        kb = (r.get("kbps") or "").strip()
        qp = (r.get("qp") or "").strip()
        meta = {"sequence": r["sequence"], "codec": r["codec"], "rate_point": r["rate_point"],
                "qp": int(float(qp)) if qp else None, "kbps": float(kb) if kb else None, "reference": ref}
        if cid in out.clips and out.clips[cid] != meta:
            raise InputError(f"{where}: clip {cid} described differently than on an earlier line")
        out.clips[cid] = meta
        if m.name == "dscqs":
            a_is = (r.get("a_is") or "").strip()
            if a_is not in ("reference", "impaired"):
                raise InputError(f"{where}: column a_is: {a_is!r} (expected reference or impaired)")
            a, b = _score(r, "score_a", where, m), _score(r, "score_b", where, m)
            ref_s, test_s = (a, b) if a_is == "reference" else (b, a)
            order.append((obs, trial, cid, ref_s - test_s, test_s))
        else:
            order.append((obs, trial, cid, _score(r, "score", where, m), None))
    seen = set()
    for obs, trial, cid, v, t in sorted(order, key=lambda x: (x[0], x[1])):
        if (obs, trial) in seen:
            raise InputError(f"{path}: observer {obs} has trial {trial} twice")
        seen.add((obs, trial))
        out.values.setdefault((obs, cid), []).append(v)
        if t is not None:
            out.tests.setdefault((obs, cid), []).append(t)
    if m.hidden_reference and not any(c["reference"] for c in out.clips.values()):
        raise InputError(f"{path}: ACR-HR needs the hidden-reference rows (reference = 1); none found")
    return out


def _score(row: dict[str, Any], col: str, where: str, m: Method) -> float:
    """One score of a sheet row, checked against the method's scale."""
    text = (row.get(col) or "").strip()
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{where}: column {col}: {text!r} is not a score"
                         + (" (the row was not filled in)" if not text else "")) from None
    lo, hi = m.scale
    if not math.isfinite(v) or not (lo <= v <= hi) or (m.integer and v != int(v)):
        raise InputError(f"{where}: column {col}: score {text} is outside the {m.name} scale "
                         f"({'integers ' if m.integer else ''}{lo:g}..{hi:g})")
    return v


def t975(n: int) -> float:
    """Two-sided 95 % Student-t factor for ``n`` values (n - 1 degrees of freedom)."""
    from scipy import stats  # lazy: scipy.stats takes a while to import

    return float(stats.t.ppf(0.975, n - 1))


def mean_ci(values: Sequence[float]) -> tuple[float, float | None, int]:
    """(mean, 95 % CI half-width by Student's t or None for one value, n)."""
    v = np.asarray(values, float)
    n = len(v)
    if n == 0:
        return math.nan, None, 0
    if n == 1:
        return float(v[0]), None, 1
    return float(v.mean()), t975(n) * float(v.std(ddof=1)) / math.sqrt(n), n


@dataclass
class ObserverScreen:
    observer: str
    presentations: int
    p: int
    q: int
    rejected: bool
    reason: str
    pearson: float | None = None


def screen_bt500(s: Scores) -> list[ObserverScreen]:
    """BT.500-13 Annex 2 clause 2.3.1 on the method's scores (DSCQS: difference scores), per presentation
    = (clip, repetition). A presentation whose scores are all equal (S = 0) flags nobody."""
    obs = s.observers
    pres: dict[tuple[str, int], dict[str, float]] = {}
    for (o, c), vs in s.values.items():
        for r, v in enumerate(vs):
            pres.setdefault((c, r), {})[o] = v
    P = dict.fromkeys(obs, 0)
    Q = dict.fromkeys(obs, 0)
    count = dict.fromkeys(obs, 0)
    for scores in pres.values():
        u = np.array(list(scores.values()), float)
        for o in scores:
            count[o] += 1
        if len(u) < 2:
            continue
        mu, sd = float(u.mean()), float(u.std(ddof=1))
        m2 = float(((u - mu) ** 2).mean())
        if sd == 0 or m2 == 0:
            continue
        beta2 = float(((u - mu) ** 4).mean()) / m2 ** 2
        k = 2.0 if 2.0 <= beta2 <= 4.0 else math.sqrt(20.0)
        for o, v in scores.items():
            if v >= mu + k * sd:
                P[o] += 1
            if v <= mu - k * sd:
                Q[o] += 1
    out = []
    for o in obs:
        n, p, q = count[o], P[o], Q[o]
        r1 = (p + q) / n if n else 0.0
        r2 = abs((p - q) / (p + q)) if p + q else 1.0
        bad = r1 > 0.05 and r2 < 0.3
        reason = (f"BT.500 beta2 screening: (P+Q)/JKR = ({p}+{q})/{n} = {r1:.3f} > 0.05 and |P-Q|/(P+Q) = {r2:.3f} "
                  "< 0.3") if bad else ""
        out.append(ObserverScreen(o, n, p, q, bad, reason))
    return out


def _pearson_with_others(s: Scores, keep: list[str]) -> dict[str, float | None]:
    """Each observer's Pearson r between their per-clip means and the MOS of the other kept observers."""
    clips = sorted(s.clips)
    per = {o: {c: float(np.mean(s.values[(o, c)])) for c in clips if (o, c) in s.values} for o in s.observers}
    out: dict[str, float | None] = {}
    for o in s.observers:
        others = [x for x in keep if x != o]
        xs, ys = [], []
        for c in clips:
            vals = [per[x][c] for x in others if c in per[x]]
            if c in per[o] and vals:
                xs.append(per[o][c])
                ys.append(float(np.mean(vals)))
        ok = len(xs) > 2 and np.std(xs) > 0 and np.std(ys) > 0
        out[o] = float(np.corrcoef(xs, ys)[0, 1]) if ok else None
    return out


def analyse(s: Scores, *, screening: bool = True) -> dict[str, Any]:
    """MOS/DMOS per clip and per codec x rate point with 95 % CIs, after BT.500 observer screening."""
    m = s.method
    screen = screen_bt500(s)
    rejected = {x.observer for x in screen if x.rejected} if screening else set()
    keep = [o for o in s.observers if o not in rejected]
    if len(keep) < 2:
        raise InputError(f"only {len(keep)} observer(s) left after screening; a mean with a CI needs 2 or more")
    for x, r in zip(screen, _pearson_with_others(s, keep).values(), strict=True):
        x.pearson = r
    # per observer and clip: the mean over repetitions
    v = {(o, c): float(np.mean(vs)) for (o, c), vs in s.values.items() if o in keep}
    tv = {(o, c): float(np.mean(vs)) for (o, c), vs in s.tests.items() if o in keep}
    ref_of = {c["sequence"]: cid for cid, c in s.clips.items() if c["reference"]}

    def per_observer(cid: str) -> dict[str, dict[str, float]]:
        """value name -> observer -> that observer's value for the clip."""
        vals: dict[str, dict[str, float]] = {"mos": {}, "dmos": {}}
        for o in keep:
            if (o, cid) not in v:
                continue
            if m.name == "dscqs":
                vals["dmos"][o] = v[(o, cid)]
                vals["mos"][o] = tv[(o, cid)]
            else:
                vals["mos"][o] = v[(o, cid)]
                rc = ref_of.get(s.clips[cid]["sequence"])
                if m.name == "acr-hr" and rc is not None and (o, rc) in v:
                    vals["dmos"][o] = v[(o, cid)] - v[(o, rc)] + 5.0  # P.910 6.2: DV = V(PVS) - V(REF) + 5
        return vals

    clip_rows = []
    obs_vals: dict[str, dict[str, dict[str, float]]] = {}
    for cid in sorted(s.clips, key=lambda c: (s.clips[c]["sequence"], s.clips[c]["codec"], s.clips[c]["kbps"] or 0)):
        vals = obs_vals[cid] = per_observer(cid)
        row = {"clip_id": cid, **s.clips[cid]}
        for k in ("mos", "dmos"):
            mu, ci, n = mean_ci(list(vals[k].values()))
            row[k], row[f"{k}_ci95"] = (mu if n else None), ci
            row[f"{k}_n"] = n
        clip_rows.append(row)
    # per codec x rate point over sequences: each observer's mean over the condition's clips, then over observers
    conds: dict[tuple[str, str], list[str]] = {}
    for cid, c in s.clips.items():
        conds.setdefault((c["codec"], c["rate_point"]), []).append(cid)
    cond_rows = []
    for (codec, rp), cids in sorted(conds.items()):
        kb = [s.clips[c]["kbps"] for c in cids if s.clips[c]["kbps"] is not None]
        row = {"codec": codec, "rate_point": rp, "qp": s.clips[cids[0]]["qp"],
               "kbps": float(np.mean(kb)) if kb else None, "reference": s.clips[cids[0]]["reference"],
               "sequences": sorted({s.clips[c]["sequence"] for c in cids})}
        for k in ("mos", "dmos"):
            per_o = []
            for o in keep:
                xs = [obs_vals[c][k][o] for c in cids if o in obs_vals[c][k]]
                if len(xs) == len(cids):  # observers who rated every clip of the condition
                    per_o.append(float(np.mean(xs)))
            mu, ci, n = mean_ci(per_o)
            row[k], row[f"{k}_ci95"], row[f"{k}_n"] = (mu if n else None), ci, n
        cond_rows.append(row)
    return {"schema": 1, "kind": "gfvc-subjective-result", "method": m.name, "title": m.title,
            "standard": m.standard, "ci": CI_TEXT, "screening": BT500_SCREENING if screening else "off",
            "primary": {"value": m.primary, "label": m.primary_label, "higher_is_better": m.primary_higher_is_better},
            "observers": [x.__dict__ for x in screen], "rejected": sorted(rejected),
            "observers_kept": keep, "clips": clip_rows, "conditions": cond_rows}
