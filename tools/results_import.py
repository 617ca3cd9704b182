"""Results produced elsewhere, read and checked for `gfvc import` (docs/importing.md).

Two sources: a small YAML manifest (any codec: decoded video + bitstream files
per sequence and rate point) and the output folders of the GFVC AhG software
(``experiment/MODEL/Iframe_FORMAT/{dec,enc,kp}``; layout read from
Berlin0610/GFVC_Software @ 18e1c8b and xyzysz/GFVC_Software_v2 @ 80b7b52).
Everything is checked here, before anything is written: every problem is
collected as one line (:class:`ImportProblems`), so a user fixes all of them
in one go. Nothing here scores: the runner's scoring function does that
(suite.runner.importing), exactly as for the suite's own jobs.

Rate: the suite counts every byte a decoder needs. For the AhG layout that is
every ``*.bin`` of the key-frame folder ``enc/SEQ_qpQP/`` (VVC bitstream(s) of
the key frame(s); a learned image codec's ``*_y.bin``/``*_z.bin``) and every
``*.bin`` of the feature folder ``kp/SEQ_qpQP/`` (one ``frameNNNN.bin`` per
inter frame, plus ``metadata.bin`` where the v2 software writes the key-frame
indices, which its decoder reads and counts). Not counted: the VTM input and
reconstructions (``*_org.yuv``, ``*_rec.yuv``, ``*_dec.yuv``), logs, the
``frameN.txt`` dumps of unquantised features (the decoder never reads them)
and the ``dec/*.mp4`` viewing copies. The AhG's own ``evaluate/bitrate.py``
counts ``enc/.../frame0000.bin`` plus the inter frames' ``frameNNNN.bin`` and
leaves ``metadata.bin`` out, so its rate can be a few bytes lower.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.codec import RatePoint, YuvPlanes
from gfvc.condition import Condition
from gfvc.errors import ConfigError, InputError
from gfvc.fileio import read_yaml_mapping
from gfvc.frame_folder import list_frame_files, png_header
from gfvc.video import (
    CONTAINER_SUFFIXES,
    read_png_folder,
    read_rgb_planar,
    read_yuv420_planes,
    sha256_file,
    yuv420_to_rgb,
)
from test_conditions import load_condition
from test_conditions.manifest import SequenceEntry, load_manifest

MANIFEST_SCHEMA = 1
FAMILIES = ("generative", "anchor")
# What a user may state about where the results come from (``description`` is required).
STATEMENT_KEYS = ("description", "software", "commit", "checkpoint_sha256", "contact")
DECODED_FORMATS = ("rgb", "yuv420p", "png")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

# The AhG software's layout (see the module docstring and docs/importing.md).
AHG_SOURCES = ("Berlin0610/GFVC_Software@18e1c8bc058ffabd47071ce4c1c897d7b3689587 (folders SEQ_QPnn)",
               "xyzysz/GFVC_Software_v2@80b7b521c5e2bc0effa0ed2934b05ffcc94fdaad "
               "(folders SEQ_qpnn, kp/.../metadata.bin)")
AHG_RATE_RULE = ("key_frame: every *.bin in enc/SEQ_qpQP/; features: kp/SEQ_qpQP/frameNNNN.bin (one per inter "
                 "frame); metadata: kp/SEQ_qpQP/metadata.bin where present; other: any other *.bin in "
                 "kp/SEQ_qpQP/. Not counted: *_org/_rec/_dec.yuv, logs, frameN.txt, dec/*.mp4")
MANIFEST_RATE_RULE = "every file listed under 'bitstreams' (every file inside a listed folder, recursively)"
_DEC_RE = re.compile(r"^(?P<seq>.+)_(?P<tag>[qQ][pP])(?P<qp>\d+)\.rgb$")
_FRAME_RE = re.compile(r"^frame(?P<i>\d+)\.bin$")


class ImportProblems(InputError):
    """Everything wrong with an import, one line per problem (nothing was written)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@dataclass(frozen=True)
class CountedFile:
    """A file whose bytes count towards the rate; ``name`` is relative to the import root."""

    path: Path
    name: str
    part: str  # the record's bits_breakdown key
    size: int


