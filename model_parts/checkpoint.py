"""Checkpoint files of the generative baselines: official layouts, read safely, loaded strictly.

The official training scripts of the FOMM lineage save one file holding a
dict ``{module_name: state_dict, "optimizer_...": ..., "epoch": int}`` (FOMM,
FV2V, CFTE, TPSM ``*.pth.tar``; MRAA ``*-cpk-reconstruction.pth``); LIA saves
``{"gen": state_dict}``. The suite reads exactly these files and writes its
own checkpoints in the same layout, plus one extra key, ``"gfvc"``, holding
the constructor arguments and a training record (official loaders ignore
unknown keys, so the suite's files also load in the official code).

Every failure is one typed error naming the file and what to do: a missing
file (NotAvailable), a truncated or non-torch file, a checkpoint of another
model (the message says which model it looks like), missing or unexpected
keys (a few are named), or tensors of other shapes (ModelMismatch).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gfvc.errors import GfvcError, ModelMismatch, NotAvailable
from gfvc.fileio import atomic_open

META_KEY = "gfvc"
META_FORMAT = "gfvc-baseline-v1"

# model name -> predicate on the loaded top-level dict (filled by each model module).
_SIGNATURES: dict[str, Callable[[Mapping[str, Any]], bool]] = {}


def register_signature(model: str, predicate: Callable[[Mapping[str, Any]], bool]) -> None:
    """Declare how a checkpoint of ``model`` is recognised (used to say what a wrong file looks like)."""
    _SIGNATURES[model] = predicate


def looks_like(obj: Any) -> list[str]:
    """Names of the models whose checkpoint layout ``obj`` matches (may be empty)."""
    if not isinstance(obj, Mapping):
        return []
    meta = obj.get(META_KEY)
    if isinstance(meta, Mapping) and isinstance(meta.get("model"), str):
        return [str(meta["model"])]
    if obj.get("format", "").startswith("s2d-") if isinstance(obj.get("format"), str) else False:
        return ["s2d"]
    out = []
    for name, pred in sorted(_SIGNATURES.items()):
        try:
            if pred(obj):
                out.append(name)
        except Exception:  # a signature must never turn a load into a crash
            continue
    return out


def has_keys(sd: Any, *keys: str) -> bool:
    """True if ``sd`` is a mapping containing every key (helper for signatures)."""
    return isinstance(sd, Mapping) and all(k in sd for k in keys)


@dataclass
class CheckpointFile:
    """A loaded checkpoint: module state_dicts by official name, plus the suite's metadata if any."""

    path: Path
    modules: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    other_keys: list[str] = field(default_factory=list)
    # models whose checkpoint layout the file matches (registered signatures), for error messages
    looks_like: list[str] = field(default_factory=list)
    # {top-level entry: {key: shape}} of every state_dict in the file (inference modules or not): what
    # configuration matching (baselines.matching) compares with the layouts of the known configurations
    shapes: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)


def state_dict_shapes(obj: Any) -> dict[str, dict[str, tuple[int, ...]]]:
    """{name: {key: shape}} of every top-level mapping of tensors in a loaded checkpoint (no copies)."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    if not isinstance(obj, Mapping):
        return out
    for name, sd in obj.items():
        if name == META_KEY or not isinstance(sd, Mapping) or not sd:
            continue
        if all(hasattr(v, "shape") for v in sd.values()):
            out[str(name)] = {str(k): tuple(int(d) for d in v.shape) for k, v in sd.items()}
    return out


def _numpy_array_globals() -> list[Any]:
    """The pickle globals of plain numpy arrays (data, not code), for reading older training checkpoints."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


READ_HINT = ("truncated download or not a checkpoint: fetch it again and check its sha256 with "
             "`gfvc models status`")


def read_torch_file(path: Path, what: str, allow_numpy_arrays: bool = False, *,
                    error: type[GfvcError] = ModelMismatch, hint: str = READ_HINT, kind: str = "checkpoint") -> Any:
    """torch.load with weights_only=True (no code runs from a downloaded file), typed errors.

    Every torch file the suite reads (checkpoints of any codec, training states, conformance
    vectors) goes through here, so a truncated or foreign file always gets the same one-line
    message: its size, what the file is instead of a torch file (:func:`not_a_torch_file`, in the
    suite's words: torch's own text advises loading untrusted code), and ``hint`` (the fix for
    that kind of file). ``allow_numpy_arrays`` also accepts plain numpy arrays (training
    checkpoints written before the RNG state was stored as tensors).
    """
    import contextlib

    import torch

    path = Path(path)
    if not path.is_file():
        raise NotAvailable(f"{what} {path} not found" if not path.exists() else f"{what} {path} is not a file")
    ctx = torch.serialization.safe_globals(_numpy_array_globals()) if allow_numpy_arrays else contextlib.nullcontext()
    try:
        with ctx:
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with foreign classes, not a torch file...
        size = path.stat().st_size
        raise error(f"{what} {path} ({size} bytes) cannot be read as a torch {kind}: it {not_a_torch_file(path, e)} "
                    f"({hint})") from None


_TORCH_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"
_OTHER_MAGIC = {b"\x93NUMPY": "a numpy .npy array", b"\x89PNG": "a PNG picture", b"\x00\x00\x00\x01": "a VVC stream",
                b"GFVC": "a gfvc bitstream", b"\x1f\x8b": "a gzip archive", b"\xff\xd8\xff": "a JPEG picture"}


