"""Sub-commands of the reports area: report, compare, regress, bdrate.

Handlers return exit codes; errors are raised as gfvc.errors types and turned
into one-line messages by suite.cli.main.main (RegressionDetected -> exit 1).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gfvc.argtypes import nonnegative_float, nonnegative_int, positive_float, positive_int
from gfvc.errors import RegressionDetected
from gfvc.fileio import atomic_write_text, check_output_dir, check_output_file
from gfvc.records import results_table
from reports import regress
from reports.compare import bdrate_from_csv, compare_runs
from reports.formats import ALL_FORMATS as FORMATS
from reports.imported import imported_note
from reports.model import build_model, load_run

METHODS = ("jvet", "pchip", "cubic", "akima")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="BD-rate tables, RD plots and a contribution document for a run",
                       description="Write the report of RUN_DIR (default into RUN_DIR/report).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--anchor", help="anchor codec (default: the condition's bdrate.anchor)")
    p.add_argument("--format", dest="formats", action="append", choices=FORMATS,
                   help="output format; repeat for several (default: all)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report)")
    p.add_argument("--method", choices=METHODS, help="BD-rate method (default: the condition's bdrate.method)")
    p.add_argument("--aggregation", choices=("mean-of-sequences", "average-curve"),
                   help="summary over sequences (default: the condition's bdrate.aggregation)")
    p.add_argument("--bootstrap", type=nonnegative_int, default=0, metavar="N",
                   help="bootstrap resamples over sequences for a 95%% CI of the mean (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--allow-mixed-devices", action="store_true",
                   help="report records computed on different device types (CPU and CUDA) together")
    p.add_argument("--docx-meta", type=Path, metavar="FILE",
                   help="YAML with the Word title block: document, meeting, title, status, purpose, contact, "
                        "source, abstract (absent keys are highlighted placeholders)")
    g = p.add_argument_group("Figure 5 (decoded frames of every codec at a matched rate)")
    t = g.add_mutually_exclusive_group()
    t.add_argument("--figure-rate", type=positive_float, metavar="KBPS",
                   help="show each codec's rate point closest to this rate (default: the anchor's lowest rate "
                        "point of each sequence)")
    t.add_argument("--figure-quality", metavar="METRIC=VALUE",
                   help="show each codec's rate point whose sequence METRIC is closest to VALUE, e.g. psnr=30")
    g.add_argument("--figure-sequences", metavar="LIST", help="comma-separated sequences (default: all)")
    g.add_argument("--figure-frames", metavar="LIST",
                   help="frames to show (0-based; default: the kept frame where the codecs differ most)")
    g.add_argument("--figure-frame-count", type=positive_int, default=1, metavar="N",
                   help="frames chosen per sequence when --figure-frames is not given (default 1)")
    g.add_argument("--figure-crop", default="auto", metavar="x,y,w,h|auto|none",
                   help="zoomed crop row (default auto: the window where the codecs differ most)")
    p.add_argument("--subjective", type=Path, action="append", metavar="RESULT.json",
                   help="subjective result of `gfvc subjective analyse` to plot; repeat (default: every "
                        "RUN_DIR/subjective/**/subjective_result.json)")
    p.add_argument("--manifest", type=Path, help="sequence manifest, for the original in the viewer")
    p.add_argument("--data-dir", type=Path, help="folder of the sequence files, for the original in the viewer")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="BD-rate of a codec of one run against a codec of another run",
                       description="Compare runs that used the same test condition (fingerprint).")
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--anchor-run", choices=("A", "B"), default="A", help="run that holds the anchor (default A)")
    p.add_argument("--test", help="test codec in the other run (default: the one codec not in the anchor run)")
    p.add_argument("--anchor", help="anchor codec (default: the condition's bdrate.anchor)")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--metric", dest="metrics", action="append", help="metric value name; repeat (default: condition)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--allow-mixed-devices", action="store_true",
                   help="compare records computed on different device types (CPU and CUDA)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("regress", help="CI gate: fail (exit 1) when a BD-rate saving worsens beyond a tolerance")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--baseline", type=Path, required=True, metavar="FILE", help="baseline JSON (docs/reports.md)")
    p.add_argument("--tolerance", type=nonnegative_float, metavar="PCT",
                   help="allowed worsening in percentage points (default: the baseline's tolerance_pct, else 0.5)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    p.add_argument("--update-baseline", action="store_true",
                   help="write the current values to FILE for review instead of checking")
    p.add_argument("--metrics", metavar="LIST",
                   help="comma-separated metrics to gate, e.g. dists,lpips (default: every metric in the baseline)")
    p.set_defaults(func=cmd_regress)

    p = sub.add_parser("bdrate", help="BD-rate of your own RD data (CSV)",
                       description="CSV columns: codec, sequence, rate_kbps (or kbps, as in a report's "
                                   "rd_data.csv) and one column per metric.")
    p.add_argument("csv", type=Path, metavar="CSV")
    p.add_argument("--anchor", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--metric", required=True, metavar="COL")
    p.add_argument("--method", choices=METHODS, default="jvet")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lower-is-better", dest="lower", action="store_true", default=None)
    g.add_argument("--higher-is-better", dest="lower", action="store_false")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bdrate)


def figure5_options(args: argparse.Namespace) -> Any:
    """reports.figure5.Options from the --figure-* options (one-line ConfigError when malformed)."""
    from gfvc.stills import parse_frame_list  # lazy: CLI start-up (numpy, reports.model)
    from reports import figure5  # lazy: CLI start-up

    seqs = tuple(s.strip() for s in (args.figure_sequences or "").split(",") if s.strip())
    return figure5.Options(sequences=seqs, frames=parse_frame_list(args.figure_frames, "--figure-frames"),
                           frame_count=args.figure_frame_count, rate_kbps=args.figure_rate,
                           quality=figure5.parse_quality(args.figure_quality) if args.figure_quality else None,
                           crop=figure5.parse_crop(args.figure_crop))


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report and print its Table-1 summary (the text of summary.txt), then the files."""
    # lazy: loads matplotlib; loads pandas (start-up time of the modules that import this one)
    from reports.document import report_model, terminal_summary, write_report
    from reports.docx_report import load_meta  # lazy: loads pandas (through reports.tables)
    from reports.originals import original_source  # lazy: reads sequences (numpy I/O) only for the viewer

    meta = load_meta(args.docx_meta)  # a bad title-block file: one line, exit 2, before any work
    opts = figure5_options(args)
    check_output_dir(args.out if args.out else Path(args.run_dir) / "report", what="report folder (--out)")
    model = report_model(args.run_dir, anchor=args.anchor, method=args.method, aggregation=args.aggregation,
                         bootstrap=args.bootstrap, seed=args.seed, allow_mixed_devices=args.allow_mixed_devices)
    out = args.out if args.out else args.run_dir / "report"
    paths = write_report(model, out, tuple(args.formats or FORMATS), figure5=opts, docx_meta=meta,
                         subjective=args.subjective,
                         originals=original_source(args.run_dir, manifest=args.manifest, data_dir=args.data_dir))
    print(terminal_summary(model))
    if model.completeness is not None and not model.completeness.complete:
        c = model.completeness
        print(f"gfvc: report of an INCOMPLETE run: {len(c.missing)} of {c.planned} planned jobs have no result "
              "(listed at the top of the report)", file=sys.stderr)
    print()
    for key in sorted(paths):
        print(f"{key}\t{paths[key]}")
    return 0