@dataclass(frozen=True)
class ImportItem:
    """One imported result: a sequence at a rate point, its decoded video and its bitstream files."""

    sequence: SequenceEntry
    rate_point: RatePoint
    decoded: Path
    decoded_format: str  # one of DECODED_FORMATS
    files: tuple[CountedFile, ...]
    where: str  # how the user finds it again (manifest entry or AhG file)

    @property
    def bits(self) -> int:
        return 8 * sum(f.size for f in self.files)

    def breakdown(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.part] = out.get(f.part, 0) + 8 * f.size
        return out


@dataclass(frozen=True)
class ImportSet:
    """A checked import: what the records will say, before any of them is written."""

    condition: Condition
    codec: str
    family: str
    statement: dict[str, str]  # the provenance as the user states it
    source: str  # "ahg" | "manifest"
    root: Path  # the AhG folder, or the manifest's folder
    rate_rule: str
    items: tuple[ImportItem, ...]
    sequences: tuple[SequenceEntry, ...]  # the condition's sequences (from its manifest)
    manifest_path: str = ""
    not_covered: tuple[str, ...] = field(default=())  # sequences of the condition without any result


# --------------------------------------------------------------------------- shared checks
def check_codec_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where}: codec name {name!r}: use letters, digits and . _ + - (e.g. fomm-ahg)")
    return name


def check_statement(raw: Any, where: str) -> dict[str, str]:
    """The stated provenance: ``description`` (free text, required) and the optional known fields."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with at least 'description' (free text: who produced "
                          "these results, with what), got {raw!r}")
    unknown = sorted(set(raw) - set(STATEMENT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(STATEMENT_KEYS)})")
    out = {k: " ".join(str(raw[k]).split()) for k in STATEMENT_KEYS if raw.get(k) not in (None, "")}
    if not out.get("description"):
        raise ConfigError(f"{where}: 'description' is required: say who produced these results and with what")
    sha = out.get("checkpoint_sha256")
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise ConfigError(f"{where}: checkpoint_sha256 must be 64 hex digits, got {sha!r}")
    if sha is not None:
        out["checkpoint_sha256"] = sha.lower()
    return out


def decoded_format(path: Path) -> str | None:
    """rgb / yuv420p / png (a folder), or None for anything else (containers are lossy viewing copies)."""
    if path.is_dir():
        return "png"
    s = path.suffix.lower()
    return {".rgb": "rgb", ".yuv": "yuv420p"}.get(s)


def check_decoded(path: Path, fmt: str | None, entry: SequenceEntry, frames: int, cond: str, where: str
                  ) -> str | None:
    """One line if the decoded video does not hold exactly ``frames`` frames of the sequence's size."""
    w, h = entry.width, entry.height
    if not path.exists():
        return f"{where}: decoded video {path} not found"
    if fmt is None:
        lossy = " is a lossy container (a viewing copy)" if path.suffix.lower() in CONTAINER_SUFFIXES else ""
        return (f"{where}: decoded video {path}{lossy}: give the exact decoded frames as .rgb (planar RGB), "
                ".yuv (4:2:0 8-bit) or a folder of PNG frames")
    want = f"sequence {entry.name!r} of condition {cond!r} needs {frames} frames of {w}x{h}"
    if fmt in ("rgb", "yuv420p"):
        if fmt == "yuv420p" and (w % 2 or h % 2):
            return f"{where}: {path}: 4:2:0 needs even width and height, {want}"
        fb = w * h * 3 if fmt == "rgb" else w * h * 3 // 2
        size = path.stat().st_size
        if size != frames * fb:
            kind = "planar RGB" if fmt == "rgb" else "yuv420p"
            held = f"{size // fb} frames" if size % fb == 0 else f"{size / fb:.2f} frames"
            return (f"{where}: decoded video {path} has {size} bytes = {held} of {w}x{h} {kind}; {want} "
                    f"({frames * fb} bytes): size or frame count differs")
        return None
    try:
        pngs = list_frame_files(path)
    except InputError as e:
        return f"{where}: {e}"
    if len(pngs) != frames:
        return f"{where}: decoded PNG folder {path} holds {len(pngs)} PNG frames; {want}: frame count differs"
    for p in pngs:
        try:
            pw, ph = png_header(p)[:2]
        except InputError as e:
            return f"{where}: {e}"
        if (pw, ph) != (w, h):
            return f"{where}: {p} is {pw}x{ph}; {want}: size differs"
    return None