def not_a_torch_file(path: Path, e: BaseException) -> str:
    """What a file that torch.load refused is, from its first bytes and the refusal (never torch's advice text).

    torch's messages for these cases are its internals ("Unsupported operand 101", "EOFError") or advice to
    load the file with weights_only=False, i.e. to run code from it -- which the suite never does.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as oe:
        return f"cannot be read ({oe.strerror or oe})"
    text = str(e)
    foreign = sorted(set(re.findall(r"GLOBAL ([\w.]+)", text)))
    if not head:
        return "is empty"
    if foreign:
        return (f"holds Python objects ({', '.join(foreign[:3])}) besides tensors and plain containers; the suite "
                "never runs code from a file: save only the state_dicts (torch.save({name: module.state_dict()}))")
    if head.startswith(_TORCH_ZIP):
        return "is a damaged or truncated torch file (its zip archive is incomplete)"
    for magic, name in _OTHER_MAGIC.items():
        if head.startswith(magic):
            return f"is {name}"
    if head.startswith(_PICKLE):
        return "is a damaged or truncated torch file (an old-style pickle that ends early or is corrupt)"
    try:
        head.decode("utf-8")
        return "is a text file"
    except UnicodeDecodeError:
        return "is not a torch file (neither a torch zip archive nor a pickle)"


def read_checkpoint(path: Path, model: str, required: tuple[str, ...]) -> CheckpointFile:
    """Read a checkpoint of ``model`` whose modules ``required`` must all be present."""
    obj = read_torch_file(path, f"{model} checkpoint")
    if not isinstance(obj, Mapping):
        raise ModelMismatch(f"{path}: a {model} checkpoint is a dict of module state_dicts, "
                            f"this file holds a {type(obj).__name__}")
    missing = [m for m in required if not isinstance(obj.get(m), Mapping)]
    if missing:
        guess = [g for g in looks_like(obj) if g != model]
        hint = f"; it looks like a {' or '.join(guess)} checkpoint" if guess else ""
        keys = ", ".join(sorted(map(str, obj.keys()))[:8])
        raise ModelMismatch(f"{path} is not a {model} checkpoint: no {', '.join(repr(m) for m in missing)} "
                            f"module (top-level keys: {keys}){hint}")
    meta = obj.get(META_KEY)
    if meta is not None and isinstance(meta, Mapping) and meta.get("model") not in (None, model):
        raise ModelMismatch(f"{path} is a {meta.get('model')} checkpoint written by this suite, not {model}")
    modules = {m: dict(obj[m]) for m in required}
    others = sorted(str(k) for k in obj if k not in required and k != META_KEY)
    return CheckpointFile(path=Path(path), modules=modules, meta=dict(meta or {}), other_keys=others,
                          looks_like=looks_like(obj), shapes=state_dict_shapes(obj))


def load_strict(module: Any, state_dict: Mapping[str, Any], *, model: str, name: str, source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a one-line ModelMismatch on failure.

    The message names up to three missing, unexpected and mis-shaped keys, so
    a checkpoint of another width, keypoint count or model is recognisable.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} tensors of other shapes (file vs model: {'; '.join(shapes[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])})")
        raise ModelMismatch(f"{source}: module {name!r} does not fit the {model} model built from its configuration: "
                            + "; ".join(parts) + " (another model, width, keypoint count or image size: pass the "
                            "matching configuration with the checkpoint)")
    try:
        module.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as e:  # dtype or other loader errors not caught above
        raise ModelMismatch(f"{source}: module {name!r}: {str(e).splitlines()[0][:200]}") from None


def derived_model_id(model: str, out: Path, source: Path) -> str:
    """The model id of a checkpoint exported without ``--model-id``: the output's name plus a digest.

    Bitstreams carry the model id, and a decoder with another model refuses them naming both ids;
    so a trained file must never reuse a shipped id (``fomm-demo``) just because it was trained with
    the same configuration. ``<name>-<first 8 hex of the training checkpoint's sha256>``, with
    ``<name>`` the output's stem, prefixed by the model name when it does not already start with it.
    """
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    stem = Path(out).name.split(".")[0] or "trained"
    name = stem if stem.startswith(model) else f"{model}-{stem}"
    return f"{name}-{h.hexdigest()[:8]}"


def save_checkpoint(path: Path, modules: Mapping[str, Any], meta: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None, fp16: bool = False) -> Path:
    """Write ``{module: state_dict, **extra, "gfvc": meta}`` atomically (official layout + suite metadata).

    ``modules`` maps official module names to nn.Modules or state_dicts;
    ``fp16`` stores floating tensors as float16 (demo checkpoints under 10 MB;
    loaders convert back to float32).
    """
    import torch

    obj: dict[str, Any] = {}
    for name, m in modules.items():
        sd = m.state_dict() if hasattr(m, "state_dict") else dict(m)
        obj[name] = {k: (v.detach().cpu().half() if fp16 and v.is_floating_point() else v.detach().cpu())
                     for k, v in sd.items()}
    obj.update(dict(extra or {}))
    obj[META_KEY] = {"format": META_FORMAT, **dict(meta), "dtype": "float16" if fp16 else "float32"}
    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return path


def as_float32(sd: Mapping[str, Any]) -> dict[str, Any]:
    """fp16 demo weights back to float32 (integer buffers such as num_batches_tracked kept)."""
    return {k: (v.float() if hasattr(v, "is_floating_point") and v.is_floating_point() else v) for k, v in sd.items()}
