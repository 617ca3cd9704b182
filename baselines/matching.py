"""Which known configuration a checkpoint file is, from its keys and tensor shapes alone.

An official checkpoint (``vox-cpk.pth.tar``, ``ted384.pth``, ...) carries no
configuration: only its state_dicts. Two configurations whose inference modules
have the same key names and shapes build the same networks from those weights,
so the file's layout is compared with the layout of every named configuration
of every baseline codec (:meth:`BaselineCodec.named_configs`, plug-ins
included), each built on the ``meta`` device (no memory, about 1 s for all).
State-dict compatibility = equal key names and shapes, the same rule as strict
loading.

The result says which codec and configuration(s) fit. Configurations with the
same architecture fingerprint (aliases, e.g. FV2V ``official`` and ``gfvc``)
count once. Used by :meth:`baselines.base.BaselineCodec.config` (files without
an embedded configuration) and by ``gfvc models install`` (contents of a
registry file that has no public hash).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gfvc.codec import CODECS, load_builtin_codecs
from gfvc.errors import ModelMismatch

Layout = dict[str, dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Match:
    """One configuration whose inference modules have exactly the file's keys and shapes."""

    codec: str
    names: tuple[str, ...]      # named configurations with this architecture (first = the one used)
    config: Any                 # baselines.base.BaselineConfig of names[0]

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def label(self) -> str:
        alias = "".join(f" = {n}" for n in self.names[1:])
        return f"{self.name}{alias} ({self.image_size} px)"


def baseline_classes() -> dict[str, Any]:
    """Registered codecs that choose a checkpoint and declare named configurations (the baselines)."""
    load_builtin_codecs()
    out = {}
    for name in CODECS.names():
        cls = CODECS.get(name)
        if (getattr(cls, "takes_checkpoint", False) and callable(getattr(cls, "named_configs", None))
                and callable(getattr(cls, "build_modules", None)) and getattr(cls, "inference_modules", ())):
            out[name] = cls
    return out


@lru_cache(maxsize=256)
def _layout(codec: str, fingerprint: str) -> Layout:
    """{module: {key: shape}} of the inference modules of ``codec``'s configuration ``fingerprint``."""
    import torch  # lazy: torch only when a file without configuration is matched

    cls = baseline_classes()[codec]
    cfg = next(c for c in cls.named_configs().values() if c.fingerprint() == fingerprint)
    try:
        with torch.device("meta"):
            mods = cls.build_modules(cfg)
    except (NotImplementedError, RuntimeError):  # a constructor that cannot run on meta
        mods = cls.build_modules(cfg)
    return {m: {k: tuple(int(d) for d in v.shape) for k, v in mods[m].state_dict().items()}
            for m in cls.inference_modules}


def known_configs(codec: str | None = None) -> list[tuple[str, tuple[str, ...], Any]]:
    """(codec, names, config) per distinct architecture of every baseline (or one codec)."""
    out = []
    for name, cls in sorted(baseline_classes().items()):
        if codec is not None and name != codec:
            continue
        by_fp: dict[str, tuple[list[str], Any]] = {}
        configs = cls.named_configs()
        # "official" first: it names the architecture of an alias group
        for cname in sorted(configs, key=lambda n: (n != "official", list(configs).index(n))):
            cfg = configs[cname]
            by_fp.setdefault(cfg.fingerprint(), ([], cfg))[0].append(cname)
        out += [(name, tuple(names), cfg) for names, cfg in by_fp.values()]
    return out


def match(shapes: Mapping[str, Mapping[str, tuple[int, ...]]], codec: str | None = None) -> list[Match]:
    """Every known configuration whose inference modules equal the file's (extra modules of the file,
    e.g. a discriminator or optimiser state, are ignored: inference does not read them)."""
    out = []
    for name, names, cfg in known_configs(codec):
        cls = baseline_classes()[name]
        if not all(m in shapes for m in cls.inference_modules):
            continue
        layout = _layout(name, cfg.fingerprint())
        if all(dict(shapes[m]) == layout[m] for m in cls.inference_modules):
            out.append(Match(name, names, cfg))
    return out


def describe(matches: list[Match]) -> str:
    """``fomm official (256 px); mraa vox256 (256 px)`` for messages."""
    return "; ".join(f"{m.codec} {m.label()}" for m in matches)