def load_decoded(item: ImportItem, condition: Condition) -> tuple[np.ndarray, YuvPlanes | None]:
    """The exact decoded frames (uint8 RGB) and, for .yuv, the planes as the decoder wrote them."""
    e, n = item.sequence, condition.frames
    if item.decoded_format == "rgb":
        return read_rgb_planar(item.decoded, e.width, e.height, n), None
    if item.decoded_format == "yuv420p":
        y, u, v = read_yuv420_planes(item.decoded, e.width, e.height, n)
        c = condition.colour
        return yuv420_to_rgb(y, u, v, c.matrix, c.range), YuvPlanes(y, u, v)
    frames = read_png_folder(item.decoded, n)
    if frames.shape != (n, e.height, e.width, 3):
        raise InputError(f"{item.where}: {item.decoded} holds frames of {tuple(frames.shape)}, "
                         f"expected {(n, e.height, e.width, 3)}")
    return frames, None


def _decoded_sha256(item: ImportItem) -> str:
    if item.decoded_format != "png":
        return sha256_file(item.decoded)
    h = hashlib.sha256()
    for p in list_frame_files(item.decoded):
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def item_digest(item: ImportItem) -> dict[str, Any]:
    """What identifies one imported result: sha256 of the decoded video and of every counted file."""
    return {"sequence": item.sequence.name, "rate_point": item.rate_point.key,
            "decoded_sha256": _decoded_sha256(item),
            "files": [[f.name, f.size, sha256_file(f.path)] for f in item.files]}