def _pair_text(title: str, pair: Any) -> list[str]:
    lines = [f"{title} (lower is better: {pair.lower_is_better})"]
    for s, r in pair.per_sequence.items():
        lines.append(f"  {s:<24} {r.cell(3)}")
    lines.append(f"  {'mean of sequences':<24} {pair.mean.cell(3)}")
    lines.append(f"  {'average RD curve':<24} {pair.curve.cell(3)}")
    return lines


def cmd_compare(args: argparse.Namespace) -> int:
    c = compare_runs(args.run_a, args.run_b, anchor_run=args.anchor_run, test=args.test, anchor=args.anchor,
                     method=args.method, metrics=args.metrics, allow_mixed_devices=args.allow_mixed_devices)
    notes = _imported_notes([(c.anchor_run, c.anchor), (c.test_run, c.test)])
    if args.json:
        print(json.dumps({**c.to_dict(), **({"imported": notes} if notes else {})}, indent=1, sort_keys=True))
        return 0
    print(f"BD-rate (%) of {c.test} ({c.test_run}) vs {c.anchor} ({c.anchor_run}), method {c.method}")
    for m, pair in c.pairs.items():
        print("\n".join(_pair_text(f"Rate-{m}", pair)))
    for m, why in c.skipped.items():
        print(f"Rate-{m}: not computed ({why})")
    for note in notes.values():
        print(f"note: {note}")
    return 0


