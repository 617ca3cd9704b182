"""The shared training loop (model_parts.training) and `gfvc train CODEC`, on the tiny framework recipe.

Resume after an interruption gives exactly the weights of an uninterrupted run;
checkpoints are written atomically; --max-minutes stops with a checkpoint that
resumes; an exported file loads through BaselineCodec; errors are one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import framework_codecs as fc
import numpy as np
import pytest
import torch

from gfvc.codec import Environment
from gfvc.errors import ConfigError, ModelMismatch
from gfvc.video import write_png_folder
from model_parts import training
from model_parts.training import TRAIN_CHECKPOINT, TrainOptions, export, train
from suite.cli.main import main


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("traindata")
    rng = np.random.default_rng(0)
    for v in ("a", "b"):
        base = rng.integers(0, 255, (1, 8, 8, 3))
        frames = np.repeat(np.repeat(base, 8, 1), 8, 2).repeat(5, 0).astype(np.uint8)
        frames = np.clip(frames.astype(int) + rng.integers(-20, 20, frames.shape), 0, 255).astype(np.uint8)
        write_png_folder(root / "train" / v, frames)
    return root


def _recipe(**kw) -> fc.TinyKPRecipe:
    r = fc.TinyKPRecipe(fc.TinyKPCodec.named_configs()["small64"])
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _opts(data: Path, out: Path, **kw) -> TrainOptions:
    base = dict(data=data, out=out, steps=6, batch=2, checkpoint_every=3, log_every=1, progress=False, seed=3)
    base.update(kw)
    return TrainOptions(**base)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    st = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{m}.{k}": v for m in ("analyser", "synth", "discriminator") for k, v in st[m].items()}


@pytest.mark.isolated
def test_resume_after_interruption_equals_uninterrupted_run(data, tmp_path):
    full = train(_recipe(), _opts(data, tmp_path / "full"))
    assert full["steps"] == 6 and full["final"] and not full["stopped_early_by_time"]
    with pytest.raises(KeyboardInterrupt):  # killed during step 5: the step-3 checkpoint survives
        train(_recipe(interrupt_at=4), _opts(data, tmp_path / "cut"))
    ckpt = tmp_path / "cut" / TRAIN_CHECKPOINT
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["gfvc_train"]["step"] == 3
    resumed = train(_recipe(), _opts(data, tmp_path / "cut", resume=ckpt))
    assert resumed["steps"] == 6
    a, b = _weights(tmp_path / "full" / TRAIN_CHECKPOINT), _weights(ckpt)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the optimiser moved the weights (the comparison above is not between two untouched inits)
    torch.manual_seed(3)  # the run's seed: these are the weights the runs started from
    init = {f"{m}.{k}": v for m, mod in _recipe().build().items() for k, v in mod.state_dict().items()}
    assert not torch.equal(init["analyser.conv.weight"], a["analyser.conv.weight"])
    # the log has each step once (lines written after the step-3 checkpoint were dropped on resume)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert "d.gan" in json.loads((tmp_path / "cut" / "log.jsonl").read_text().splitlines()[-1])


@pytest.mark.isolated
def test_checkpoint_is_written_atomically(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(_recipe(), _opts(data, out, steps=3))
    before = (out / TRAIN_CHECKPOINT).read_bytes()

    def broken_save(obj, f, *a, **k):  # a crash while writing (disk full, kill): half a file, then an error
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 half")
        else:
            Path(f).write_bytes(b"PK\x03\x04 half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        train(_recipe(), _opts(data, out, steps=6, resume=out / TRAIN_CHECKPOINT))
    assert (out / TRAIN_CHECKPOINT).read_bytes() == before  # the previous checkpoint is intact
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pth.tar", "log.jsonl", "summary.json"]


@pytest.mark.isolated
def test_wall_time_limit_stops_with_a_resumable_checkpoint(data, tmp_path):
    s = train(_recipe(), _opts(data, tmp_path / "t", steps=1000, max_minutes=1e-6))
    assert s["stopped_early_by_time"] and s["steps"] == 1 and not s["final"]
    st = torch.load(tmp_path / "t" / TRAIN_CHECKPOINT, map_location="cpu", weights_only=True)
    assert st["gfvc_train"]["step"] == 1 and st["gfvc"]["training"]["final"] is False
    s2 = train(_recipe(), _opts(data, tmp_path / "t", steps=2, resume=tmp_path / "t" / TRAIN_CHECKPOINT))
    assert s2["steps"] == 2 and s2["final"]


@pytest.mark.isolated
def test_export_loads_through_the_codec(data, tmp_path, fake_intra):
    train(_recipe(), _opts(data, tmp_path / "r", steps=2))
    out = export(tmp_path / "r" / TRAIN_CHECKPOINT, tmp_path / "tiny.pt", fc.NAME, ("analyser", "synth"), fp16=True,
                 meta={"model_id": "tiny-test"})
    st = torch.load(out, map_location="cpu", weights_only=True)
    assert set(st) == {"analyser", "synth", "epoch", "gfvc"} and st["gfvc"]["dtype"] == "float16"
    assert st["analyser"]["conv.weight"].dtype == torch.float16
    assert st["gfvc"]["training"]["steps"] == 2 and st["gfvc"]["training"]["losses"]["note"]
    from test_generative import demo_condition

    cond = demo_condition().with_overrides(width=64, height=64)
    codec = fc.TinyKPCodec(cond, Environment(models={fc.NAME: str(out)}))
    codec.check()
    assert codec.model_id() == "tiny-test" and codec.config().name == "small64"
    ref = torch.load(tmp_path / "r" / TRAIN_CHECKPOINT, map_location="cpu", weights_only=True)["analyser"]
    got = codec.nets["analyser"].state_dict()
    assert torch.allclose(got["conv.weight"], ref["conv.weight"].half().float())


@pytest.mark.isolated
def test_loop_errors_are_typed(data, tmp_path):
    with pytest.raises(ConfigError, match="--batch"):
        train(_recipe(), _opts(data, tmp_path / "e", batch=0))
    train(_recipe(), _opts(data, tmp_path / "e", steps=1))
    other = fc.TinyKPRecipe(fc.TinyKPCodec.named_configs()["small64"].with_image_size(32))
    with pytest.raises(ModelMismatch, match="another configuration"):
        train(other, _opts(data, tmp_path / "e2", steps=2, resume=tmp_path / "e" / TRAIN_CHECKPOINT))
    (tmp_path / "junk.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelMismatch, match="cannot be read"):
        train(_recipe(), _opts(data, tmp_path / "e3", resume=tmp_path / "junk.tar"))

    class NaNRecipe(fc.TinyKPRecipe):
        def generator_losses(self, modules, batch, step):
            terms, cache = super().generator_losses(modules, batch, step)
            terms["l1"] = terms["l1"] * float("nan")
            return terms, cache

    before = (tmp_path / "e" / TRAIN_CHECKPOINT).read_bytes()
    with pytest.raises(ConfigError, match="diverged.*l1"):
        train(NaNRecipe(fc.TinyKPCodec.named_configs()["small64"]),
              _opts(data, tmp_path / "e", steps=3, resume=tmp_path / "e" / TRAIN_CHECKPOINT))
    assert (tmp_path / "e" / TRAIN_CHECKPOINT).read_bytes() == before


@pytest.mark.isolated
def test_gfvc_train_cli(data, tmp_path, capsys):
    out, exp = tmp_path / "cli", tmp_path / "exported.pt"
    args = ["train", fc.NAME, "--data", str(data), "--out", str(out), "--steps", "2", "--batch", "2",
            "--config", "small64", "--export", str(exp), "--fp16", "--model-id", "tiny-cli", "--no-progress"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["exported"] == str(exp)
    st = torch.load(exp, map_location="cpu", weights_only=True)
    assert st["gfvc"]["model_id"] == "tiny-cli"
    assert st["gfvc"]["training"]["command"].startswith(f"gfvc train {fc.NAME} --data ")
    # --resume without --config continues with the checkpoint's configuration
    assert main(["train", fc.NAME, "--data", str(data), "--out", str(out), "--steps", "3", "--no-progress",
                 "--resume", str(out / TRAIN_CHECKPOINT)]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    # an official YAML config
    (tmp_path / "cfg.yaml").write_text("image_size: 64\nmodel_params: {width: 4}\n")
    assert main(["train", fc.NAME, "--data", str(data), "--out", str(tmp_path / "y"), "--steps", "1",
                 "--config", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["config"] == "yaml"
    # one-line errors, exit 2
    assert main(["train", fc.NAME, "--data", str(data), "--out", str(tmp_path / "z"), "--steps", "1",
                 "--config", "nope", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no configuration 'nope'" in err and "small64" in err and err.count("\n") == 1
    assert main(["train", fc.NAME, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "z"), "--steps", "1",
                 "--config", "small64", "--no-progress"]) == 2
    assert "no such training data folder" in capsys.readouterr().err
    assert main(["train", fc.NAME, "--data", str(data), "--out", str(tmp_path / "z"), "--steps", "1",
                 "--config", "small64", "--device", "tpu", "--no-progress"]) == 2
    assert "not understood" in capsys.readouterr().err


def test_train_cli_lists_every_baseline_and_keeps_s2d():
    import baselines.registry as reg
    from suite.cli.models import TRAINABLE

    assert set(TRAINABLE) == {m.rsplit(".", 1)[1] for m in reg.MODEL_MODULES}
    from suite.cli.main import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    train_p = sub.choices["train"]
    models = next(a for a in train_p._actions if a.dest == "model")
    assert {"s2d", *TRAINABLE} <= set(models.choices)
    s2d_opts = {o for a in models.choices["s2d"]._actions for o in a.option_strings}
    assert {"--vertices", "--amp", "--vertex-targets", "--export"} <= s2d_opts  # s2d's own trainer, unchanged
    assert training.RECIPES.get(fc.NAME) is fc.TinyKPRecipe


@pytest.mark.isolated
def test_older_training_checkpoints_with_numpy_rng_state_still_resume(data, tmp_path):
    """Checkpoints written before the RNG state was stored as tensors held numpy's own tuple."""
    train(_recipe(), _opts(data, tmp_path / "old", steps=2))
    p = tmp_path / "old" / TRAIN_CHECKPOINT
    st = torch.load(p, map_location="cpu", weights_only=True)
    np.random.seed(5)
    st["gfvc_train"]["rng"]["numpy"] = np.random.get_state()
    torch.save(st, p)
    s = train(_recipe(), _opts(data, tmp_path / "old", steps=3, resume=p))
    assert s["steps"] == 3
    assert export(p, tmp_path / "e.pt", fc.NAME, ("analyser", "synth")).is_file()
