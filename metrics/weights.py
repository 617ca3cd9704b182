"""Weight registry: every file a metric needs, with name, sha256, size and source.

Why: learned metrics silently give meaningless numbers when a trunk is random,
truncated or a different release (CTC_FACTS section 4 traps). So every file is
found in a fixed order and verified by size and sha256 *before* use; a
mismatch is refused with a :class:`~gfvc.errors.WeightsError` that names the
file, the expected and actual hash and where to get it.

Lookup order for downloadable files: ``--weights-dir`` (``weights_dir``), then
``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``,
the place torchvision itself reads). Package-shipped files (LPIPS linear
layers, DISTS alpha/beta) are looked up in ``weights_dir`` first, then in the
installed package folder (never ``sys.prefix``, the DISTS package's trap).
The first file found decides: a wrong file is an error, not skipped.

Downloading (like torchvision and lpips, but verified): the first use of a
hub file that is found nowhere downloads it into the hub cache with a
progress bar, checks size and sha256 while streaming, and refuses (deleting
the file) on a mismatch. ``GFVC_OFFLINE=1`` (or ``--offline``) turns this
off; ``GFVC_WEIGHTS_MIRROR=URL`` replaces the source hosts by one base URL
(the file name is appended), for proxies and air-gapped mirrors. Hosts that
do not answer fail fast (short DNS/connect timeouts) with one reason, "could
not download NAME (offline?)", remembered for the rest of the process (and
passed to a run's workers through ``GFVC_WEIGHTS_FAILED``) so a run says it
once and never waits on the network again.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gfvc.download import (  # noqa: F401  (re-exported: the metric weights' public names)
    CONNECT_TIMEOUT_S,
    MIRROR_ENV,
    OFFLINE_ENV,
    download_verified,
    mirror,
    offline,
    sha256_of,
)
from gfvc.errors import WeightsError
from gfvc.fileio import atomic_copy, check_output_dir

Kind = Literal["hub", "package"]


@dataclass(frozen=True)
class WeightFile:
    """One registered weight file."""

    name: str
    sha256: str
    size: int
    urls: tuple[str, ...]
    kind: Kind
    used_by: tuple[str, ...]
    package: str | None = None  # for kind == "package": importable package name
    package_path: str | None = None  # path inside the package folder
    md5: str | None = None  # published md5 where that is what upstream states
    hash_source: str = ""  # where the sha256 comes from (honesty about provenance)


# Hash provenance:
#  * torchvision trunks: file names carry the first 8 hex digits of the sha256;
#    the full digests and sizes below agree across several independent public
#    manifests that pin these exact files.
#  * package files: sha256 computed from the files shipped in lpips 0.1.4 and
#    DISTS-pytorch 0.1 whose md5 equals the published md5 (d507d734..., f91de6bc...).
#  * I3D: sha256 and size from the Git-LFS pointers of the Open-Sora-Plan v1.0.0
#    Hugging Face mirror (the original authors publish no hash).
REGISTRY: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="vgg16-397923af.pth",
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            size=553433881,
            urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
            kind="hub",
            used_by=("dists", "lpips:vgg"),
            hash_source="torchvision file-name prefix + public manifests",
        ),
        WeightFile(
            name="vgg19-dcbb9e9d.pth",
            sha256="dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
            size=574673361,
            urls=("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",),
            kind="hub",
            used_by=("s2d:perceptual-loss",),
            hash_source="torchvision file-name prefix + one public manifest",
        ),
        WeightFile(
            name="alexnet-owt-7be5be79.pth",
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            size=244408911,
            urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
            kind="hub",
            used_by=("lpips:alex",),
            hash_source="torchvision file-name prefix + public manifests",
        ),
        WeightFile(
            name="lpips-v0.1-vgg.pth",
            sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            size=7289,
            urls=("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",),
            kind="package",
            used_by=("lpips:vgg",),
            package="lpips",
            package_path="weights/v0.1/vgg.pth",
            md5="d507d7349b931f0638a25a48a722f98a",
            hash_source="lpips 0.1.4 wheel (md5 matches published d507d734...)",
        ),
        WeightFile(
            name="lpips-v0.1-alex.pth",
            sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            size=6009,
            urls=("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",),
            kind="package",
            used_by=("lpips:alex",),
            package="lpips",
            package_path="weights/v0.1/alex.pth",
            md5="9642209e2b57a85d20f86d812320f9e6",
            hash_source="lpips 0.1.4 wheel",
        ),
        WeightFile(
            name="dists-weights.pt",
            sha256="f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
            size=12288,
            urls=("https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt",),
            kind="package",
            used_by=("dists",),
            package="DISTS_pytorch",
            package_path="weights.pt",
            md5="f91de6bc7707bf4b55a480ac933a7e21",
            hash_source="DISTS-pytorch 0.1 wheel (md5 matches published f91de6bc...)",
        ),
        WeightFile(
            name="i3d_torchscript.pt",
            sha256="bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2",
            size=51235320,
            urls=(
                "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
                "https://huggingface.co/spaces/LanguageBind/Open-Sora-Plan-v1.0.0/resolve/"
                "810fa8c4bdb3a4c8eec9bd57375c29bde6fb46de/opensora/eval/fvd/styleganv/i3d_torchscript.pt",
            ),
            kind="hub",
            used_by=("fvd",),
            hash_source="Git-LFS pointer, Open-Sora-Plan v1.0.0 mirror",
        ),
        WeightFile(
            name="i3d_pretrained_400.pt",
            sha256="55095f049e706479d48e221adcdb145b2b9dc930ba28b081ed72367ffaa32343",
            size=50939526,
            urls=(
                "https://huggingface.co/spaces/LanguageBind/Open-Sora-Plan-v1.0.0/resolve/"
                "810fa8c4bdb3a4c8eec9bd57375c29bde6fb46de/opensora/eval/fvd/videogpt/i3d_pretrained_400.pt",
            ),
            kind="hub",
            used_by=("fvd",),
            hash_source="Git-LFS pointer, Open-Sora-Plan v1.0.0 mirror",
        ),
    )
}

# Files a metric needs; for FVD any one detector suffices (first found wins).
PERCEPTUAL_FILES: dict[str, tuple[str, ...]] = {
    "dists": ("vgg16-397923af.pth", "dists-weights.pt"),
    "lpips:vgg": ("vgg16-397923af.pth", "lpips-v0.1-vgg.pth"),
    "lpips:alex": ("alexnet-owt-7be5be79.pth", "lpips-v0.1-alex.pth"),
}
FVD_DETECTORS: tuple[str, ...] = ("i3d_torchscript.pt", "i3d_pretrained_400.pt")


@dataclass
class WeightStatus:
    """Where a registered file was found and whether it verified."""

    name: str
    path: Path | None
    where: str  # "weights-dir" | "hub" | "package" | "missing"
    verified: bool
    reason: str
    sha256_expected: str
    used_by: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.verified

    def __str__(self) -> str:  # one line for `gfvc doctor`
        state = "verified" if self.verified else f"NOT USABLE ({self.reason})"
        at = f" at {self.path}" if self.path else ""
        return f"{self.name} [{', '.join(self.used_by)}]: {self.where}{at}: {state}"


def torch_home() -> Path:
    """$TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch (torch.hub's rule)."""
    env = os.environ.get("TORCH_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "torch"


def hub_dir() -> Path:
    """The torch hub checkpoint folder, where torchvision also looks."""
    return torch_home() / "hub" / "checkpoints"


def _package_file(w: WeightFile) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(w.package or "")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / (w.package_path or w.name)


def _basename(w: WeightFile) -> str:
    """File name on disk inside a weights dir (package files keep their registry name)."""
    return w.name


def candidates(name: str, weights_dir: Path | None = None) -> list[tuple[str, Path]]:
    """Locations searched for ``name``, in order."""
    w = get(name)
    out: list[tuple[str, Path]] = []
    if weights_dir is not None:
        out.append(("weights-dir", Path(weights_dir) / _basename(w)))
    if w.kind == "hub":
        out.append(("hub", hub_dir() / w.name))
    else:
        p = _package_file(w)
        if p is not None:
            out.append(("package", p))
    return out


def get(name: str) -> WeightFile:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown weight file {name!r} (registered: {', '.join(REGISTRY)})") from None


FAILED_ENV = "GFVC_WEIGHTS_FAILED"  # JSON {file: reason}: downloads a run already found impossible



def source_urls(w: WeightFile) -> list[str]:
    """Where a file is downloaded from: the mirror (base URL + file name) when set, else its sources."""
    m = mirror()
    if m:
        return [m.rstrip("/") + "/" + urllib.parse.quote(w.name)]
    return list(w.urls)


_FAILED: dict[str, str] = {}


def failed_downloads() -> dict[str, str]:
    """Files whose download failed in this process or in the run that started it: {file: reason}."""
    out: dict[str, str] = {}
    raw = os.environ.get(FAILED_ENV, "")
    if raw:
        try:
            data = json.loads(raw)
            if isinstance(data, dict):
                out.update({str(k): str(v) for k, v in data.items()})
        except ValueError:
            pass
    out.update(_FAILED)
    return out


FETCH_FIX = ("fix: `gfvc weights fetch` where there is internet (or GFVC_WEIGHTS_MIRROR=URL), then "
             "`gfvc weights install DIR` here; `gfvc weights status` lists the files")


def how_to_get(w: WeightFile) -> str:
    if w.kind == "package":
        return (f"reinstall the '{w.package}' package (it ships {w.package_path}) or download {w.urls[0]} "
                f"and put it in --weights-dir as {w.name}")
    return (f"run `gfvc weights fetch {w.name}` on a machine with internet (or download {source_urls(w)[0]}), "
            f"then `gfvc weights install DIR` or copy it to {hub_dir() / w.name}")


def verify_file(w: WeightFile, path: Path) -> str:
    """Return '' if ``path`` is the registered file, else why not."""
    size = path.stat().st_size
    if size != w.size:
        return f"size {size} bytes, expected {w.size}"
    actual = sha256_of(path)
    if actual != w.sha256:
        return f"sha256 {actual}, expected {w.sha256}"
    return ""


def check(name: str, weights_dir: Path | None = None) -> WeightStatus:
    """Status of one file (never raises for a missing/bad file)."""
    w = get(name)
    for where, p in candidates(name, weights_dir):
        if p.is_file():
            why = verify_file(w, p)
            return WeightStatus(w.name, p, where, not why, why or "verified", w.sha256, w.used_by)
    return WeightStatus(w.name, None, "missing", False, "not found in " + ", ".join(
        str(p) for _, p in candidates(name, weights_dir)), w.sha256, w.used_by)


def locate(name: str, weights_dir: Path | None = None, *, fetch: bool | None = None) -> Path:
    """Path of the verified file, else WeightsError naming file, hashes and source.

    A hub file found nowhere is downloaded into the hub cache first, unless
    ``fetch`` is False or (``fetch`` None) GFVC_OFFLINE is set. A file that is
    present but wrong is refused, never replaced silently.
    """
    st = check(name, weights_dir)
    w = get(name)
    if st.verified and st.path is not None:
        return st.path
    if st.path is None:
        allowed = (not offline()) if fetch is None else fetch
        if w.kind == "hub" and allowed:
            known = failed_downloads().get(w.name)
            if known:
                raise WeightsError(known)
            try:
                return download(w, hub_dir())
            except WeightsError as e:
                _FAILED[w.name] = str(e)
                raise
        if w.kind == "hub":
            why = "download disabled (GFVC_OFFLINE=1 / --offline)" if offline() else "not found"
            raise WeightsError(f"weight file {w.name} (sha256 {w.sha256[:16]}...) is missing: {why}; {FETCH_FIX}")
        raise WeightsError(f"weight file {w.name} (sha256 {w.sha256}) is missing: {st.reason}; {how_to_get(w)}")
    raise WeightsError(f"weight file {w.name} at {st.path} is refused: {st.reason}; {how_to_get(w)}")


def status(weights_dir: Path | None = None) -> list[WeightStatus]:
    """One row per registered file, for `gfvc weights status` and `gfvc doctor`."""
    return [check(n, weights_dir) for n in REGISTRY]


def install(src_dir: Path, dest: Path | None = None) -> list[WeightStatus]:
    """Copy every registered file found in ``src_dir`` into the hub cache after verifying it.

    Package files are verified but not copied (they are read from the package).
    A file with the right name but wrong hash is reported and not copied.
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise WeightsError(f"{src_dir}: not a directory")
    dest = Path(dest) if dest is not None else hub_dir()
    out: list[WeightStatus] = []
    for w in REGISTRY.values():
        names = {w.name} | ({Path(w.package_path).name} if w.package_path else set())
        src = next((src_dir / n for n in sorted(names) if (src_dir / n).is_file()), None)
        if src is None:
            continue
        if w.kind == "package" and src.name != w.name:
            # 'vgg.pth' is ambiguous across packages; only accept the registry name for copies.
            why = verify_file(w, src)
            out.append(WeightStatus(w.name, src, "source", not why, why or "verified (package file, not copied)",
                                    w.sha256, w.used_by))
            continue
        why = verify_file(w, src)
        if why:
            out.append(WeightStatus(w.name, src, "source", False, f"not installed: {why}", w.sha256, w.used_by))
            continue
        if w.kind == "package":
            out.append(WeightStatus(w.name, src, "source", True, "verified (package file, not copied)",
                                    w.sha256, w.used_by))
            continue

        check_output_dir(dest, what="weights folder")
        target = dest / w.name
        atomic_copy(src, target)
        out.append(WeightStatus(w.name, target, "hub", True, f"installed from {src}", w.sha256, w.used_by))
    return out


def fetch(names: list[str] | None = None, dest: Path | None = None,
          timeout: float = CONNECT_TIMEOUT_S) -> list[WeightStatus]:
    """`gfvc weights fetch`: download hub files (from the mirror if set) into the hub cache, verified.

    Files already verified in the hub cache are kept. Network failures raise
    WeightsError with the URL and the reason (never a traceback or a partial file).
    """
    dest = Path(dest) if dest is not None else hub_dir()
    wanted = names or [n for n, w in REGISTRY.items() if w.kind == "hub"]
    out: list[WeightStatus] = []
    for n in wanted:
        w = get(n)
        if w.kind != "hub":
            out.append(check(n))
            continue
        have = dest / w.name
        if have.is_file() and not verify_file(w, have):
            out.append(WeightStatus(w.name, have, "hub", True, "verified (already there)", w.sha256, w.used_by))
            continue
        path = download(w, dest, timeout=timeout)
        out.append(WeightStatus(w.name, path, "hub", True, "downloaded and verified", w.sha256, w.used_by))
    return out


# --- downloading ---------------------------------------------------------------------------------

def download(w: WeightFile, dest: Path, *, timeout: float = CONNECT_TIMEOUT_S, progress: bool = True) -> Path:
    """Download ``w`` into ``dest`` (mirror-aware, sha256 checked before the file is used)."""
    check_output_dir(dest, what="weights folder")
    target = Path(dest) / w.name
    try:
        download_verified(source_urls(w), target, lambda p: verify_file(w, p), timeout=timeout, size=w.size,
                          what=f"used by {', '.join(w.used_by)}", progress=progress)
    except WeightsError as e:
        raise WeightsError(f"{e}; expected sha256 {w.sha256}; {FETCH_FIX}") from None
    return target