def choose_config(codec: str, shapes: Mapping[str, Mapping[str, tuple[int, ...]]], size: int | None,
                  source: str) -> tuple[Any | None, str]:
    """The configuration of ``codec`` that a file without embedded configuration is, and why.

    Returns (config, how) where config is None when the file fits no known
    configuration of ``codec`` (the caller then loads the official one, whose
    strict load names the differing keys). Raises ModelMismatch when the file
    is another codec's, or when several configurations fit equally (naming
    them and how to choose one).
    """
    all_matches = match(shapes)
    mine = [m for m in all_matches if m.codec == codec]
    if not mine:
        others = [m for m in all_matches if m.codec != codec]
        if others:
            first = others[0]
            raise ModelMismatch(f"{source} is not a {codec} checkpoint: its keys and shapes are those of "
                                f"{describe(others)}; use it with --model {first.codec}=FILE")
        return None, ""
    if len(mine) == 1:
        m = mine[0]
        return m.config, f"detected: keys and shapes match only {codec} configuration {m.label()}"
    at_size = [m for m in mine if size is not None and m.image_size == size]
    if len(at_size) == 1:
        m = at_size[0]
        return m.config, (f"detected: keys and shapes match {codec} configurations "
                          f"{', '.join(x.label() for x in mine)}; {m.name} is the one at the condition's "
                          f"{size}x{size}")
    pool = at_size or mine
    official = next((m for m in pool if "official" in m.names), None)
    if official is not None and not at_size:
        return official.config, (f"detected: keys and shapes match {codec} configurations "
                                 f"{', '.join(x.label() for x in mine)}; none is at {size}x{size}, so the "
                                 "official one")
    names = [m.name for m in pool]
    raise ModelMismatch(
        f"{source}: keys and shapes fit several {codec} configurations ({', '.join(m.label() for m in pool)}) "
        f"that the file cannot tell apart; choose one: --model-config {codec}={names[0]} (or "
        f"`models: {{{codec}: {{path: FILE, config: {names[0]}}}}}` in the condition); "
        f"`gfvc info {codec} --config NAME` describes each")


def inspect_entry(entry: Any, path: Any) -> str:
    """Check a file offered as registry checkpoint ``entry`` by its contents (for files no hash vouches for).

    It must load as a torch checkpoint, hold ``entry.codec``'s inference modules, have exactly the
    keys and shapes of the entry's named configuration and, if it embeds a configuration, be that
    architecture at the entry's size. Returns what was checked; raises ModelMismatch naming what the
    file is instead (another codec or configuration, the demo checkpoint, random bytes).
    """
    from model_parts.checkpoint import read_checkpoint  # lazy: loads torch (start-up time of `gfvc models`)

    cls = baseline_classes().get(entry.codec)
    if cls is None:
        return "contents not checked (no model port of this codec)"
    st = read_checkpoint(path, entry.codec, tuple(cls.inference_modules))
    configs = cls.named_configs()
    want = configs.get(entry.config)
    if want is None:
        raise ModelMismatch(f"registry entry {entry.name} names configuration {entry.config!r}, which codec "
                            f"{entry.codec!r} does not provide ({', '.join(sorted(configs))})")
    what = f"registry checkpoint {entry.name} ({entry.codec} {entry.config}, {entry.image_size} px)"
    if st.meta.get("config"):
        have = type(want).from_dict(st.meta["config"])
        if have.fingerprint() != want.fingerprint() or have.image_size != entry.image_size:
            raise ModelMismatch(f"{path} is not {what}: it embeds configuration {have.name!r} at {have.image_size} "
                                f"px (model id {st.meta.get('model_id', '?')!r})")
    layout = _layout(entry.codec, want.fingerprint())
    if any(dict(st.shapes.get(m, {})) != layout[m] for m in cls.inference_modules):
        found = match(st.shapes)
        instead = f": its keys and shapes are those of {describe(found)}" if found else (
            ": its keys and shapes fit no known configuration")
        raise ModelMismatch(f"{path} is not {what}{instead}")
    if int(want.image_size) != int(entry.image_size):
        raise ModelMismatch(f"registry entry {entry.name} is {entry.image_size} px but its configuration "
                            f"{want.name!r} is {want.image_size} px")
    return (f"contents checked: loads, {entry.codec} inference modules with the keys and shapes of "
            f"configuration {want.name}, {entry.image_size} px")
