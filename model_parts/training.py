"""One training loop for the generative codecs; each model supplies a recipe (its modules and losses).

FOMM, MRAA, FV2V, TPSM, CFTE, ... are all trained the same way (FOMM's
``train.py`` lineage): random (source, driving) frame pairs of one video,
a generator update with the model's weighted loss terms, then (where the
official config has a GAN) a discriminator update; Adam with the official
betas and learning rate, step-decayed at official milestones. What differs
is the recipe: which modules exist, which optimiser updates which module and
the loss terms. :class:`TrainRecipe` is that contract; :func:`train` is the
loop (resumable, atomic checkpoints, a JSONL loss log, wall-time limit,
progress, the run's device).

Checkpoints use the official layout (``{module: state_dict, "optimizer_...":
state, "epoch": step}``) plus the suite's ``"gfvc"`` entry (configuration,
training record) and ``"gfvc_train"`` (RNG state, wall time), so a training
checkpoint is directly usable with ``--model CODEC=OUT/checkpoint.pth.tar``;
:func:`export` writes the smaller inference file (inference modules only,
optionally fp16).
"""
from __future__ import annotations

import abc
import json
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from gfvc.codec import get_codec
from gfvc.cpu_guard import guard_model
from gfvc.devices import resolve_device
from gfvc.errors import ConfigError, InputError, ModelMismatch
from gfvc.fileio import atomic_write_json, atomic_write_text
from gfvc.registry import Registry
from model_parts import checkpoint as ck
from model_parts.data import PairDataset, stopped_by_data

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)
TRAIN_CHECKPOINT = "checkpoint.pth.tar"


class ModelConfig(Protocol):
    """What the loop needs of a model's configuration (e.g. :class:`baselines.base.BaselineConfig`)."""

    @property
    def model(self) -> str: ...

    @property
    def image_size(self) -> int: ...

    @property
    def name(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def fingerprint(self) -> str: ...

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig: ...


ConfigT = TypeVar("ConfigT", bound=ModelConfig)


class TrainRecipe(abc.ABC, Generic[ConfigT]):
    """What a model contributes to :func:`train`.

    Subclasses set ``model`` (codec name) and implement the abstract methods.
    ``losses_info`` is recorded in every checkpoint: loss names, weights and
    any labelled fallback (e.g. ``pixel-pyramid-l1`` instead of VGG19).
    """

    model: str = ""
    # Fractions of the total steps at which the learning rate is multiplied by ``lr_gamma``
    # (official epoch milestones divided by the official number of epochs).
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.1
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)

    def __init__(self, config: ConfigT, device: str = "cpu", weights_dir: Path | None = None) -> None:
        self.config = config
        self.device = device
        self.weights_dir = weights_dir
        # Target length of the run (set by :func:`train`); schedules in epochs (TPSM's TPS dropout) use it.
        self.total_steps = 0

    @abc.abstractmethod
    def build(self) -> dict[str, torch.nn.Module]:
        """All trained modules by official checkpoint name (generator side and discriminator)."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, list[str]]:
        """Official optimiser key -> module names it updates, e.g. {"optimizer_generator": ["generator"]}."""

    def discriminator_optimizers(self) -> tuple[str, ...]:
        """Optimiser keys updated in the discriminator phase (default: none)."""
        return ()

    @abc.abstractmethod
    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Weighted loss terms of the generator phase and a cache for the discriminator phase."""

    def discriminator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], cache: dict[str, Any],
                             step: int) -> dict[str, torch.Tensor]:
        """Weighted loss terms of the discriminator phase (default: no GAN)."""
        return {}

    def dataset(self, root: Path) -> Any:
        """The training pairs (default: model_parts.data.PairDataset: "source", "driving" frames).

        A recipe that needs per-frame targets besides the frames (IHVC: body-model
        vectors) returns a dataset whose batches carry them too.
        """
        return PairDataset(root, self.config.image_size, None)

    def inference_modules(self) -> tuple[str, ...]:
        """Modules kept by :func:`export` (default: the codec's inference modules)."""
        return tuple(getattr(get_codec(self.model), "inference_modules", ()))

    def before_step(self, modules: dict[str, Any]) -> None:
        """Called after the generator-phase backward, before its optimiser step (e.g. TPSM's gradient
        clipping); default: nothing."""
        return None

    def losses_info(self) -> dict[str, Any]:
        return {}


