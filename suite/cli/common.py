"""Options and environment shared by the commands that run codecs (run, doctor, encode, decode, info)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from gfvc.argtypes import positive_float
from gfvc.codec import CODECS, Environment
from gfvc.devices import resolve_device, validate_device
from gfvc.errors import ConfigError
from gfvc.models import MODEL_CONFIGS_KEY, parse_model_args, split_config, validate_model_names
from gfvc.stills import parse_frame_list


def existing_dir(value: str | None, what: str) -> str | None:
    """An explicitly given folder must exist: a typo is an error, not 'not found' later."""
    if value and not Path(value).expanduser().is_dir():
        raise ConfigError(f"{what} {value}: no such folder")
    return value


def env_from_args(args: argparse.Namespace) -> Environment:
    vtm_dir = existing_dir(getattr(args, "vtm_dir", None), "--vtm-dir") or os.environ.get("GFVC_VTM_DIR")
    weights_dir = (existing_dir(getattr(args, "weights_dir", None), "--weights-dir")
                   or existing_dir(os.environ.get("GFVC_WEIGHTS_DIR"), "$GFVC_WEIGHTS_DIR"))
    if getattr(args, "vtm_cfg", None) and not Path(args.vtm_cfg).expanduser().is_file():
        raise ConfigError(f"--vtm-cfg {args.vtm_cfg}: no such file")
    extra: dict[str, Any] = {"threads_per_job": int(getattr(args, "threads_per_job", None) or 1)}
    if getattr(args, "deterministic", False):
        extra["deterministic"] = True
    if getattr(args, "keep_frames", None):  # more exact stills per job for the report's Figure 5
        extra["keep_frames"] = parse_frame_list(args.keep_frames)

    models = parse_model_args(getattr(args, "model", None))
    # checkpoint paths are resolved here, so workers in other folders (Dask) see the same files
    models = {k: str(Path(v).expanduser().resolve()) for k, v in models.items()}
    configs = parse_model_args(getattr(args, "model_config", None), "--model-config", "mraa=vox256",
                               "NAME|YAML")
    if configs:  # a YAML path is resolved like a checkpoint path; a configuration name stays a name
        extra[MODEL_CONFIGS_KEY] = {k: (str(Path(v).expanduser().resolve()) if split_config(v)[0] else v)
                                    for k, v in configs.items()}
    return Environment(
        vtm_dir=Path(vtm_dir) if vtm_dir else None,
        vtm_cfg=Path(args.vtm_cfg) if getattr(args, "vtm_cfg", None) else None,
        weights_dir=Path(weights_dir) if weights_dir else None,
        timeout_s=float(getattr(args, "timeout", None) or 3600.0),
        device=validate_device(getattr(args, "device", None) or "auto"),
        models=models,
        extra=extra,
    )


def local_device(env: Environment) -> Environment:
    """Resolve auto|cuda|cuda:N on this machine now: `--device cuda` without CUDA is one line, exit 2."""
    return env.replace(device=resolve_device(env.device))


def check_model_choices(env: Environment, cond: Any) -> None:
    """The one validation of checkpoint choices, shared by run, info, encode, decode and doctor.

    ``--model``, ``--model-config`` and the condition's ``models:`` section must name known codecs
    that take a checkpoint (an anchor takes none), and a configuration given by name must be one of
    that codec's named configurations (`gfvc info CODEC`).
    """
    where = f"{cond.source or cond.name}: models"
    if env.models:
        validate_model_names(list(env.models), "--model")
    given = env.extra.get(MODEL_CONFIGS_KEY) or {}
    if given:
        validate_model_names(list(given), "--model-config")
    section = getattr(cond, "models", None) or {}
    if section:
        validate_model_names(list(section), where)
    base = Path(cond.source).parent if getattr(cond, "source", "") else None
    named = {c: (split_config(v)[1], "--model-config") for c, v in given.items()}
    for c, spec in section.items():
        if c not in named:
            named[c] = (split_config(getattr(spec, "config", None), base)[1], f"{where}.{c}.config")
    for codec, (name, what) in named.items():
        configs = getattr(CODECS.get(codec), "named_configs", None)
        if name and callable(configs) and name not in configs():
            known = ", ".join(sorted(configs()))
            raise ConfigError(f"{what}: codec {codec!r} has no configuration {name!r} (named: {known}; or give "
                              "the path of an official YAML config)")


def add_env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vtm-dir", help="VTM-22.2 build folder with EncoderApp/DecoderApp (or $GFVC_VTM_DIR)")
    p.add_argument("--vtm-cfg", help="low-delay B cfg (default: VTM_DIR/cfg/encoder_lowdelay_vtm.cfg)")
    p.add_argument("--weights-dir", help="folder with metric/model weights (or $GFVC_WEIGHTS_DIR)")
    p.add_argument("--timeout", type=positive_float, default=3600.0, help="per external command, seconds")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="torch device of generative codecs and learned metrics (default auto: CUDA if torch "
                        "sees it, else CPU)")
    p.add_argument("--model", action="append", metavar="CODEC=PATH",
                   help="checkpoint of a generative codec for this run (repeatable; overrides the condition's "
                        "models: section; `gfvc models status` lists known checkpoints)")
    p.add_argument("--model-config", action="append", metavar="CODEC=NAME|YAML",
                   help="configuration of that checkpoint when the file does not say: a named configuration "
                        "(`gfvc info CODEC` lists them, e.g. mraa=vox256) or the official YAML config; needed only "
                        "when its keys and shapes fit several (overrides the condition's models: config)")
