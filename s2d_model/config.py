"""Sparse2Dense configuration: dataclasses loaded from ``s2d_model/configs/*.yaml``.

The paper (Sparse2Dense, CTC_FACTS section 6) fixes the interface (15 3D
keypoints, 45 values per inter frame, 10475 x 2 vertices, loss weights,
Adam(0.5, 0.999), lr 2e-4) but not the layer sizes; where it is silent we use
FV2V's own defaults (Wang et al., "One-Shot Free-View Neural Talking-Head
Synthesis", CVPR 2021), recorded here as fields so a checkpoint always carries
the exact architecture it was trained with.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gfvc.errors import ConfigError, UnknownName
from gfvc.fileio import read_yaml_mapping

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
NUM_VERTICES = 10475  # SMPL-X vertex count


@dataclass
class KPDetectorConfig:
    """Keypoint detector: 2D encoder -> reshape to 3D -> 3D decoder -> K heatmaps."""

    num_kp: int = 15
    scale_factor: float = 0.25          # the paper's s: input downsampled before the U-Net
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_channels: int = 16384       # = (channels of the 3D bottleneck) x reshape_depth
    reshape_depth: int = 16             # D of the D x H x W heatmap grid
    temperature: float = 0.1
    head_kernel: int = 7                # 3D conv giving the K heatmaps (FV2V: 7)


@dataclass
class TextureConfig:
    """Texture (appearance) feature extractor: 2D encoder -> 3D volume (C x D) -> 3D ResBlocks."""

    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512             # 2D channels before the reshape = feature_channels x depth
    feature_channels: int = 32
    depth: int = 16
    num_resblocks: int = 6


@dataclass
class MotionConfig:
    """Sparse-to-dense motion: 3D U-Net on (K+1) x (compress+1) channels -> mask + occlusion."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    compress: int = 4
    kp_variance: float = 0.01
    mask_kernel: int = 7                # 3D conv giving the K+1 mask (FV2V: 7)
    occlusion_kernel: int = 7


@dataclass
class GeneratorConfig:
    """Frame generator after warping: 2D ResBlocks + upsampling (num_up = texture.num_down_blocks)."""

    num_resblocks: int = 6


@dataclass
class VertexConfig:
    """Vertex head: ResBlocks -> adaptive average pool -> FC(num_vertices*2)."""

    num_vertices: int = NUM_VERTICES
    num_resblocks: int = 2
    channels: int = 256                 # 0 = use the generator bottleneck width
    pool_size: int = 1


@dataclass
class DiscriminatorConfig:
    """Multi-scale patch discriminator (hinge GAN + feature matching)."""

    scales: list[float] = field(default_factory=lambda: [1.0])
    block_expansion: int = 32
    max_features: int = 512
    num_blocks: int = 4
    spectral_norm: bool = True


@dataclass
class LossConfig:
    """Loss weights; defaults are the paper's (equivariance 10, prior 10, perceptual 10, adv 1, vertex 100)."""

    equivariance: float = 10.0
    keypoint_prior: float = 10.0
    perceptual: float = 10.0
    adversarial: float = 1.0
    feature_matching: float = 10.0      # FV2V's default; the paper does not list it
    vertex: float = 100.0
    prior_distance: float = 0.1         # FV2V keypoint prior: min squared distance between keypoints
    prior_depth: float = 0.33           # FV2V keypoint prior: target mean depth
    pyramid_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125])
    equivariance_sigma: float = 0.05    # std of the random affine used by the equivariance loss


@dataclass
class TrainConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch: int = 4
    steps: int = 100000
    log_every: int = 10
    checkpoint_every: int = 500
    num_workers: int = 0
    hflip: bool = True
    # Augmentations (0 = off; recorded with the config in every checkpoint):
    # affine_augment: strength of one random similarity transform applied to both frames of a pair
    #   (shift up to 10%, scale up to 10%, rotation up to 5 degrees at strength 1) -- more poses and
    #   positions than a short training clip holds;
    # source_degradation: probability that the source (key) frame is replaced by an intra-coded
    #   version of itself (``--source-variants``), so the generator learns from key frames as the
    #   decoder sees them (4:2:0, quantised) instead of only pristine RGB frames.
    affine_augment: float = 0.0
    source_degradation: float = 0.0


