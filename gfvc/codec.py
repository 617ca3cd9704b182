"""Codec API: what every codec (anchor or generative) implements.

A codec is a class registered by name in :data:`CODECS` (decorator, or the
entry-point group ``gfvc.codecs`` for codecs living in other packages).
Identity lives in class attributes; work lives in methods. The runner only
ever talks to this interface, so a job does not depend on which codec runs.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from gfvc.condition import Condition
from gfvc.errors import InputError
from gfvc.registry import Registry

Family = Literal["anchor", "generative"]


@dataclass(frozen=True)
class RatePoint:
    """One point of a rate-distortion curve; ``qp`` is the anchor QP or key-frame QP."""

    qp: int
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.qp, int) or isinstance(self.qp, bool) or not 0 <= self.qp <= 63:
            raise InputError(f"QP must be an integer in 0..63, got {self.qp!r}")

    @property
    def key(self) -> str:
        return self.label or f"qp{self.qp}"


@dataclass
class Sequence:
    """A test sequence in memory: uint8 RGB frames (T, H, W, 3) plus metadata."""

    name: str
    frames: np.ndarray
    fps: float
    sha256: str = ""

    def __post_init__(self) -> None:
        check_frames(self.frames, what=f"sequence {self.name!r}")
        if not self.fps > 0:
            raise InputError(f"sequence {self.name!r}: fps must be > 0, got {self.fps!r}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


@dataclass(frozen=True)
class YuvPlanes:
    """A decoder's own output planes: 8-bit Y (T, H, W), U and V (T, H/2, W/2) or (T, H, W)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def __post_init__(self) -> None:
        for name, a in (("y", self.y), ("u", self.u), ("v", self.v)):
            if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3:
                raise InputError(f"YuvPlanes.{name}: expected uint8 (T, H, W), got "
                                 f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
        t, h, w = self.y.shape
        if self.u.shape != self.v.shape or self.u.shape not in ((t, h // 2, w // 2), (t, h, w)):
            raise InputError(f"YuvPlanes: chroma {self.u.shape}/{self.v.shape} fits neither 4:2:0 nor 4:4:4 "
                             f"of luma {self.y.shape}")

    @property
    def chroma(self) -> str:
        """"420" or "444"."""
        return "444" if self.u.shape == self.y.shape else "420"

    @property
    def pix_fmt(self) -> str:
        return f"yuv{self.chroma}p"

    @property
    def frames(self) -> int:
        return int(self.y.shape[0])

    def tobytes(self) -> bytes:
        """Planar Y, U, V per frame: what VTM's DecoderApp -d 8 and ffmpeg's rawvideo write."""
        parts: list[bytes] = []
        for i in range(self.frames):
            parts += [np.ascontiguousarray(p[i]).tobytes() for p in (self.y, self.u, self.v)]
        return b"".join(parts)


@dataclass
class Decoded:
    """What a decoder returns: uint8 RGB frames and optional extras (e.g. vertices).

    ``planes`` holds the decoder's own YUV output when the codec has one
    (conventional anchors): ``gfvc decode -o X.yuv`` writes it bit for bit,
    and PSNR is computed on it the way VTM's log does.
    """

    frames: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    planes: YuvPlanes | None = None


@dataclass
class EncodeResult:
    """Bitstream path plus the bit breakdown and the external commands run."""

    bitstream: Path
    bits_breakdown: dict[str, int] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Environment:
    """Where things are on this machine; never part of a result's identity."""

    vtm_dir: Path | None = None
    vtm_cfg: Path | None = None
    weights_dir: Path | None = None
    timeout_s: float = 3600.0
    # torch device for models and learned metrics: "auto" | "cpu" | "cuda" | "cuda:N"
    # (resolved by gfvc.devices.resolve_device where torch work runs; the resolved device is recorded).
    device: str = "auto"
    # codec name -> checkpoint path chosen for this run (`--model CODEC=PATH`);
    # the checkpoint's sha256, not its path, is part of a result's identity.
    models: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **kw: Any) -> Environment:
        return dataclasses.replace(self, **kw)


def check_frames(frames: Any, what: str = "frames") -> None:
    """Raise InputError unless ``frames`` is uint8 (T, H, W, 3) with even H, W."""
    if not isinstance(frames, np.ndarray):
        raise InputError(f"{what}: expected a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(
            f"{what}: expected uint8 RGB frames of shape (T, H, W, 3), "
            f"got {frames.dtype} {tuple(frames.shape)}"
        )
    if frames.shape[0] < 1:
        raise InputError(f"{what}: no frames")


class Codec(abc.ABC):
    """Base class of every codec.

    Subclasses set ``name``, ``family`` and ``description`` and implement
    :meth:`encode` and :meth:`decode`. ``check`` must raise
    :class:`gfvc.errors.NotAvailable` with the fix when something is missing.
    """

    name: ClassVar[str] = ""
    family: ClassVar[Family] = "anchor"
    description: ClassVar[str] = ""
    # Name of the Decoded.extras entry holding body vertices (T, 10475, 2) in the convention of
    # gfvc/vertices.py, or None. A codec that sets it gets the vertex metrics (metrics/vertices.py)
    # against the sequence's reference vertices; others are reported "not applicable".
    vertex_extra: ClassVar[str | None] = None

    def __init__(self, condition: Condition, env: Environment | None = None) -> None:
        self.condition = condition
        self.env = env or Environment()
        self.variant_name: str | None = None
        self.variant_spec: Any = None

    def set_variant(self, name: str, spec: Any) -> None:
        """Run as the condition's variant ``name`` (gfvc.factory): recorded in provenance, so in the key."""
        self.variant_name, self.variant_spec = name, spec

    @property
    def label(self) -> str:
        """The name results carry: the variant's name, else the codec's."""
        return self.variant_name or self.name

    def stages(self) -> dict[str, Any]:
        """The pipeline stages this codec runs with (generative codecs; recorded, not part of the key)."""
        return {}

    def rate_points(self) -> list[RatePoint]:
        """Anchors take the condition's anchor QPs, generative codecs its key-frame QPs."""
        if self.family == "anchor":
            qps = self.condition.anchor.qps
        else:
            qps = self.condition.generative.key_frame_qps
        return [RatePoint(int(q)) for q in qps]

    @abc.abstractmethod
    def encode(self, sequence: Sequence, rate_point: RatePoint, workdir: Path) -> EncodeResult:
        """Code ``sequence`` into exactly one bitstream file inside ``workdir``."""

    @abc.abstractmethod
    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        """Decode a bitstream written by :meth:`encode`."""

    def check(self) -> None:
        """Raise NotAvailable (with what to do) if the codec cannot run here.

        The default finds nothing missing (codecs without binaries or weights).
        """
        return None

    def decoder_description(self) -> str:
        """The program or model that decodes (named by `gfvc decode`)."""
        return f"codec {self.name}"

    def views(self, decoded: Decoded) -> dict[str, np.ndarray]:
        """Extra videos for people to look at (e.g. vertices drawn over frames).

        The runner saves each as ``NAME.mp4`` next to the decoded viewing copy;
        they are never measured. Default: none.
        """
        return {}

    def decoder_report(self) -> dict[str, Any]:
        """Measurements of the last :meth:`decode` that are not results (default: none).

        E.g. the time a model part took and where it ran. The runner records
        numbers named ``*_s`` under the record's ``timings`` (prefixed
        ``decoder.``) and the rest under ``decoder_info``.
        """
        return {}

    def provenance(self) -> dict[str, Any]:
        """Versions, binary/checkpoint sha256 and settings that define results."""
        p: dict[str, Any] = {"codec": self.name, "family": self.family}
        if self.variant_name:
            p["variant"] = {"name": self.variant_name, "of": self.name,
                            "overrides": dataclasses.asdict(self.variant_spec)}
        return p


CODECS: Registry[type[Codec]] = Registry("codec", entry_point_group="gfvc.codecs")


def load_builtin_codecs() -> None:
    """Register every codec: the installed ``gfvc.codecs`` entry points, then the modules in $GFVC_PLUGINS.

    The suite's own codecs (anchors, keyframe-repeat, s2d, the baselines) are entry points of this
    distribution (pyproject.toml), found exactly as a third-party plug-in is, so the codec library
    names no package above it. ``GFVC_PLUGINS`` is a comma-separated list of importable modules that
    register codecs by decorator (for quick experiments; packages should use the entry-point group).
    """
    CODECS.load_entry_points()
    for mod in (m.strip() for m in os.environ.get("GFVC_PLUGINS", "").split(",")):
        if mod:
            importlib.import_module(mod)


def get_codec(name: str) -> type[Codec]:
    load_builtin_codecs()
    return CODECS.get(name)
