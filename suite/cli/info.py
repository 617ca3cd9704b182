"""`gfvc info CODEC`: what a generative codec's model is (values per frame, checkpoint, parameters per module)."""
from __future__ import annotations

import argparse
import json
from typing import Any

import s2d_model
from gfvc import models
from gfvc.codec import get_codec
from gfvc.errors import ConfigError
from s2d_model.config import config_from_dict
from suite.cli.common import check_model_choices, env_from_args
from suite.cli.models import resolve_config
from test_conditions import load_condition


def register(sub: argparse._SubParsersAction) -> None:
    """Sub-command info."""
    p = sub.add_parser("info", help="describe a generative codec's model, e.g. `gfvc info mraa`, "
                                    "`gfvc info s2d --config small`",
                       description="Values per inter frame, quantisation scale, resolution, the checkpoint this run "
                                   "would use (path, how it was chosen, sha256), its architecture and parameters per "
                                   "module. --config NAME describes a named configuration without any checkpoint.")
    p.add_argument("what", metavar="CODEC", help="generative codec name (`gfvc list`)")
    p.add_argument("--config", default=None, help="named configuration (no checkpoint needed)")
    p.add_argument("--condition", default="demo", help="condition whose models: section and size apply")
    p.add_argument("--model", action="append", metavar="CODEC=PATH", help="checkpoint to describe")
    p.add_argument("--model-config", action="append", metavar="CODEC=NAME|YAML",
                   help="configuration of that checkpoint when its keys and shapes fit several")
    p.add_argument("--weights-dir", help="folder with installed checkpoints (or $GFVC_WEIGHTS_DIR)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def codec_info(name: str, config: str | None = None, condition: Any = None, env: Any = None) -> dict[str, Any]:
    """What `gfvc info CODEC` shows: values per inter frame, scale, resolution, checkpoint, architecture."""
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
        state, why = models.verification(codec.choice, codec.model_checksum())
        ck = {"path": str(codec.choice.path), "source": codec.choice.source, "sha256": codec.model_checksum(),
              "registry": entry.name if entry is not None else None, "model_id": codec.model_id(),
              "verification": state, "verification_note": why,
              "config_from": codec._cfg_how, "training": meta.get("training")}
    base.update({"values_per_inter_frame": cls.values_per_frame(cfg), "resolution": [cfg.image_size, cfg.image_size],
                 "checkpoint": ck, "config": cfg.to_dict(), "architecture": cfg.fingerprint(),
                 "inference_modules": list(cls.inference_modules),
                 "parameters": cls.parameter_counts(cfg),
                 "named_configs": sorted(cls.named_configs())})
    return base


def _s2d_info(cls: Any, config: str | None, condition: Any, env: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"codec": "s2d", "description": cls.description, "quant_scale": float(cls.quant_scale)}
    if config is not None:
        info = s2d_model.info(config)
        ck = None
    else:
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
        print(f"  model id:       {ck['model_id']}")
        print(f"  config from:    {ck['config_from']}")
        if ck.get("verification"):
            print(f"  verified:       {ck['verification']}: {ck.get('verification_note', '')}")
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
    cond = load_condition(getattr(args, "condition", None) or "demo")
    env = env_from_args(args)
    check_model_choices(env, cond)
    info = codec_info(args.what, args.config, cond, env)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print_info(info)
    return 0
