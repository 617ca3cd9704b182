"""Swappable stages of the generative pipeline: the contracts a plug-in implements and their registries.

A generative codec (:class:`gfvc.generative.GenerativeCodec`) is a sequence of named stages, each chosen
by name in the test condition (``generative:`` section) and recorded in every record:

* key-frame coder -- codes a key frame as one still picture (VVC intra via VTM or VVenC, a learned image
  codec, ...): :class:`KeyFrameCoder`, registry :data:`KEY_FRAME_CODERS` (entry-point group
  ``gfvc.key_frame_coders``);
* key-frame policy -- where key frames go (``single``, ``period``, ``adaptive``): :class:`KeyFramePolicy`,
  registry :data:`KEY_FRAME_POLICIES` (group ``gfvc.key_frame_policies``); the adaptive policy measures
  frames with a :class:`FrameQuality` measure (registry :data:`FRAME_QUALITY`, group
  ``gfvc.frame_quality``: psnr, psnr_y, ssim from :mod:`metrics.frame_quality`);
* feature coder -- entropy coding of the quantised feature residuals: :mod:`gfvc.entropy`
  (``FEATURE_CODERS``, group ``gfvc.feature_coders``);
* analysis / synthesis -- the codec's own model (methods of the codec class).

The suite's own stages are entry points of its distribution (pyproject.toml), found exactly as a
third-party plug-in's are, so this library floor names no package above it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gfvc.codec import Environment
from gfvc.condition import Condition, KeyFramePolicySpec
from gfvc.registry import Registry


@dataclass
class KeyFramePayload:
    """One coded key frame: the bytes the decoder needs (all counted as rate) and the commands run."""

    payload: bytes
    commands: list[list[str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class KeyFrameCoder(abc.ABC):
    """Codes one RGB frame (H, W, 3) uint8 as a still picture at a rate parameter (``level``).

    ``level`` is the rate point's value: a QP for VVC intra, a quality index for a learned image codec.
    The decoder must reproduce the encoder's decoded key frame exactly (generative codecs derive the
    prediction start of the features from it at both ends).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # What the payload is (``payload_format``): coders whose payloads decode with each other share it
    # ("vvc": VVenC and VTM intra pictures are both plain VVC). The container states it; a decoder of
    # another format refuses.
    format_name: ClassVar[str] = ""

    def __init__(self, condition: Condition, env: Environment) -> None:
        self.condition = condition
        self.env = env

    @property
    def payload_format(self) -> str:
        """``format_name``, else the coder's own name."""
        return self.format_name or self.name

    @property
    def chroma(self) -> str:
        return self.condition.generative.key_frame_chroma

    def check(self) -> None:
        """Raise NotAvailable with the fix when the coder cannot run here (default: nothing missing)."""
        return None

    @abc.abstractmethod
    def encode(self, frame: np.ndarray, level: int, workdir: Path) -> KeyFramePayload:
        """Code ``frame`` at ``level``; files may be written under ``workdir``."""

    @abc.abstractmethod
    def decode(self, payload: bytes, width: int, height: int, workdir: Path) -> np.ndarray:
        """Decode a payload of :meth:`encode` to (height, width, 3) uint8; BitstreamError if it is not one."""

    @abc.abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Versions, binary/weight sha256 and settings that define the decoded key frame."""


KEY_FRAME_CODERS: Registry[type[KeyFrameCoder]] = Registry("key-frame coder",
                                                          entry_point_group="gfvc.key_frame_coders")


def key_frame_coder(name: str, condition: Condition, env: Environment) -> KeyFrameCoder:
    """The key-frame coder registered as ``name``, set up for ``condition`` (UnknownName suggests names)."""
    return KEY_FRAME_CODERS.get(name)(condition, env)


# --------------------------------------------------------------------------- key-frame policies
class FrameQuality(abc.ABC):
    """A per-frame quality measure used by the adaptive key-frame policy (psnr, ssim, ...)."""

    name: ClassVar[str] = ""
    lower_is_better: ClassVar[bool] = False

    def __init__(self, env: Environment) -> None:
        self.env = env

    @abc.abstractmethod
    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """Quality of each frame: (N, H, W, 3) uint8 twice -> (N,) float."""


FRAME_QUALITY: Registry[type[FrameQuality]] = Registry("frame-quality measure",
                                                       entry_point_group="gfvc.frame_quality")


class KeyFramePolicy:
    """Where a generative codec puts its key frames (the key-frame policy stage).

    A static policy knows the positions from the frame count alone (:meth:`positions`); an adaptive
    one decides frame by frame at the encoder from the quality of the animated prediction
    (:meth:`refresh`). The decoder needs no policy: the container lists the key frames.
    """

    name: ClassVar[str] = ""
    adaptive: ClassVar[bool] = False

    def __init__(self, spec: KeyFramePolicySpec, env: Environment) -> None:
        self.spec = spec
        self.env = env

    def check(self) -> None:
        """Raise ConfigError / NotAvailable when the policy cannot run with these settings."""
        return None

    def positions(self, frames: int) -> list[int]:
        """Key-frame indices of a static policy (always starting with 0)."""
        return [0]

    def start(self) -> None:
        """Reset the state of an adaptive policy before a sequence."""
        return None

    def key_frame(self, original: np.ndarray, decoded: np.ndarray) -> None:
        """Adaptive policies: a key frame was coded (its original and decoded pictures)."""
        return None

    def refresh(self, t: int, since_key: int, reference: np.ndarray, animated: np.ndarray) -> bool:
        """Adaptive policies: should frame ``t`` (animated from the last key frame) be a key frame instead?"""
        return False


KEY_FRAME_POLICIES: Registry[type[KeyFramePolicy]] = Registry("key-frame policy",
                                                             entry_point_group="gfvc.key_frame_policies")


@KEY_FRAME_POLICIES.register()
class SinglePolicy(KeyFramePolicy):
    """Frame 0 only: the CTC's key frame."""

    name = "single"


