"""Model conformance vectors: prove that a port computes what the official code computes.

A vector is a pair ``<model>.pt`` + ``<model>.json`` in the format of
shared/reference/official_io (made by running the authors' code on seeded
random weights): the JSON names each module's official class and constructor
kwargs, the call sequence and every output with its tolerance
(``suggested_atol_end_to_end``); the .pt holds the state_dicts, inputs and
outputs. :func:`check_vector` rebuilds each module from the kwargs, loads it
strictly, runs the model's call sequence and compares every output.

Each model contributes a small runner, registered like codecs::

    @register_vector_model("mraa")
    class MRAAVectors(VectorModel):
        def build(self, module, cls, kwargs): ...      # -> nn.Module
        def run(self, modules, inputs, meta): ...       # -> {output name: tensor or None}

so a contributor can check their own port by registering a runner under the
same name (``$GFVC_PLUGINS``) and running ``gfvc conformance``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gfvc.errors import InputError, ModelMismatch
from gfvc.registry import Registry
from model_parts import checkpoint as ck
from model_parts.checkpoint import load_strict


class VectorModel:
    """Runner of one model's call sequence (subclass per model)."""

    name: str = ""
    # the model's ``build_module(name, kwargs)``: most runners build by module name and need nothing else
    module_builder: Callable[[str, dict[str, Any]], Any] | None = None

    def build(self, module: str, cls: str, kwargs: dict[str, Any]) -> Any:
        """Construct module ``module`` (official class path ``cls``) from its official kwargs."""
        if self.module_builder is None:
            raise NotImplementedError(f"conformance runner {self.name!r}: set module_builder or override build()")
        return self.module_builder(module, kwargs)

    def run(self, modules: dict[str, Any], inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """Run the JSON's ``call_sequence``; return every output under its stored (flattened) name."""
        raise NotImplementedError


VECTOR_MODELS: Registry[type[VectorModel]] = Registry("conformance model", entry_point_group="gfvc.conformance")

# Modules whose import registers the suite's runners.
BUILTIN_VECTOR_MODULES: list[str] = ["baselines.registry"]


def register_vector_model(name: str) -> Callable[[type[VectorModel]], type[VectorModel]]:
    def deco(cls: type[VectorModel]) -> type[VectorModel]:
        cls.name = name
        VECTOR_MODELS.add(name, cls, origin=cls.__module__)
        return cls

    return deco


def load_builtin_runners() -> None:
    import importlib
    import os

    extra = [m.strip() for m in os.environ.get("GFVC_PLUGINS", "").split(",") if m.strip()]
    for mod in BUILTIN_VECTOR_MODULES + extra:
        importlib.import_module(mod)


@dataclass
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float | None      # None: the port did not produce it
    atol: float
    passed: bool
    note: str = ""


@dataclass
class VectorResult:
    model: str
    pt: Path
    json: Path
    official: str                   # repository @ commit
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "pt": str(self.pt), "json": str(self.json), "official": self.official,
                "passed": self.passed,
                "outputs": [{"name": o.name, "shape": list(o.shape), "max_abs_diff": o.max_abs_diff,
                             "atol": o.atol, "passed": o.passed, "note": o.note} for o in self.outputs]}


