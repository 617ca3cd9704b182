"""keyframe-repeat: send the key frame only and show it for every frame.

The honest lower bound of every generative codec (same key frame, zero
feature bits, no motion at all) and the smallest complete example of the
:class:`gfvc.generative.GenerativeCodec` API: a proposal that does not beat it
on DISTS/LPIPS/FVD at equal rate is not using its features.
"""
from __future__ import annotations

import hashlib

import numpy as np

from gfvc.codec import CODECS
from gfvc.generative import GenerativeCodec

# There is no checkpoint; the "model" is this fixed rule, identified by a version string.
_MODEL = "keyframe-repeat/1"


@CODECS.register()
class KeyframeRepeat(GenerativeCodec):
    name = "keyframe-repeat"
    description = "Key frame (VVC intra) repeated for every frame; no features (lower bound)."
    feature_dim = 0
    quant_scale = 1.0

    def model_id(self) -> str:
        return "keyframe-repeat"

    def model_checksum(self) -> str:
        return hashlib.sha256(_MODEL.encode()).hexdigest()

    def load(self) -> None:
        return None

    def analyse(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros((frames.shape[0], 0), dtype=np.float32)

    def synthesise(self, key_frame: np.ndarray, key_features: np.ndarray, features: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        n = features.shape[0]
        return np.repeat(key_frame[None], n, axis=0), {}