def files_digest(digests: list[dict[str, Any]]) -> str:
    """sha256 over every imported result's digest (independent of where the files are)."""
    blob = json.dumps(sorted(digests, key=lambda d: (d["sequence"], d["rate_point"])), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _entries(condition: Condition, sequences: Path | None) -> tuple[list[SequenceEntry], list[str]]:
    path = sequences or condition.manifest_path
    entries = load_manifest(path)
    problems = []
    for e in entries:
        if (e.width, e.height) != (condition.width, condition.height):
            problems.append(f"sequence {e.name!r} is {e.width}x{e.height} but condition {condition.name!r} is "
                            f"{condition.width}x{condition.height}")
        elif e.frames < condition.frames:
            problems.append(f"sequence {e.name!r} has {e.frames} frames; condition {condition.name!r} needs "
                            f"{condition.frames}")
    if not entries:
        problems.append(f"manifest {path} lists no sequences: build it with `gfvc sequences prepare`")
    return entries, problems


def _lookup(entries: list[SequenceEntry]) -> dict[str, SequenceEntry]:
    """Sequence by manifest name and by the stem of its file (the AhG names folders after the file)."""
    out: dict[str, SequenceEntry] = {}
    for e in entries:
        out.setdefault(Path(e.file).stem, e)
    for e in entries:
        out[e.name] = e
    return out


def _rate_point(qp: Any, label: Any, where: str, problems: list[str]) -> RatePoint | None:
    if not isinstance(qp, int) or isinstance(qp, bool) or not 0 <= qp <= 63:
        problems.append(f"{where}: 'qp' must be an integer in 0..63 (the rate point's QP, e.g. the key-frame QP), "
                        f"got {qp!r}")
        return None
    if label is not None and (not isinstance(label, str) or not _NAME_RE.match(label)):
        problems.append(f"{where}: 'label' {label!r}: use letters, digits and . _ + -")
        return None
    return RatePoint(qp, label or "")


def _not_covered(entries: list[SequenceEntry], items: list[ImportItem]) -> tuple[str, ...]:
    have = {i.sequence.name for i in items}
    return tuple(e.name for e in entries if e.name not in have)


def _duplicates(items: list[ImportItem], problems: list[str]) -> None:
    seen: dict[tuple[str, str], str] = {}
    seen_qp: dict[tuple[str, int], str] = {}
    for it in items:
        k = (it.sequence.name, it.rate_point.key)
        kq = (it.sequence.name, it.rate_point.qp)
        first = seen.get(k) or seen_qp.get(kq)
        if first is not None:
            problems.append(f"{it.where}: duplicate rate point {it.rate_point.key} (QP {it.rate_point.qp}) of "
                            f"sequence {it.sequence.name!r}, already given by {first}")
            continue
        seen[k] = seen_qp[kq] = it.where


def _raise(problems: list[str]) -> None:
    if problems:
        raise ImportProblems(problems)


# --------------------------------------------------------------------------- manifest
_MANIFEST_KEYS = {"schema", "condition", "frames", "codec", "family", "provenance", "results", "sequences"}
_RESULT_KEYS = {"sequence", "qp", "label", "decoded", "bitstreams"}


def _resolve(base: Path, value: Any) -> Path:
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else base / p


def _counted_from(paths: list[Path], names: list[str], where: str, problems: list[str]) -> list[CountedFile]:
    """Every file named, and every file inside every folder named (recursively), each counted once."""
    out: list[CountedFile] = []
    seen: set[Path] = set()
    for p, name in zip(paths, names, strict=True):
        if p.is_file():
            files = [(p, name)]
        elif p.is_dir():
            files = [(f, f"{name.rstrip('/')}/{f.relative_to(p).as_posix()}")
                     for f in sorted(p.rglob("*")) if f.is_file()]
            if not files:
                problems.append(f"{where}: bitstream folder {p} holds no file")
        else:
            problems.append(f"{where}: bitstream {p} not found")
            continue
        for f, n in files:
            r = f.resolve()
            if r in seen:
                continue
            seen.add(r)
            out.append(CountedFile(f, n, name, f.stat().st_size))
    return out


def read_import_manifest(path: Path, *, condition: str | Path | None = None, frames: int | None = None,
                         codec: str | None = None, sequences: Path | None = None,
                         statement: dict[str, Any] | None = None) -> ImportSet:
    """Read and check an import manifest (docs/importing.md); the arguments override its keys
    (``statement``: provenance fields, each replacing the manifest's)."""
    path = Path(path)
    data = read_yaml_mapping(path, "import manifest")
    base = path.parent
    unknown = sorted(set(data) - _MANIFEST_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_MANIFEST_KEYS))})")
    if data.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
        raise ConfigError(f"{path}: import manifest schema {data.get('schema')!r} not supported "
                          f"(this suite reads {MANIFEST_SCHEMA})")
    cref = condition if condition is not None else data.get("condition")
    if cref in (None, ""):
        raise ConfigError(f"{path}: key 'condition' (built-in name or YAML file) is required, or pass --condition")
    if condition is None and isinstance(cref, str) and cref.endswith((".yaml", ".yml")):
        cref = _resolve(base, cref)
    cond = load_condition(cref)
    nframes = frames if frames is not None else data.get("frames")
    if nframes is not None:
        if not isinstance(nframes, int) or isinstance(nframes, bool) or nframes < 1:
            raise ConfigError(f"{path}: 'frames' must be a positive integer, got {nframes!r}")
        cond = cond.with_overrides(frames=nframes)
    name = check_codec_name(codec if codec is not None else data.get("codec"), f"{path}: key 'codec'")
    family = data.get("family", "generative")
    if family not in FAMILIES:
        raise ConfigError(f"{path}: 'family' {family!r} is not one of {', '.join(FAMILIES)}")
    stated = data.get("provenance")
    if statement and isinstance(stated, dict):
        stated = {**stated, **statement}
    elif statement and stated is None:
        stated = dict(statement)
    checked = check_statement(stated, f"{path}: key 'provenance'")
    seq_file = sequences or (_resolve(base, data["sequences"]) if data.get("sequences") else None)
    entries, problems = _entries(cond, seq_file)
    lookup = {e.name: e for e in entries}
    results = data.get("results")
    if not isinstance(results, list) or not results:
        raise ConfigError(f"{path}: 'results' must be a non-empty list of {{sequence, qp, decoded, bitstreams}}")
    items: list[ImportItem] = []
    for i, raw in enumerate(results):
        where = f"{path.name}: results[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a mapping {{sequence, qp, decoded, bitstreams}}, got {raw!r}")
            continue
        bad = sorted(set(raw) - _RESULT_KEYS)
        missing = sorted({"sequence", "qp", "decoded", "bitstreams"} - set(raw))
        if bad or missing:
            problems.append(f"{where}: " + (f"unknown key {bad[0]!r}" if bad else f"missing key {missing[0]!r}")
                            + f" (keys: {', '.join(sorted(_RESULT_KEYS))})")
            continue
        entry = lookup.get(str(raw["sequence"]))
        if entry is None:
            problems.append(f"{where}: unknown sequence {raw['sequence']!r}: condition {cond.name!r} has "
                            f"{', '.join(sorted(lookup)) or 'no sequences'}")
            continue
        rp = _rate_point(raw["qp"], raw.get("label"), where, problems)
        decoded = _resolve(base, raw["decoded"])
        fmt = decoded_format(decoded) if decoded.exists() else None
        err = check_decoded(decoded, fmt, entry, cond.frames, cond.name, where)
        if err:
            problems.append(err)
        bs = raw["bitstreams"]
        bs = [bs] if isinstance(bs, str) else bs
        if not isinstance(bs, list) or not bs or not all(isinstance(b, str) and b for b in bs):
            problems.append(f"{where}: 'bitstreams' must be a file or folder, or a list of them")
            continue
        files = _counted_from([_resolve(base, b) for b in bs], list(bs), where, problems)
        if rp is None or err or not files:
            continue
        items.append(ImportItem(entry, rp, decoded, fmt or "", tuple(files), where))
    _duplicates(items, problems)
    _raise(problems)
    return ImportSet(condition=cond, codec=name, family=family, statement=checked, source="manifest",
                     root=base.resolve(), rate_rule=MANIFEST_RATE_RULE, items=tuple(items), sequences=tuple(entries),
                     manifest_path=str(path.resolve()), not_covered=_not_covered(entries, items))


