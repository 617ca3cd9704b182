"""`gfvc run`, `gfvc list`, `gfvc doctor`: run a condition and see what the machine has."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import metrics
import metrics.weights as mw
import reports
from anchors import vtm as _vtm
from anchors.common import ffmpeg_exe, ffmpeg_info
from gfvc.argtypes import add_offline_arg, positive_int
from gfvc.codec import CODECS, Environment, load_builtin_codecs
from gfvc.devices import MixedDevices, check_uniform_devices, device_type, device_types
from gfvc.errors import ConfigError, GfvcError, NotAvailable
from gfvc.factory import build_codec
from gfvc.fileio import check_output_dir
from gfvc.progress import RunProgress
from metrics import weights
from metrics.weights import FETCH_FIX
from reports.originals import original_source
from suite.cli.common import add_env_args, check_model_choices, env_from_args, local_device
from suite.runner import executors
from suite.runner.control import RunLock, sigterm_as_interrupt
from suite.runner.executors import connect_dask
from suite.runner.jobs import job_uses_device, valid_record
from suite.runner.plan import execute, failed, plan_run, raise_if_failed, write_run_json
from suite.runner.status import write_plan
from test_conditions import builtin_conditions, load_condition
from test_conditions.manifest import load_manifest

DEFAULT_WORKDIR = "gfvc-runs"


def register(sub: argparse._SubParsersAction) -> None:
    """Sub-commands run, list, doctor."""
    p = sub.add_parser("run", help="run a test condition (default: the embedded demo)")
    p.add_argument("--condition", default="demo", help="built-in name or YAML path (default: demo)")
    p.add_argument("--codec", action="append", dest="codecs", metavar="NAME",
                   help="codec to run (repeatable; default: the condition's list)")
    p.add_argument("--workdir", default=None, help=f"run directory (default: {DEFAULT_WORKDIR}/CONDITION)")
    p.add_argument("--manifest", help="sequence manifest overriding the condition's")
    p.add_argument("--data-dir", help="folder that relative manifest paths are resolved against ($GFVC_DATA_DIR)")
    p.add_argument("-j", "--jobs", type=positive_int, default=None,
                   help="parallel jobs (default: number of CPU cores)")
    p.add_argument("--executor", choices=["local", "dask"], default="local")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (implies --executor dask)")
    p.add_argument("--threads-per-job", type=positive_int, default=1, help="torch threads per job (default 1)")
    p.add_argument("--frames", type=positive_int, help="code only the first N frames (overrides the condition)")
    p.add_argument("--force", action="store_true", help="recompute jobs that already have records")
    p.add_argument("--dry-run", action="store_true", help="print the job matrix and commands, run nothing")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--no-save-decoded", action="store_true", help="do not keep decoded viewing copies")
    p.add_argument("--keep-frames", metavar="LIST",
                   help="also keep these decoded frames (0-based, e.g. 7,12) as exact stills for the report's "
                        "Figure 5 (default: 3 evenly spaced inter frames + the largest-motion frame)")
    p.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                   help="wall-clock limit per job attempt (default: the condition's execution.job_timeout_s; "
                        "0 = none); a job past it is stopped and recorded as failed, reason timeout")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help="rerun a job up to N times after a transient failure (worker lost, external tool "
                        "killed by a signal); never after a deterministic error (default: the condition's)")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True) in every job (recorded)")
    p.add_argument("--allow-mixed-devices", action="store_true",
                   help="allow records computed on another device type in this run directory and its report")
    add_env_args(p)
    add_offline_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list conditions, codecs and metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("doctor", help="what is installed (VTM, VVenC, weights, torch) and what to do",
                       description="Shows what is installed and what to do. With --condition, exits 1 when "
                                   "something that condition needs (codec, binary, weights, sequences) is missing.")
    p.add_argument("--condition", help="check everything this condition needs (exit 1 if something is missing)")
    p.add_argument("--data-dir", help="folder that relative manifest paths are resolved against ($GFVC_DATA_DIR)")
    add_env_args(p)
    p.set_defaults(func=cmd_doctor)


# --- run ---------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    cond = load_condition(args.condition)
    if args.frames is not None:
        cond = cond.with_overrides(frames=args.frames)
    workers = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"-j must be >= 1, got {workers}")
    if args.threads_per_job < 1:
        raise ConfigError(f"--threads-per-job must be >= 1, got {args.threads_per_job}")
    timeout_s = cond.execution.job_timeout_s if args.job_timeout is None else args.job_timeout
    retries = cond.execution.retries if args.retries is None else args.retries
    if timeout_s < 0:
        raise ConfigError(f"--job-timeout must be >= 0 (0 = no limit), got {timeout_s:g}")
    if retries < 0:
        raise ConfigError(f"--retries must be >= 0, got {retries}")
    run_dir = Path(args.workdir or Path(DEFAULT_WORKDIR) / cond.name).resolve()
    env = env_from_args(args)
    check_model_choices(env, cond)
    if not args.scheduler:  # `--device cuda` without CUDA: one line before anything is created
        local_device(env)
    check_output_dir(run_dir, what="run folder", create=not args.dry_run)
    if args.scheduler and not args.dry_run:  # a scheduler that does not answer: say so before any work
        connect_dask(args.scheduler).close()
    use_dask = args.executor == "dask" or bool(args.scheduler)
    if args.dry_run:
        names = list(args.codecs or cond.codecs)
        problems = codec_problems(cond, env, names)
        ready = [n for n in names if n not in problems]
        plan = None
        try:
            plan = plan_run(cond, run_dir, env, codecs=ready or names,
                            manifest=Path(args.manifest) if args.manifest else None,
                            data_dir=Path(args.data_dir) if args.data_dir else None, check=False) if ready else None
        except GfvcError:  # no sequences, wrong sizes: the codecs' problems first, then the error (exit 2)
            _dry_run(None, cond, run_dir, problems)
            raise
        return _dry_run(plan, cond, run_dir, problems)
    with contextlib.ExitStack() as stack:
        session = None
        if use_dask:
            if args.scheduler:
                session = stack.enter_context(executors.dask_session(scheduler=args.scheduler))
                env = env.replace(device=executors.check_cluster_device(session, env.device))
                workers = session.n_threads()
            else:
                env = local_device(env)
                session = stack.enter_context(executors.dask_session(
                    workers=workers, gpu=device_type(env.device) == "cuda"))
        else:
            env = local_device(env)
        plan = plan_run(cond, run_dir, env, codecs=args.codecs,
                        manifest=Path(args.manifest) if args.manifest else None,
                        data_dir=Path(args.data_dir) if args.data_dir else None,
                        check=True, save_decoded=not args.no_save_decoded)
        run_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(RunLock(run_dir).acquire(["gfvc", *getattr(args, "argv", sys.argv[1:])]))
        return _run_locked(args, plan, env, workers, timeout_s, retries, session, stack, sigterm_as_interrupt)
    return 0  # pragma: no cover


def _run_locked(args: argparse.Namespace, plan: Any, env: Environment, workers: int, timeout_s: float,
                retries: int, session: Any, stack: Any, sigterm_as_interrupt: Any) -> int:
    cond, run_dir = plan.condition, plan.run_dir
    weights = prepare_weights(cond, env)
    run_json = write_run_json(plan, ["gfvc", *getattr(args, "argv", sys.argv[1:])], metric_weights=weights)
    for name, history in (run_json.get("superseded") or {}).items():
        if history and history[-1].get("replaced") == run_json["updated"]:
            print(f"gfvc: codec {name} now runs with another binary, checkpoint or setting than before in this "
                  "folder: its older records stay in records/ but reports use only the new ones "
                  "(run.json: superseded)", file=sys.stderr)
    write_plan(run_dir, plan.jobs)
    todo: list[Any] = []
    kept: list[dict[str, Any]] = []
    for j in plan.jobs:
        rec = None if args.force else valid_record(j)
        if rec:
            kept.append(rec)
        else:
            todo.append(j)
    _check_kept_devices(kept, env, todo, allow=args.allow_mixed_devices, run_dir=run_dir)
    where = f"Dask at {session.address}" if session is not None else f"{workers} worker(s)"
    limits = (f", job timeout {timeout_s:g} s" if timeout_s else "") + (f", {retries} retries" if retries else "")
    print(f"gfvc: condition {cond.name} v{cond.version}: {len(plan.jobs)} jobs "
          f"({len(kept)} already done, {len(todo)} to run) on {where}, device {env.device}{limits} -> {run_dir}",
          file=sys.stderr)

    progress = RunProgress(todo, slots=workers)
    try:
        with sigterm_as_interrupt(), _failed_downloads_for_workers():
            new = execute(todo, executor="dask" if session is not None else "local", workers=workers,
                          on_done=progress.done, timeout_s=timeout_s, retries=retries, session=session)
    except KeyboardInterrupt:
        progress.close()
        stack.close()  # stop the Dask cluster we own, release the lock
        cmd = " ".join(["gfvc", *getattr(args, "argv", sys.argv[1:])])
        print(f"gfvc: interrupted: {progress.finished} of {len(todo)} jobs finished in this run (their records are "
              f"kept), the others were cancelled or stopped with their encoders; resume with: {cmd}",
              file=sys.stderr)
        return 130
    finally:
        progress.close()
    records = list(kept) + new
    _print_summary(records, weights)
    _print_checkpoint_notes(plan.codecs)
    if not args.no_report:
        try:
            check_uniform_devices(records, allow=args.allow_mixed_devices, what=f"the records of {run_dir}")
            _write_report(run_dir, allow_mixed_devices=args.allow_mixed_devices,
                          manifest=Path(args.manifest) if args.manifest else None,
                          data_dir=Path(args.data_dir) if args.data_dir else None)
        except GfvcError as e:  # the run's results stand; say why there is no report
            print(f"gfvc: no report: {e}", file=sys.stderr)
    print(f"results: {run_dir}")
    if failed(records):
        raise_if_failed(records)
    return 0


def prepare_weights(cond: Any, env: Environment) -> dict[str, dict[str, str]]:
    """Fetch missing weight files once, before any job; say once which metrics will not be computed.

    Returns {metric: {"status", "reason"}} for run.json (the report states it once).
    """
    reasons = metrics.ensure_weights(cond.metrics, env.weights_dir)
    out = {m: {"status": "ok", "reason": ""} for m in cond.metrics.names if m in ("dists", "lpips", "fvd")}
    for m, why in reasons.items():
        out[m] = {"status": "not_computed", "reason": why}
    if reasons:
        by_reason: dict[str, list[str]] = {}
        for m, why in reasons.items():  # the fix is the same for every file: said once, at the end
            by_reason.setdefault(why.replace(f"; {FETCH_FIX}", ""), []).append(m.upper())
        parts = [f"{' and '.join(ms)}: {why}" for why, ms in by_reason.items()]
        fix = f" | {FETCH_FIX}" if any(FETCH_FIX in why for why in reasons.values()) else ""
        print(f"gfvc: these metrics will be recorded as not computed: {' | '.join(parts)}{fix}", file=sys.stderr)
    return out


@contextlib.contextmanager
def _failed_downloads_for_workers() -> Iterator[None]:
    """Pass this run's failed downloads to its worker processes, so none of them retries (or waits)."""
    failed = weights.failed_downloads()
    old = os.environ.get(weights.FAILED_ENV)
    if failed:
        os.environ[weights.FAILED_ENV] = json.dumps(failed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(weights.FAILED_ENV, None)
        else:
            os.environ[weights.FAILED_ENV] = old


def _check_kept_devices(kept: list[dict[str, Any]], env: Environment, todo: list[Any], *, allow: bool,
                        run_dir: Path) -> None:
    """Refuse to add results computed on this run's device type to records computed on another."""
    if allow or not kept or not todo:
        return
    here = device_type(env.device)
    uses = any(any(job_uses_device(j)) for j in todo)
    other = {t: v for t, v in device_types(kept).items() if t != here}
    if uses and other:
        t, labels = next(iter(other.items()))
        raise MixedDevices(f"{run_dir} holds {len(labels)} record(s) computed on {t} (e.g. {labels[0]}) but this run "
                           f"computes on {here}; one comparison must not mix device types: use --device {t}, "
                           "another --workdir, --force to recompute all, or --allow-mixed-devices")


def codec_problems(cond: Any, env: Environment, names: list[str]) -> dict[str, str]:
    """{codec: why it cannot run here, with the fix} for the codecs of ``names`` that fail their check.

    A checkpoint the user gave on the command line (--model) that is not what it should be is a user
    error, raised (exit 2); what a codec lacks by default (binary, weights, a checkpoint of its size)
    is listed."""
    load_builtin_codecs()
    out: dict[str, str] = {}
    for name in names:
        try:
            build_codec(name, cond, env.replace(device="cpu")).check()
        except GfvcError as e:
            if name in env.models and not isinstance(e, NotAvailable):
                raise
            out[name] = str(e)
    return out


def _dry_run(plan: Any, cond: Any, run_dir: Path, problems: dict[str, str]) -> int:
    """The job matrix of the codecs that can run, and for each codec that cannot, why and the fix.

    Exit 0 when every codec can run, 1 otherwise (like `gfvc doctor --condition`): a dry run that
    listed jobs the real run would refuse would promise more than it does.
    """
    n_jobs = len(plan.jobs) if plan is not None else 0
    print(f"condition {cond.name} v{cond.version} ({cond.fingerprint[:12]}), {n_jobs} jobs, run dir {run_dir}")
    for j in plan.jobs if plan is not None else []:
        print(f"  {j.key}  {j.codec:16s} {j.sequence.name:28s} {j.rate_point.key}")
    for name, prov in (plan.codecs if plan is not None else {}).items():
        cmds = prov.get("command_templates")
        if cmds:
            print(f"  {name} commands:")
            for c in cmds:
                print("    " + " ".join(map(str, c)))
        if prov.get("checkpoint_verification") == "unverified":
            print(f"  {name}: checkpoint {prov.get('model_id', '?')} is UNVERIFIED: "
                  f"{prov.get('checkpoint_verification_note', '')}")
    if problems:
        print(f"{len(problems)} problem(s): the jobs of these codecs are not listed, and `gfvc run` refuses until "
              "each is fixed (or the codec left out with --codec):")
        for name, why in problems.items():
            print(f"  - {name}: {why}")
        return 1
    return 0


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _print_summary(records: list[dict[str, Any]], weights: dict[str, dict[str, str]] | None = None) -> None:
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return
    names: list[str] = []
    for r in ok:
        for k in r.get("metrics", {}):
            if k not in names:
                names.append(k)
    canonical = ["psnr", "psnr_y", "ssim", "dists", "lpips", "fvd"]  # resumed records come back key-sorted
    names.sort(key=lambda n: (canonical.index(n) if n in canonical else len(canonical), n))
    header = ["codec", "sequence", "QP", "kbps"] + names
    rows = []
    for r in sorted(ok, key=lambda r: (r["codec"], r["sequence"]["name"], r["rate_point"]["qp"])):
        m = r.get("metrics", {})
        rows.append([r["codec"], r["sequence"]["name"], str(r["rate_point"]["qp"]), _fmt(r["kbps"])]
                    + [_fmt(m.get(n, {}).get("value")) for n in names])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    said = {v["reason"] for v in (weights or {}).values() if v.get("reason")}
    missing: dict[str, set[str]] = {}
    for r in ok:
        for k, v in r.get("metrics", {}).items():
            if v.get("status") != "ok":
                missing.setdefault(k, set()).add(str(v.get("reason") or "no reason recorded"))
    if missing:
        new = sorted({why for whys in missing.values() for why in whys} - said)
        note = "missing weights (see the note above)" if not new else "; ".join(new)
        print(f"n/a = not computed ({', '.join(sorted(missing))}): {note}")


def _print_checkpoint_notes(codecs: dict[str, dict[str, Any]]) -> None:
    """Say, under the results, which codecs ran a checkpoint that no published hash vouches for."""
    for name, prov in codecs.items():
        if prov.get("checkpoint_verification") == "unverified":
            print(f"{name}: checkpoint {prov.get('model_id', '?')} is UNVERIFIED: "
                  f"{prov.get('checkpoint_verification_note', '')}")


def _write_report(run_dir: Path, allow_mixed_devices: bool = False, manifest: Path | None = None,
                  data_dir: Path | None = None) -> None:
    out = reports.build_report(run_dir, allow_mixed_devices=allow_mixed_devices,
                               originals=original_source(run_dir, manifest=manifest, data_dir=data_dir))
    if out.get("txt"):  # the report's Table-1 summary, vertex numbers and caveats
        print(out["txt"].read_text().rstrip())
    main = out.get("html") or out.get("md")
    if main:
        print(f"report: {main}")


# --- list / doctor / info -------------------------------------------------------------

def _wrapped(prefix: str, text: str, width: int = 100) -> str:
    """``prefix`` then ``text`` wrapped at word boundaries, continuation lines aligned (never cut)."""
    return textwrap.fill(" ".join(str(text).split()), width=max(width, len(prefix) + 30),
                         initial_indent=prefix, subsequent_indent=" " * len(prefix),
                         break_long_words=False, break_on_hyphens=False)


def cmd_list(args: argparse.Namespace) -> int:
    load_builtin_codecs()
    conds: dict[str, dict[str, str]] = {}
    for name, path in builtin_conditions().items():
        cond = load_condition(path)
        conds[name] = {"version": cond.version, "description": " ".join(cond.description.split()),
                       "file": str(path)}
    codecs = {n: {"family": CODECS.get(n).family, "description": CODECS.get(n).description,
                  "origin": CODECS.origin(n)} for n in CODECS.names()}
    try:
        # exactly the names that metrics.names / --metrics accept, with the values each one records
        mets: dict[str, dict[str, Any]] = {
            n: {"values": list(vals), "lower_is_better": metrics.LOWER_IS_BETTER[vals[0]]}
            for n, vals in metrics.METRIC_VALUES.items()}
    except (ImportError, AttributeError):  # pragma: no cover
        mets = {}
    if args.json:
        print(json.dumps({"conditions": conds, "codecs": codecs, "metrics": mets}, indent=1))
        return 0
    print("conditions:")
    for n, c in conds.items():
        print(_wrapped(f"  {n:12s} v{c['version']:5s} ", c["description"]))
    print("codecs:")
    for n, cc in codecs.items():
        print(_wrapped(f"  {n:16s} {cc['family']:10s} ", cc["description"]))
    print("metrics (names for a condition's metrics.names and for --metrics):")
    for n, m in mets.items():
        extra = f" (records {', '.join(m['values'])})" if len(m["values"]) > 1 else ""
        print(f"  {n:8s} {'lower' if m['lower_is_better'] else 'higher'} is better{extra}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    env = env_from_args(args)
    cond = load_condition(args.condition or "demo")
    load_builtin_codecs()
    check_model_choices(env, cond)
    problems: list[str] = []
    print(f"gfvc {__import__('gfvc').__version__}, python {sys.version.split()[0]}")
    try:
        import torch

        print(f"torch {torch.__version__}: {torch.get_num_threads()} threads, cuda available: "
              f"{torch.cuda.is_available()}, cpu cores: {os.cpu_count()} (jobs run with --threads-per-job "
              "torch threads each)")
    except ImportError:
        print("torch: NOT INSTALLED (pip install torch)")
        problems.append("torch is not installed")
    _doctor_tools(env)
    names = list(cond.codecs) if args.condition else CODECS.names()
    failing = codec_problems(cond, env, names)
    for name in names:
        if name in failing:
            print(f"codec {name:16s} NOT AVAILABLE: {failing[name]}")
            problems.append(f"codec {name}: {failing[name]}")
        else:
            print(f"codec {name:16s} ok" + (f" for condition {cond.name}" if args.condition else ""))
    problems += _doctor_weights(env, cond if args.condition else None)
    if args.condition:
        problems += _doctor_sequences(cond, Path(args.data_dir) if args.data_dir else None)
        if problems:
            print(f"condition {cond.name}: {len(problems)} problem(s); fix them before `gfvc run --condition "
                  f"{args.condition}`:")
            for p in problems:
                print(f"  - {p}")
            return 1
        print(f"condition {cond.name}: everything it needs is here")
    return 0


def _doctor_tools(env: Environment) -> None:
    """VTM (path, version, cfg) and the bundled ffmpeg, or what to do."""
    root, origin = _vtm.vtm_root(env)
    try:
        t = _vtm.find_vtm(env)
        version = _vtm.vtm_version(t.encoder) or "version not printed"
        print(f"VTM: {t.root} (from {origin}): VTM {version}; EncoderApp {t.encoder}; DecoderApp {t.decoder}; "
              f"cfg {t.cfg}")
    except NotAvailable as e:
        state = "not configured" if root is None else f"not usable ({origin} {root})"
        print(f"VTM: {state}: {e}")
    try:
        info = ffmpeg_info(ffmpeg_exe())
        print(f"ffmpeg: {info.path}: {info.version}; libvvenc {info.libvvenc_version or 'absent'}; "
              f"VVC decoder {'yes' if info.has_vvc_decoder else 'NO'}")
    except NotAvailable as e:
        print(f"ffmpeg: NOT AVAILABLE: {e}")


def _doctor_weights(env: Environment, cond: Any | None) -> list[str]:
    """Weight files, the fix once, and (for a condition) what its metrics lack."""
    rows = mw.status(env.weights_dir)
    for st in rows:
        print(f"weights {st}")
    mode = ("downloads off (GFVC_OFFLINE=1)" if mw.offline() else
            f"missing files are downloaded on first use{' from ' + mw.mirror() if mw.mirror() else ''}")
    print(f"weights: hub cache {mw.hub_dir()}; {mode}")
    if any(not st.verified for st in rows):
        print("weights fix: `gfvc weights fetch` (downloads and verifies; needs internet or GFVC_WEIGHTS_MIRROR"
              "=URL), or download the files elsewhere and run `gfvc weights install DIR`")
    if cond is None:
        return []
    return [f"metric weights: {line}" for line in metrics.missing_weights(cond.metrics, env.weights_dir)]


def _doctor_sequences(cond: Any, data_dir: Path | None) -> list[str]:
    """Every sequence of the condition's manifest must be where the manifest says (sha256 not checked here)."""
    try:
        entries = load_manifest(cond.manifest_path)
    except GfvcError as e:
        return [f"manifest: {e}"]
    if not entries:
        return [f"manifest {cond.manifest_path} lists no sequences: build it with `gfvc sequences prepare`"]
    missing = [e for e in entries if e.format != "builtin" and not e.path(data_dir).exists()]
    print(f"sequences: {len(entries) - len(missing)} of {len(entries)} found ({cond.manifest_path}); "
          "`gfvc sequences verify` checks their sha256")
    if missing:
        return [f"{len(missing)} sequence file(s) missing, e.g. {missing[0].path(data_dir)} (set --data-dir or "
                "GFVC_DATA_DIR, or fix the manifest)"]
    return []
