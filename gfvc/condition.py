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


# Added after conditions were first fingerprinted: left out of the fingerprint while they hold their
# default, so a condition written before (and its records' keys) keeps its identity.
OMIT_DEFAULT = {"omit_default_from_fingerprint": True}


@dataclass(frozen=True)
class KeyFramePolicySpec:
    """Where key frames go (the key-frame policy stage; docs/conditions.md).

    ``single``: frame 0 only (the CTC). ``period``: every ``period`` frames, like the AhG software's
    ``gop_size``. ``adaptive``: the encoder decodes as it goes and codes a frame as a new key frame when
    the quality of its animated prediction falls below ``threshold`` (for a lower-is-better measure:
    rises above it), as the AhG software's DAC does; ``average: running`` compares the running mean of
    the animated frames' quality since the start of the sequence (DAC's AverageMeter, never reset),
    ``frame`` the frame's own quality. ``max_interval`` > 0 also forces a key frame that many frames
    after the last one. ``relative_to_key: true`` (the suite's option, not DAC's) compares with the
    quality of the decoded key frame in force minus ``threshold`` (a drop, e.g. 1.5 dB), the running mean
    restarting at every key frame, so one threshold suits every key-frame QP.
    YAML: ``single``, ``{period: 8}`` or ``{adaptive: {measure: psnr, threshold: 30}}``.
    """

    kind: str = "single"
    period: int = 0
    measure: str = "psnr"
    threshold: float = 0.0
    average: Literal["running", "frame"] = "running"
    max_interval: int = 0
    relative_to_key: bool = False

    @classmethod
    def from_yaml(cls, value: Any, file: str, key: str) -> KeyFramePolicySpec:
        """The three YAML forms (a name, ``{period: N}``, ``{NAME: {options}}``) or the full mapping."""
        if isinstance(value, str):
            return cls(kind=value)
        if isinstance(value, dict) and len(value) == 1 and "kind" not in value:
            (kind, opts), = value.items()
            if kind == "period":
                return build_dataclass(cls, {"kind": "period", "period": opts}, file, key + ".")
            if opts is None:
                opts = {}
            if not isinstance(opts, dict):
                raise ConfigError(f"{file}: key {key}.{kind!r}: expected a mapping of options, got {opts!r}")
            return build_dataclass(cls, {"kind": kind, **opts}, file, key + ".")
        if isinstance(value, dict):
            return build_dataclass(cls, value, file, key + ".")
        raise ConfigError(f"{file}: key {key!r}: expected `single`, `{{period: N}}` or "
                          f"`{{adaptive: {{measure: psnr, threshold: 30}}}}`, got {value!r}")

    def validate(self, where: str) -> None:
        if self.kind == "period" and self.period < 1:
            raise ConfigError(f"{where}: key_frame_policy period must be >= 1, got {self.period}")
        if self.kind != "period" and self.period:
            raise ConfigError(f"{where}: key_frame_policy {self.kind!r} takes no period (use {{period: N}})")
        if self.max_interval < 0:
            raise ConfigError(f"{where}: key_frame_policy max_interval must be >= 0 (0 = none)")

    def describe(self) -> str:
        if self.kind == "single":
            return "single key frame"
        if self.kind == "period":
            return f"a key frame every {self.period} frames"
        if self.kind == "adaptive":
            extra = f", at most {self.max_interval} frames apart" if self.max_interval else ""
            ref = (f"key frame's {self.measure} minus {self.threshold:g}" if self.relative_to_key
                   else f"threshold {self.threshold:g}")
            return f"adaptive key frames ({self.average} {self.measure} vs {ref}{extra})"
        return self.kind


