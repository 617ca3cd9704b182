"""Sub-commands for the generative models: ``gfvc conformance``, ``gfvc models``, ``gfvc train CODEC``, ``gfvc info``.

``gfvc train s2d`` stays Sparse2Dense's own trainer (s2d_model/cli.py); every
other codec with a registered recipe (:data:`gfvc.training.RECIPES`) trains
through the shared loop :func:`gfvc.training.train`.
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from gfvc.errors import ConfigError, NotAvailable

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
    p.add_argument("--json", action="store_true", help="machine-readable result (for CI)")
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
    from baselines import conformance

    results = conformance.check_paths(list(args.paths) or None)
    ok = all(r.passed for r in results)
    if args.json:
        print(json.dumps({"passed": ok, "vectors": [r.to_dict() for r in results]}, indent=1))
    else:
        print(conformance.format_results(results))
    return 0 if ok else 1


# ----------------------------------------------------------------------------- models

def cmd_models_status(args: argparse.Namespace) -> int:
    from gfvc import models

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
    from gfvc import models

    rows = models.install(args.dir, args.dest)
    if not rows:
        names = ", ".join(sorted({e.filename for e in models.registry().entries}))
        print(f"no registry checkpoints found in {args.dir} (file names: {names})")
        return 1
    for r in rows:
        print(f"{r.entry.name:20s} {'REFUSED' if r.state == 'mismatch' else 'ok'}: {r.reason}")
    return 1 if any(r.state == "mismatch" for r in rows) else 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from gfvc import models

    for r in models.fetch(args.names or None, args.dest, args.timeout):
        print(f"{r.entry.name:20s} {r.state}: {r.reason}")
    return 0


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
    from gfvc.training import RECIPES

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
        t.add_argument("--model-id", default=None, help="model id stored in bitstreams (with --export)")
        t.add_argument("--no-progress", action="store_true")
        t.set_defaults(func=cmd_train, train_codec=name)


def resolve_config(codec_cls: Any, spec: str | None, resume: Path | None = None) -> Any:
    """A BaselineConfig from a named configuration, an official YAML file, or a training checkpoint."""
    from baselines.base import BaselineConfig

    if spec is None and resume is not None:
        from gfvc.training import read_training_checkpoint

        st = read_training_checkpoint(resume, codec_cls.name)
        return BaselineConfig.from_dict(st["gfvc"]["config"])
    spec = spec or "official"
    configs = codec_cls.named_configs()
    if spec in configs:
        return configs[spec]
    p = Path(spec)
    if p.suffix.lower() in (".yaml", ".yml") or p.is_file():
        from gfvc.fileio import read_yaml_mapping

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
    from gfvc.codec import get_codec
    from gfvc.training import RECIPES, TrainOptions, export, train

    name = args.train_codec
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
        meta = {"model_id": args.model_id} if args.model_id else {}
        export(Path(summary["checkpoint"]), args.export, name, tuple(recipe.inference_modules()), fp16=args.fp16,
               meta=meta)
        summary["exported"] = str(args.export)
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- info

def codec_info(name: str, config: str | None = None, condition: Any = None, env: Any = None) -> dict[str, Any]:
    """What `gfvc info CODEC` shows: values per inter frame, scale, resolution, checkpoint, architecture."""
    from gfvc.codec import get_codec

    cls: Any = get_codec(name)
    if getattr(cls, "family", "") != "generative":
        raise ConfigError(f"codec {name!r} is an anchor; `gfvc info` describes generative models")
    if name == "s2d":
        return _s2d_info(cls, config, condition, env)
    base: dict[str, Any] = {"codec": name, "description": cls.description, "quant_scale": float(cls.quant_scale)}
    if not getattr(cls, "takes_checkpoint", False):
        base.update(values_per_inter_frame=int(cls.feature_dim), checkpoint=None, note="no model checkpoint")
        return base
    if config is not None:
        cfg = resolve_config(cls, config)
        ck = None
    else:
        codec: Any = cls(condition, env)
        cfg = codec.config()
        entry = codec.registry_entry()
        meta = codec._checkpoint().meta
        ck = {"path": str(codec.choice.path), "source": codec.choice.source, "sha256": codec.model_checksum(),
              "registry": entry.name if entry is not None else None, "model_id": codec.model_id(),
              "config_from": codec._cfg_how, "training": meta.get("training")}
    base.update({"values_per_inter_frame": cls.values_per_frame(cfg), "resolution": [cfg.image_size, cfg.image_size],
                 "checkpoint": ck, "config": cfg.to_dict(), "architecture": cfg.fingerprint(),
                 "inference_modules": list(cls.inference_modules),
                 "parameters": cls.parameter_counts(cfg),
                 "named_configs": sorted(cls.named_configs())})
    return base


def _s2d_info(cls: Any, config: str | None, condition: Any, env: Any) -> dict[str, Any]:
    import s2d_model

    out: dict[str, Any] = {"codec": "s2d", "description": cls.description, "quant_scale": float(cls.quant_scale)}
    if config is not None:
        info = s2d_model.info(config)
        ck = None
    else:
        from s2d_model.config import config_from_dict

        codec = cls(condition, env)
        st = codec._ck()
        info = s2d_model.info(config_from_dict(st["config"], name=st["config"].get("name", "checkpoint")))
        meta = dict(st.get("meta") or {})
        ck = {"path": str(codec.checkpoint), "source": codec.choice.source, "sha256": codec.model_checksum(),
              "registry": None, "model_id": codec.model_id(), "config_from": "embedded",
              "training": {k: meta.get(k) for k in ("step", "perceptual", "vertex_targets", "wall_seconds", "dtype")}}
    out.update({"values_per_inter_frame": info["values_per_inter_frame"], "resolution": info["image_size"],
                "checkpoint": ck, "config": info["config"], "architecture": info["fingerprint"],
                "parameters": info["parameters"], "details": info})
    return out


def print_info(info: dict[str, Any]) -> None:
    ck = info.get("checkpoint")
    print(f"codec:            {info['codec']}  ({info['description']})")
    print(f"values per frame: {info['values_per_inter_frame']}   quant scale: {info['quant_scale']:g}")
    if "resolution" in info:
        w, h = info["resolution"][:2] if len(info["resolution"]) > 1 else (info["resolution"][0],) * 2
        print(f"resolution:       {w}x{h}")
    if ck:
        print(f"checkpoint:       {ck['path']}")
        print(f"  chosen by:      {ck['source']}")
        print(f"  sha256:         {ck['sha256']}" + (f"  (registry: {ck['registry']})" if ck.get("registry") else ""))
        print(f"  model id:       {ck['model_id']}   configuration from: {ck['config_from']}")
    elif "config" in info:
        print("checkpoint:       none (configuration only, --config)")
    if "config" in info:
        cfg = info["config"]
        name = cfg.get("name") if isinstance(cfg, dict) else cfg
        print(f"configuration:    {name}  (architecture {info.get('architecture')})")
        if isinstance(cfg, dict) and cfg.get("options"):
            print(f"  options:        {json.dumps(cfg['options'], sort_keys=True)}")
    params = info.get("parameters") or {}
    if params:
        print("parameters:")
        for k, v in params.items():
            print(f"  {k:24s} {v / 1e6:9.3f} M" if isinstance(v, (int, float)) else f"  {k:24s} {v}")
    if info.get("named_configs"):
        print(f"named configs:    {', '.join(info['named_configs'])}")
    if info.get("note"):
        print(f"note:             {info['note']}")


def cmd_info(args: argparse.Namespace) -> int:
    from gfvc.commands import _env_from_args
    from test_conditions import load_condition

    cond = load_condition(getattr(args, "condition", None) or "demo")
    info = codec_info(args.what, args.config, cond, _env_from_args(args))
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print_info(info)
    return 0


__all__ = ["register", "cmd_info", "codec_info", "resolve_config", "TRAINABLE"]
