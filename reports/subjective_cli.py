"""``gfvc subjective prepare|analyse``: material for a viewing session and the analysis of its scores.

Command layer: ``prepare`` reads the run's decoded viewing copies and the
original sequences (reports/originals.py) and writes the clip files; the
playlist logic and the statistics are in reports/subjective.py.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

from gfvc.argtypes import positive_int
from gfvc.errors import ConfigError, InputError
from gfvc.fileio import atomic_write_text, check_output_dir, check_output_file
from reports import media, subjective
from reports.originals import original_source
from reports.viewer import _safe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("subjective", help="subjective tests: session playlists, clip files, MOS/DMOS analysis",
                       description="Prepare a viewing session (ITU-T P.910 ACR-HR/DCR, ITU-R BT.500 DSCQS) from a "
                                   "run, and analyse its score sheet (docs/reports.md, 'Subjective tests').")
    s = p.add_subparsers(dest="subjective_command", metavar="STEP")
    s.required = True
    q = s.add_parser("prepare", help="clip files, per-observer playlists and an empty score sheet")
    q.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    q.add_argument("--method", required=True, choices=list(subjective.METHODS))
    q.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/subjective/METHOD)")
    q.add_argument("--observers", type=positive_int, default=15, help="observers to plan for (default 15)")
    q.add_argument("--repetitions", type=positive_int, default=1, help="presentations of each trial (default 1)")
    q.add_argument("--seed", type=int, default=0, help="seed of the per-observer random orders (default 0)")
    q.add_argument("--codecs", help="comma-separated codecs (default: all)")
    q.add_argument("--sequences", help="comma-separated sequences (default: all)")
    q.add_argument("--rate-points", help="comma-separated rate-point labels, e.g. qp32,qp42 (default: all)")
    q.add_argument("--manifest", type=Path, help="sequence manifest, when the run's condition is not here")
    q.add_argument("--data-dir", type=Path, help="folder of the sequence files ($GFVC_DATA_DIR)")
    q.set_defaults(func=cmd_prepare)
    a = s.add_parser("analyse", help="MOS/DMOS with 95%% CIs and BT.500 observer screening of a score sheet")
    a.add_argument("scores", type=Path, metavar="SCORES.csv")
    a.add_argument("--method", choices=list(subjective.METHODS), help="default: the sheet's method column")
    a.add_argument("--out", type=Path, help="output folder (default: the score sheet's folder)")
    a.add_argument("--no-screening", action="store_true", help="keep every observer (screening still reported)")
    a.set_defaults(func=cmd_analyse)


def _pick(text: str | None) -> set[str] | None:
    return {t.strip() for t in text.split(",") if t.strip()} if text else None


def cmd_prepare(args: argparse.Namespace) -> int:

    m = subjective.method(args.method)
    out = check_output_dir(args.out or Path(args.run_dir) / "subjective" / m.name, what="--out")
    want_c, want_s, want_r = _pick(args.codecs), _pick(args.sequences), _pick(args.rate_points)
    clips = [c for c in media.run_clips(Path(args.run_dir))
             if (want_c is None or c.codec in want_c) and (want_s is None or c.sequence in want_s)
             and (want_r is None or c.rate_point in want_r)]
    for what, want, have in (("codec", want_c, {c.codec for c in clips}),
                             ("sequence", want_s, {c.sequence for c in clips}),
                             ("rate point", want_r, {c.rate_point for c in clips})):
        if want and want - have:
            raise ConfigError(f"{what}(s) {', '.join(sorted(want - have))} have no decoded viewing copy in "
                              f"{args.run_dir} (with the other filters)")
    if not clips:
        raise InputError(f"{args.run_dir}: no records with a decoded viewing copy (decoded.mp4) to test")
    sizes = {(c.width, c.height, c.fps) for c in clips}
    if len(sizes) > 1:
        raise ConfigError(f"the selected clips differ in size or frame rate ({sorted(sizes)}): one session shows one "
                          "format; select sequences with --sequences")
    w, h, fps = sizes.pop()
    originals = original_source(Path(args.run_dir), manifest=args.manifest, data_dir=args.data_dir)
    stimuli = write_clips(out, clips, originals, need_reference=True)
    greys = {}
    for d in sorted({m.grey_between_s, m.vote_s} - {0.0}):
        rel = f"grey/grey_{int(round(d * 1000))}ms.mkv"
        (out / "grey").mkdir(exist_ok=True)
        n = max(1, int(round(d * fps)))
        media.write_lossless(out / rel, media.grey_frames(w, h, n, subjective.GREY_LEVEL), w, h, fps,
                             f"{d:g} s of mid-grey (R = G = B = {subjective.GREY_LEVEL})")
        greys[d] = rel
    plan = subjective.build_playlist(m, stimuli, observers=args.observers, repetitions=args.repetitions,
                                     seed=args.seed, grey_files=greys)
    plan["run_dir"] = str(args.run_dir)
    plan["clip_format"] = ("FFV1 (lossless) in Matroska, yuv420p: decoded clips are lossless copies of the run's "
                           "H.264 CRF-12 viewing copies (decoded.mp4), references of the source frames")
    atomic_write_text(out / "playlist.json", json.dumps(plan, indent=1) + "\n")
    (out / "playlists").mkdir(exist_ok=True)
    for obs in plan["observers"]:
        atomic_write_text(out / "playlists" / f"{obs['observer']}.m3u", _m3u(obs))
    header, rows = subjective.score_sheet_rows(plan)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(header)
    wr.writerows(rows)
    atomic_write_text(out / "scores_template.csv", buf.getvalue())
    n_trials = len(plan["observers"][0]["trials"])
    print(f"{m.title}: {len(stimuli)} clip files, {len(plan['observers'])} observer(s) x {n_trials} trials "
          f"(seed {args.seed}, {args.repetitions} repetition(s)); {m.standard}")
    for name in ("playlist.json", "scores_template.csv", "playlists/", "clips/", "grey/"):
        print(f"{name}\t{out / name}")
    return 0


def write_clips(out: Path, clips: list[media.ClipSource], originals: Any, need_reference: bool) -> list[Any]:
    """FFV1 clip files of the decoded viewing copies and of each sequence's original (the reference)."""
    (out / "clips").mkdir(parents=True, exist_ok=True)
    stimuli = []
    for c in clips:
        cid = f"{_safe(c.sequence)}__{_safe(c.codec)}__{_safe(c.rate_point)}"
        rel = f"clips/{cid}.mkv"
        n = media.write_lossless(out / rel, media.container_frames(c.path), c.width, c.height, c.fps,
                                 f"the H.264 CRF-12 viewing copy {c.path.name} of {c.codec} {c.rate_point} "
                                 f"on {c.sequence}")
        stimuli.append(subjective.Stimulus(cid, c.sequence, c.codec, c.rate_point, c.qp, c.kbps, rel, n / c.fps))
    for seq in sorted({c.sequence for c in clips}):
        c = next(x for x in clips if x.sequence == seq)
        frames = originals(seq)[: c.frames]  # NotAvailable (exit 2, with the fix) when the sequence is not here
        cid = f"{_safe(seq)}__{subjective.REFERENCE}"
        rel = f"clips/{cid}.mkv"
        n = media.write_lossless(out / rel, media.rgb_frames(frames), c.width, c.height, c.fps,
                                 f"the source frames of {seq} (reference)")
        stimuli.append(subjective.Stimulus(cid, seq, subjective.REFERENCE, "", None, None, rel, n / c.fps))
    return stimuli


