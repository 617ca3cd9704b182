"""Import the baseline model modules (each registers its codec, conformance runner, recipe, signature)."""
from __future__ import annotations

import importlib
import importlib.util

MODEL_MODULES: tuple[str, ...] = (
    "baselines.fomm", "baselines.mraa", "baselines.fv2v", "baselines.tpsm",
    "baselines.cfte", "baselines.lia", "baselines.mttf", "baselines.imt", "baselines.ihvc",
)


def load_all() -> None:
    for mod in MODEL_MODULES:
        if importlib.util.find_spec(mod) is not None:  # TODO(integration): strict once all models exist
            importlib.import_module(mod)


load_all()