@dataclass
class S2DConfig:
    """Everything that defines a Sparse2Dense model; ``fingerprint`` identifies its architecture."""

    name: str = "reference"
    image_size: int = 384
    kp: KPDetectorConfig = field(default_factory=KPDetectorConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    vertex: VertexConfig = field(default_factory=VertexConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        k = self.kp
        if k.reshape_channels % k.reshape_depth:
            raise ConfigError(f"s2d config {self.name!r}: kp.reshape_channels ({k.reshape_channels}) must be a "
                              f"multiple of kp.reshape_depth ({k.reshape_depth})")
        t = self.texture
        if t.feature_channels * t.depth != t.max_features:
            raise ConfigError(f"s2d config {self.name!r}: texture.feature_channels x texture.depth must equal "
                              f"texture.max_features ({t.feature_channels}x{t.depth} != {t.max_features})")
        kp_in = round(self.image_size * k.scale_factor)
        if kp_in % (2 ** k.num_blocks):
            raise ConfigError(f"s2d config {self.name!r}: image_size*scale_factor={kp_in} must be divisible "
                              "by 2**kp.num_blocks")
        feat = self.image_size // (2 ** t.num_down_blocks)
        if self.image_size % (2 ** t.num_down_blocks) or feat % (2 ** self.motion.num_blocks):
            raise ConfigError(f"s2d config {self.name!r}: feature size {feat} must be divisible "
                              "by 2**motion.num_blocks")
        if self.vertex.num_vertices < 1 or k.num_kp < 1:
            raise ConfigError(f"s2d config {self.name!r}: num_kp and num_vertices must be positive")

    @property
    def feature_dim(self) -> int:
        return self.kp.num_kp * 3

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"]["betas"] = list(d["train"]["betas"])
        return d

    def architecture_dict(self) -> dict[str, Any]:
        """The parts that change tensor shapes (loss/training settings excluded)."""
        d = self.to_dict()
        return {k: d[k] for k in ("image_size", "kp", "texture", "motion", "generator", "vertex")}

    def fingerprint(self) -> str:
        blob = json.dumps(self.architecture_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SECTIONS = {
    "kp": KPDetectorConfig, "texture": TextureConfig, "motion": MotionConfig,
    "generator": GeneratorConfig, "vertex": VertexConfig, "discriminator": DiscriminatorConfig,
    "loss": LossConfig, "train": TrainConfig,
}


def config_from_dict(d: dict[str, Any], name: str = "custom") -> S2DConfig:
    """Build and validate a config; unknown keys are errors (typos must not pass silently)."""
    if not isinstance(d, dict):
        raise ConfigError(f"s2d config {name!r}: expected a mapping")
    top = {f.name for f in dataclasses.fields(S2DConfig)}
    unknown = set(d) - top
    if unknown:
        raise ConfigError(f"s2d config {name!r}: unknown keys {sorted(unknown)}; known: {sorted(top)}")
    kw: dict[str, Any] = {"name": d.get("name", name)}
    if "image_size" in d:
        kw["image_size"] = int(d["image_size"])
    for sec, cls in _SECTIONS.items():
        sub = d.get(sec) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        bad = set(sub) - known
        if bad:
            raise ConfigError(f"s2d config {name!r}: unknown keys {sorted(bad)} in section {sec!r}; "
                              f"known: {sorted(known)}")
        if sec == "train" and "betas" in sub:
            sub = dict(sub, betas=tuple(float(b) for b in sub["betas"]))
        kw[sec] = cls(**sub)
    cfg = S2DConfig(**kw)
    cfg.validate()
    return cfg


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path) -> S2DConfig:
    """Load a named config (``reference``, ``small``, ...) or a YAML file path."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        p = CONFIG_DIR / f"{name_or_path}.yaml"
        if not p.is_file():
            raise UnknownName(f"unknown s2d config {str(name_or_path)!r}; available: "
                              f"{', '.join(available_configs())} (or a path to a .yaml file)")
    d = read_yaml_mapping(p, "s2d config")
    return config_from_dict(d, name=d.get("name", p.stem))
