"""Training-data augmentations of Sparse2Dense: coded source variants and the shared random similarity."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gfvc.errors import InputError
from gfvc.video import write_png_folder
from model_parts.data import PairDataset, _affine_augment


def _video(root: Path, n: int = 4, size: int = 32) -> np.ndarray:
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i, :, :, 0] = 10 * i
    write_png_folder(root / "train" / "clip", frames)
    return frames


def test_source_variant_replaces_source_only(tmp_path: Path) -> None:
    frames = _video(tmp_path)
    variant = frames.copy()
    variant[..., 1] = 200  # recognisable
    write_png_folder(tmp_path / "var" / "clip" / "qp42", variant)
    ds = PairDataset(tmp_path, 32, source_variants=tmp_path / "var", source_degradation=1.0)
    s = ds.sample(random.Random(0))
    assert (s["source"][..., 1] == 200).all()        # source is the coded variant
    assert (s["driving"][..., 1] == 0).all()         # the target stays pristine
    ds0 = PairDataset(tmp_path, 32, source_variants=tmp_path / "var", source_degradation=0.0)
    assert (ds0.sample(random.Random(0))["source"][..., 1] == 0).all()


def test_source_variants_are_checked(tmp_path: Path) -> None:
    _video(tmp_path)
    with pytest.raises(InputError, match="needs --source-variants"):
        PairDataset(tmp_path, 32, source_degradation=0.5)
    write_png_folder(tmp_path / "var" / "clip" / "qp42", np.zeros((3, 32, 32, 3), np.uint8))  # 3 of 4 frames
    ds = PairDataset(tmp_path, 32, source_variants=tmp_path / "var", source_degradation=1.0)
    with pytest.raises(InputError, match="expected 4"):
        ds.sample(random.Random(0))


def test_affine_augment_moves_vertices_with_the_image() -> None:
    """A vertex on a bright dot must still sit on the dot after the random similarity."""
    size = 64
    img = torch.zeros(1, 3, size, size)
    yx = (20, 41)
    img[0, :, yx[0] - 1:yx[0] + 2, yx[1] - 1:yx[1] + 2] = 1.0
    # normalised coordinates (align_corners=False): pixel centre c -> (2c + 1) / size - 1
    v = torch.tensor([[[(2 * yx[1] + 1) / size - 1, (2 * yx[0] + 1) / size - 1]]])
    b = {"source": img.clone(), "driving": img.clone(), "vertices": v, "valid": torch.ones(1)}
    for seed in range(5):
        out = _affine_augment(b, random.Random(seed), strength=1.0)
        x, y = out["vertices"][0, 0].tolist()
        px, py = ((x + 1) * size - 1) / 2, ((y + 1) * size - 1) / 2
        d = out["driving"][0, 0]
        peak = divmod(int(torch.argmax(d)), size)
        assert abs(peak[0] - py) <= 1.5 and abs(peak[1] - px) <= 1.5
        assert torch.equal(out["source"], out["driving"])  # one transform per pair