@dataclass(frozen=True)
class GenerativeSpec:
    """Shared settings of generative codecs: the stages of their pipeline.

    ``key_frame_coder`` and ``feature_coder`` name registered stages (gfvc.stages.KEY_FRAME_CODERS,
    gfvc.entropy.FEATURE_CODERS; plug-ins add theirs through entry points); they are checked when a
    codec is built. ``key_frame_qps`` are the rate points: a QP for VVC intra, a quality index for a
    learned image codec.
    """

    key_frame_qps: tuple[int, ...] = (22, 32, 42, 52)
    key_frame_coder: str = "vvenc"
    key_frame_chroma: Literal["420", "444"] = "420"
    feature_coder: str = "cabac"
    key_frame_policy: KeyFramePolicySpec = field(default_factory=KeyFramePolicySpec, metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class VariantSpec:
    """A codec run with other stage choices under its own name (``variants:`` section).

    ``codec`` is the registered codec it is based on; every other key overrides that stage of the
    condition's ``generative`` section for this variant only (docs/conditions.md). The report compares
    each variant with its base codec when both ran.
    """

    codec: str
    description: str = ""
    key_frame_policy: KeyFramePolicySpec | None = None
    key_frame_coder: str | None = None
    key_frame_chroma: Literal["420", "444"] | None = None
    key_frame_qps: tuple[int, ...] | None = None
    feature_coder: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The ``generative`` fields this variant changes."""
        return {k: getattr(self, k) for k in ("key_frame_policy", "key_frame_coder", "key_frame_chroma",
                                              "key_frame_qps", "feature_coder") if getattr(self, k) is not None}


@dataclass(frozen=True)
class ExternalCodecSpec:
    """A codec defined by its programs (``external:`` section; docs/adding-a-codec.md).

    ``encode`` and ``decode`` are argv templates (lists, never a shell string) whose ``{name}``
    placeholders the suite fills: ``{input}`` (the sequence in ``input_format``), ``{bitstream}`` (the
    file or folder the encoder writes, whose size is the rate), ``{output}`` (the decoded video the
    decoder writes, in ``output_format``), ``{rate}`` / ``{qp}`` (the rate point's value),
    ``{width}``, ``{height}``, ``{frames}``, ``{fps}``, ``{workdir}`` (the job's folder) and
    ``{config_dir}`` (the folder of the condition's YAML). ``bitstream: folder`` makes ``{bitstream}``
    a folder: every file in it is counted.
    """

    encode: tuple[str, ...]
    decode: tuple[str, ...]
    rate_points: tuple[int, ...]
    input_format: Literal["rgb24", "yuv420p"] = "yuv420p"
    output_format: Literal["rgb24", "yuv420p"] | None = None
    bitstream: Literal["file", "folder"] = "file"
    family: Literal["generative", "anchor"] = "generative"
    timeout_s: float = 3600.0
    programs: tuple[str, ...] = ()
    description: str = ""


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
# ``variants`` and ``external`` define the results of their own codecs only: their definitions are in
# those codecs' provenance, so in the keys of their jobs; adding one to a condition keeps every other
# job's result (and a run folder) valid.
NON_RESULT_FIELDS = ("execution", "models", "variants", "external")


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
    variants: dict[str, VariantSpec] = field(default_factory=dict, hash=False, metadata=OMIT_DEFAULT)
    external: dict[str, ExternalCodecSpec] = field(default_factory=dict, hash=False, metadata=OMIT_DEFAULT)
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
        d = _without_defaults(self, self.to_dict())
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
        d["source"] = self.source  # relative paths (the manifest) stay relative to the same YAML file
        return build_dataclass(Condition, d, self.source or "<overrides>", "")

    def _validate_variants(self, where: str) -> None:
        for name, v in self.variants.items():
            if name in self.external:
                raise ConfigError(f"{where}: {name!r} is both a variant and an external codec")
            if v.codec == name:
                raise ConfigError(f"{where}: variants.{name}: a variant needs its own name (not {v.codec!r})")
            if v.codec in self.variants or v.codec in self.external:
                raise ConfigError(f"{where}: variants.{name}.codec must be a registered codec, not the "
                                  f"{'variant' if v.codec in self.variants else 'external codec'} {v.codec!r}")
            if not v.overrides():
                raise ConfigError(f"{where}: variants.{name} changes nothing: give key_frame_policy, "
                                  "key_frame_coder, key_frame_chroma, key_frame_qps or feature_coder")
            if v.key_frame_policy is not None:
                v.key_frame_policy.validate(f"{where}: variants.{name}")
            if v.key_frame_qps is not None:
                _check_qps(where, f"variants.{name}.key_frame_qps", v.key_frame_qps)

    def _validate_external(self, where: str) -> None:
        for name, x in self.external.items():
            for key, argv, need in (("encode", x.encode, {"input", "bitstream"}),
                                    ("decode", x.decode, {"bitstream", "output"})):
                if not argv:
                    raise ConfigError(f"{where}: external.{name}.{key}: empty command")
                try:
                    used = _placeholders(argv)
                except ConfigError as e:
                    raise ConfigError(f"{where}: external.{name}.{key}: {e}") from None
                unknown = sorted(used - set(PLACEHOLDERS))
                if unknown:
                    raise ConfigError(f"{where}: external.{name}.{key}: unknown placeholder {{{unknown[0]}}} "
                                      f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
                missing = sorted(need - used)
                if missing:
                    raise ConfigError(f"{where}: external.{name}.{key} must use {{{missing[0]}}} (where the "
                                      f"suite puts {'the input' if missing[0] == 'input' else missing[0]})")
            _check_qps(where, f"external.{name}.rate_points", x.rate_points)
            if not x.timeout_s > 0:
                raise ConfigError(f"{where}: external.{name}.timeout_s must be > 0")

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
        self.generative.key_frame_policy.validate(f"{where}: generative")
        self._validate_variants(where)
        self._validate_external(where)
        for codec, spec in self.models.items():
            if not spec.path and not spec.sha256:
                raise ConfigError(f"{where}: models.{codec}: give a path (and optionally sha256, config)")
            if spec.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", spec.sha256):
                raise ConfigError(f"{where}: models.{codec}.sha256: expected 64 hex digits, got {spec.sha256!r}")


PLACEHOLDERS = ("input", "bitstream", "output", "rate", "qp", "width", "height", "frames", "fps", "workdir",
                "config_dir")


def _placeholders(argv: tuple[str, ...]) -> set[str]:
    """The ``{name}`` placeholders of an argv template (``{{`` and ``}}`` are literal braces)."""
    import string  # noqa: PLC0415 - stdlib, tiny

    out: set[str] = set()
    for a in argv:
        try:
            out |= {f for _, f, _, _ in string.Formatter().parse(a) if f is not None}
        except ValueError as e:
            raise ConfigError(f"argument {a!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    return out


def _without_defaults(obj: Any, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (obj's asdict) without the OMIT_DEFAULT fields that hold their default, at any depth."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("omit_default_from_fingerprint"):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if value == default:
                d.pop(f.name, None)
                continue
        if dataclasses.is_dataclass(value) and isinstance(d.get(f.name), dict):
            d[f.name] = _without_defaults(value, d[f.name])
    return d


def _check_qps(where: str, key: str, qps: tuple[int, ...]) -> None:
    if not qps:
        raise ConfigError(f"{where}: {key} is empty")
    for q in qps:
        if not 0 <= q <= 63:
            raise ConfigError(f"{where}: {key}: value {q} outside 0..63")


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
    if dataclasses.is_dataclass(tp) and hasattr(tp, "from_yaml"):
        return tp.from_yaml(value, file, key)
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
