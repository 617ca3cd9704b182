"""Sub-commands of the Sparse2Dense area: ``gfvc train s2d`` and ``gfvc s2d-overlay``.

(``gfvc info s2d`` belongs to the lead's ``info`` command, which calls
:func:`s2d_model.info`.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("train", help="train a model (Sparse2Dense: `gfvc train s2d ...`)")
    models = p.add_subparsers(dest="model", metavar="MODEL")
    t = models.add_parser("s2d", help="train Sparse2Dense on a TED-Talk style folder",
                          description="Train Sparse2Dense. DATA holds train/<video>.mp4 or train/<video>/*.png; "
                                      "VERTICES holds <video>.npy (T, 10475, 2) targets in normalised coordinates.")
    t.add_argument("--config", default="small", help="s2d config name (reference, small) or a .yaml path")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--vertices", type=Path, default=None)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--steps", type=int, default=None, help="total steps (default: the config's)")
    t.add_argument("--resume", type=Path, default=None, help="training checkpoint to continue (OUT/checkpoint.pt)")
    t.add_argument("--batch", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="learning rate (paper: 2e-4)")
    t.add_argument("--device", default="auto", help="auto (CUDA if torch sees it, else CPU), cpu, cuda or cuda:N")
    t.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this wall time")
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--export", type=Path, default=None, help="also write the fp16 inference checkpoint here")
    t.add_argument("--model-id", default=None, help="model id stored in bitstreams (with --export)")
    t.add_argument("--vertex-targets", default=None, help="what the vertex targets are (recorded with --export)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1] if not getattr(a, "model", None) else 0)

    o = sub.add_parser("s2d-overlay", help="draw decoded Sparse2Dense vertices over frames (PNG folder or mp4)")
    o.add_argument("--video", required=True, type=Path, help="frames: .mp4/.mkv, PNG folder, .rgb/.yuv (with --size)")
    o.add_argument("--vertices", required=True, type=Path, help=".npy (T, 10475, 2) normalised coordinates")
    o.add_argument("--size", default=None, help="WxH for raw .rgb/.yuv input")
    o.add_argument("-o", "--output", required=True, type=Path, help="out.mp4 or a folder for PNGs")
    o.add_argument("--stride", type=int, default=1, help="draw every n-th vertex")
    o.set_defaults(func=_overlay)


def _train(args: argparse.Namespace) -> int:
    from s2d_model.train import TrainOptions, export_model, train

    summary = train(TrainOptions(
        config=args.config, data=args.data, out=args.out, vertices=args.vertices, steps=args.steps,
        resume=args.resume, batch=args.batch, lr=args.lr, device=args.device, amp=args.amp, seed=args.seed,
        threads=args.threads, progress=not args.no_progress, max_minutes=args.max_minutes,
        checkpoint_every=args.checkpoint_every))
    if args.export:
        meta = {k: v for k, v in (("model_id", args.model_id), ("vertex_targets", args.vertex_targets)) if v}
        export_model(Path(summary["checkpoint"]), args.export, meta=meta)
        summary["exported"] = str(args.export)
    print(json.dumps(summary, indent=2))
    return 0


def _overlay(args: argparse.Namespace) -> int:
    import numpy as np

    from gfvc.errors import InputError
    from gfvc.video import parse_size, read_video, write_png_folder, write_video
    from s2d_model.overlay import draw_vertices

    size = parse_size(args.size) if args.size else None
    frames = read_video(args.video, size=size)
    if not args.vertices.is_file():
        raise InputError(f"{args.vertices}: no such vertices file")
    verts = np.load(args.vertices)
    out = draw_vertices(frames, verts, stride=args.stride)
    if args.output.suffix.lower() in (".mp4", ".mkv", ".mov"):
        write_video(args.output, out)
    else:
        write_png_folder(args.output, out)
    print(f"wrote {len(out)} frames with vertices to {args.output}")
    return 0
