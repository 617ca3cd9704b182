"""Learned key-frame coders: CompressAI's cheng2020-attn, ported (see docs/keyframe-coders.md).

Layout: :mod:`.spec` (qualities, channel counts; no torch), :mod:`.tables`
(quantized CDFs, range coding), :mod:`.entropy_models` (entropy bottleneck,
Gaussian conditional), :mod:`.cheng2020` (the network and its latent coding),
:mod:`.checkpoints` (released weights: registry, lookup, verified download),
:mod:`.keyframe` (:class:`~.keyframe.Cheng2020KeyFrameCoder`, the stage API).
"""
from __future__ import annotations