@KEY_FRAME_POLICIES.register()
class PeriodPolicy(KeyFramePolicy):
    """A key frame every ``period`` frames (the AhG software's ``gop_size``)."""

    name = "period"

    def positions(self, frames: int) -> list[int]:
        return list(range(0, frames, self.spec.period))


@KEY_FRAME_POLICIES.register()
class AdaptivePolicy(KeyFramePolicy):
    """A new key frame when the animated frames' quality crosses a threshold (the AhG software's DAC).

    DAC (GFVC_Software_v2, ``source/DAC_encoder.py``) animates each inter frame at the encoder from the
    quantised features it will send, measures the prediction against the original and keeps sending
    features while the running mean of that quality (over every animated frame of the sequence, never
    reset) is on the right side of the threshold; otherwise the frame is coded as a new key frame.
    ``average: frame`` compares each frame's own quality instead; ``max_interval`` > 0 forces a key frame
    that many frames after the last one.
    """

    name = "adaptive"
    adaptive = True

    def __init__(self, spec: KeyFramePolicySpec, env: Environment) -> None:
        super().__init__(spec, env)
        self.measure = FRAME_QUALITY.get(spec.measure)(env)
        self._sum = 0.0
        self._n = 0

    def start(self) -> None:
        self._sum, self._n = 0.0, 0
        self._key_quality: float | None = None

    def key_frame(self, original: np.ndarray, decoded: np.ndarray) -> None:
        """A key frame was coded: with ``relative_to_key``, its quality is the new reference."""
        if self.spec.relative_to_key:
            self._key_quality = float(self.measure(original[None], decoded[None])[0])
            self._sum, self._n = 0.0, 0

    def refresh(self, t: int, since_key: int, reference: np.ndarray, animated: np.ndarray) -> bool:
        if self.spec.max_interval and since_key >= self.spec.max_interval:
            return True
        q = float(self.measure(reference[None], animated[None])[0])
        self._sum += q
        self._n += 1
        value = self._sum / self._n if self.spec.average == "running" else q
        limit = self.spec.threshold
        if self.spec.relative_to_key and self._key_quality is not None:
            limit = (self._key_quality + self.spec.threshold if self.measure.lower_is_better
                     else self._key_quality - self.spec.threshold)
        ok = value <= limit if self.measure.lower_is_better else value >= limit
        return not ok


def key_frame_policy(spec: KeyFramePolicySpec, env: Environment) -> KeyFramePolicy:
    """The policy named by ``spec.kind`` (UnknownName suggests names)."""
    return KEY_FRAME_POLICIES.get(spec.kind)(spec, env)
