"""Sparse2Dense training loop (``gfvc train s2d``).

Paper settings (CTC_FACTS 6): Adam(beta 0.5, 0.999), lr 2e-4, loss weights
equivariance 10 / keypoint prior 10 / perceptual 10 / adversarial 1 /
vertex 100. One step = one generator update (all terms) then one
discriminator update (hinge), as in FOMM/FV2V.

Checkpoints are resumable (model, discriminator, both optimisers, step, RNG
states, config, data description, perceptual-loss name) and written
atomically (temp file + os.replace), so a killed run resumes at its last
checkpoint. AMP (``--amp``) and DDP (``torchrun``: WORLD_SIZE > 1) code paths
exist for GPUs; they are guarded and have not been exercised on this
CPU-only machine.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfvc.cpu_guard import guard_model
from gfvc.devices import device_provenance, device_type, resolve_device
from gfvc.errors import ConfigError, InputError, ModelMismatch, NotAvailable
from gfvc.fileio import atomic_open
from gfvc.video import sha256_file
from model_parts import checkpoint as ck
from model_parts.data import PairDataset, stopped_by_data
from model_parts.training import check_resume_steps
from s2d_model import losses as L
from s2d_model.config import S2DConfig, config_from_dict, load_config
from s2d_model.networks import MultiScaleDiscriminator, Sparse2Dense

log = logging.getLogger(__name__)
TRAIN_FORMAT = "s2d-train-v1"
MODEL_FORMAT = "s2d-model-v1"


@dataclass
class TrainOptions:
    config: str | Path
    data: Path
    out: Path
    vertices: Path | None = None
    steps: int | None = None
    resume: Path | None = None
    batch: int | None = None
    lr: float | None = None
    device: str = "auto"
    amp: bool = False
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    max_minutes: float | None = None   # stop (with a checkpoint) after this wall time
    checkpoint_every: int | None = None
    source_variants: Path | None = None   # intra-coded training frames (see model_parts.data)
    init: Path | None = None   # start the generator side from this (exported or training) checkpoint
    extra_meta: dict[str, Any] = field(default_factory=dict)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through gfvc.fileio.atomic_open (never half a checkpoint; the umask's file mode)."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def _rng_state(py: random.Random) -> dict[str, Any]:
    st = {"python": py.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(py: random.Random, st: dict[str, Any]) -> None:
    py.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():  # pragma: no cover
        torch.cuda.set_rng_state_all(st["cuda"])


def _ddp_setup(device: str) -> tuple[int, int]:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1). Untested here (no GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist  # pragma: no cover

    if not dist.is_initialized():  # pragma: no cover
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    rank = dist.get_rank()  # pragma: no cover
    if device == "cuda":  # pragma: no cover
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return rank, world  # pragma: no cover


def train(opts: TrainOptions) -> dict[str, Any]:
    """Train (or resume) and return a summary; writes OUT/checkpoint.pt, OUT/log.jsonl, OUT/summary.json."""
    resolved = resolve_device(opts.device)  # auto|cpu|cuda|cuda:N; NotAvailable (exit 2) without CUDA
    dev_kind = device_type(resolved) or "cpu"
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    state = None
    if opts.resume:
        rp = Path(opts.resume)
        if not rp.is_file():
            raise InputError(f"--resume {rp}: no such checkpoint")
        state = read_training_state(rp, "--resume")
        if state.get("format") != TRAIN_FORMAT:
            raise ModelMismatch(f"{rp} is not a training checkpoint (format {state.get('format')!r}); "
                                "resume from OUT/checkpoint.pt of a `gfvc train s2d` run")
        cfg = config_from_dict(state["config"], name=state["config"].get("name", "resumed"))
        asked = load_config(opts.config)
        if asked.fingerprint() != cfg.fingerprint():
            raise ModelMismatch(f"--resume {rp} was trained with config {cfg.name!r} "
                                f"(architecture {cfg.fingerprint()}), but --config {opts.config} has "
                                f"architecture {asked.fingerprint()}; pass the matching --config")
    else:
        cfg = load_config(opts.config)
    tc = cfg.train
    batch = opts.batch or tc.batch
    lr = opts.lr or tc.lr
    total_steps = opts.steps if opts.steps is not None else tc.steps
    ckpt_every = opts.checkpoint_every or tc.checkpoint_every
    if batch < 1 or total_steps < 0:
        raise ConfigError("--batch must be >= 1 and --steps >= 0")
    if state is not None:
        check_resume_steps(opts.resume or "", int(state["step"]), total_steps)

    rank, world = _ddp_setup(dev_kind)
    device = torch.device("cpu" if dev_kind == "cpu" else
                          (resolved if world <= 1 else f"cuda:{torch.cuda.current_device()}"))
    py_rng = random.Random(opts.seed + rank)
    torch.manual_seed(opts.seed + rank)
    np.random.seed(opts.seed + rank)

    data = PairDataset(opts.data, cfg.image_size, opts.vertices, cfg.vertex.num_vertices,
                       source_variants=opts.source_variants, source_degradation=tc.source_degradation,
                       affine_augment=tc.affine_augment)
    model = Sparse2Dense(cfg).to(device)
    disc = MultiScaleDiscriminator(cfg).to(device)
    perceptual = L.PerceptualLoss(cfg.loss.pyramid_scales).to(device)
    cpu_guard = guard_model(model, disc)  # issue 16: oneDNN's 1x1 weight-gradient kernel corrupts the heap
    betas = (float(tc.betas[0]), float(tc.betas[1]))
    opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    use_amp = bool(opts.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step = 0
    wall_before = 0.0
    init_info = None
    if opts.init is not None:
        if state is not None:
            raise ConfigError("--init and --resume exclude each other: --resume continues a run, --init starts one")

        init_model, init_meta = load_model(Path(opts.init), cfg)
        model.load_state_dict(init_model.state_dict())
        init_info = {"path": str(opts.init), "sha256": sha256_file(Path(opts.init)),
                     "step": init_meta["meta"].get("step"), "wall_seconds": init_meta["meta"].get("wall_seconds")}
    if state is not None:
        init_info = state.get("init")
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler") and use_amp:  # pragma: no cover
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        wall_before = float(state.get("wall_seconds", 0.0))
        _set_rng_state(py_rng, state["rng"])
        if state.get("perceptual") != perceptual.name:
            log.warning("resuming a run trained with perceptual loss %r using %r", state.get("perceptual"),
                        perceptual.name)
    g_model: torch.nn.Module = model
    d_model: torch.nn.Module = disc
    if world > 1:  # pragma: no cover - needs several processes/GPUs
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        g_model, d_model = DDP(model, device_ids=ids), DDP(disc, device_ids=ids)

    def save(path: Path) -> None:
        if rank != 0:
            return
        atomic_torch_save({
            "format": TRAIN_FORMAT, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "step": step,
            "model": model.state_dict(), "discriminator": disc.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "scaler": scaler.state_dict() if use_amp else None, "rng": _rng_state(py_rng),
            "data": data.describe(), "perceptual": perceptual.name, "batch": batch, "lr": lr,
            "wall_seconds": wall_before + (time.time() - t0), "meta": opts.extra_meta, "init": init_info,
        }, path)

    log_path = out / "log.jsonl"
    t0 = time.time()
    last: dict[str, float] = {}
    bar = None
    if opts.progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc=f"s2d[{cfg.name}]", unit="step", mininterval=5)
    model.train()
    disc.train()
    stopped_early = False
    while step < total_steps:
        try:
            b = data.batch(py_rng, batch, hflip=tc.hflip)
        except InputError as e:  # a frame that cannot be read: one line, the last checkpoint untouched
            raise stopped_by_data(e, step, out / "checkpoint.pt") from None
        src, drv = b["source"].to(device), b["driving"].to(device)
        with torch.autocast(device.type, enabled=use_amp):
            out_g = g_model(src, drv)
            pred = out_g["prediction"]
            theta = L.random_affine(drv.shape[0], cfg.loss.equivariance_sigma, device=device)
            kp_w = model.detect(L.warp_affine(drv, theta))
            terms = {
                "perceptual": perceptual(pred, drv),
                "equivariance": L.equivariance_loss(out_g["kp_driving"], kp_w, theta),
                "keypoint_prior": L.keypoint_prior_loss(out_g["kp_driving"], cfg.loss.prior_distance,
                                                        cfg.loss.prior_depth)
                + L.keypoint_prior_loss(out_g["kp_source"], cfg.loss.prior_distance, cfg.loss.prior_depth),
            }
            if cfg.loss.adversarial > 0 or cfg.loss.feature_matching > 0:
                fake = d_model(pred)
                with torch.no_grad():
                    real = d_model(drv)
                terms["adversarial"] = L.hinge_g_loss([f[1] for f in fake])
                terms["feature_matching"] = L.feature_matching_loss([r[0] for r in real], [f[0] for f in fake])
            if b["valid"].sum() > 0:
                terms["vertex"] = L.vertex_loss(out_g["vertices"].float(), b["vertices"].to(device),
                                                b["valid"].to(device))
            loss_g = L.weighted_total(terms, cfg.loss)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        scaler.step(opt_g)
        loss_d = torch.zeros(())
        if cfg.loss.adversarial > 0 or cfg.loss.feature_matching > 0:
            with torch.autocast(device.type, enabled=use_amp):
                real = d_model(drv)
                fake = d_model(pred.detach())
                loss_d = L.hinge_d_loss([r[1] for r in real], [f[1] for f in fake])
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss_d).backward()
            scaler.step(opt_d)
        scaler.update()  # once per iteration for both optimisers
        step += 1
        if not torch.isfinite(loss_g):
            raise ConfigError(f"training diverged at step {step} (generator loss {loss_g.item()}); "
                              "lower --lr or check the data")
        last = {k: float(v.detach()) for k, v in terms.items()}
        last.update(total_g=float(loss_g.detach()), total_d=float(loss_d.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(g=f"{last['total_g']:.3f}", refresh=False)
        if rank == 0 and (step % tc.log_every == 0 or step == total_steps):
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "time": round(wall_before + time.time() - t0, 2), **last}) + "\n")
        if step % ckpt_every == 0:
            save(out / "checkpoint.pt")
        if opts.max_minutes is not None and (time.time() - t0) / 60 >= opts.max_minutes:
            stopped_early = True
            break
    if bar is not None:
        bar.close()
    save(out / "checkpoint.pt")
    summary = {"config": cfg.name, "fingerprint": cfg.fingerprint(), "step": step, "target_steps": total_steps,
               "stopped_early_by_time": stopped_early, "wall_seconds": round(wall_before + time.time() - t0, 1),
               "perceptual": perceptual.name, "final_losses": last, "batch": batch, "lr": lr,
               "data": data.describe(), "init": init_info, "checkpoint": str((out / "checkpoint.pt").resolve()),
               "device": _device_info(str(device)), "cpu_guard": cpu_guard}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_model_checkpoint(state_dict: dict[str, torch.Tensor], cfg: S2DConfig, out: Path, fp16: bool = True,
                           meta: dict[str, Any] | None = None) -> Path:
    """Write an inference checkpoint (model weights + config + metadata), atomically."""
    sd = {k: (v.detach().cpu().half() if fp16 and v.is_floating_point() else v.detach().cpu())
          for k, v in state_dict.items()}
    obj = {"format": MODEL_FORMAT, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "model": sd,
           "meta": {"dtype": "float16" if fp16 else "float32", **(meta or {})}}
    atomic_torch_save(obj, Path(out))
    return Path(out)


def export_model(train_checkpoint: Path, out: Path, fp16: bool = True, meta: dict[str, Any] | None = None) -> Path:
    """Write the inference checkpoint (model only, optional fp16) the codec loads."""
    st = read_training_state(Path(train_checkpoint), "training checkpoint")
    if st.get("format") != TRAIN_FORMAT:
        raise ModelMismatch(f"{train_checkpoint}: not a `gfvc train s2d` checkpoint")
    cfg = config_from_dict(st["config"], name=st["config"].get("name", "exported"))
    info = {"step": st["step"], "perceptual": st["perceptual"], "data": st["data"], "init": st.get("init"),
            "wall_seconds": st.get("wall_seconds"), "batch": st.get("batch"), "lr": st.get("lr"), **(meta or {})}
    return write_model_checkpoint(st["model"], cfg, out, fp16=fp16, meta=info)


def read_training_state(path: Path, what: str) -> dict[str, Any]:
    """A `gfvc train s2d` training checkpoint through the suite's torch reader (weights_only: no code runs)."""
    st = ck.read_torch_file(path, f"{what} (Sparse2Dense training checkpoint)", allow_numpy_arrays=True,
                            hint="truncated copy or not a training checkpoint: resume from OUT/checkpoint.pt "
                                 "of a `gfvc train s2d` run")
    if not isinstance(st, dict):
        raise ModelMismatch(f"{path}: not a `gfvc train s2d` training checkpoint (it holds a {type(st).__name__})")
    return st