RECIPES: Registry[type[TrainRecipe[Any]]] = Registry("training recipe")


@dataclass
class TrainOptions:
    data: Path
    out: Path
    steps: int
    batch: int = 4
    lr: float | None = None
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    resume: Path | None = None
    max_minutes: float | None = None
    checkpoint_every: int = 200
    log_every: int = 10
    hflip: bool = True
    progress: bool = True
    extra_meta: dict[str, Any] = field(default_factory=dict)


def _rng_state(py: random.Random) -> dict[str, Any]:
    """RNG states in types torch.load(weights_only=True) accepts (numpy's array becomes a tensor)."""
    import torch  # lazy: the CLI imports this module to list recipes; torch loads when training starts

    name, keys, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {"python": py.getstate(), "torch": torch.get_rng_state(),
                          "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                                    "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(py: random.Random, st: dict[str, Any]) -> None:
    import torch  # lazy: torch loads when training starts

    py.setstate(st["python"])
    n = st["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    else:  # written before the state was stored as tensors: numpy's own tuple
        np.random.set_state(n)
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():  # pragma: no cover
        torch.cuda.set_rng_state_all(st["cuda"])


def _lr_factor(recipe: TrainRecipe, step: int, total: int) -> float:
    f = 1.0
    for m in recipe.lr_milestones:
        if total > 0 and step >= m * total:
            f *= recipe.lr_gamma
    return f


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written by an interrupted run after its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, AttributeError):
            continue

    atomic_write_text(path, "".join(k + "\n" for k in keep))


def read_training_checkpoint(path: Path, model: str) -> dict[str, Any]:
    """A `gfvc train MODEL` training checkpoint (OUT/checkpoint.pth.tar), else one-line ModelMismatch."""
    state = ck.read_torch_file(Path(path), f"{model} training checkpoint", allow_numpy_arrays=True)
    meta = state.get(ck.META_KEY) if isinstance(state, dict) else None
    if not isinstance(meta, dict) or "gfvc_train" not in state:
        raise ModelMismatch(f"{path}: not a `gfvc train {model}` training checkpoint "
                            f"(use OUT/{TRAIN_CHECKPOINT} of an earlier run)")
    if meta.get("model") != model:
        raise ModelMismatch(f"{path} is a `gfvc train {meta.get('model')}` checkpoint, not {model}")
    return state


def check_resume_steps(resume: Path | str, at_step: int, steps: int) -> None:
    """``--steps`` is the total to reach: below the checkpoint's step it would train nothing, silently.

    Refused (ConfigError, exit 2) with the fix; equal to it, one notice on stderr (nothing to train, an
    ``--export`` still writes the checkpoint as it is). docs/training.md.
    """
    if steps < at_step:
        raise ConfigError(f"--resume {resume} is at step {at_step} but --steps {steps} is below it: --steps is the "
                          f"total to reach, so nothing would be trained; pass --steps above {at_step} to train on "
                          f"(or --steps {at_step} to only export it)")
    if steps == at_step:
        print(f"gfvc: --resume {resume} is already at step {at_step} = --steps: nothing to train", file=sys.stderr)


def train(recipe: TrainRecipe, opts: TrainOptions) -> dict[str, Any]:
    """Train (or resume) with ``recipe``; writes OUT/checkpoint.pth.tar, OUT/log.jsonl, OUT/summary.json.

    Resuming from OUT/checkpoint.pth.tar gives the same weights as an
    uninterrupted run (model, optimiser and RNG states are restored; the data
    sampler draws from the restored Python RNG). Checkpoints are written
    atomically every ``checkpoint_every`` steps and when ``max_minutes`` stops
    the run; a non-finite loss stops before the optimiser step (the last
    checkpoint stays valid).
    """
    import torch  # lazy: the CLI imports this module to list recipes; torch loads when training starts

    from model_parts.losses import sum_terms  # lazy: needs torch and torchvision

    if opts.batch < 1 or opts.steps < 0:
        raise ConfigError("--batch must be >= 1 and --steps >= 0")
    if opts.checkpoint_every < 1 or opts.log_every < 1:
        raise ConfigError("checkpoint_every and log_every must be >= 1")
    if opts.max_minutes is not None and opts.max_minutes <= 0:
        raise ConfigError("--max-minutes must be > 0")
    device = resolve_device(opts.device)
    recipe.device = device
    recipe.total_steps = opts.steps
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    state = read_training_checkpoint(Path(opts.resume), recipe.model) if opts.resume else None
    if state is not None:
        meta = state[ck.META_KEY]
        check_resume_steps(opts.resume or "", int(state["gfvc_train"]["step"]), opts.steps)
        if type(recipe.config).from_dict(meta["config"]).fingerprint() != recipe.config.fingerprint():
            raise ModelMismatch(f"--resume {opts.resume} was trained with another configuration "
                                f"({meta['config'].get('name')}); pass the same configuration")
    data = recipe.dataset(opts.data)
    out.mkdir(parents=True, exist_ok=True)
    py_rng = random.Random(opts.seed)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    modules = {k: m.to(device) for k, m in recipe.build().items()}
    cpu_guard = guard_model(modules)  # issue 16: oneDNN's AVX2 1x1 weight-gradient kernel corrupts the heap
    lr = opts.lr or recipe.lr
    opt_map = recipe.optimizers()
    owner: dict[int, str] = {}
    for key, names in opt_map.items():
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ConfigError(f"recipe {recipe.model}: optimiser {key} names unknown modules {unknown}")
        for n in names:
            for prm in modules[n].parameters():
                if id(prm) in owner and owner[id(prm)] != key:
                    raise ConfigError(f"recipe {recipe.model}: module {n!r} is updated by both {owner[id(prm)]} "
                                      f"and {key}")
                owner[id(prm)] = key
    optims = {key: torch.optim.Adam([p for n in names for p in modules[n].parameters()], lr=lr, betas=recipe.betas)
              for key, names in opt_map.items()}
    d_keys = set(recipe.discriminator_optimizers())
    unknown_d = d_keys - set(optims)
    if unknown_d:
        raise ConfigError(f"recipe {recipe.model}: discriminator optimisers {sorted(unknown_d)} "
                          "are not in optimizers()")
    step, wall_before = 0, 0.0
    log_path = out / "log.jsonl"
    if state is not None:
        missing = [k for k in list(modules) + list(optims) if k not in state]
        if missing:
            raise ModelMismatch(f"--resume {opts.resume}: no {', '.join(missing)} entry (written by another recipe?)")
        for name, m in modules.items():
            ck.load_strict(m, state[name], model=recipe.model, name=name, source=str(opts.resume))
        for key, o in optims.items():
            o.load_state_dict(state[key])
        step = int(state["gfvc_train"]["step"])
        wall_before = float(state["gfvc_train"].get("wall_seconds", 0.0))
        _set_rng_state(py_rng, state["gfvc_train"]["rng"])
        _truncate_log(log_path, step)
        del state
    t0 = time.time()

    def record(final: bool = False) -> dict[str, Any]:
        return {"steps": step, "target_steps": opts.steps, "batch": opts.batch, "lr": lr, "seed": opts.seed,
                "device": device, "wall_seconds": round(wall_before + time.time() - t0, 1),
                "data": data.describe(), "losses": recipe.losses_info(), "final": final, "cpu_guard": cpu_guard,
                **opts.extra_meta}

    def save(final: bool = False) -> Path:
        extra: dict[str, Any] = {key: o.state_dict() for key, o in optims.items()}
        extra["epoch"] = step
        extra["gfvc_train"] = {"step": step, "rng": _rng_state(py_rng),
                               "wall_seconds": wall_before + time.time() - t0}
        meta = {"model": recipe.model, "config": recipe.config.to_dict(), "training": record(final)}
        return ck.save_checkpoint(out / TRAIN_CHECKPOINT, modules, meta, extra=extra)

    bar = None
    if opts.progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=opts.steps, initial=step, desc=f"{recipe.model}", unit="step", mininterval=5, file=sys.stderr)
    for m in modules.values():
        m.train()
    last: dict[str, float] = {}
    stopped_early = False
    try:
        while step < opts.steps:
            f = _lr_factor(recipe, step, opts.steps)
            for o in optims.values():
                for g in o.param_groups:
                    g["lr"] = lr * f
            try:
                raw = data.batch(py_rng, opts.batch, hflip=opts.hflip)
            except InputError as e:  # a frame that cannot be read: one line, the last checkpoint untouched
                raise stopped_by_data(e, step, out / TRAIN_CHECKPOINT) from None
            batch = {k: v.to(device) for k, v in raw.items()}
            terms, cache = recipe.generator_losses(modules, batch, step)
            if not terms:
                raise ConfigError(f"recipe {recipe.model}: generator_losses() returned no loss terms")
            loss_g = sum_terms(terms.values())
            if not torch.isfinite(loss_g):
                bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                raise ConfigError(f"{recipe.model} training diverged at step {step + 1} (non-finite {', '.join(bad)}); "
                                  "lower --lr or check the data; the last checkpoint is unchanged")
            for key, o in optims.items():
                if key not in d_keys:
                    o.zero_grad(set_to_none=True)
            loss_g.backward()
            recipe.before_step(modules)
            for key, o in optims.items():
                if key not in d_keys:
                    o.step()
            d_terms: dict[str, Any] = {}
            if d_keys:
                d_terms = recipe.discriminator_losses(modules, batch, cache, step)
                if d_terms:
                    loss_d = sum_terms(d_terms.values())
                    if not torch.isfinite(loss_d):
                        raise ConfigError(f"{recipe.model} discriminator diverged at step {step + 1}; lower --lr")
                    for key in d_keys:
                        optims[key].zero_grad(set_to_none=True)
                    loss_d.backward()
                    for key in d_keys:
                        optims[key].step()
            step += 1
            last = {k: float(v.detach()) for k, v in terms.items()}
            last.update({f"d.{k}": float(v.detach()) for k, v in d_terms.items()})
            last["total_g"] = float(loss_g.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(g=f"{last['total_g']:.3f}", refresh=False)
            if step % opts.log_every == 0 or step == opts.steps:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps({"step": step, "time": round(wall_before + time.time() - t0, 2),
                                         "lr": lr * f, **last}) + "\n")
            if step % opts.checkpoint_every == 0 and step < opts.steps:
                save()
            if opts.max_minutes is not None and (time.time() - t0) / 60 >= opts.max_minutes:
                stopped_early = step < opts.steps
                break
    finally:
        if bar is not None:
            bar.close()
    path = save(final=not stopped_early)
    summary = {"model": recipe.model, "config": recipe.config.name, "fingerprint": recipe.config.fingerprint(),
               **record(not stopped_early), "stopped_early_by_time": stopped_early, "final_losses": last,
               "checkpoint": str(path.resolve())}
    atomic_write_json(out / "summary.json", summary)
    return summary


def export(train_checkpoint: Path, out: Path, model: str, modules: tuple[str, ...], fp16: bool = True,
           meta: dict[str, Any] | None = None) -> Path:
    """Inference checkpoint: the inference modules of a training checkpoint (official layout + "gfvc").

    The file loads through the codec like any checkpoint (``--model MODEL=OUT``),
    with its configuration and training record embedded; ``fp16`` halves it.
    """
    st = read_training_checkpoint(Path(train_checkpoint), model)
    m = st[ck.META_KEY]
    missing = [n for n in modules if n not in st]
    if missing:
        raise InputError(f"{train_checkpoint}: no module(s) {missing} to export")
    info = {"model": model, "config": m["config"], "training": m.get("training"), **(meta or {})}
    return ck.save_checkpoint(Path(out), {n: st[n] for n in modules}, info, extra={"epoch": st.get("epoch", 0)},
                              fp16=fp16)
