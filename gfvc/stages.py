"""Swappable stages of the generative pipeline: the contracts a plug-in implements and their registries.

A generative codec (:class:`gfvc.generative.GenerativeCodec`) is a sequence of named stages, each chosen
by name in the test condition (``generative:`` section) and recorded in every record:

* key-frame coder -- codes a key frame as one still picture (VVC intra via VTM or VVenC, a learned image
  codec, ...): :class:`KeyFrameCoder`, registry :data:`KEY_FRAME_CODERS` (entry-point group
  ``gfvc.key_frame_coders``);
* feature coder -- entropy coding of the quantised feature residuals: :mod:`gfvc.entropy`
  (``FEATURE_CODERS``);
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
from gfvc.condition import Condition
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

    def __init__(self, condition: Condition, env: Environment) -> None:
        self.condition = condition
        self.env = env

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