# --------------------------------------------------------------------------- AhG software layout
def ahg_root(folder: Path) -> Path:
    """The folder holding dec/, enc/ and kp/: FOLDER itself or its only Iframe_* sub-folder."""
    folder = Path(folder)
    need = ("dec", "enc", "kp")
    if not folder.is_dir():
        raise InputError(f"--ahg {folder}: no such folder")
    if all((folder / s).is_dir() for s in need):
        return folder
    subs = sorted(p for p in folder.glob("Iframe_*") if all((p / s).is_dir() for s in need))
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise InputError(f"--ahg {folder}: holds {', '.join(p.name for p in subs)}: name one of them "
                         "(each key-frame format is its own codec)")
    raise InputError(f"--ahg {folder}: not an AhG software output folder: expected dec/, enc/ and kp/ "
                     "(experiment/MODEL/Iframe_FORMAT/ of the GFVC software; docs/importing.md)")


def _ahg_item(root: Path, dec: Path, entry: SequenceEntry, rp: RatePoint, folder: str, frames: int,
              cond: str, problems: list[str]) -> ImportItem | None:
    where = f"dec/{dec.name}"
    enc, kp = root / "enc" / folder, root / "kp" / folder
    ok = True
    for d, what in ((enc, "key-frame"), (kp, "feature")):
        if not d.is_dir():
            problems.append(f"{where}: its {what} folder {d.relative_to(root)}/ is missing")
            ok = False
    err = check_decoded(dec, "rgb", entry, frames, cond, where)
    if err:
        problems.append(err)
        ok = False
    if not ok:
        return None
    files: list[CountedFile] = []
    key_idx: set[int] = set()
    for p in sorted(enc.iterdir()):
        if p.is_file() and p.suffix == ".bin":
            files.append(CountedFile(p, p.relative_to(root).as_posix(), "key_frame", p.stat().st_size))
            m = _FRAME_RE.match(p.name)
            if m:
                key_idx.add(int(m["i"]))
    if not files:
        problems.append(f"{where}: no key-frame bitstream (*.bin) in {enc.relative_to(root)}/")
        return None
    inter: set[int] = set()
    for p in sorted(kp.iterdir()):
        if not (p.is_file() and p.suffix == ".bin"):
            continue
        m = _FRAME_RE.match(p.name)
        part = "features" if m else ("metadata" if p.name == "metadata.bin" else "other")
        if m:
            inter.add(int(m["i"]))
        files.append(CountedFile(p, p.relative_to(root).as_posix(), part, p.stat().st_size))
    beyond = sorted(i for i in inter if i >= frames)
    keys = set(range(frames)) - inter
    rel = kp.relative_to(root)
    if beyond:
        problems.append(f"{where}: {rel}/ has feature files up to frame {max(beyond)}; sequence {entry.name!r} of "
                        f"condition {cond!r} has {frames} frames: frame count differs")
    elif 0 in inter:
        problems.append(f"{where}: {rel}/frame0000.bin: frame 0 is the key frame and has no feature file")
    elif key_idx and key_idx != keys:
        problems.append(f"{where}: {enc.relative_to(root)}/ holds key frames {sorted(key_idx)} but {rel}/ leaves "
                        f"frames {sorted(keys)[:8]} without a feature file")
    else:
        return ImportItem(entry, rp, dec, "rgb", tuple(files), where)
    return None


