"""A run: the job matrix of a condition, its execution by an executor, and the run folder's run.json.

condition -> jobs (sequence x codec x rate point) -> executor -> :func:`suite.runner.jobs.run_job` ->
one JSON record per job. Each job writes its own record atomically, so a killed run loses at most the
jobs in flight, and a rerun skips every job whose valid record exists.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gfvc import __version__
from gfvc.codec import Environment
from gfvc.condition import Condition
from gfvc.errors import ConfigError, InputError, JobFailed
from gfvc.provenance import identity_provenance, suite_provenance
from gfvc.records import atomic_write_json, content_key, stable_hash
from suite.runner import executors
from suite.runner.jobs import Job, make_codec
from test_conditions.manifest import SequenceEntry, load_manifest, verify_entry

ExecutorName = Literal["local", "dask"]


@dataclass
class RunPlan:
    condition: Condition
    run_dir: Path
    jobs: list[Job]
    codecs: dict[str, dict[str, Any]]
    sequences: list[SequenceEntry]


def plan_run(condition: Condition, run_dir: Path, env: Environment, codecs: Iterable[str] | None = None,
             manifest: Path | None = None, data_dir: Path | None = None, check: bool = True,
             save_decoded: bool = True) -> RunPlan:
    """Build the job matrix; checks that every codec can run here (NotAvailable otherwise)."""
    names = list(codecs or condition.codecs)
    if not names:
        raise ConfigError("no codecs to run: the condition lists none and no --codec was given")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"codec {dup[0]!r} given twice")
    entries = load_manifest(manifest or condition.manifest_path)
    if not entries:
        raise ConfigError(
            f"manifest {manifest or condition.manifest_path} lists no sequences: build it with "
            f"`gfvc sequences prepare` or pass --manifest FILE"
        )
    for e in entries:
        if (e.width, e.height) != (condition.width, condition.height):
            raise InputError(
                f"sequence {e.name!r} is {e.width}x{e.height} but condition {condition.name!r} "
                f"is {condition.width}x{condition.height}"
            )
        if e.frames < condition.frames:
            raise InputError(f"sequence {e.name!r} has {e.frames} frames; condition {condition.name!r} needs "
                             f"{condition.frames} (pass --frames {e.frames} or fewer to code fewer frames)")
    if check:  # fail fast, once, before any job: a wrong file would fail every job
        for e in entries:
            verify_entry(e, data_dir)
    provs: dict[str, dict[str, Any]] = {}
    jobs: list[Job] = []
    for name in names:
        # checked and described on the CPU: availability and identity do not depend on the device, and
        # the machine planning a Dask run (a login node) may have no GPU
        codec = make_codec(name, condition, env.replace(device="cpu"))
        if check:
            codec.check()
        prov = codec.provenance()
        provs[name] = prov
        phash = stable_hash(identity_provenance(prov))
        for rp in codec.rate_points():
            for e in entries:
                key = content_key(condition.fingerprint, e.identity, phash, rp.key)
                jobs.append(Job(key=key, condition=condition, sequence=e, codec=name, rate_point=rp,
                                run_dir=str(run_dir), env=env, codec_provenance=prov,
                                data_dir=str(data_dir) if data_dir else None, save_decoded=save_decoded,
                                codec_module=type(codec).__module__))
    return RunPlan(condition=condition, run_dir=Path(run_dir), jobs=jobs, codecs=provs, sequences=entries)


ProgressFn = Callable[[dict[str, Any]], None]


def execute(jobs: list[Job], executor: ExecutorName = "local", workers: int = 1,
            scheduler: str | None = None, on_done: ProgressFn | None = None, *,
            timeout_s: float = 0.0, retries: int = 0, session: Any = None) -> list[dict[str, Any]]:
    """Run jobs with the chosen executor; returns their records (completion order).

    ``-j 1`` runs in this process; ``-j N`` in N job processes (suite.runner.control);
    Dask on a LocalCluster or the cluster at ``scheduler`` (or an open
    ``session`` from suite.runner.executors.dask_session). ``timeout_s`` limits each
    job's wall-clock time (0 = none); ``retries`` reruns transient failures.
    Ctrl-C raises KeyboardInterrupt after stopping every running job.
    """
    if not jobs:
        return []
    if workers < 1:
        raise ConfigError(f"-j must be >= 1, got {workers}")
    if retries < 0:
        raise ConfigError(f"--retries must be >= 0, got {retries}")
    done: list[dict[str, Any]] = []

    def finish(rec: dict[str, Any]) -> None:
        done.append(rec)
        if on_done:
            on_done(rec)

    if executor == "dask" or scheduler or session is not None:
        executors.run_dask(jobs, finish, workers=workers, scheduler=scheduler, session=session,
                           timeout_s=timeout_s, retries=retries)
    elif workers == 1:
        executors.run_in_process(jobs, finish, timeout_s=timeout_s, retries=retries)
    else:
        executors.run_pool(jobs, finish, workers=workers, timeout_s=timeout_s, retries=retries)
    return done


RUN_JSON = "run.json"


def reproducing_argv(argv: list[str], codecs: list[str], default_codecs: list[str]) -> list[str]:
    """A ``gfvc run`` command line that reproduces every codec recorded in a run folder.

    The latest invocation's options with its ``--codec`` choices replaced by
    the union of all codecs run there (none when that is the condition's own
    list), and without --force / --dry-run (which do not change the data).
    """
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--codec":
            skip = True
            continue
        if a.startswith("--codec=") or a in ("--force", "--dry-run"):
            continue
        out.append(a)
    if list(codecs) != list(default_codecs):
        for c in codecs:
            out += ["--codec", c]
    return out


def _read_run_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _imported(prov: Any) -> bool:
    """A codec whose results `gfvc import` brought in (the suite did not run it)."""
    return isinstance(prov, dict) and bool(prov.get("imported"))


def write_run_json(plan: RunPlan, argv: list[str], metric_weights: dict[str, Any] | None = None,
                   reproduce: bool = True) -> dict[str, Any]:
    """Write (or merge into) RUN_DIR/run.json: condition, every codec's provenance, a reproducing command.

    A partial rerun (e.g. ``--codec s2d`` in a folder that also holds the
    anchor) keeps the provenance of the codecs it did not run; ``argv`` becomes
    a command that reproduces all of them, and ``invocations`` lists every
    command that wrote into the folder. A folder holding another condition
    (other fingerprint, e.g. other --frames) is refused: its records would mix.
    Imported codecs (provenance with ``imported``, `gfvc import`) are kept like
    native ones but left out of the reproducing command; ``reproduce=False``
    (an import) keeps the folder's reproducing command as it was.
    """
    path = plan.run_dir / RUN_JSON
    old = _read_run_json(path) or {}
    fp = plan.condition.fingerprint
    if old.get("condition_fingerprint") and old["condition_fingerprint"] != fp:
        raise ConfigError(
            f"{plan.run_dir} holds results of condition {old.get('condition_name')!r} with fingerprint "
            f"{str(old['condition_fingerprint'])[:12]}, this run is {plan.condition.name!r} {fp[:12]} (another "
            "version, --frames or settings): use another --workdir, or remove that folder")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    codecs: dict[str, Any] = dict(old.get("codecs") or {})
    superseded = dict(old.get("superseded") or {})
    for name, prov in plan.codecs.items():  # a rerun with another binary/checkpoint/setting
        before = codecs.get(name)
        if isinstance(before, dict) and stable_hash(identity_provenance(before)) != stable_hash(
                identity_provenance(prov)):
            superseded.setdefault(name, []).append({"provenance": before, "replaced": now})
    codecs.update(plan.codecs)
    order = [c for c in plan.condition.codecs if c in codecs] + [c for c in codecs if c not in plan.condition.codecs]
    codecs = {c: codecs[c] for c in order}
    seqs = {s["name"]: s for s in (old.get("sequences") or []) if isinstance(s, dict) and "name" in s}
    seqs.update({e.name: e.to_dict() for e in plan.sequences})
    invocations = list(old.get("invocations") or [])
    if not invocations and old.get("argv"):  # a run.json written before invocations were kept
        invocations.append({"argv": old.get("argv"), "created": old.get("created"),
                            "codecs": list(old.get("codecs") or {})})
    prov = suite_provenance()
    invocations.append({"argv": list(argv), "created": now, "codecs": list(plan.codecs),
                        "suite_version": __version__, "git_revision": prov.get("git_revision")})
    weights = dict(old.get("metric_weights") or {})
    weights.update(metric_weights or {})
    data = {
        "suite_version": __version__,
        "condition_name": plan.condition.name,
        "condition": plan.condition.to_dict(),
        "condition_fingerprint": fp,
        "codecs": codecs,
        "sequences": list(seqs.values()),
        "provenance": prov,
        "argv": (reproducing_argv(list(argv), [c for c in order if not _imported(codecs[c])],
                                  list(plan.condition.codecs)) if reproduce else list(old.get("argv") or [])),
        "invocations": invocations,
        "metric_weights": weights,
        "superseded": superseded,
        "created": old.get("created") or now,
        "updated": now,
    }
    atomic_write_json(path, data)
    return data


def failed(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") != "ok"]


def raise_if_failed(records: list[dict[str, Any]]) -> None:
    bad = failed(records)
    if bad:
        first = bad[0]
        raise JobFailed(
            f"{len(bad)} of {len(records)} jobs failed; first: {first['codec']}/{first['sequence']['name']}/"
            f"{first['rate_point']['label']}: {first['error']['type']}: {first['error']['message']}"
        )
