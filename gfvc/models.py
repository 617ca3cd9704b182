"""Which checkpoint a generative codec uses in a run, and the registry of known public checkpoints.

Choice (first found wins, the same for every generative codec):

1. ``--model CODEC=PATH`` on the command line (``Environment.models``);
   programmatic equivalent for ``s2d``: ``Environment.extra["s2d_checkpoint"]``;
2. the condition file's ``models:`` section (path relative to the YAML);
3. the codec's own environment variable where it has one (``$GFVC_S2D_CHECKPOINT``);
4. an installed registry checkpoint of the codec at the condition's resolution
   (``gfvc models install|fetch``; looked up in ``--weights-dir`` then
   :func:`models_dir`);
5. the codec's committed demo checkpoint.

A condition's ``models:`` entry may pin a sha256 and name an official-config
YAML. They describe *which* model the condition means, so they also apply
when ``--model`` only says where that file is on this machine: a file whose
sha256 differs from the pin is refused, whichever way it was chosen.

Identity: the chosen file's sha256 (never its path or how it was chosen) goes
into every record's provenance and, through the container's model checksum,
into every bitstream, so a stream decoded with another checkpoint is refused
and the same file chosen two ways gives the same job key. The ``models:``
section is therefore not part of the condition fingerprint (paths would make
results machine-dependent; the checkpoint hash is already in each job's key).

The registry (``gfvc/model_registry.json``) lists the known public
checkpoints: source, size, sha256 where a public one exists (``null`` =
unknown, said plainly), licence note and the named configuration each needs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from gfvc.codec import CODECS, load_builtin_codecs
from gfvc.download import download_verified, mirror, sha256_of
from gfvc.errors import ChecksumError, ConfigError, GfvcError, NotAvailable, UnknownName, WeightsError
from gfvc.fileio import atomic_copy

REGISTRY_FILE = Path(__file__).resolve().parent / "model_registry.json"
MODELS_DIR_ENV = "GFVC_MODELS_DIR"
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


# ----------------------------------------------------------------------------- choice

@dataclass(frozen=True)
class ModelChoice:
    """A checkpoint chosen for a codec, with where the choice came from."""

    codec: str
    path: Path
    source: str                     # "--model" | "condition" | "$ENVVAR" | "installed:NAME" | "default" | ...
    sha256: str | None = None       # pinned hash (condition or registry), enforced by verify()
    config: Path | None = None      # optional official-config YAML for files without embedded config
    env_var: str | None = None      # the codec's environment variable (for messages)
    config_name: str | None = None  # named configuration of the codec (registry entries)
    pin_source: str = ""            # who pinned sha256 (for messages)

    def verify(self) -> str:
        """sha256 of the file; ChecksumError if a pinned hash differs, NotAvailable if missing."""
        if not self.path.is_file():
            how = f"--model {self.codec}=PATH, a models: entry in the condition"
            if self.env_var:
                how += f" or ${self.env_var}"
            raise NotAvailable(f"{self.codec} checkpoint {self.path} (from {self.source}) not found: pass {how} "
                               f"(`gfvc models status` lists the known checkpoints)")
        digest = file_sha256(self.path)
        if self.sha256 and digest.lower() != self.sha256.lower():
            raise ChecksumError(f"{self.codec} checkpoint {self.path} (from {self.source}) has sha256 {digest}, but "
                                f"{self.pin_source or 'the condition'} pins {self.sha256}: wrong or modified file; "
                                "use the pinned file or update the pin")
        return digest

    def describe(self) -> dict[str, Any]:
        """Where the file is and how it was chosen (machine-local; never part of a job's identity)."""
        return {"path": str(self.path), "source": self.source,
                "config_yaml": str(self.config) if self.config else None, "config_name": self.config_name,
                "pinned_sha256": self.sha256}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per process by (path, size, mtime) (big checkpoints hash once)."""
    return sha256_of(Path(path))


def parse_model_args(values: list[str] | None, option: str = "--model", example: str = "mraa=ted384.pth",
                     value: str = "PATH") -> dict[str, str]:
    """``["mraa=/x/cpk.pth", ...]`` -> {"mraa": "/x/cpk.pth"}; ConfigError on bad syntax or repeats."""
    out: dict[str, str] = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"{option} {v!r}: expected CODEC={value}, e.g. {option} {example}")
        name = name.strip()
        if name in out:
            raise ConfigError(f"{option} {name}=... given twice")
        out[name] = path.strip()
    return out


def takes_checkpoint(codec_cls: Any) -> bool:
    """Whether a codec class chooses its checkpoint through :func:`choose` (``takes_checkpoint = True``)."""
    return bool(getattr(codec_cls, "takes_checkpoint", False))


def validate_model_names(names: list[str] | Any, what: str) -> None:
    """Every name must be a registered codec that takes a checkpoint (UnknownName / ConfigError)."""
    load_builtin_codecs()
    for name in names:
        try:
            cls = CODECS.get(name)
        except UnknownName as e:  # with suggestions; say where the name came from
            raise UnknownName(f"{what}: {e}") from None
        if not takes_checkpoint(cls):
            users = ", ".join(n for n in CODECS.names() if takes_checkpoint(CODECS.get(n)))
            raise ConfigError(f"{what}: codec {name!r} takes no checkpoint (codecs that do: {users})")


MODEL_CONFIGS_KEY = "model_configs"  # Environment.extra key of `--model-config CODEC=NAME|YAML`


def split_config(value: Any, base: Path | None = None) -> tuple[Path | None, str | None]:
    """A ``config:`` value (condition ``models:`` entry or ``--model-config``) -> (YAML path, named config).

    A value ending in .yaml/.yml or naming an existing file is an official YAML config (relative to
    ``base``); anything else is the name of one of the codec's configurations (`gfvc info CODEC`).
    """
    if not value:
        return None, None
    text = str(value)
    q = Path(text).expanduser()
    p = base / q if (base is not None and not q.is_absolute()) else q
    if q.suffix.lower() in (".yaml", ".yml") or p.is_file():
        return p, None
    return None, text


def _condition_spec(condition: Any, codec: str) -> tuple[Path | None, str | None, Path | None, str | None] | None:
    section = getattr(condition, "models", None) or {}
    spec = section.get(codec) if hasattr(section, "get") else None
    if spec is None:
        return None
    get = (lambda k: spec.get(k)) if isinstance(spec, dict) else (lambda k: getattr(spec, k, None))
    base = Path(condition.source).parent if getattr(condition, "source", "") else None

    def rel(p: Any) -> Path | None:
        if not p:
            return None
        q = Path(str(p)).expanduser()
        return base / q if (base is not None and not q.is_absolute()) else q

    cfg_path, cfg_name = split_config(get("config"), base)
    return rel(get("path")), (get("sha256") or None), cfg_path, cfg_name


def choose(codec: str, condition: Any, env: Any, default: Path | None, env_var: str | None = None,
           extra_key: str | None = None) -> ModelChoice:
    """The checkpoint ``codec`` uses under ``condition`` and ``env`` (see module docstring)."""
    spec = _condition_spec(condition, codec)
    pin, cfg, cfg_name = (spec[1], spec[2], spec[3]) if spec else (None, None, None)
    extra = getattr(env, "extra", None) or {}
    given = (extra.get(MODEL_CONFIGS_KEY) or {}).get(codec)
    if given:  # --model-config CODEC=NAME|YAML overrides the condition's config:
        cfg, cfg_name = split_config(given)
    where = getattr(condition, "source", "") or getattr(condition, "name", "condition")
    pin_source = f"the models: section of {where}" if pin else ""
    models = getattr(env, "models", None) or {}

    def made(path: Path, source: str) -> ModelChoice:
        return ModelChoice(codec, path, source, pin, cfg, env_var, cfg_name, pin_source=pin_source)

    if codec in models:
        return made(Path(models[codec]).expanduser(), "--model")
    if extra_key and extra.get(extra_key):
        return made(Path(extra[extra_key]).expanduser(), f"Environment.extra[{extra_key!r}]")
    if spec is not None and spec[0] is not None:
        return made(spec[0], "condition")
    if env_var and os.environ.get(env_var):
        return made(Path(os.environ[env_var]).expanduser(), f"${env_var}")
    size = getattr(condition, "width", None)
    if size is not None and size == getattr(condition, "height", None):
        for entry, path in installed(codec, getattr(env, "weights_dir", None)):
            if entry.codes_at(size):
                return ModelChoice(codec, path, f"installed:{entry.name}", pin or entry.sha256, cfg, env_var,
                                   cfg_name or entry.config, pin_source or f"the model registry ({entry.name})")
    if default is None:
        raise NotAvailable(f"codec {codec!r} has no checkpoint: pass --model {codec}=PATH (see `gfvc models status`)")
    return made(Path(default), "default")


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class CheckpointEntry:
    """One known public checkpoint (see gfvc/model_registry.json)."""

    name: str
    codec: str
    filename: str
    image_size: int
    config: str
    description: str
    urls: tuple[str, ...]
    pages: tuple[str, ...]
    size: int | None
    sha256: str | None
    md5: str | None
    hash_source: str
    licence: str
    notes: str = ""
    # other condition sizes the codec codes with this file (LIA resamples to and from its network size)
    coded_sizes: tuple[int, ...] = ()

    @property
    def hash_known(self) -> bool:
        return bool(self.sha256 or self.md5)

    def codes_at(self, size: int | None) -> bool:
        return size is None or size == self.image_size or size in self.coded_sizes


@dataclass(frozen=True)
class Registry:
    entries: tuple[CheckpointEntry, ...]
    without_public_checkpoint: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> CheckpointEntry:
        for e in self.entries:
            if e.name == name:
                return e
        import difflib

        names = [e.name for e in self.entries]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownName(f"unknown registry checkpoint {name!r}{hint} (known: {', '.join(names)})")

    def for_codec(self, codec: str) -> list[CheckpointEntry]:
        return [e for e in self.entries if e.codec == codec]

    def by_sha256(self, sha: str) -> CheckpointEntry | None:
        for e in self.entries:
            if e.sha256 and e.sha256.lower() == sha.lower():
                return e
        return None


def load_registry(path: Path | None = None) -> Registry:
    """Parse and validate the registry file (ConfigError naming the entry on a bad field)."""
    p = Path(path) if path else REGISTRY_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: not a readable model registry ({e})") from None
    entries: list[CheckpointEntry] = []
    seen: set[str] = set()
    files: set[tuple[str, str]] = set()
    for i, d in enumerate(data.get("checkpoints") or []):
        try:
            entry = CheckpointEntry(
                name=str(d["name"]), codec=str(d["codec"]), filename=str(d["filename"]),
                image_size=int(d["image_size"]), config=str(d.get("config") or "official"),
                description=str(d.get("description", "")), urls=tuple(d.get("urls") or ()),
                pages=tuple(d.get("pages") or ()), size=int(d["size"]) if d.get("size") is not None else None,
                sha256=d.get("sha256"), md5=d.get("md5"), hash_source=str(d.get("hash_source", "")),
                licence=str(d.get("licence", "")), notes=str(d.get("notes", "")),
                coded_sizes=tuple(int(x) for x in d.get("coded_sizes") or ()))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{p}: checkpoint #{i}: {type(err).__name__}: {err}") from None
        if entry.sha256 is not None and not _SHA256_RE.match(entry.sha256):
            raise ConfigError(f"{p}: {entry.name}: sha256 must be 64 hex digits or null")
        if entry.name in seen or (entry.codec, entry.filename) in files:
            raise ConfigError(f"{p}: {entry.name}: duplicate name or file name")
        seen.add(entry.name)
        files.add((entry.codec, entry.filename))
        entries.append(entry)
    return Registry(tuple(entries), dict(data.get("without_public_checkpoint") or {}))


@lru_cache(maxsize=1)
def registry() -> Registry:
    return load_registry()


def models_dir() -> Path:
    """Where `gfvc models install|fetch` put checkpoints: $GFVC_MODELS_DIR, else ~/.cache/gfvc/models."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gfvc" / "models"


def candidates(entry: CheckpointEntry, weights_dir: Path | None = None) -> list[tuple[str, Path]]:
    """Locations searched for a registry file, in order (first found decides)."""
    out: list[tuple[str, Path]] = []
    if weights_dir is not None:
        w = Path(weights_dir)
        out += [("weights-dir", w / entry.codec / entry.filename), ("weights-dir", w / entry.filename)]
    out.append(("models-dir", models_dir() / entry.codec / entry.filename))
    return out


def installed(codec: str, weights_dir: Path | None = None) -> list[tuple[CheckpointEntry, Path]]:
    """Registry checkpoints of ``codec`` present on this machine (not yet verified), registry order."""
    out = []
    for e in registry().for_codec(codec):
        for _, p in candidates(e, weights_dir):
            if p.is_file():
                out.append((e, p))
                break
    return out


State = Literal["verified", "md5-verified", "unverified", "mismatch", "missing"]


@dataclass
class CheckpointStatus:
    """Where a registry checkpoint was found and what verifying it said."""

    entry: CheckpointEntry
    path: Path | None
    where: str                      # "weights-dir" | "models-dir" | "source" | "missing" | "manual"
    state: State
    reason: str
    sha256: str | None = None       # actual sha256 of the file found

    @property
    def usable(self) -> bool:
        return self.state in ("verified", "md5-verified", "unverified")

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {"name": e.name, "codec": e.codec, "file": e.filename, "image_size": e.image_size,
                "config": e.config, "state": self.state, "usable": self.usable, "reason": self.reason,
                "where": self.where, "path": str(self.path) if self.path else None, "sha256_actual": self.sha256,
                "sha256_expected": e.sha256, "md5_expected": e.md5, "size_expected": e.size,
                "hash_source": e.hash_source, "licence": e.licence, "urls": list(e.urls), "pages": list(e.pages),
                "description": e.description, "notes": e.notes, "coded_sizes": list(e.coded_sizes)}


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - comparison with a published md5, not security
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_entry_file(entry: CheckpointEntry, path: Path) -> tuple[State, str, str]:
    """(state, reason, actual sha256) of ``path`` against the registry entry."""
    size = Path(path).stat().st_size
    if entry.size is not None and size != entry.size:
        return "mismatch", f"size {size} bytes, expected {entry.size}", ""
    actual = file_sha256(Path(path))
    if entry.sha256:
        if actual.lower() != entry.sha256.lower():
            return "mismatch", f"sha256 {actual}, expected {entry.sha256} ({entry.hash_source})", actual
        return "verified", f"sha256 matches ({entry.hash_source})", actual
    if entry.md5:
        got = _md5(Path(path))
        if got.lower() != entry.md5.lower():
            return "mismatch", f"md5 {got}, expected {entry.md5} ({entry.hash_source})", actual
        return "md5-verified", f"md5 matches ({entry.hash_source}); sha256 {actual}", actual
    return "unverified", f"no public hash to check against; its sha256 is {actual} (pin it in your condition)", actual


def check_entry(entry: CheckpointEntry, weights_dir: Path | None = None) -> CheckpointStatus:
    """Status of one registry checkpoint on this machine (never raises for a missing/bad file)."""
    for where, p in candidates(entry, weights_dir):
        if p.is_file():
            state, why, sha = verify_entry_file(entry, p)
            return CheckpointStatus(entry, p, where, state, why, sha or None)
    places = ", ".join(str(p) for _, p in candidates(entry, weights_dir))
    return CheckpointStatus(entry, None, "missing", "missing", f"not found in {places}; {how_to_get(entry)}")


def how_to_get(entry: CheckpointEntry) -> str:
    if entry.urls:
        return (f"`gfvc models fetch {entry.name}` (downloads {entry.urls[0]}) "
                "or download it and `gfvc models install DIR`")
    pages = " or ".join(entry.pages) or "no public source known"
    return f"download {entry.filename} by hand from {pages}, then `gfvc models install DIR`"


def fix_for_size(codec: str, size: int | None) -> str:
    """What to do when ``codec`` has no checkpoint at ``size`` px: the registry files to get, else how to train one."""
    reg = registry()
    entries = [e for e in reg.for_codec(codec) if e.codes_at(size)]
    where = f"at {size}x{size}" if size else "at that size"
    tail = f"; or pass --model {codec}=PATH (a checkpoint {where}); `gfvc models status` shows what is installed"
    if entries:
        gets = "; ".join(f"{e.name}" + (f" ({e.image_size} px, coded at {size} px by resampling)"
                                          if size and size != e.image_size else "") + f": {how_to_get(e)}"
                         for e in entries)
        return f"get the registry checkpoint {where} ({gets}){tail}"
    why = reg.without_public_checkpoint.get(codec)
    if why:
        return f"no public {codec} checkpoint exists {where} ({why}){tail}"
    sizes = sorted({e.image_size for e in reg.for_codec(codec)})
    known = f" (public ones are {', '.join(f'{s} px' for s in sizes)})" if sizes else ""
    return (f"no public {codec} checkpoint {where}{known}: train one with `gfvc train {codec} --image-size "
            f"{size or 'N'}`{tail}")


def status(weights_dir: Path | None = None, codecs: list[str] | None = None) -> list[CheckpointStatus]:
    """One row per registry checkpoint (optionally only some codecs), for `gfvc models status`."""
    return [check_entry(e, weights_dir) for e in registry().entries if not codecs or e.codec in codecs]


Inspect = Callable[[CheckpointEntry, Path], str]


def _inspected(entry: CheckpointEntry, path: Path, state: State, why: str,
               inspect: Inspect | None) -> tuple[State, str]:
    """A file no published hash vouches for must at least be what the entry describes (its contents)."""
    if state != "unverified":
        return state, why
    if inspect is None:
        return state, f"{why}; contents NOT checked"
    try:
        return state, f"{why}; {inspect(entry, path)}"
    except GfvcError as e:
        return "mismatch", str(e)


def install(src_dir: Path, dest: Path | None = None, inspect: Inspect | None = None) -> list[CheckpointStatus]:
    """Copy every registry checkpoint found in ``src_dir`` (by file name) into DEST/<codec>/ after verifying it.

    A file whose size or published hash differs is reported and not copied. A
    file without a public hash is checked by its contents with ``inspect``
    (the CLI passes :func:`baselines.matching.inspect_entry`: loadable, the
    entry's codec, keys and shapes of its configuration, resolution) and, when
    it passes, copied and reported as unverified with its sha256.
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise WeightsError(f"{src_dir}: not a directory")
    dest = Path(dest) if dest is not None else models_dir()
    out = []
    for e in registry().entries:
        src = next((p for p in (src_dir / e.codec / e.filename, src_dir / e.filename) if p.is_file()), None)
        if src is None:
            continue
        state, why, sha = verify_entry_file(e, src)
        state, why = _inspected(e, src, state, why, inspect)
        if state == "mismatch":
            out.append(CheckpointStatus(e, src, "source", state, f"not installed: {why}", sha or None))
            continue
        target = dest / e.codec / e.filename
        atomic_copy(src, target)
        out.append(CheckpointStatus(e, target, "models-dir", state, f"installed from {src}: {why}", sha))
    return out


def fetch(names: list[str] | None = None, dest: Path | None = None, timeout: float = 60.0,
          inspect: Inspect | None = None) -> list[CheckpointStatus]:
    """Download registry checkpoints that have a direct URL into DEST/<codec>/, verifying what can be verified.

    Named entries without a direct URL raise NotAvailable naming the page to
    download from; without names, every entry is tried and manual-only ones are
    reported as such. Download failures raise WeightsError (one line, no
    partial file), via :func:`gfvc.download.download_verified`.
    """
    dest = Path(dest) if dest is not None else models_dir()
    reg = registry()
    entries = [reg.get(n) for n in names] if names else list(reg.entries)
    out: list[CheckpointStatus] = []
    for e in entries:
        target = dest / e.codec / e.filename
        if target.is_file():
            state, why, sha = verify_entry_file(e, target)
            if state != "mismatch":
                out.append(CheckpointStatus(e, target, "models-dir", state, f"already there: {why}", sha))
                continue
        if not e.urls:
            if names:
                raise NotAvailable(f"{e.name} has no direct download URL: {how_to_get(e)}")
            out.append(CheckpointStatus(e, None, "manual", "missing", f"manual download: {how_to_get(e)}"))
            continue
        seen: dict[str, tuple[State, str, str]] = {}

        def verify(p: Path, e: CheckpointEntry = e, seen: dict[str, tuple[State, str, str]] = seen) -> str:
            state, why, sha = verify_entry_file(e, p)
            seen["last"] = (state, why, sha)
            return why if state == "mismatch" else ""

        try:
            urls = [f"{mirror().rstrip('/')}/{e.filename}"] if mirror() else list(e.urls)  # GFVC_WEIGHTS_MIRROR
            url = download_verified(urls, target, verify, timeout=timeout, what=f"{e.codec} checkpoint {e.name}")
        except WeightsError as err:
            raise WeightsError(f"{err}. On a machine without internet, download {e.filename} elsewhere "
                               "and run `gfvc models install DIR`.") from None
        state, why, sha = seen["last"]
        state, why = _inspected(e, target, state, why, inspect)
        if state == "mismatch":  # downloaded, but not what the entry describes: do not leave it installed
            target.unlink()
            out.append(CheckpointStatus(e, None, "source", state, f"not installed: fetched from {url}: {why}", sha))
            continue
        out.append(CheckpointStatus(e, target, "models-dir", state, f"fetched from {url}: {why}", sha))
    return out


Verification = Literal["sha256", "md5", "pinned", "unverified", "shipped", "own"]


def verification(choice: ModelChoice, sha256: str) -> tuple[Verification, str]:
    """How the identity of a chosen checkpoint was established: (state, one-line explanation).

    ``unverified`` is a registry checkpoint that no published hash vouches for (installed as
    a registry entry without one, or a file carrying such an entry's file name): whatever its
    contents, nobody can tell it is the file the registry describes. It is said wherever the
    file is used (gfvc info, the run's summary, records' provenance, the report banner).
    """
    entry = identify(sha256)
    if entry is not None:
        return "sha256", f"sha256 equals the published one of registry checkpoint {entry.name}"
    if choice.sha256 and choice.pin_source and not choice.source.startswith("installed:"):
        return "pinned", f"sha256 pinned by {choice.pin_source}"
    named: CheckpointEntry | None = None
    if choice.source.startswith("installed:"):
        named = registry().get(choice.source.split(":", 1)[1])
        how = f"installed as registry checkpoint {named.name}"
    else:
        named = next((e for e in registry().for_codec(choice.codec) if e.filename == choice.path.name), None)
        how = f"named like registry checkpoint {named.name} ({named.filename})" if named else ""
    if named is not None:
        if named.md5 and not named.sha256 and _md5(choice.path).lower() == named.md5.lower():
            return "md5", f"{how}; md5 matches ({named.hash_source})"
        return "unverified", (f"UNVERIFIED: {how}, for which no public hash exists: its contents fit the "
                              "registry entry's codec, architecture and size, but nothing proves it is that file "
                              "(pin its sha256 in the condition's models: section once you trust it)")
    if choice.source == "default":
        return "shipped", "the codec's demo checkpoint shipped with the suite"
    return "own", "not a registry checkpoint: identified by its sha256 only"


def identify(sha256: str) -> CheckpointEntry | None:
    """The registry entry whose published sha256 is ``sha256`` (None if unknown)."""
    return registry().by_sha256(sha256)


def valid_sha256(text: Any) -> bool:
    return isinstance(text, str) and bool(_SHA256_RE.match(text))