def read_checkpoint(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True (no code runs from an untrusted file) and typed errors."""
    st = ck.read_torch_file(path, "Sparse2Dense checkpoint",
                            hint="truncated copy or not an inference checkpoint: copy it again, or export one with "
                                 "`gfvc train s2d ... --export FILE` (or s2d_model.train.export_model)")
    if not isinstance(st, dict):
        raise ModelMismatch(f"{path}: not a Sparse2Dense checkpoint")
    return st


def _device_info(device: str) -> dict[str, Any]:
    return device_provenance(device)


def load_model(path: Path, config: S2DConfig | str | None = None,
               device: str = "cpu") -> tuple[Sparse2Dense, dict[str, Any]]:
    """Load an exported (or training) checkpoint into a model in eval mode.

    ``config`` (a name or S2DConfig) must describe the same architecture as
    the checkpoint, else ModelMismatch says which config the checkpoint needs.
    """
    path = Path(path)
    if not path.is_file():
        raise NotAvailable(f"Sparse2Dense checkpoint {path} not found; train one with "
                           "`gfvc train s2d --config small --data DIR --out OUT` "
                           "and export it, or restore s2d_model/checkpoints/ from the repository")
    st = read_checkpoint(path)
    if st.get("format") not in (MODEL_FORMAT, TRAIN_FORMAT):
        fmt = st.get("format") if isinstance(st, dict) else type(st).__name__
        raise ModelMismatch(f"{path}: not a Sparse2Dense checkpoint (format {fmt!r})")
    ck_cfg = config_from_dict(st["config"], name=st["config"].get("name", "checkpoint"))
    if config is not None:
        want = load_config(config) if isinstance(config, (str, Path)) else config
        if want.fingerprint() != ck_cfg.fingerprint():
            raise ModelMismatch(
                f"{path} was trained with s2d config {ck_cfg.name!r} "
                f"(architecture {ck_cfg.fingerprint()}, {ck_cfg.image_size}px) "
                f"but config {want.name!r} (architecture {want.fingerprint()}, {want.image_size}px) was asked; "
                f"use --config {ck_cfg.name} or a checkpoint trained with {want.name!r}")
        ck_cfg = want
    model = Sparse2Dense(ck_cfg)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in st["model"].items()}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ModelMismatch(f"{path}: weights do not fit config {ck_cfg.name!r}: {str(e).splitlines()[0]}; "
                            "the checkpoint was probably edited or written by another version") from None
    model.to(device).eval()
    meta = dict(st.get("meta") or {})
    meta.setdefault("step", st.get("step"))
    return model, {"config": ck_cfg, "meta": meta, "fingerprint": ck_cfg.fingerprint()}
