"""Sparse2Dense: 3D-keypoint generative codec with body-mesh vertex output.

Sparse2Dense (the "gfvc-human" CTC's proposal, CTC_FACTS section 6) codes
each inter frame as 15 3D keypoints (45 values) and decodes frames plus
10475 x 2 SMPL-X-like vertices. The paper has no public code; this package
follows the paper with FV2V's layer sizes where it is silent.

Modules: :mod:`.config` (YAML configs), :mod:`.networks`, :mod:`.losses`,
:mod:`.data`, :mod:`.train`, :mod:`.codec` (the ``s2d`` codec),
:mod:`.overlay`, :mod:`.proxy_vertices` (demo-only vertex targets).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from s2d_model.config import load_config

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "s2d-small-demo.pt"


def info(config_name: Any = "reference") -> dict[str, Any]:
    """Architecture summary of a config: parameters per module, keypoints, values per inter frame, vertex shape.

    ``config_name`` is a config name, a YAML path or an S2DConfig (e.g. the one a
    checkpoint embeds). Parameters are counted on the ``meta`` device, so the
    100 M-parameter reference model costs no memory or time.
    """
    import torch

    # lazy: loads torch (start-up time of the modules that import this one)
    from s2d_model.networks import MultiScaleDiscriminator, Sparse2Dense, module_parameters

    cfg = load_config(config_name) if isinstance(config_name, (str, Path)) else config_name
    with torch.device("meta"):
        model = Sparse2Dense(cfg)
        disc = MultiScaleDiscriminator(cfg)
    t, k = cfg.texture, cfg.kp
    feat = cfg.image_size // 2 ** t.num_down_blocks
    kp_in = round(cfg.image_size * k.scale_factor)
    return {
        "model": "sparse2dense",
        "config": cfg.name,
        "fingerprint": cfg.fingerprint(),
        "image_size": [cfg.image_size, cfg.image_size],
        "num_keypoints": k.num_kp,
        "keypoint_dims": 3,
        "values_per_inter_frame": cfg.feature_dim,
        "keypoint_heatmap_grid": [k.reshape_depth, kp_in, kp_in],
        "texture_volume": [t.feature_channels, t.depth, feat, feat],
        "vertex_shape": [cfg.vertex.num_vertices, 2],
        "parameters": module_parameters(model, disc),
        "loss_weights": {"equivariance": cfg.loss.equivariance, "keypoint_prior": cfg.loss.keypoint_prior,
                         "perceptual": cfg.loss.perceptual, "adversarial": cfg.loss.adversarial,
                         "feature_matching": cfg.loss.feature_matching, "vertex": cfg.loss.vertex},
        "optimizer": {"name": "adam", "lr": cfg.train.lr, "betas": list(cfg.train.betas)},
        "demo_checkpoint": str(DEMO_CHECKPOINT) if DEMO_CHECKPOINT.is_file() else None,
    }


__all__ = ["info", "DEMO_CHECKPOINT"]
