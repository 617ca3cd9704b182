"""The ``cheng2020-attn`` key-frame coder stage: CompressAI's learned image codec for key frames.

Choose it in a condition (or a variant) with ``key_frame_coder: cheng2020-attn``; its rate points are
quality indices 1..6 (``key_frame_qps: [1, 2, 3, 4]`` for instance), as the AhG software passes its
``qp_list`` values straight through as the quality (docs/keyframe-coders.md). Weights: CompressAI's
released mse files, pinned and found like the metric weights (:mod:`.checkpoints`). Tests set
``Environment.extra["cheng2020_random_seed"]`` (and optionally ``"cheng2020_channels"``) for seeded
random weights; provenance then says ``random_weights: true`` (and so does every record's key).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gfvc.codec import Environment
from gfvc.condition import Condition
from gfvc.devices import resolve_device
from gfvc.errors import ConfigError
from gfvc.stages import KEY_FRAME_CODERS, KeyFrameCoder, KeyFramePayload
from model_parts.learned_image import checkpoints
from model_parts.learned_image.keyframe import Cheng2020KeyFrameCoder
from model_parts.learned_image.spec import QUALITIES

RANDOM_SEED = "cheng2020_random_seed"
RANDOM_CHANNELS = "cheng2020_channels"


@KEY_FRAME_CODERS.register()
class Cheng2020Stage(KeyFrameCoder):
    """Key frames coded by cheng2020-attn (Cheng et al., CVPR 2020; CompressAI's ``cheng2020_attn``, mse)."""

    name = "cheng2020-attn"
    description = "learned image codec cheng2020-attn (CompressAI, mse), qualities 1..6"

    def __init__(self, condition: Condition, env: Environment) -> None:
        super().__init__(condition, env)
        extra = env.extra or {}
        self._device = resolve_device(env.device)
        if extra.get(RANDOM_SEED) is not None:
            self.coder = Cheng2020KeyFrameCoder.random_weights(int(extra[RANDOM_SEED]),
                                                               channels=extra.get(RANDOM_CHANNELS),
                                                               device=self._device)
        else:
            self.coder = Cheng2020KeyFrameCoder("mse", device=self._device, weights_dir=env.weights_dir)

    def _qualities(self) -> list[int]:
        bad = [q for q in self.condition.generative.key_frame_qps if q not in QUALITIES]
        if bad:
            raise ConfigError(f"key-frame coder {self.name!r} codes qualities {list(QUALITIES)}, the rate points "
                              f"{list(self.condition.generative.key_frame_qps)} include {bad[0]}: set "
                              "key_frame_qps to qualities (e.g. [1, 2, 3, 4]) for this codec or variant")
        return list(self.condition.generative.key_frame_qps)

    def check(self) -> None:
        self.coder.check(self._qualities())

    def encode(self, frame: np.ndarray, level: int, workdir: Path) -> KeyFramePayload:
        payload, info = self.coder.encode(frame, level, workdir)
        return KeyFramePayload(payload=payload, info=info)

    def decode(self, payload: bytes, width: int, height: int, workdir: Path) -> np.ndarray:
        return self.coder.decode(payload, width, height)

    def provenance(self) -> dict[str, Any]:
        p = self.coder.provenance()
        p["device"] = self._device
        if not p.get("random_weights"):  # the weights of every quality the condition codes (part of the key)
            p["weights"] = {str(q): checkpoints.official(q, "mse").name for q in self._qualities()}
        return p
