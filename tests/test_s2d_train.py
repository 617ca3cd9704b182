"""Sparse2Dense training: finite losses, resumable checkpoints at the right step, typed errors,
fallback perceptual loss recorded, export/load with config checks, data layout checks."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from test_s2d_networks import write_tiny_config, write_tiny_data

from gfvc.errors import InputError, ModelMismatch, NotAvailable
from model_parts import losses as ML
from model_parts.data import PairDataset
from s2d_model import losses as L
from s2d_model.train import TrainOptions, export_model, load_model, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2dtrain")
    cfg = write_tiny_config(tmp)
    data = write_tiny_data(tmp / "data")
    out = tmp / "run"
    s = train(TrainOptions(config=cfg, data=data, vertices=data / "vertices", out=out, steps=2, progress=False))
    return tmp, cfg, data, out, s


@pytest.mark.isolated
def test_training_runs_and_logs(trained):
    _, _, _, out, s = trained
    assert s["step"] == 2
    assert all(np.isfinite(v) for v in s["final_losses"].values())
    losses = {"perceptual", "equivariance", "keypoint_prior", "adversarial", "feature_matching", "vertex"}
    assert losses <= set(s["final_losses"])
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2 and ck["format"] == "s2d-train-v1"
    assert ck["perceptual"] in ("vgg19-pyramid", L.FALLBACK_NAME)
    assert {"model", "discriminator", "opt_g", "opt_d", "rng", "config", "data"} <= set(ck)


@pytest.mark.isolated
def test_resume_continues_at_saved_step(trained):
    tmp, cfg, data, out, _ = trained
    out2 = tmp / "resumed"
    s = train(TrainOptions(config=cfg, data=data, out=out2, resume=out / "checkpoint.pt", steps=3, progress=False))
    assert s["step"] == 3
    lines = [json.loads(x) for x in (out2 / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [3]  # only the one new step ran
    ck = torch.load(out2 / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 3


@pytest.mark.isolated
def test_resume_with_other_config_is_refused(trained, tmp_path):
    _, _, data, out, _ = trained
    other = write_tiny_config(tmp_path, name="other", generator={"num_resblocks": 2})
    with pytest.raises(ModelMismatch, match="--config"):
        train(TrainOptions(config=other, data=data, out=tmp_path / "x", resume=out / "checkpoint.pt", steps=3,
                           progress=False))


@pytest.mark.isolated
def test_export_and_load_checks_config(trained, tmp_path):
    tmp, cfg, _, out, _ = trained
    exp = export_model(out / "checkpoint.pt", tmp_path / "m.pt")
    model, meta = load_model(exp, cfg)
    assert meta["meta"]["dtype"] == "float16"
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    other = write_tiny_config(tmp_path, name="other", image_size=128)
    with pytest.raises(ModelMismatch, match="tiny"):
        load_model(exp, other)
    with pytest.raises(NotAvailable, match="gfvc train s2d"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelMismatch):
        load_model(tmp_path / "junk.pt")
    # a checkpoint whose weights were edited no longer fits its config
    st = torch.load(exp, weights_only=False)
    st["model"].pop(next(iter(st["model"])))
    torch.save(st, tmp_path / "edited.pt")
    with pytest.raises(ModelMismatch, match="do not fit"):
        load_model(tmp_path / "edited.pt")


@pytest.mark.isolated
def test_training_reduces_loss_on_a_fixed_batch(tmp_path):
    """A few optimiser steps on one fixed pair reduce the reconstruction (perceptual/pyramid) term."""
    from s2d_model.config import load_config
    from s2d_model.networks import Sparse2Dense

    torch.manual_seed(0)
    cfg = load_config(write_tiny_config(tmp_path))
    ds = PairDataset(write_tiny_data(tmp_path / "d", vertices=False), 64)
    b = ds.batch(random.Random(0), 2)
    m = Sparse2Dense(cfg)
    perc = L.PerceptualLoss(cfg.loss.pyramid_scales)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(12):
        out = m(b["source"], b["driving"])
        loss = perc(out["prediction"], b["driving"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_data_layout_errors(tmp_path):
    with pytest.raises(InputError, match="no such training data"):
        PairDataset(tmp_path / "nothing", 64)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="no videos"):
        PairDataset(tmp_path / "empty", 64)
    d = write_tiny_data(tmp_path / "d", vertices=False)
    ds = PairDataset(d, 128)  # frames are 64x64
    with pytest.raises(InputError, match="128x128"):
        ds.sample(random.Random(0))
    bad = tmp_path / "v"
    bad.mkdir()
    np.save(bad / "vid0.npy", np.zeros((3, 10475, 2), np.float32))
    ds = PairDataset(d, 64, bad)
    with pytest.raises(InputError, match="vertex targets"):
        for _ in range(10):
            ds.sample(random.Random(_))


def test_loss_functions():
    kp = torch.tensor([[[0.0, 0.0, 0.33], [0.5, 0.5, 0.33]]])
    assert float(L.keypoint_prior_loss(kp)) == pytest.approx(0.0, abs=1e-6)
    close = torch.tensor([[[0.0, 0.0, 0.33], [0.1, 0.0, 0.33]]])
    assert float(L.keypoint_prior_loss(close)) > 0.1
    theta = L.random_affine(2, 0.1, generator=torch.Generator().manual_seed(0))
    kpw = torch.rand(2, 15, 3) * 2 - 1
    mapped = kpw[..., :2] @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
    exact = torch.cat([mapped, kpw[..., 2:]], -1)
    assert float(L.equivariance_loss(exact, kpw, theta)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.equivariance_loss(kpw, kpw, theta)) > 0
    v = torch.zeros(2, 10475, 2)
    assert float(L.vertex_loss(v + 1, v, torch.tensor([0.0, 1.0]))) == pytest.approx(1.0)


def test_vgg_weights_verified_or_fallback_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / ML.VGG19_FILE).write_bytes(b"wrong")
    from gfvc.errors import WeightsError

    with pytest.raises(WeightsError, match="vgg19-dcbb9e9d.pth"):
        ML.find_vgg19_weights()
    with pytest.raises(WeightsError):
        ML.PerceptualLoss([1.0], allow_fallback=False)
    p = L.PerceptualLoss([1.0])  # S2D's training uses the shared loss
    assert p.name == L.FALLBACK_NAME == ML.FALLBACK_NAME


def test_proxy_vertex_targets_follow_motion():
    """The demo's PROXY targets: 10475 template points, moved by Horn-Schunck flow (recovers a known shift)."""
    from scipy import ndimage

    from model_parts.proxy_vertices import horn_schunck, proxy_vertices, template_points

    tpl = template_points()
    assert tpl.shape == (10475, 2) and np.abs(tpl).max() <= 1.0
    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.uniform(0, 255, (72, 72, 3)), (3, 3, 0))
    f0 = base[4:68, 4:68].astype(np.uint8)
    f1 = base[2:66, 4:68].astype(np.uint8)  # content moves down by 2 px
    fl = horn_schunck(f0, f1)
    inner = fl[16:48, 16:48]
    assert abs(np.median(inner[..., 1]) - 2.0) < 0.5 and abs(np.median(inner[..., 0])) < 0.5  # f1(p + flow) = f0(p)
    v = proxy_vertices(np.stack([f0, f1]))
    assert v.shape == (2, 10475, 2) and np.allclose(v[0], tpl)
