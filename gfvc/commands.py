"""Core sub-commands: run, list, doctor, sequences, encode, decode, info."""
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

from gfvc.argtypes import add_offline_arg, positive_float, positive_int, warn
from gfvc.codec import CODECS, Environment, RatePoint, Sequence, load_builtin_codecs
from gfvc.errors import ConfigError, GfvcError, InputError, NotAvailable

DEFAULT_WORKDIR = "gfvc-runs"


def _existing_dir(value: str | None, what: str) -> str | None:
    """An explicitly given folder must exist: a typo is an error, not 'not found' later."""
    if value and not Path(value).expanduser().is_dir():
        raise ConfigError(f"{what} {value}: no such folder")
    return value


def _env_from_args(args: argparse.Namespace) -> Environment:
    from gfvc.devices import validate_device

    vtm_dir = _existing_dir(getattr(args, "vtm_dir", None), "--vtm-dir") or os.environ.get("GFVC_VTM_DIR")
    weights_dir = (_existing_dir(getattr(args, "weights_dir", None), "--weights-dir")
                   or _existing_dir(os.environ.get("GFVC_WEIGHTS_DIR"), "$GFVC_WEIGHTS_DIR"))
    if getattr(args, "vtm_cfg", None) and not Path(args.vtm_cfg).expanduser().is_file():
        raise ConfigError(f"--vtm-cfg {args.vtm_cfg}: no such file")
    extra: dict[str, Any] = {"threads_per_job": int(getattr(args, "threads_per_job", None) or 1)}
    if getattr(args, "deterministic", False):
        extra["deterministic"] = True
    from gfvc.models import parse_model_args

    models = parse_model_args(getattr(args, "model", None))
    # checkpoint paths are resolved here, so workers in other folders (Dask) see the same files
    models = {k: str(Path(v).expanduser().resolve()) for k, v in models.items()}
    return Environment(
        vtm_dir=Path(vtm_dir) if vtm_dir else None,
        vtm_cfg=Path(args.vtm_cfg) if getattr(args, "vtm_cfg", None) else None,
        weights_dir=Path(weights_dir) if weights_dir else None,
        timeout_s=float(getattr(args, "timeout", None) or 3600.0),
        device=validate_device(getattr(args, "device", None) or "auto"),
        models=models,
        extra=extra,
    )


def _local_device(env: Environment) -> Environment:
    """Resolve auto|cuda|cuda:N on this machine now: `--device cuda` without CUDA is one line, exit 2."""
    from gfvc.devices import resolve_device

    return env.replace(device=resolve_device(env.device))


def _check_model_choices(env: Environment, cond: Any) -> None:
    """--model and the condition's models: section name known codecs that take a checkpoint."""
    from gfvc.models import validate_model_names

    if env.models:
        validate_model_names(list(env.models), "--model")
    if getattr(cond, "models", None):
        validate_model_names(list(cond.models), f"{cond.source or cond.name}: models")


def _add_env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vtm-dir", help="VTM-22.2 build folder with EncoderApp/DecoderApp (or $GFVC_VTM_DIR)")
    p.add_argument("--vtm-cfg", help="low-delay B cfg (default: VTM_DIR/cfg/encoder_lowdelay_vtm.cfg)")
    p.add_argument("--weights-dir", help="folder with metric/model weights (or $GFVC_WEIGHTS_DIR)")
    p.add_argument("--timeout", type=positive_float, default=3600.0, help="per external command, seconds")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="torch device of generative codecs and learned metrics (default auto: CUDA if torch "
                        "sees it, else CPU)")
    p.add_argument("--model", action="append", metavar="CODEC=PATH",
                   help="checkpoint of a generative codec for this run (repeatable; overrides the condition's "
                        "models: section; `gfvc models status` lists known checkpoints)")


