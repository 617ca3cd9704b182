"""`gfvc metrics` and `gfvc weights status|install|fetch`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import metrics
from gfvc.argtypes import add_offline_arg, positive_float, positive_int, warn
from gfvc.devices import resolve_device
from gfvc.errors import ConfigError, InputError
from gfvc.fileio import check_output_dir
from gfvc.progress import MetricProgress
from gfvc.video import is_viewing_copy, parse_size, read_video, refuse_viewing_copy
from metrics import weights
from test_conditions import MetricsSpec, load_condition


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="score a decoded video against its original (PSNR, SSIM, DISTS, LPIPS, FVD)",
                       description="Score DIST against REF with the metric protocol of a test condition "
                                   "(default: the suite's default protocol). Missing weights are reported per "
                                   "metric as 'not computed', never as a number.")
    p.add_argument("ref", type=Path, help="original video (.rgb, .yuv, .mp4/.mkv, or PNG folder)")
    p.add_argument("dist", type=Path, help="decoded video, same format rules")
    p.add_argument("--size", help="WxH for raw .rgb/.yuv input")
    p.add_argument("--frames", type=positive_int, help="score only the first N frames")
    p.add_argument("--condition", help="take the metric protocol (and fps) from this test condition")
    p.add_argument("--metrics", help="comma-separated subset, e.g. psnr,ssim,dists")
    p.add_argument("--weights-dir", type=Path, help="look for weight files here before the torch hub cache")
    p.add_argument("--cache-dir", type=Path, help="on-disk reference-feature cache")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--allow-viewing-copy", action="store_true",
                   help="score a lossy viewing copy written by the suite anyway (labelled in the output)")
    add_offline_arg(p)
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="device of DISTS/LPIPS/FVD (default auto: CUDA if torch sees it, else CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=_cmd_metrics)

    w = sub.add_parser("weights", help="status, install or download the metric weight files",
                       description="Weight files are verified by size and sha256 before use.")
    ws = w.add_subparsers(dest="weights_cmd", metavar="ACTION")
    st = ws.add_parser("status", help="table: file, where found, verified or why not")
    st.add_argument("--weights-dir", type=Path)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)
    ins = ws.add_parser("install", help="verify files in DIR and copy them into the torch hub cache")
    ins.add_argument("dir", type=Path)
    ins.add_argument("--dest", type=Path, help="target folder (default $TORCH_HOME/hub/checkpoints)")
    ins.set_defaults(func=_cmd_install)
    fe = ws.add_parser("fetch", help="download the files from their source URLs (needs internet)",
                       description="Download the hub files into the torch hub cache (or --dest), verifying size "
                                   "and sha256. GFVC_WEIGHTS_MIRROR=URL (or --mirror URL) downloads URL/FILE_NAME "
                                   "instead of the original hosts.")
    fe.add_argument("names", nargs="*", help="file names (default: all downloadable files)")
    fe.add_argument("--dest", type=Path)
    fe.add_argument("--mirror", metavar="URL", help="base URL that serves the files by name ($GFVC_WEIGHTS_MIRROR)")
    fe.add_argument("--timeout", type=positive_float, default=60.0, help="connect/read timeout in seconds")
    fe.set_defaults(func=_cmd_fetch)
    w.set_defaults(func=lambda a: (w.print_help(), 2)[1])


def _weights_dir(args: argparse.Namespace) -> Path | None:
    """--weights-dir must exist: a typo is an error, not 'weights missing' later."""
    wd = getattr(args, "weights_dir", None)
    if wd is not None and not Path(wd).expanduser().is_dir():
        raise ConfigError(f"--weights-dir {wd}: no such folder")
    return Path(wd).expanduser() if wd is not None else None


def _spec_and_fps(args: argparse.Namespace):
    if args.condition:
        cond = load_condition(args.condition)
        spec, fps = cond.metrics, cond.fps
    else:
        spec, fps = MetricsSpec(), 25.0
    if args.metrics:
        import dataclasses

        spec = dataclasses.replace(spec, names=tuple(m.strip() for m in args.metrics.split(",") if m.strip()))
    return spec, fps


def _cmd_metrics(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)  # `--device cuda` without CUDA: one line, exit 2
    args.weights_dir = _weights_dir(args)
    if args.cache_dir is not None:
        check_output_dir(args.cache_dir, what="--cache-dir")
    copies = [str(p) for p in (args.ref, args.dist) if is_viewing_copy(p)]
    if copies and not args.allow_viewing_copy:
        refuse_viewing_copy(copies[0], "scoring it")
    for c in copies:
        warn(f"{c} is a LOSSY viewing copy: its scores include H.264 artefacts and are not the codec's")
    size = parse_size(args.size) if args.size else None
    ref = read_video(args.ref, size=size, frames=args.frames)
    dist = read_video(args.dist, size=size, frames=args.frames)
    if ref.shape[1:] != dist.shape[1:]:
        raise InputError(f"{args.ref} is {ref.shape[2]}x{ref.shape[1]} but {args.dist} is "
                         f"{dist.shape[2]}x{dist.shape[1]}; they must have the same size")
    if ref.shape[0] != dist.shape[0]:
        n = min(ref.shape[0], dist.shape[0])
        raise InputError(f"{args.ref} has {ref.shape[0]} frames but {args.dist} has {dist.shape[0]}; "
                         f"pass --frames {n} to score the first {n}")
    spec, fps = _spec_and_fps(args)
    reasons = metrics.ensure_weights(spec, args.weights_dir)  # downloads missing files unless --offline
    progress = None if args.no_progress else MetricProgress()
    try:
        res = metrics.evaluate(spec, ref, dist, fps=fps, cache_dir=args.cache_dir, weights_dir=args.weights_dir,
                               device=device, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        by_reason: dict[str, list[str]] = {}
        for m, why in reasons.items():
            by_reason.setdefault(why, []).append(m)
        for why, ms in by_reason.items():  # stdout stays pure JSON; the reason once on stderr
            print(f"gfvc: missing weights: {'/'.join(ms)} not computed: {why}", file=sys.stderr)
        print(json.dumps({"ref": str(args.ref), "dist": str(args.dist), "frames": int(ref.shape[0]),
                          "size": f"{ref.shape[2]}x{ref.shape[1]}", "device": device, "results": res,
                          "viewing_copies": copies, "protocol": metrics.protocol(spec)}, indent=2, allow_nan=False))
        return 0
    print(f"{args.dist} vs {args.ref}: {ref.shape[0]} frames {ref.shape[2]}x{ref.shape[1]} (device {device})"
          + (" (LOSSY VIEWING COPY)" if copies else ""))
    said: set[str] = set()
    for name, r in res.items():
        arrow = "lower is better" if r["lower_is_better"] else "higher is better"
        if r["status"] == "ok":
            note = f"  ({r['reason']})" if r["reason"] else ""
            print(f"  {name:7s} {r['value']:12.6f}  [{arrow}]{note}")
        else:
            why = r["reason"]
            print(f"  {name:7s} {'not computed':>12s}  {'(same as above)' if why in said else why}")
            said.add(why)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    rows = weights.status(_weights_dir(args))
    if args.json:
        print(json.dumps([{"file": r.name, "path": str(r.path) if r.path else None, "where": r.where,
                           "verified": r.verified, "reason": r.reason, "sha256": r.sha256_expected,
                           "used_by": list(r.used_by)} for r in rows], indent=2))
        return 0
    print(f"hub cache: {weights.hub_dir()}")
    print(f"{'file':26s} {'used by':22s} {'found':12s} status")
    for r in rows:
        state = "verified" if r.verified else f"NOT USABLE: {r.reason}"
        where = r.where if r.path is None else f"{r.where}"
        print(f"{r.name:26s} {','.join(r.used_by):22s} {where:12s} {state}" + (f"  [{r.path}]" if r.path else ""))
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    if args.dest is not None:
        check_output_dir(args.dest, what="--dest")
    rows = weights.install(args.dir, args.dest)
    if not rows:
        print(f"no registered weight files found in {args.dir} (names: {', '.join(weights.REGISTRY)})")
        return 1
    bad = 0
    for r in rows:
        print(f"{r.name:26s} {'ok' if r.verified else 'REFUSED'}: {r.reason}")
        bad += not r.verified
    return 1 if bad else 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    import os

    if args.mirror:
        os.environ[weights.MIRROR_ENV] = args.mirror
    if args.dest is not None:
        check_output_dir(args.dest, what="--dest")
    for r in weights.fetch(args.names or None, args.dest, args.timeout):
        print(f"{r.name:26s} {'ok' if r.verified else 'NOT USABLE'}: {r.reason}")
    return 0
