"""Import every baseline model module: each registers its codec, conformance runner, recipe and signature.

The codecs are also entry points of the distribution (pyproject.toml); this module is for code that
needs the other registries filled (conformance runners, training recipes, checkpoint signatures).
"""
from __future__ import annotations

from baselines import cfte, fomm, fv2v, ihvc, imt, lia, mraa, mttf, tpsm

MODEL_MODULES: tuple[str, ...] = tuple(m.__name__ for m in (fomm, mraa, fv2v, tpsm, cfte, lia, mttf, imt, ihvc))
