"""A tiny baseline for the framework tests: codec, conformance runner, signature and training recipe.

``tiny-kp`` is the smallest model that uses every framework hook a real
baseline uses (BaselineCodec with two official-named modules, a registered
checkpoint signature, a conformance runner, a recipe with a GAN phase), so
the framework is tested before and independently of the real models; the
generic tests also run over every registered baseline.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.base import BaselineCodec, BaselineConfig
from baselines.conformance import VectorModel, register_vector_model
from gfvc.codec import CODECS
from model_parts import checkpoint as ck
from model_parts.training import RECIPES, TrainRecipe

NAME = "tiny-kp"
DIM = 6


class Analyser(nn.Module):
    """frames -> DIM values in (-1, 1) (strided conv, pooled, linear)."""

    def __init__(self, width: int = 4, dim: int = DIM) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 5, stride=4, padding=2)
        self.norm = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return torch.tanh(self.fc(h))


class Synth(nn.Module):
    """key frame + feature map -> frame (a 1x1 mix of the key with a feature-driven offset)."""

    def __init__(self, width: int = 4, dim: int = DIM) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3 + dim, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 1)

    def forward(self, key: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        n, (h, w) = feats.shape[0], key.shape[2:]
        k = key.expand(n, -1, -1, -1)
        f = feats[:, :, None, None].expand(-1, -1, h, w)
        return torch.sigmoid(self.out(F.relu(self.mix(torch.cat([k, f], 1)))) + 4 * (k - 0.5))


class Disc(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 4, stride=4)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.leaky_relu(self.conv(x), 0.2))


def _cfg(width: int, size: int, name: str) -> BaselineConfig:
    return BaselineConfig(model=NAME, image_size=size, name=name,
                          modules={"analyser": {"width": width}, "synth": {"width": width},
                                   "discriminator": {"width": width}})


@CODECS.register()
class TinyKPCodec(BaselineCodec):
    name = NAME
    description = "framework test model (6 values per frame)"
    feature_dim = DIM
    quant_scale = 64.0
    inference_modules = ("analyser", "synth")

    @classmethod
    def official_config(cls) -> BaselineConfig:
        return _cfg(8, 128, "official")

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        return {"official": cls.official_config(), "demo": _cfg(4, 128, "demo"), "small64": _cfg(4, 64, "small64")}

    @classmethod
    def config_from_official_yaml(cls, data: dict[str, Any]) -> BaselineConfig:
        mp = data["model_params"]
        return _cfg(int(mp["width"]), int(data.get("image_size", 128)), "yaml")

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, nn.Module]:
        m = cfg.modules
        return {"analyser": Analyser(**m["analyser"]), "synth": Synth(**m["synth"])}

    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return self.nets["analyser"](frames)

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.nets["synth"](key, features - key_features[None]), {}


ck.register_signature(NAME, lambda obj: ck.has_keys(obj, "analyser", "synth"))


@register_vector_model(NAME)
class TinyKPVectors(VectorModel):
    def build(self, module: str, cls: str, kwargs: dict[str, Any]) -> nn.Module:
        return {"analyser": Analyser, "synth": Synth}[module](**kwargs)

    def run(self, modules: dict[str, Any], inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        a = modules["analyser"]
        f_src, f_drv = a(inputs["source"]), a(inputs["driving"])
        return {"features.source": f_src, "features.driving": f_drv,
                "prediction": modules["synth"](inputs["source"], f_drv - f_src)}


@RECIPES.register()
class TinyKPRecipe(TrainRecipe):
    name = NAME
    model = NAME
    lr_milestones = (0.5,)
    # set by tests to interrupt a run at a given step (simulates a killed process)
    interrupt_at: int | None = None

    def build(self) -> dict[str, nn.Module]:
        mods = TinyKPCodec.build_modules(self.config)
        mods["discriminator"] = Disc(**self.config.modules["discriminator"])
        return mods

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer_generator": ["analyser", "synth"], "optimizer_discriminator": ["discriminator"]}

    def discriminator_optimizers(self) -> tuple[str, ...]:
        return ("optimizer_discriminator",)

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if self.interrupt_at is not None and step == self.interrupt_at:
            raise KeyboardInterrupt
        src, drv = batch["source"], batch["driving"]
        a = modules["analyser"]
        pred = modules["synth"](src, a(drv) - a(src))
        noise = 0.01 * torch.randn_like(pred)  # uses the torch RNG (restored on resume)
        gan = ((modules["discriminator"](pred + noise) - 1) ** 2).mean()
        return {"l1": F.l1_loss(pred, drv), "gan": 0.1 * gan}, {"pred": pred.detach()}

    def discriminator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], cache: dict[str, Any],
                             step: int) -> dict[str, torch.Tensor]:
        d = modules["discriminator"]
        return {"gan": ((d(batch["driving"]) - 1) ** 2).mean() + (d(cache["pred"]) ** 2).mean()}

    def losses_info(self) -> dict[str, Any]:
        return {"l1": 1.0, "gan": 0.1, "note": "framework test recipe"}


def make_checkpoint(path: Any, seed: int = 0, config: str = "demo", meta: bool = True) -> Any:
    """A tiny-kp checkpoint in the official layout (+ the suite's "gfvc" entry unless ``meta`` is False)."""
    from pathlib import Path

    torch.manual_seed(seed)
    cfg = TinyKPCodec.named_configs()[config]
    mods = TinyKPCodec.build_modules(cfg)
    with torch.no_grad():  # BatchNorm statistics that are not the defaults (so loading them matters)
        mods["analyser"].norm.running_mean.uniform_(-0.1, 0.1)
    if meta:
        return ck.save_checkpoint(Path(path), mods, {"model": NAME, "config": cfg.to_dict()})
    torch.save({k: m.state_dict() for k, m in mods.items()} | {"epoch": 1}, path)
    return Path(path)