def _m3u(obs: dict[str, Any]) -> str:
    """An extended M3U of one observer's session (plays in mpv/VLC; paths relative to playlists/)."""
    lines = ["#EXTM3U", f"# observer {obs['observer']}, seed {obs['seed']}"]
    for t in obs["trials"]:
        lines.append(f"# trial {t['trial']}: {t['clip_id']} (repetition {t['repetition']})"
                     + (f", A is the {t['a_is']}" if "a_is" in t else ""))
        for it in t["items"]:
            label = it.get("role") or it["kind"]
            lines += [f"#EXTINF:{it['duration_s']:.3f},{label} {it.get('clip_id', '')}".rstrip(), f"../{it['file']}"]
    return "\n".join(lines) + "\n"


RESULT_FILES = {"json": "subjective_result.json", "clips": "subjective_clips.csv",
                "conditions": "subjective_conditions.csv", "observers": "subjective_observers.csv"}


def cmd_analyse(args: argparse.Namespace) -> int:
    import pandas as pd  # lazy: pandas import time

    out = check_output_dir(args.out or Path(args.scores).resolve().parent, what="--out")
    for f in RESULT_FILES.values():
        check_output_file(out / f, what="result")
    scores = subjective.read_scores(args.scores, args.method)
    res = subjective.analyse(scores, screening=not args.no_screening)
    res["scores_file"] = str(args.scores)
    atomic_write_text(out / RESULT_FILES["json"], json.dumps(res, indent=1) + "\n")
    for key in ("clips", "conditions", "observers"):
        frame = pd.DataFrame(res[key])
        atomic_write_text(out / RESULT_FILES[key], frame.to_csv(index=False, float_format="%.6g"))
    prim = res["primary"]
    print(f"{res['title']}: {len(res['observers_kept'])} of {len(res['observers'])} observers kept; "
          f"{prim['label']} per codec and rate point (95 % CI, Student t)")
    for o in res["observers"]:
        if o["rejected"]:
            print(f"  rejected {o['observer']}: {o['reason']}")
    for r in res["conditions"]:
        v, ci = r[prim["value"]], r[f"{prim['value']}_ci95"]
        kb = f"{r['kbps']:.2f} kbps" if r["kbps"] is not None else "reference"
        print(f"  {r['codec']:<16} {r['rate_point']:<8} {kb:>14}  "
              + (f"{v:.3f} +/- {ci:.3f}" if v is not None and ci is not None else "n/a"))
    for key, f in RESULT_FILES.items():
        print(f"{key}\t{out / f}")
    return 0