def find_vectors(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(pt, json) pairs from files or folders; InputError for a file without its partner."""
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            cands = sorted(p.glob("*.json"))
            if not cands:
                raise InputError(f"{p}: no conformance vectors (<model>.pt + <model>.json) in this folder")
        elif p.suffix in (".pt", ".json"):
            cands = [p.with_suffix(".json")]
        else:
            raise InputError(f"{p}: not a conformance vector (expected a folder, <model>.pt or <model>.json)")
        for js in cands:
            pt = js.with_suffix(".pt")
            for f in (js, pt):
                if not f.is_file():  # the given file exists (checked above): name its missing partner
                    raise InputError(f"{f}: no such file: {p.name if p.is_file() else js.name} needs it (a vector "
                                     "is a <model>.pt + <model>.json pair)")
            if js.resolve() not in seen:
                seen.add(js.resolve())
                pairs.append((pt, js))
    return pairs


def _max_abs(a: Any, b: Any) -> float:
    if a.numel() == 0:
        return 0.0
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


def check_vector(pt: Path, js: Path) -> VectorResult:
    """Rebuild, load strictly, run and compare one vector (see module docstring)."""
    import torch

    load_builtin_runners()
    try:
        meta = json.loads(Path(js).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{js}: not a conformance vector JSON ({e})") from None
    for key in ("model", "modules", "outputs"):
        if key not in meta:
            raise InputError(f"{js}: conformance vector JSON has no {key!r} entry")
    model = str(meta["model"])
    runner_cls = VECTOR_MODELS.get(model)  # UnknownName with suggestions
    data = ck.read_torch_file(pt, "conformance vector", error=InputError, kind="file",
                              hint="truncated copy or not a vector: copy the .pt again next to its .json")
    if not isinstance(data, Mapping):
        raise InputError(f"{pt}: expected a dict with state_dicts, inputs and outputs")
    for key in ("state_dicts", "inputs", "outputs"):
        if key not in data:
            raise InputError(f"{pt}: no {key!r} entry")
    runner = runner_cls()
    modules: dict[str, Any] = {}

    for name, spec in meta["modules"].items():
        if name not in data["state_dicts"]:
            raise InputError(f"{pt}: no state_dict for module {name!r} named in {js.name}")
        m = runner.build(name, str(spec.get("class", "")), dict(spec.get("kwargs") or {}))
        try:
            load_strict(m, data["state_dicts"][name], model=model, name=name, source=str(pt))
        except ModelMismatch as e:
            raise InputError(f"conformance vector {js.name}: {e}") from None
        modules[name] = m.eval()
    inputs = dict(data["inputs"])
    try:
        with torch.no_grad():
            produced = runner.run(modules, inputs, meta)
    except KeyError as e:  # the runner asked for an input/kwarg the vector does not hold
        raise InputError(f"{pt}: tensor or entry {e} needed by the {model} call sequence is missing from the "
                         f"vector (inputs: {', '.join(sorted(map(str, inputs))) or 'none'})") from None
    produced = {k: (v if v is None or hasattr(v, "shape") else torch.as_tensor(v)) for k, v in produced.items()}
    aliases = dict(meta.get("output_aliases") or {})
    res = VectorResult(model=model, pt=Path(pt), json=Path(js),
                       official=f"{meta.get('official_repository', '?')}@{str(meta.get('official_commit', '?'))[:8]}")
    stored = data["outputs"]
    for name, spec in meta["outputs"].items():
        atol = float(spec.get("suggested_atol_end_to_end", 1e-5))
        shape = tuple(int(s) for s in spec.get("shape", ()))
        if name not in stored:
            raise InputError(f"{pt}: output {name!r} listed in {js.name} is missing from the .pt file")
        want = stored[name]
        if tuple(want.shape) != shape:
            raise InputError(f"{pt}: output {name!r} has shape {tuple(want.shape)}, {js.name} says {shape}")
        got = produced.get(name)
        if got is None:
            res.outputs.append(OutputCheck(name, shape, None, atol, False, "not produced by the port"))
            continue
        if tuple(got.shape) != shape:
            res.outputs.append(OutputCheck(name, shape, None, atol, False,
                                           f"port gives shape {tuple(got.shape)}"))
            continue
        d = _max_abs(got, want)
        res.outputs.append(OutputCheck(name, shape, d, atol, d <= atol))
    for alias, target in aliases.items():
        got = produced.get(alias)
        if got is not None and target in stored and tuple(got.shape) == tuple(stored[target].shape):
            d = _max_abs(got, stored[target])
            atol = float(meta["outputs"].get(target, {}).get("suggested_atol_end_to_end", 1e-5))
            res.outputs.append(OutputCheck(alias, tuple(got.shape), d, atol, d <= atol, f"alias of {target}"))
    for name in meta.get("outputs_that_are_None") or []:
        ok = produced.get(name, None) is None
        res.outputs.append(OutputCheck(name, (), None, 0.0, ok, "must be None" if ok else "expected None"))
    return res


def shipped_vectors_dir() -> Path:
    """Folder of the vectors shipped with the suite."""
    return Path(__file__).resolve().parent / "vectors"


def check_paths(paths: list[Path] | None = None) -> list[VectorResult]:
    """Check every vector under ``paths`` (default: the shipped ones); typed errors on a malformed vector.

    Runs with one torch thread (restored after), so the differences printed, and the table that
    docs/baselines.md holds (:func:`markdown`), do not depend on the machine's core count.
    """
    import torch  # lazy: start-up time of `gfvc` (torch only when vectors are checked)

    pairs = find_vectors(list(paths or [shipped_vectors_dir()]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [check_vector(pt, js) for pt, js in pairs]
    finally:
        torch.set_num_threads(threads)


def _g(v: float | None) -> str:
    return "-" if v is None else ("0" if v == 0 else f"{v:.2g}")


def markdown(results: list[VectorResult]) -> str:
    """The conformance tables of docs/baselines.md (`gfvc conformance --markdown`).

    One summary row per model (its worst output relative to the tolerance) and, per model, every
    output's max |diff| and tolerance. tools/conformance_docs.py writes it into the page and a test
    checks that the page equals it, so the documented differences are the tool's.
    """
    lines = ["| model | official code | outputs | result | worst output (max \\|diff\\| / atol) | max \\|diff\\| "
             "| atol |", "|---|---|---:|---|---|---:|---:|"]
    for r in results:
        worst = max(r.outputs, key=lambda o: (o.max_abs_diff or 0.0) / o.atol if o.atol else 0.0, default=None)
        if worst is None or not worst.max_abs_diff:
            name, diff, tol = "(all outputs)", "0", "-"
        else:
            name, diff, tol = worst.name, _g(worst.max_abs_diff), _g(worst.atol)
        lines.append(f"| {r.model} | {r.official} | {len(r.outputs)} | {'PASS' if r.passed else 'FAIL'} | {name} "
                     f"| {diff} | {tol} |")
    for r in results:
        lines += ["", f"<details><summary>{r.model}: every output ({len(r.outputs)})</summary>", "",
                  "| output | shape | max \\|diff\\| | atol | result |", "|---|---|---:|---:|---|"]
        for o in r.outputs:
            shape = "(" + ",".join(str(d) for d in o.shape) + ")"
            lines.append(f"| {o.name} | {shape} | {_g(o.max_abs_diff)} | {_g(o.atol)} | "
                         f"{'PASS' if o.passed else 'FAIL'} |")
        lines += ["", "</details>"]
    return "\n".join(lines)


def format_results(results: list[VectorResult]) -> str:
    """Human-readable table: per model and per output the max |diff| against its tolerance."""
    lines = []
    for r in results:
        lines.append(f"{r.model}: {'PASS' if r.passed else 'FAIL'}  ({r.pt.name}, official {r.official})")
        width = max([len(o.name) for o in r.outputs] + [6])
        for o in r.outputs:
            diff = "-" if o.max_abs_diff is None else f"{o.max_abs_diff:.3g}"
            note = f"  {o.note}" if o.note else ""
            lines.append(f"  {o.name:{width}s}  {str(list(o.shape)):18s} max|diff| {diff:>9s}  atol {o.atol:.3g}  "
                         f"{'PASS' if o.passed else 'FAIL'}{note}")
    n_pass = sum(r.passed for r in results)
    lines.append(f"{n_pass} of {len(results)} model vector(s) pass")
    return "\n".join(lines)
