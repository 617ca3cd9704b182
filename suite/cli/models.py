"""Sub-commands for the generative models: ``gfvc conformance``, ``gfvc models``, ``gfvc train CODEC``, ``gfvc info``.

``gfvc train s2d`` stays Sparse2Dense's own trainer (s2d_model/cli.py); every
other codec with a registered recipe (:data:`model_parts.training.RECIPES`) trains
through the shared loop :func:`model_parts.training.train`.
"""
from __future__ import annotations

import argparse
import difflib
import json
import shlex
from pathlib import Path
from typing import Any

from baselines import conformance, matching
from baselines.base import BaselineConfig
from gfvc import models
from gfvc.codec import get_codec
from gfvc.errors import ConfigError, GfvcError, NotAvailable, UnknownName
from gfvc.fileio import check_output_dir, check_output_file, read_yaml_mapping
from model_parts.checkpoint import derived_model_id
from model_parts.training import RECIPES, TrainOptions, export, read_training_checkpoint, train

# Codecs `gfvc train NAME` offers besides s2d (their recipes register on import of baselines.registry;
# listed here so building the parser does not import torch). tests check it against MODEL_MODULES.
TRAINABLE: tuple[str, ...] = ("fomm", "mraa", "fv2v", "tpsm", "cfte", "lia", "mttf", "imt", "ihvc")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="check model ports against official-code test vectors",
                       description="Rebuild each model of a conformance vector (<model>.pt + <model>.json) from its "
                                   "official kwargs, load it strictly, run its call sequence and compare every output "
                                   "with its tolerance. Default: the vectors shipped in baselines/vectors/. "
                                   "Exit 0 only when every output passes; 1 when one fails; 2 for a malformed vector.")
    p.add_argument("paths", nargs="*", type=Path, help="vector files or folders (default: the shipped vectors)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="machine-readable result (for CI); an error is a JSON object too (exit 2)")
    fmt.add_argument("--markdown", action="store_true",
                     help="the tables docs/baselines.md holds (python -m tools.conformance_docs --write)")
    p.set_defaults(func=cmd_conformance)

    m = sub.add_parser("models", help="status, install or download the known public checkpoints",
                       description="The registry of known public checkpoints of the generative baselines "
                                   "(gfvc/model_registry.json): source, size and sha256 where a public one exists.")
    ms = m.add_subparsers(dest="models_cmd", metavar="ACTION")
    st = ms.add_parser("status", help="table: checkpoint, codec, where found, verified or why not")
    st.add_argument("--codec", action="append", dest="codecs", metavar="NAME", help="only these codecs (repeatable)")
    st.add_argument("--weights-dir", type=Path, help="also look here (before the models cache)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_models_status)
    ins = ms.add_parser("install", help="verify registry checkpoints found in DIR and copy them into the models cache")
    ins.add_argument("dir", type=Path)
    ins.add_argument("--dest", type=Path, help="target folder (default $GFVC_MODELS_DIR or ~/.cache/gfvc/models)")
    ins.set_defaults(func=cmd_models_install)
    fe = ms.add_parser("fetch", help="download the checkpoints that have a direct URL (needs internet)")
    fe.add_argument("names", nargs="*", help="registry names (default: all with a direct URL)")
    fe.add_argument("--dest", type=Path)
    fe.add_argument("--timeout", type=float, default=60.0)
    fe.set_defaults(func=cmd_models_fetch)
    m.set_defaults(func=lambda a: (m.print_help(), 2)[1])

    _register_train(sub)


# ----------------------------------------------------------------------------- conformance

def cmd_conformance(args: argparse.Namespace) -> int:
    try:
        results = conformance.check_paths(list(args.paths) or None)
    except GfvcError as e:
        if not args.json:
            raise
        # a CI parsing the output gets JSON whatever happened: the error as an object, exit 2
        print(json.dumps({"passed": False, "error": {"type": type(e).__name__, "message": str(e)},
                          "vectors": []}, indent=1))
        return e.exit_code
    ok = all(r.passed for r in results)
    if args.json:
        print(json.dumps({"passed": ok, "vectors": [r.to_dict() for r in results]}, indent=1))
    elif args.markdown:
        print(conformance.markdown(results))
    else:
        print(conformance.format_results(results))
    return 0 if ok else 1


# ----------------------------------------------------------------------------- models

def _check_codec_names(names: list[str] | None) -> None:
    """`--codec NAME` of `gfvc models status`: a codec the registry knows, else UnknownName with close names."""
    reg = models.registry()
    known = sorted({e.codec for e in reg.entries} | set(reg.without_public_checkpoint))
    for n in names or []:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownName(f"--codec {n!r}: no checkpoints of such a codec{hint} (codecs: {', '.join(known)})")


def cmd_models_status(args: argparse.Namespace) -> int:
    _check_codec_names(args.codecs)
    rows = models.status(args.weights_dir, args.codecs)
    reg = models.registry()
    none = {c: why for c, why in reg.without_public_checkpoint.items() if not args.codecs or c in args.codecs}
    if args.json:
        print(json.dumps({"models_dir": str(models.models_dir()), "checkpoints": [r.to_dict() for r in rows],
                          "without_public_checkpoint": none}, indent=1))
        return 0
    print(f"models cache: {models.models_dir()}  (registry: {models.REGISTRY_FILE})")
    print(f"{'checkpoint':20s} {'codec':6s} {'px':>4s} {'hash':9s} state")
    for r in rows:
        e = r.entry
        known = "sha256" if e.sha256 else ("md5" if e.md5 else "UNKNOWN")
        state = {"verified": "verified", "md5-verified": "verified (md5)", "unverified": "present, UNVERIFIED",
                 "mismatch": "REFUSED", "missing": "missing"}[r.state]
        print(f"{e.name:20s} {e.codec:6s} {e.image_size:4d} {known:9s} {state}: {r.reason}"
              + (f"  [{r.path}]" if r.path else ""))
    for codec, why in none.items():
        print(f"{'-':20s} {codec:6s} {'':4s} {'':9s} {why}")
    print("hash UNKNOWN = no public sha256/md5 exists for that file: it can be used, but not verified "
          "(pin the sha256 it shows in your condition's models: section).")
    return 0


def cmd_models_install(args: argparse.Namespace) -> int:
    if args.dest is not None:  # outputs before any work, as the weights commands do
        check_output_dir(args.dest, what="--dest")
    rows = models.install(args.dir, args.dest, inspect=matching.inspect_entry)
    if not rows:
        names = ", ".join(sorted({e.filename for e in models.registry().entries}))
        print(f"no registry checkpoints found in {args.dir} (file names: {names})")
        return 1
    for r in rows:
        label = {"mismatch": "REFUSED", "unverified": "ok, UNVERIFIED"}.get(r.state, "ok")
        print(f"{r.entry.name:20s} {label}: {r.reason}")
    return 1 if any(r.state == "mismatch" for r in rows) else 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    if args.dest is not None:
        check_output_dir(args.dest, what="--dest")
    rows = models.fetch(args.names or None, args.dest, args.timeout, inspect=matching.inspect_entry)
    for r in rows:
        print(f"{r.entry.name:20s} {'REFUSED' if r.state == 'mismatch' else r.state}: {r.reason}")
    return 1 if any(r.state == "mismatch" for r in rows) else 0


# ----------------------------------------------------------------------------- train

def _train_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-parsers of `gfvc train` (created by s2d_model.cli), or a new `train` command."""
    parser = sub.choices.get("train")
    if parser is None:
        parser = sub.add_parser("train", help="train a model")
        parser.set_defaults(func=lambda a: (parser.print_help(), 2)[1])
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="model", metavar="MODEL")


def _register_train(sub: argparse._SubParsersAction) -> None:
    models_sp = _train_subparsers(sub)
    # the suite's baselines, plus recipes already registered in this process (plug-ins imported first)
    for name in TRAINABLE + tuple(n for n in RECIPES.names() if n not in TRAINABLE):
        if name in models_sp.choices:
            continue
        t = models_sp.add_parser(
            name, help=f"train {name} with its official losses (shared loop)",
            description=f"Train the {name} baseline with its recipe (official losses and hyper-parameters, labelled "
                        "fallbacks where weights are missing) on a TED-Talk style folder: DATA/train/<video>.mp4 or "
                        "DATA/train/<video>/*.png. Resumable (--resume OUT/checkpoint.pth.tar).")
        t.add_argument("--data", required=True, type=Path)
        t.add_argument("--out", required=True, type=Path, help="folder for checkpoint.pth.tar, log.jsonl, summary.json")
        t.add_argument("--steps", required=True, type=int, help="total steps (a resumed run continues to this)")
        t.add_argument("--batch", type=int, default=4)
        t.add_argument("--lr", type=float, default=None, help="learning rate (default: the official one)")
        t.add_argument("--config", default=None,
                       help="named configuration (`gfvc info CODEC --config NAME`; e.g. official, demo) or an "
                            "official YAML config file (default: official; with --resume: the checkpoint's)")
        t.add_argument("--image-size", type=int, default=None, help="train at this size instead of the config's")
        t.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
        t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--resume", type=Path, default=None, help="OUT/checkpoint.pth.tar of an earlier run")
        t.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this wall time")
        t.add_argument("--checkpoint-every", type=int, default=200)
        t.add_argument("--weights-dir", type=Path, default=None, help="folder with VGG19 etc. for the losses")
        t.add_argument("--export", type=Path, default=None, help="also write the inference checkpoint here")
        t.add_argument("--fp16", action="store_true", help="store the exported weights as float16 (demo files)")
        t.add_argument("--model-id", default=None,
                       help="model id stored in bitstreams (with --export; default: the export's name + the "
                            "first 8 hex digits of the training checkpoint's sha256, never a shipped id)")
        t.add_argument("--no-progress", action="store_true")
        t.set_defaults(func=cmd_train, train_codec=name)


def resolve_config(codec_cls: Any, spec: str | None, resume: Path | None = None) -> Any:
    """A BaselineConfig from a named configuration, an official YAML file, or a training checkpoint."""
    if spec is None and resume is not None:
        st = read_training_checkpoint(resume, codec_cls.name)
        return BaselineConfig.from_dict(st["gfvc"]["config"])
    spec = spec or "official"
    configs = codec_cls.named_configs()
    if spec in configs:
        return configs[spec]
    p = Path(spec)
    if p.suffix.lower() in (".yaml", ".yml") or p.is_file():
        return codec_cls.config_from_official_yaml(read_yaml_mapping(p, f"{codec_cls.name} official config"))
    raise ConfigError(f"codec {codec_cls.name!r} has no configuration {spec!r} "
                      f"(named: {', '.join(sorted(configs))}; or pass an official YAML file)")


def _command_line(args: argparse.Namespace) -> str:
    """The canonical `gfvc train` command of these arguments (recorded in the checkpoint)."""
    parts = ["gfvc", "train", args.train_codec]
    for opt in ("data", "out", "steps", "batch", "lr", "config", "image_size", "device", "threads", "seed",
                "resume", "max_minutes", "checkpoint_every", "export", "model_id"):
        v = getattr(args, opt, None)
        if v is not None:
            parts += [f"--{opt.replace('_', '-')}", str(v)]
    if getattr(args, "fp16", False):
        parts.append("--fp16")
    return shlex.join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    name = args.train_codec
    check_output_dir(args.out, what="training folder (--out)")  # outputs before any work (README)
    if args.export:
        check_output_file(args.export, what="--export")
    codec_cls = get_codec(name)  # imports the model modules (which register their recipes)
    if name not in RECIPES:
        raise NotAvailable(f"codec {name!r} has no training recipe registered (recipes: "
                           f"{', '.join(RECIPES.names()) or 'none'}); its model module may not be installed yet")
    cfg = resolve_config(codec_cls, args.config, args.resume)
    if args.image_size:
        cfg = cfg.with_image_size(args.image_size)
    recipe = RECIPES.get(name)(cfg, device=args.device, weights_dir=args.weights_dir)
    opts = TrainOptions(data=args.data, out=args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                        device=args.device, seed=args.seed, threads=args.threads, resume=args.resume,
                        max_minutes=args.max_minutes, checkpoint_every=args.checkpoint_every,
                        progress=not args.no_progress, extra_meta={"command": _command_line(args)})
    summary = train(recipe, opts)
    if args.export:
        model_id = args.model_id or derived_model_id(name, args.export, Path(summary["checkpoint"]))
        export(Path(summary["checkpoint"]), args.export, name, tuple(recipe.inference_modules()), fp16=args.fp16,
               meta={"model_id": model_id})
        summary["exported"] = str(args.export)
        summary["model_id"] = model_id
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- info

__all__ = ["register", "resolve_config", "TRAINABLE"]