def register(sub: argparse._SubParsersAction) -> None:
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
    _add_env_args(p)
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
    _add_env_args(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("sequences", help="verify or prepare test sequences")
    ss = p.add_subparsers(dest="seq_command", metavar="ACTION")
    v = ss.add_parser("verify", help="check every sequence of a manifest (sha256, size, frames)")
    v.add_argument("--condition", default="demo")
    v.add_argument("--manifest")
    v.add_argument("--data-dir")
    v.set_defaults(func=cmd_sequences_verify)
    pr = ss.add_parser("prepare", help="turn TED-Talk videos into CTC sequences + manifest entries")
    from tools.prepare import add_prepare_args

    add_prepare_args(pr)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    p = sub.add_parser("encode", help="encode one video with one codec")
    p.add_argument("input", help="video (.yuv/.rgb need --size; .mp4/.mkv; PNG folder)")
    p.add_argument("-o", "--output", required=True, help="bitstream file")
    p.add_argument("--codec", required=True)
    p.add_argument("--qp", type=int, required=True, help="anchor QP or key-frame QP")
    p.add_argument("--size", help="WxH for raw input")
    p.add_argument("--fps", type=positive_float, help="frame rate (default: from the file, else 25)")
    p.add_argument("--frames", type=positive_int, help="first N frames only")
    p.add_argument("--condition", default="demo", help="settings (anchor, colour, key frames) taken from it")
    _add_env_args(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a bitstream written by the suite",
                       description="Decode a bitstream. For a VVC stream, .yuv output is the decoder's own planes "
                                   "bit for bit (VTM DecoderApp -d 8 with --vtm-dir / $GFVC_VTM_DIR, else ffmpeg's "
                                   "native VVC decoder); .rgb and PNG are converted with the condition's colour "
                                   "spec; .mp4/.mkv/.mov are LOSSY viewing copies (never measure them).")
    p.add_argument("bitstream")
    p.add_argument("-o", "--output", required=True,
                   help=".yuv, .rgb, a folder for PNGs (exact), or .mp4/.mkv/.mov (lossy viewing copy)")
    p.add_argument("--condition", default="demo", help="colour spec and key-frame coder taken from it")
    p.add_argument("--fps", type=positive_float,
                   help="frame rate of a viewing copy (default: the stream's, else the condition's)")
    _add_env_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="describe a generative codec's model, e.g. `gfvc info mraa`, "
                                    "`gfvc info s2d --config small`",
                       description="Values per inter frame, quantisation scale, resolution, the checkpoint this run "
                                   "would use (path, how it was chosen, sha256), its architecture and parameters per "
                                   "module. --config NAME describes a named configuration without any checkpoint.")
    p.add_argument("what", metavar="CODEC", help="generative codec name (`gfvc list`)")
    p.add_argument("--config", default=None, help="named configuration (no checkpoint needed)")
    p.add_argument("--condition", default="demo", help="condition whose models: section and size apply")
    p.add_argument("--model", action="append", metavar="CODEC=PATH", help="checkpoint to describe")
    p.add_argument("--weights-dir", help="folder with installed checkpoints (or $GFVC_WEIGHTS_DIR)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


# --- run ---------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from gfvc.control import RunLock, sigterm_as_interrupt
    from gfvc.fileio import check_output_dir
    from gfvc.runner import plan_run
    from test_conditions import load_condition

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
    env = _env_from_args(args)
    _check_model_choices(env, cond)
    if not args.scheduler:  # `--device cuda` without CUDA: one line before anything is created
        _local_device(env)
    check_output_dir(run_dir, what="run folder", create=not args.dry_run)
    if args.scheduler and not args.dry_run:  # a scheduler that does not answer: say so before any work
        from gfvc.runner import connect_dask

        connect_dask(args.scheduler).close()
    use_dask = args.executor == "dask" or bool(args.scheduler)
    if args.dry_run:
        plan = plan_run(cond, run_dir, env, codecs=args.codecs,
                        manifest=Path(args.manifest) if args.manifest else None,
                        data_dir=Path(args.data_dir) if args.data_dir else None, check=False)
        return _dry_run(plan)
    with contextlib.ExitStack() as stack:
        session = None
        if use_dask:
            from gfvc import executors

            if args.scheduler:
                session = stack.enter_context(executors.dask_session(scheduler=args.scheduler))
                env = env.replace(device=executors.check_cluster_device(session, env.device))
                workers = session.n_threads()
            else:
                from gfvc.devices import device_type

                env = _local_device(env)
                session = stack.enter_context(executors.dask_session(
                    workers=workers, gpu=device_type(env.device) == "cuda"))
        else:
            env = _local_device(env)
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
    from gfvc.devices import check_uniform_devices
    from gfvc.runner import execute, failed, raise_if_failed, valid_record, write_run_json
    from gfvc.status import write_plan

    cond, run_dir = plan.condition, plan.run_dir
    weights = _prepare_weights(cond, env)
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
    from gfvc.progress import RunProgress

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


def _prepare_weights(cond: Any, env: Environment) -> dict[str, dict[str, str]]:
    """Fetch missing weight files once, before any job; say once which metrics will not be computed.

    Returns {metric: {"status", "reason"}} for run.json (the report states it once).
    """
    try:
        import metrics
    except ImportError:  # pragma: no cover
        return {}
    reasons = metrics.ensure_weights(cond.metrics, env.weights_dir)
    out = {m: {"status": "ok", "reason": ""} for m in cond.metrics.names if m in ("dists", "lpips", "fvd")}
    for m, why in reasons.items():
        out[m] = {"status": "not_computed", "reason": why}
    if reasons:
        from metrics.weights import FETCH_FIX

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
    try:
        from metrics import weights
    except ImportError:  # pragma: no cover
        yield
        return
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
    from gfvc.devices import MixedDevices, device_type, device_types
    from gfvc.runner import job_uses_device

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


def _dry_run(plan: Any) -> int:
    print(f"condition {plan.condition.name} v{plan.condition.version} ({plan.condition.fingerprint[:12]}), "
          f"{len(plan.jobs)} jobs, run dir {plan.run_dir}")
    for j in plan.jobs:
        print(f"  {j.key}  {j.codec:16s} {j.sequence.name:28s} {j.rate_point.key}")
    for name, prov in plan.codecs.items():
        cmds = prov.get("command_templates")
        if cmds:
            print(f"  {name} commands:")
            for c in cmds:
                print("    " + " ".join(map(str, c)))
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


def _write_report(run_dir: Path, allow_mixed_devices: bool = False, manifest: Path | None = None,
                  data_dir: Path | None = None) -> None:
    try:
        import reports
        from reports.originals import original_source  # the viewer offers the original sequences too
        build = reports.build_report
    except (ImportError, AttributeError):  # pragma: no cover
        return
    out = build(run_dir, allow_mixed_devices=allow_mixed_devices,
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
    from test_conditions import builtin_conditions, load_condition

    load_builtin_codecs()
    conds: dict[str, dict[str, str]] = {}
    for name, path in builtin_conditions().items():
        cond = load_condition(path)
        conds[name] = {"version": cond.version, "description": " ".join(cond.description.split()),
                       "file": str(path)}
    codecs = {n: {"family": CODECS.get(n).family, "description": CODECS.get(n).description,
                  "origin": CODECS.origin(n)} for n in CODECS.names()}
    try:
        import metrics

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
    from test_conditions import load_condition

    env = _env_from_args(args)
    cond = load_condition(args.condition or "demo")
    load_builtin_codecs()
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
    for name in names:
        try:
            CODECS.get(name)(cond, env).check()
            print(f"codec {name:16s} ok" + (f" for condition {cond.name}" if args.condition else ""))
        except GfvcError as e:
            print(f"codec {name:16s} NOT AVAILABLE: {e}")
            problems.append(f"codec {name}: {e}")
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
    from anchors import vtm as _vtm
    from anchors.common import ffmpeg_exe, ffmpeg_info

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
    try:
        import metrics
        import metrics.weights as mw
    except (ImportError, AttributeError):  # pragma: no cover
        print("weights: metrics package not available")
        return ["metrics package not available"]
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
    from gfvc.sequences import load_manifest

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


def cmd_info(args: argparse.Namespace) -> int:
    from gfvc.model_commands import cmd_info as _info

    return _info(args)


# --- sequences -------------------------------------------------------------------------

def cmd_sequences_verify(args: argparse.Namespace) -> int:
    from gfvc.sequences import load_manifest, verify_entry
    from test_conditions import load_condition

    manifest = Path(args.manifest) if args.manifest else load_condition(args.condition).manifest_path
    entries = load_manifest(manifest)
    if not entries:
        raise ConfigError(f"{manifest}: no sequences listed")
    data_dir = Path(args.data_dir) if args.data_dir else None
    bad = 0
    for e in entries:
        try:
            verify_entry(e, data_dir)
            print(f"ok        {e.name}")
        except InputError as err:
            bad += 1
            print(f"MISMATCH  {e.name}: {err}")
    print(f"{len(entries) - bad} of {len(entries)} sequences verified ({manifest})")
    if bad:
        raise InputError(f"{bad} sequence(s) failed verification")
    return 0


# --- encode / decode ------------------------------------------------------------------------

def cmd_encode(args: argparse.Namespace) -> int:
    from gfvc.fileio import atomic_copy, check_output_file, work_dir
    from gfvc.runner import make_codec
    from gfvc.video import is_viewing_copy, parse_size, read_container, read_video, video_format
    from test_conditions import load_condition

    inp = Path(args.input)
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    out = check_output_file(args.output, what="bitstream (-o)")
    size = parse_size(args.size) if args.size else None
    fmt = video_format(inp)
    fps, fps_from = args.fps, "--fps"
    if fmt == "container":
        if is_viewing_copy(inp):
            warn(f"{inp} is a lossy viewing copy written by the suite; you are encoding its H.264 artefacts")
        frames, file_fps = read_container(inp, args.frames)
        if fps is None:
            fps, fps_from = file_fps, "the file"
    else:
        frames = read_video(inp, size=size, frames=args.frames)
    if fps is None:
        fps, fps_from = 25.0, "default; pass --fps"
    cond = load_condition(args.condition).with_overrides(
        width=int(frames.shape[2]), height=int(frames.shape[1]), frames=int(frames.shape[0]), fps=float(fps))
    rp = RatePoint(args.qp)
    env = _local_device(_env_from_args(args))
    _check_model_choices(env, cond)
    codec = make_codec(args.codec, cond, env)
    codec.check()
    seq = Sequence(name=inp.stem, frames=frames, fps=fps)
    with work_dir("gfvc-encode-") as tmp:  # kept on failure: error messages name its logs
        res = codec.encode(seq, rp, tmp)
        atomic_copy(res.bitstream, out)
    bits = out.stat().st_size * 8
    print(f"{out}: {args.codec} QP {args.qp}, {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}, "
          f"{bits} bits, {bits / 1000 / (frames.shape[0] / fps):.2f} kbps at {fps:g} fps ({fps_from})")
    return 0


def identify_bitstream(path: Path) -> tuple[str, float | None]:
    """Which codec wrote a bitstream, and its frame rate if stored.

    The suite's container names its codec; a raw VVC elementary stream (anchor
    output, VTM or VVenC) starts with a start code and is reported as "vvc".
    """
    from gfvc import container

    if container.is_container(path):
        hdr = container.peek(path)  # verifies the whole file (BitstreamError if damaged)
        return hdr.codec, hdr.fps
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x00\x00\x00\x01") or head.startswith(b"\x00\x00\x01"):
        return "vvc", None
    raise InputError(f"{path}: not a bitstream written by this suite (neither a gfvc container nor a VVC stream)")


def vvc_decoder_codec(env: Environment) -> str:
    """The codec whose decoder decodes a raw VVC stream: VTM when a VTM folder is given, else ffmpeg's."""
    from anchors.vtm import vtm_root

    root, _ = vtm_root(env)
    return "vtm" if root is not None else "vvenc"


def cmd_decode(args: argparse.Namespace) -> int:
    import numpy as np

    from gfvc.fileio import check_output_file, work_dir
    from gfvc.runner import make_codec
    from gfvc.video import WRITE_CONTAINER_SUFFIXES, check_video_output, video_format, write_video, write_yuv420_planes
    from test_conditions import load_condition

    bs = Path(args.bitstream)
    if not bs.is_file():
        raise InputError(f"{bs}: no such bitstream file")
    out = check_video_output(args.output, what="decoded output (-o)")
    kind = video_format(out, must_exist=False)
    name, stream_fps = identify_bitstream(bs)
    env = _local_device(_env_from_args(args))
    cond = load_condition(args.condition)
    _check_model_choices(env, cond)
    codec = make_codec(vvc_decoder_codec(env) if name == "vvc" else name, cond, env)
    if name == "vvc":
        codec.check()  # e.g. --vtm-dir without DecoderApp: say so before decoding
    decoder = codec.decoder_description()
    with work_dir("gfvc-decode-") as tmp:  # kept on failure: error messages name its logs
        dec = codec.decode(bs, tmp)
    extras_paths = {k: (out.with_name(out.stem + f".{k}.npy") if kind != "png" else out / f"{k}.npy")
                    for k in dec.extras}
    for p in extras_paths.values():
        check_output_file(p, what="decoded extra")
    t, h, w = dec.frames.shape[:3]
    c = cond.colour
    if kind == "yuv420p" and dec.planes is not None:
        write_yuv420_planes(out, dec.planes.y, dec.planes.u, dec.planes.v)
        what = f"{dec.planes.pix_fmt}, the decoder's own planes (bit-exact)"
    elif kind == "container":
        fps, fps_from = (args.fps, "--fps") if args.fps else (
            (stream_fps, "the stream") if stream_fps else (cond.fps, f"condition {cond.name}"))
        write_video(out, dec.frames, fps)
        what = (f"LOSSY viewing copy (H.264, {fps:g} fps from {fps_from}); never measure it: decode to .yuv/.rgb/"
                f"PNG for the exact frames (allowed: {', '.join(sorted(WRITE_CONTAINER_SUFFIXES))})")
    else:
        write_video(out, dec.frames, matrix=c.matrix, range_=c.range)
        what = {"rgb": "planar RGB", "png": "PNG frames",
                "yuv420p": f"yuv420p converted from the decoder's RGB with {c.matrix} {c.range} (condition "
                           f"{cond.name})"}[kind]
        if kind == "rgb" and dec.planes is not None:
            what += f", converted from the decoder's YUV with {c.matrix} {c.range} (condition {cond.name})"
    for k, arr in dec.extras.items():
        np.save(extras_paths[k], arr)
        print(f"{extras_paths[k]}: {k} {tuple(arr.shape)}")
    print(f"{out}: {t} frames {w}x{h}, {what}; decoded by {decoder}")
    return 0
