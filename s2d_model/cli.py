"""Sub-commands of the Sparse2Dense area: ``gfvc train s2d`` and ``gfvc s2d-overlay``.

(``gfvc info s2d`` belongs to the lead's ``info`` command, which calls
:func:`s2d_model.info`.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from gfvc.argtypes import add_offline_arg, positive_float, positive_int
from gfvc.fileio import check_output_dir, check_output_file, read_npy
from gfvc.video import check_video_output, parse_size, read_container, read_video, video_format, write_video
from model_parts.checkpoint import derived_model_id
from model_parts.overlay import draw_vertices


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (Sparse2Dense: `gfvc train s2d ...`)")
    models = p.add_subparsers(dest="model", metavar="MODEL")
    t = models.add_parser("s2d", help="train Sparse2Dense on a TED-Talk style folder",
                          description="Train Sparse2Dense. DATA holds train/<video>.mp4 or train/<video>/*.png; "
                                      "VERTICES holds <video>.npy (T, 10475, 2) targets in normalised coordinates.")
    t.add_argument("--config", default="small", help="s2d config name (reference, small) or a .yaml path")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--vertices", type=Path, default=None)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--steps", type=positive_int, default=None, help="total steps (default: the config's)")
    t.add_argument("--resume", type=Path, default=None, help="training checkpoint to continue (OUT/checkpoint.pt)")
    t.add_argument("--batch", type=positive_int, default=None)
    t.add_argument("--lr", type=positive_float, default=None, help="learning rate (paper: 2e-4)")
    t.add_argument("--device", default="auto", help="auto (CUDA if torch sees it, else CPU), cpu, cuda or cuda:N")
    t.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    t.add_argument("--max-minutes", type=positive_float, default=None,
                   help="stop with a checkpoint after this wall time")
    t.add_argument("--checkpoint-every", type=positive_int, default=None)
    t.add_argument("--init", type=Path, default=None,
                   help="start from this checkpoint's model weights (fine-tuning; fresh optimisers and discriminator)")
    t.add_argument("--source-variants", type=Path, default=None,
                   help="intra-coded training frames SDIR/<video>/<tag>/NNNNN.png (used with the config's "
                        "train.source_degradation)")
    t.add_argument("--export", type=Path, default=None, help="also write the fp16 inference checkpoint here")
    t.add_argument("--model-id", default=None, help="model id stored in bitstreams (with --export)")
    t.add_argument("--vertex-targets", default=None, help="what the vertex targets are (recorded with --export)")
    t.add_argument("--no-progress", action="store_true")
    add_offline_arg(t)
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1] if not getattr(a, "model", None) else 0)

    o = sub.add_parser("s2d-overlay", help="draw decoded Sparse2Dense vertices over frames (PNG folder or mp4)")
    o.add_argument("--video", required=True, type=Path, help="frames: .mp4/.mkv, PNG folder, .rgb/.yuv (with --size)")
    o.add_argument("--vertices", required=True, type=Path, help=".npy (T, 10475, 2) normalised coordinates")
    o.add_argument("--size", default=None, help="WxH for raw .rgb/.yuv input")
    o.add_argument("-o", "--output", required=True, type=Path, help="out.mp4 or a folder for PNGs")
    o.add_argument("--stride", type=positive_int, default=1, help="draw every n-th vertex")
    o.add_argument("--fps", type=positive_float,
                   help="frame rate of an .mp4/.mkv/.mov output (default: the input video's, else 25)")
    o.set_defaults(func=_overlay)


def _train(args: argparse.Namespace) -> int:
    # lazy: loads torch (start-up time of the modules that import this one)
    from s2d_model.train import TrainOptions, export_model, train

    check_output_dir(args.out, what="training folder (--out)")
    if args.export:
        check_output_file(args.export, what="--export")
    summary = train(TrainOptions(
        config=args.config, data=args.data, out=args.out, vertices=args.vertices, steps=args.steps,
        resume=args.resume, batch=args.batch, lr=args.lr, device=args.device, amp=args.amp, seed=args.seed,
        threads=args.threads, progress=not args.no_progress, max_minutes=args.max_minutes,
        checkpoint_every=args.checkpoint_every, init=args.init, source_variants=args.source_variants))
    if args.export:
        model_id = args.model_id or derived_model_id("s2d", args.export, Path(summary["checkpoint"]))
        meta = {k: v for k, v in (("model_id", model_id), ("vertex_targets", args.vertex_targets)) if v}
        export_model(Path(summary["checkpoint"]), args.export, meta=meta)
        summary["model_id"] = model_id
        summary["exported"] = str(args.export)
    print(json.dumps(summary, indent=2))
    return 0


def _overlay(args: argparse.Namespace) -> int:

    check_video_output(args.output, what="overlay output (-o)")
    size = parse_size(args.size) if args.size else None
    fps, fps_from = (args.fps, "--fps") if args.fps else (25.0, "default; pass --fps")
    if video_format(args.video) == "container":
        frames, file_fps = read_container(args.video)
        if not args.fps:
            fps, fps_from = file_fps, "the input video"
    else:
        frames = read_video(args.video, size=size)
    verts = read_npy(args.vertices, "--vertices", hint="give the (T, 10475, 2) vertices.npy that `gfvc decode` "
                                                       "writes next to decoded s2d frames")
    out = draw_vertices(frames, verts, stride=args.stride)
    write_video(args.output, out, fps)  # by suffix: .mp4/.mkv/.mov viewing copy, .rgb/.yuv, or a PNG folder
    rate = f" at {fps:g} fps ({fps_from})" if video_format(args.output, must_exist=False) == "container" else ""
    print(f"wrote {len(out)} frames with vertices to {args.output}{rate}")
    return 0
