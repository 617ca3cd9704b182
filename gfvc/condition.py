"""The typed model of a test condition: what every codec and stage receives.

A condition is data (versioned YAML files and their loader live in :mod:`test_conditions`); this
module is its typed, validated form. It sits in the codec library because the codec contract takes a
condition (:class:`gfvc.codec.Codec`), so a plug-in needs these types without the suite's data.
The ``fingerprint`` (sha256 of the canonical JSON of everything that defines results) is part of every
result's identity.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gfvc.errors import ConfigError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ColourSpec:
    """RGB <-> YUV conversion used for coding (CTC_FACTS section 2)."""

    matrix: Literal["bt601", "bt709"] = "bt601"
    range: Literal["limited", "full"] = "limited"
    chroma: Literal["420", "444"] = "420"
    chroma_downsampling: Literal["topleft", "average"] = "topleft"
    chroma_upsampling: Literal["nearest"] = "nearest"


@dataclass(frozen=True)
class AnchorSpec:
    """Conventional anchor: encoder and its low-delay B settings."""

    encoder: Literal["vvenc", "vtm"] = "vvenc"
    qps: tuple[int, ...] = (37, 42, 47, 52)
    gop_size: int = 8
    intra_period: int = -1
    # The GFVC software edits VTM's LDB cfg: InternalBitDepth 8 (VTM default 10)
    # and IntraQPOffset 0 (default -1). OPEN in the paper; recorded option.
    internal_bit_depth: Literal[8, 10] = 8
    intra_qp_offset: int = 0
    vvenc_preset: Literal["faster", "fast", "medium", "slow", "slower"] = "medium"
    timeout_s: float = 7200.0


@dataclass(frozen=True)
class GenerativeSpec:
    """Shared settings of generative codecs: key frame coding and feature coder."""

    key_frame_qps: tuple[int, ...] = (22, 32, 42, 52)
    key_frame_coder: Literal["vvenc", "vtm"] = "vvenc"
    key_frame_chroma: Literal["420", "444"] = "420"
    feature_coder: Literal["cabac", "gfvc-reference"] = "cabac"


@dataclass(frozen=True)
class DistsProtocol:
    resize: Literal["gfvc-avgpool", "native", "short-side-256"] = "gfvc-avgpool"


@dataclass(frozen=True)
class LpipsProtocol:
    net: Literal["vgg", "alex"] = "vgg"
    version: str = "0.1"


@dataclass(frozen=True)
class FvdProtocol:
    clip_length: int = 16
    stride: int = 16
    pooling: Literal["per-sequence", "pooled"] = "per-sequence"
    resolution: int = 224
    # The two public I3D files give different FVDs: which one is part of the protocol.
    detector: Literal["i3d_torchscript", "i3d_pretrained_400"] = "i3d_torchscript"


@dataclass(frozen=True)
class VertexSpec:
    """Protocol of the vertex metrics (metrics/vertices.py) for codecs that output body vertices.

    Errors are in pixels at the sequence resolution (``pixel_scale: sequence``);
    PCK@t counts vertices within t pixels, so thresholds depend on the resolution.
    """

    pck_thresholds_px: tuple[float, ...] = (2.0, 5.0, 10.0)
    pixel_scale: Literal["sequence"] = "sequence"


@dataclass(frozen=True)
class MetricsSpec:
    names: tuple[str, ...] = ("psnr", "ssim", "dists", "lpips", "fvd")
    frame_aggregation: Literal["mean"] = "mean"
    dists: DistsProtocol = field(default_factory=DistsProtocol)
    lpips: LpipsProtocol = field(default_factory=LpipsProtocol)
    fvd: FvdProtocol = field(default_factory=FvdProtocol)
    vertices: VertexSpec = field(default_factory=VertexSpec)


@dataclass(frozen=True)
class BdRateSpec:
    anchor: str = "vvenc"
    method: Literal["jvet", "pchip", "cubic", "akima"] = "jvet"
    aggregation: Literal["mean-of-sequences", "average-curve"] = "mean-of-sequences"
    metrics: tuple[str, ...] = ("dists", "lpips", "fvd")


@dataclass(frozen=True)
class ExecutionSpec:
    """How jobs are run; not part of the fingerprint (it never changes a result).

    job_timeout_s: wall-clock limit of one job attempt (0 = none); a job past it
    is stopped with its encoders and recorded as failed with reason "timeout".
    retries: reruns of a job that failed for a transient reason (its worker
    died, an external tool was killed by a signal), never of a deterministic error.
    ``gfvc run --job-timeout / --retries`` override both.
    """

    job_timeout_s: float = 0.0
    retries: int = 0


# Condition fields that do not define results (left out of the fingerprint).
NON_RESULT_FIELDS = ("execution", "models")


@dataclass(frozen=True)
class ModelSpec:
    """A generative codec's checkpoint under this condition (``models:`` section, docs/conditions.md).

    ``path`` is relative to the YAML file; ``sha256`` pins the file (a file
    with another hash is refused, however it was chosen); ``config`` names the
    official-config YAML for checkpoints that do not embed their configuration.
    Not part of the fingerprint: the checkpoint's sha256 is part of every job's
    key through the codec's provenance, and paths are machine-local.
    """

    path: str | None = None
    sha256: str | None = None
    config: str | None = None


@dataclass(frozen=True)
class Condition:
    """One versioned test condition."""

    name: str
    version: str
    description: str
    manifest: str
    width: int
    height: int
    frames: int
    fps: float
    bit_depth: Literal[8] = 8
    codecs: tuple[str, ...] = ("vvenc",)
    colour: ColourSpec = field(default_factory=ColourSpec)
    anchor: AnchorSpec = field(default_factory=AnchorSpec)
    generative: GenerativeSpec = field(default_factory=GenerativeSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    bdrate: BdRateSpec = field(default_factory=BdRateSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    models: dict[str, ModelSpec] = field(default_factory=dict, hash=False)
    schema: int = SCHEMA_VERSION
    source: str = ""  # file it was loaded from (not part of the fingerprint)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of everything that defines results.

        Left out: ``execution`` (how jobs run never changes a result) and
        ``models`` (which checkpoint a codec used is identified by its sha256 in
        the codec provenance, part of each job's key; its path is machine-local;
        docs/conditions.md).
        """
        d = self.to_dict()
        for k in NON_RESULT_FIELDS:
            d.pop(k, None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def manifest_path(self) -> Path:
        p = Path(self.manifest)
        if not p.is_absolute():
            # relative to the condition's YAML file; a condition built in code resolves it from the cwd
            base = Path(self.source).parent if self.source else Path.cwd()
            p = base / p
        return p

    def with_overrides(self, **kw: Any) -> Condition:
        """A copy with top-level fields replaced (validated like loaded data)."""
        d = self.to_dict()
        d.update(kw)
        # the copy keeps its file: relative manifest and models: paths, and messages, still refer to it
        return dataclasses.replace(build_dataclass(Condition, d, self.source or "<overrides>", ""),
                                   source=self.source)

    def validate(self) -> None:
        where = self.source or self.name
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ConfigError(f"{where}: width/height must be positive and even, got {self.width}x{self.height}")
        if self.frames < 1:
            raise ConfigError(f"{where}: frames must be >= 1, got {self.frames}")
        if not self.fps > 0:
            raise ConfigError(f"{where}: fps must be > 0, got {self.fps}")
        for key, qps in (("anchor.qps", self.anchor.qps), ("generative.key_frame_qps", self.generative.key_frame_qps)):
            if not qps:
                raise ConfigError(f"{where}: {key} is empty")
            for q in qps:
                if not 0 <= q <= 63:
                    raise ConfigError(f"{where}: {key}: QP {q} outside 0..63")
        if self.anchor.gop_size < 1:
            raise ConfigError(f"{where}: anchor.gop_size must be >= 1")
        if self.metrics.fvd.clip_length < 9:
            raise ConfigError(f"{where}: metrics.fvd.clip_length must be >= 9 (I3D needs 9 frames)")
        if self.metrics.fvd.stride < 1:
            raise ConfigError(f"{where}: metrics.fvd.stride must be >= 1")
        th = self.metrics.vertices.pck_thresholds_px
        if not th or any(not t > 0 for t in th) or list(th) != sorted(set(th)):
            raise ConfigError(f"{where}: metrics.vertices.pck_thresholds_px must be positive, increasing pixel "
                              f"values, got {list(th)}")
        if self.execution.job_timeout_s < 0:
            raise ConfigError(f"{where}: execution.job_timeout_s must be >= 0 (0 = no limit)")
        if self.execution.retries < 0:
            raise ConfigError(f"{where}: execution.retries must be >= 0")
        if self.colour.chroma == "444" and self.anchor.encoder == "vvenc":
            pass  # vvenc supports 4:4:4 through ffmpeg's yuv444p
        for codec, spec in self.models.items():
            if not spec.path and not spec.sha256:
                raise ConfigError(f"{where}: models.{codec}: give a path (and optionally sha256, config)")
            if spec.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", spec.sha256):
                raise ConfigError(f"{where}: models.{codec}.sha256: expected 64 hex digits, got {spec.sha256!r}")


def _type_ok(tp: Any, value: Any, file: str, key: str) -> Any:
    """Check/convert ``value`` against annotation ``tp``; raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{file}: key {key!r}: expected nothing (null), got {value!r}")
        return None
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: key {key!r}: expected a mapping, got {value!r}")
        return {str(_type_ok(args[0], k, file, key)): _type_ok(args[1], v, file, f"{key}.{k}")
                for k, v in value.items()}
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{file}: key {key!r}: {value!r} is not one of {list(args)}")
        return value
    if origin in (types.UnionType, typing.Union):
        for a in args:
            try:
                return _type_ok(a, value, file, key)
            except ConfigError:
                continue
        raise ConfigError(f"{file}: key {key!r}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{file}: key {key!r}: expected a list, got {value!r}")
        items = tuple(_type_ok(args[0], v, file, f"{key}[{i}]") for i, v in enumerate(value))
        # Every list of a condition is a set of choices (QPs, codecs, metrics): a repeat would
        # run the same job twice at once in one folder, or count a metric twice.
        dup = next((v for i, v in enumerate(items) if v in items[:i]), None)
        if dup is not None:
            raise ConfigError(f"{file}: key {key!r}: {dup!r} is listed twice in {list(value)!r}")
        return items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: key {key!r}: expected a mapping, got {value!r}")
        return build_dataclass(tp, value, file, key + ".")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{file}: key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{file}: key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{file}: key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls: Any, data: dict[str, Any], file: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{file}: unknown key '{prefix}{unknown[0]}' "
                          f"(allowed: {', '.join(sorted(names - {'source'}))})")
    kwargs = {k: _type_ok(hints[k], v, file, prefix + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # missing required keys
        raise ConfigError(f"{file}: {prefix or 'condition'}: {e}") from None
    return obj