def _imported_notes(codecs: list[tuple[Path, str]]) -> dict[str, str]:
    """codec -> the report's sentence for each of these codecs whose results were imported (`gfvc import`)."""
    out: dict[str, str] = {}
    for run_dir, codec in codecs:
        note = imported_note(codec, (load_run(run_dir).get("codecs") or {}).get(codec))
        if note:
            out[codec] = note
    return out


def cmd_regress(args: argparse.Namespace) -> int:
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    if args.update_baseline:
        check_output_file(args.baseline, what="--baseline")
    if args.junit:
        check_output_file(args.junit, what="--junit")
    run = load_run(args.run_dir)
    df = results_table(args.run_dir)
    if args.update_baseline:
        old = None
        if args.baseline.exists():
            try:
                old = regress.load_baseline(args.baseline)
            except Exception:
                old = None
        kw = {k: old.get(k) for k in ("anchor", "method", "aggregation")} if old else {}
        model = build_model(df, run, run_dir=args.run_dir, anchor=kw.get("anchor"), method=kw.get("method"),
                            aggregation=kw.get("aggregation"))
        tol = args.tolerance if args.tolerance is not None else (old or {}).get("tolerance_pct")
        data = regress.baseline_from_model(model, tol, wanted)
        atomic_write_text(args.baseline, json.dumps(data, indent=1, sort_keys=True) + "\n")
        values = [f"{c} {m}" for c, ms in data["entries"].items() for m, v in ms.items() if v is not None]
        nulls = [f"{c} {m}" for c, ms in data["entries"].items() for m, v in ms.items() if v is None]
        print(f"wrote baseline {args.baseline}: {len(values)} value(s) to gate"
              + (f" ({', '.join(values)})" if values else "")
              + (f"; {len(nulls)} without a value, not gated ({', '.join(nulls)})" if nulls else "")
              + "; review and commit it")
        if not values:
            print("warning: this baseline gates nothing; `gfvc regress` will refuse it", file=sys.stderr)
        return 0
    base = regress.load_baseline(args.baseline)
    model = build_model(df, run, run_dir=args.run_dir, anchor=base.get("anchor"), method=base.get("method"),
                        aggregation=base.get("aggregation"))
    tol = args.tolerance if args.tolerance is not None else float(base.get("tolerance_pct", regress.DEFAULT_TOLERANCE))
    checks = regress.check(model, base, tol, wanted)
    if args.junit:
        atomic_write_text(args.junit, regress.junit_xml(checks))
    for c in checks:
        print(f"{c.status.upper():<8} {c.codec} {c.metric}: {c.message}")
    for note in _imported_notes([(args.run_dir, c) for c in dict.fromkeys(c.codec for c in checks)]).values():
        print(f"note: {note}")
    print(regress.summary(checks))
    regress.require_comparisons(checks, args.baseline)
    fails = [c for c in checks if c.status == "fail"]
    if fails:
        raise RegressionDetected(f"{len(fails)} of {len(regress.compared(checks))} compared BD-rate checks regressed "
                                 f"(first: {fails[0].codec} {fails[0].metric}: {fails[0].message})")
    return 0


def cmd_bdrate(args: argparse.Namespace) -> int:
    pair = bdrate_from_csv(args.csv, anchor=args.anchor, test=args.test, metric=args.metric,
                           method=args.method, lower=args.lower)
    flagged = [f"{s}: {r.status}: {r.reason}" for s, r in pair.per_sequence.items() if not r.ok]
    if args.json:
        out = {"anchor": args.anchor, "test": args.test, "metric": args.metric, "method": args.method,
               "lower_is_better": pair.lower_is_better,
               "per_sequence": {s: r.to_dict() for s, r in pair.per_sequence.items()},
               "mean": pair.mean.to_dict(False), "average_curve": pair.curve.to_dict(False), "flagged": flagged}
        print(json.dumps(out, indent=1, sort_keys=True))
    else:
        print(f"BD-rate (%) of {args.test} vs {args.anchor}, method {args.method}")
        print("\n".join(_pair_text(f"Rate-{args.metric}", pair)))
        for f in flagged:
            print(f"flagged: {f}", file=sys.stderr)
    return 0 if pair.mean.value is not None else 1
