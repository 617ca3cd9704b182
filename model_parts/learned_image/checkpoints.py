"""CompressAI's released cheng2020-attn checkpoints: where they come from, how they are found and verified.

CompressAI publishes one file per quality 1..6 and training metric (``mse``,
``ms-ssim``) at ``https://compressai.s3.amazonaws.com/models/v1/`` (file names
from ``compressai/zoo/image.py`` ``model_urls``, unchanged from v1.2.4 to
v1.2.8). Each name ends in the first 8 hex digits of the file's sha256 (the
torch.hub convention); CompressAI publishes no full digest and no size, so
the pin here is that **sha256 prefix as published by CompressAI**, and the
full sha256 of the file actually used goes into the provenance.

Lookup, first found decides (a wrong file is refused, never skipped):
``weights_dir/<file>``, ``weights_dir/cheng2020/<file>``, the torch hub cache
``$TORCH_HOME/hub/checkpoints/<file>`` (where CompressAI's own
``pretrained=True`` puts it, so a machine that ran CompressAI already has
them), ``$GFVC_MODELS_DIR/cheng2020/<file>``. A file found nowhere is
downloaded into the hub cache by the suite's one verified downloader
(:func:`metrics.weights.download_verified`: progress bar, atomic, checked
before use), unless ``GFVC_OFFLINE=1``; ``GFVC_WEIGHTS_MIRROR=URL`` replaces
the host by a mirror (file name appended).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gfvc.errors import InputError, WeightsError
from gfvc.models import file_sha256, models_dir
from metrics.weights import CONNECT_TIMEOUT_S, download_verified, hub_dir, mirror, offline
from model_parts.learned_image.spec import METRICS, QUALITIES, channels_for_quality

ROOT_URL = "https://compressai.s3.amazonaws.com/models/v1"
SUBDIR = "cheng2020"
HASH_SOURCE = ("sha256 prefix as published by CompressAI (8 hex digits in the file name, torch.hub convention; "
               "compressai/zoo/image.py model_urls, v1.2.4-v1.2.8); no full digest or size is published")

# (metric, quality) -> sha256 prefix in CompressAI's file name
_PREFIXES: dict[tuple[str, int], str] = {
    ("mse", 1): "465f2b64", ("mse", 2): "e0805385", ("mse", 3): "2d07bbdf",
    ("mse", 4): "f7b0ccf2", ("mse", 5): "26c8920e", ("mse", 6): "730501f2",
    ("ms-ssim", 1): "c5381d91", ("ms-ssim", 2): "5dad201d", ("ms-ssim", 3): "5c9be841",
    ("ms-ssim", 4): "8b2f647e", ("ms-ssim", 5): "5ca1f34c", ("ms-ssim", 6): "216423ec",
}


@dataclass(frozen=True)
class OfficialWeights:
    """One released checkpoint of cheng2020-attn."""

    quality: int
    metric: str
    sha256_prefix: str

    @property
    def name(self) -> str:
        return f"cheng2020-attn-{self.metric}-{self.quality}"

    @property
    def filename(self) -> str:
        return f"cheng2020_attn-{self.metric}-{self.quality}-{self.sha256_prefix}.pth.tar"

    @property
    def url(self) -> str:
        return f"{ROOT_URL}/{self.filename}"

    @property
    def channels(self) -> int:
        return channels_for_quality(self.quality)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "quality": self.quality, "metric": self.metric, "N": self.channels,
                "file": self.filename, "url": self.url, "sha256_prefix": self.sha256_prefix,
                "hash_source": HASH_SOURCE}


REGISTRY: dict[tuple[str, int], OfficialWeights] = {k: OfficialWeights(k[1], k[0], v) for k, v in _PREFIXES.items()}


def official(quality: int, metric: str = "mse") -> OfficialWeights:
    """The registry entry of (quality, metric); InputError naming the valid values otherwise."""
    if metric not in METRICS:
        raise InputError(f"cheng2020-attn metric must be one of {list(METRICS)}, got {metric!r}")
    if quality not in QUALITIES:
        raise InputError(f"cheng2020-attn quality must be one of {list(QUALITIES)}, got {quality!r}")
    return REGISTRY[(metric, quality)]


def candidates(entry: OfficialWeights, weights_dir: Path | None = None) -> list[Path]:
    """Where the file is looked for, in order (see module docstring)."""
    out: list[Path] = []
    if weights_dir is not None:
        out += [Path(weights_dir) / entry.filename, Path(weights_dir) / SUBDIR / entry.filename]
    out += [hub_dir() / entry.filename, models_dir() / SUBDIR / entry.filename]
    return out


def verify(entry: OfficialWeights, path: Path) -> str:
    """'' if ``path``'s sha256 starts with the published prefix, else why not."""
    digest = file_sha256(Path(path))
    if not digest.startswith(entry.sha256_prefix):
        return f"sha256 {digest} does not start with {entry.sha256_prefix} ({HASH_SOURCE})"
    return ""


def fix_text(entry: OfficialWeights) -> str:
    return (f"fix: download {entry.url} into {hub_dir()}/ (or --weights-dir), or allow the suite to fetch it "
            f"(unset GFVC_OFFLINE; GFVC_WEIGHTS_MIRROR=URL for a mirror)")


def locate(quality: int, metric: str = "mse", weights_dir: Path | None = None, *,
           fetch: bool | None = None) -> tuple[Path, str]:
    """(path, full sha256) of the verified official file, downloading it when allowed; WeightsError otherwise.

    ``fetch`` None follows ``GFVC_OFFLINE``; True/False force it.
    """
    entry = official(quality, metric)
    places = candidates(entry, weights_dir)
    for p in places:
        if p.is_file():
            why = verify(entry, p)
            if why:
                raise WeightsError(f"{entry.name} weights {p} are refused: {why}; {fix_text(entry)}")
            return p, file_sha256(p)
    allowed = (not offline()) if fetch is None else fetch
    if not allowed:
        raise WeightsError(f"{entry.name} weights {entry.filename} not found (looked in "
                           f"{', '.join(str(p.parent) for p in places)}; downloads disabled by GFVC_OFFLINE); "
                           f"{fix_text(entry)}")
    target = hub_dir() / entry.filename
    urls = [f"{mirror().rstrip('/')}/{entry.filename}"] if mirror() else [entry.url]
    try:
        download_verified(urls, target, lambda p: verify(entry, p), timeout=CONNECT_TIMEOUT_S,
                          what=f"cheng2020-attn {entry.metric} quality {entry.quality}")
    except WeightsError as e:
        raise WeightsError(f"{e}; {fix_text(entry)}") from None
    return target, file_sha256(target)


def status(weights_dir: Path | None = None) -> list[dict[str, object]]:
    """One row per released checkpoint: where it is and whether it verifies (never raises for a bad file)."""
    rows = []
    for entry in REGISTRY.values():
        row: dict[str, object] = {**entry.to_dict(), "path": None, "state": "missing"}
        for p in candidates(entry, weights_dir):
            if p.is_file():
                why = verify(entry, p)
                row.update(path=str(p), state="mismatch" if why else "verified", reason=why or "sha256 prefix matches")
                break
        rows.append(row)
    return rows