def read_ahg(folder: Path, *, condition: str | Path, codec: str, statement: dict[str, Any],
             frames: int | None = None, qps: list[int] | None = None, family: str = "generative",
             sequences: Path | None = None) -> ImportSet:
    """Read and check an AhG software output folder (decoded .rgb, key-frame .bin, per-frame feature .bin)."""
    root = ahg_root(Path(folder))
    cond = load_condition(condition)
    if frames is not None:
        cond = cond.with_overrides(frames=frames)
    name = check_codec_name(codec, "--codec")
    if family not in FAMILIES:
        raise ConfigError(f"--family {family!r} is not one of {', '.join(FAMILIES)}")
    stated = check_statement(statement, "provenance")
    entries, problems = _entries(cond, sequences)
    lookup = _lookup(entries)
    items: list[ImportItem] = []
    found_qps: dict[str, set[int]] = {}
    decs = sorted(p for p in (root / "dec").iterdir() if p.suffix.lower() == ".rgb")
    if not decs:
        problems.append(f"{root / 'dec'}: no decoded .rgb file (the AhG decoders write dec/SEQ_qpQP.rgb)")
    for dec in decs:
        m = _DEC_RE.match(dec.name)
        if not m or "_bqp" in m["seq"].lower() or "_bqp" in dec.name.lower():
            problems.append(f"dec/{dec.name}: not named SEQUENCE_qpQP.rgb as the AhG decoders name their output "
                            "(HDAC layouts with a base layer, _bqp, are not supported)")
            continue
        qp = int(m["qp"])
        if qps and qp not in qps:
            continue
        entry = lookup.get(m["seq"])
        if entry is None:
            problems.append(f"dec/{dec.name}: unknown sequence {m['seq']!r}: condition {cond.name!r} has "
                            f"{', '.join(sorted(e.name for e in entries)) or 'no sequences'}")
            continue
        rp = _rate_point(qp, None, f"dec/{dec.name}", problems)
        if rp is None:
            continue
        found_qps.setdefault(entry.name, set()).add(qp)
        item = _ahg_item(root, dec, entry, rp, f"{m['seq']}_{m['tag']}{m['qp']}", cond.frames, cond.name, problems)
        if item is not None:
            items.append(item)
    for s, got in sorted(found_qps.items()):
        lost = sorted(set(qps or ()) - got)
        if lost:
            problems.append(f"{root / 'dec'}: sequence {s!r} has no result at QP {', '.join(map(str, lost))} "
                            "(asked for by --qps)")
    if decs and not items and not problems:
        problems.append(f"{root / 'dec'}: no result to import"
                        + (f" at QP {', '.join(map(str, qps))} (found: {', '.join(d.name for d in decs[:4])})"
                           if qps else ""))
    _duplicates(items, problems)
    _raise(problems)
    return ImportSet(condition=cond, codec=name, family=family, statement=stated, source="ahg", root=root.resolve(),
                     rate_rule=AHG_RATE_RULE, items=tuple(items), sequences=tuple(entries),
                     not_covered=_not_covered(entries, items))
