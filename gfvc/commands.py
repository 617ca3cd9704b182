"""Core sub-commands: run, list, doctor, sequences, encode, decode, info."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gfvc.codec import CODECS, Environment, RatePoint, Sequence, load_builtin_codecs
from gfvc.errors import ConfigError, InputError, NotAvailable

DEFAULT_WORKDIR = "gfvc-runs"


def _env_from_args(args: argparse.Namespace) -> Environment:
    from gfvc.models import parse_model_args

    vtm_dir = getattr(args, "vtm_dir", None) or os.environ.get("GFVC_VTM_DIR")
    weights_dir = getattr(args, "weights_dir", None) or os.environ.get("GFVC_WEIGHTS_DIR")
    models = parse_model_args(getattr(args, "model", None))
    # checkpoint paths are resolved here, so workers in other folders (Dask) see the same files
    models = {k: str(Path(v).expanduser().resolve()) for k, v in models.items()}
    return Environment(
        vtm_dir=Path(vtm_dir) if vtm_dir else None,
        vtm_cfg=Path(args.vtm_cfg) if getattr(args, "vtm_cfg", None) else None,
        weights_dir=Path(weights_dir) if weights_dir else None,
        timeout_s=float(getattr(args, "timeout", None) or 3600.0),
        models=models,
        extra={"threads_per_job": int(getattr(args, "threads_per_job", None) or 1)},
    )


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
    p.add_argument("--timeout", type=float, default=3600.0, help="per external command, seconds")
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
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel jobs (default: number of CPU cores)")
    p.add_argument("--executor", choices=["local", "dask"], default="local")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (implies --executor dask)")
    p.add_argument("--threads-per-job", type=int, default=1, help="torch threads per job (default 1)")
    p.add_argument("--frames", type=int, help="code only the first N frames (overrides the condition)")
    p.add_argument("--force", action="store_true", help="recompute jobs that already have records")
    p.add_argument("--dry-run", action="store_true", help="print the job matrix and commands, run nothing")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--no-save-decoded", action="store_true", help="do not keep decoded viewing copies")
    _add_env_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list conditions, codecs and metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("doctor", help="what is installed (VTM, VVenC, weights, torch) and what to do")
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
    p.add_argument("--fps", type=float, help="frame rate (default: from the file, else 25)")
    p.add_argument("--frames", type=int, help="first N frames only")
    p.add_argument("--condition", default="demo", help="settings (anchor, colour, key frames) taken from it")
    _add_env_args(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a bitstream written by the suite")
    p.add_argument("bitstream")
    p.add_argument("-o", "--output", required=True, help=".yuv, .rgb, .mp4 or a folder for PNGs")
    p.add_argument("--condition", default="demo")
    _add_env_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="describe a generative codec's model, e.g. `gfvc info mraa`, `gfvc info s2d --config small`",
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
    from gfvc.records import comparable  # noqa: F401  (documented import point)
    from gfvc.runner import plan_run, raise_if_failed, valid_record, write_run_json
    from test_conditions import load_condition

    cond = load_condition(args.condition)
    if args.frames is not None:
        if args.frames < 1:
            raise ConfigError(f"--frames must be >= 1, got {args.frames}")
        cond = cond.with_overrides(frames=args.frames)
    workers = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"-j must be >= 1, got {workers}")
    if args.threads_per_job < 1:
        raise ConfigError(f"--threads-per-job must be >= 1, got {args.threads_per_job}")
    run_dir = Path(args.workdir or Path(DEFAULT_WORKDIR) / cond.name).resolve()
    env = _env_from_args(args)
    _check_model_choices(env, cond)
    plan = plan_run(cond, run_dir, env, codecs=args.codecs,
                    manifest=Path(args.manifest) if args.manifest else None,
                    data_dir=Path(args.data_dir) if args.data_dir else None,
                    check=not args.dry_run, save_decoded=not args.no_save_decoded)
    if args.dry_run:
        return _dry_run(plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_json(plan, ["gfvc", *sys.argv[1:]])
    _warn_missing_weights(cond, env)
    todo, kept = [], []
    for j in plan.jobs:
        rec = None if args.force else valid_record(j)
        (kept if rec else todo).append(rec or j)
    print(f"gfvc: condition {cond.name} v{cond.version}: {len(plan.jobs)} jobs "
          f"({len(kept)} already done, {len(todo)} to run) with {workers} worker(s) -> {run_dir}",
          file=sys.stderr)
    records = list(kept) + _execute_with_progress(todo, args, workers)
    from gfvc.runner import failed

    _print_summary(records)
    if not args.no_report:
        _write_report(run_dir)
    print(f"results: {run_dir}")
    if failed(records):
        raise_if_failed(records)
    return 0


def _execute_with_progress(jobs: list, args: argparse.Namespace, workers: int) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from gfvc.runner import execute

    if not jobs:
        return []
    bar = tqdm(total=len(jobs), unit="job", file=sys.stderr, dynamic_ncols=True, disable=None)

    def on_done(rec: dict[str, Any]) -> None:
        bar.update(1)
        tag = "ok" if rec["status"] == "ok" else f"FAILED ({rec['error']['type']})"
        bar.set_postfix_str(f"{rec['codec']}/{rec['rate_point']['label']} {tag}", refresh=False)
        if rec["status"] != "ok":
            bar.write(f"job {rec['codec']}/{rec['sequence']['name']}/{rec['rate_point']['label']} failed: "
                      f"{rec['error']['message']}", file=sys.stderr)

    try:
        return execute(jobs, executor=args.executor, workers=workers, scheduler=args.scheduler, on_done=on_done)
    finally:
        bar.close()


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


def _warn_missing_weights(cond: Any, env: Environment) -> None:
    try:
        import metrics
    except ImportError:  # pragma: no cover
        return
    lines = metrics.missing_weights(cond.metrics, env.weights_dir)
    if lines:
        print("gfvc: some perceptual-metric weights are missing; those metrics will be recorded as "
              "not computed:", file=sys.stderr)
        for line in lines:
            print(f"  - {line}", file=sys.stderr)
        print("  install them with `gfvc weights install DIR` (see `gfvc weights status`).", file=sys.stderr)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _print_summary(records: list[dict[str, Any]]) -> None:
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return
    names: list[str] = []
    for r in ok:
        for k in r.get("metrics", {}):
            if k not in names:
                names.append(k)
    header = ["codec", "sequence", "QP", "kbps"] + names
    rows = []
    for r in sorted(ok, key=lambda r: (r["codec"], r["sequence"]["name"], r["rate_point"]["qp"])):
        m = r.get("metrics", {})
        rows.append([r["codec"], r["sequence"]["name"], str(r["rate_point"]["qp"]), _fmt(r["kbps"])]
                    + [_fmt(m.get(n, {}).get("value")) for n in names])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    not_computed = sorted({k for r in ok for k, v in r.get("metrics", {}).items() if v.get("status") != "ok"})
    if not_computed:
        print(f"n/a = not computed ({', '.join(not_computed)}): the reason is in each record; "
              f"`gfvc weights status` lists missing weights")


def _write_report(run_dir: Path) -> None:
    try:
        import reports
        build = getattr(reports, "build_report")
    except (ImportError, AttributeError):  # pragma: no cover
        return
    out = build(run_dir)
    main = out.get("html") or out.get("md")
    if main:
        print(f"report: {main}")


# --- list / doctor / info -------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    from test_conditions import builtin_conditions, load_condition

    load_builtin_codecs()
    conds = {}
    for name, path in builtin_conditions().items():
        c = load_condition(path)
        conds[name] = {"version": c.version, "description": " ".join(c.description.split()), "file": str(path)}
    codecs = {n: {"family": CODECS.get(n).family, "description": CODECS.get(n).description,
                  "origin": CODECS.origin(n)} for n in CODECS.names()}
    try:
        import metrics

        mets = {n: {"lower_is_better": b} for n, b in metrics.LOWER_IS_BETTER.items()}
    except (ImportError, AttributeError):  # pragma: no cover
        mets = {}
    if args.json:
        print(json.dumps({"conditions": conds, "codecs": codecs, "metrics": mets}, indent=1))
        return 0
    print("conditions:")
    for n, c in conds.items():
        print(f"  {n:12s} v{c['version']:5s} {c['description'][:90]}")
    print("codecs:")
    for n, c in codecs.items():
        print(f"  {n:16s} {c['family']:10s} {c['description'][:80]}")
    print("metrics:")
    for n, m in mets.items():
        print(f"  {n:8s} {'lower' if m['lower_is_better'] else 'higher'} is better")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from test_conditions import load_condition

    env = _env_from_args(args)
    cond = load_condition("demo")
    load_builtin_codecs()
    print(f"gfvc {__import__('gfvc').__version__}, python {sys.version.split()[0]}")
    try:
        import torch

        print(f"torch {torch.__version__}: {torch.get_num_threads()} threads, cuda available: {torch.cuda.is_available()}, "
              f"cpu cores: {os.cpu_count()} (jobs run with --threads-per-job torch threads each)")
    except ImportError:
        print("torch: NOT INSTALLED (pip install torch)")
    for name in CODECS.names():
        cls = CODECS.get(name)
        try:
            cls(cond, env).check()
            print(f"codec {name:16s} ok")
        except NotAvailable as e:
            print(f"codec {name:16s} NOT AVAILABLE: {e}")
    try:
        import metrics.weights as mw

        for st in mw.status(env.weights_dir):
            print(f"weights {st}")
    except (ImportError, AttributeError):  # pragma: no cover
        print("weights: metrics package not available")
    return 0


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
    from gfvc.runner import make_codec
    from gfvc.video import parse_size, read_container, read_video, video_format
    from test_conditions import load_condition

    inp = Path(args.input)
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    size = parse_size(args.size) if args.size else None
    fmt = video_format(inp)
    fps = args.fps
    if fmt == "container":
        frames, file_fps = read_container(inp, args.frames)
        fps = fps or file_fps
    else:
        frames = read_video(inp, size=size, frames=args.frames)
    fps = fps or 25.0
    cond = load_condition(args.condition).with_overrides(
        width=int(frames.shape[2]), height=int(frames.shape[1]), frames=int(frames.shape[0]), fps=float(fps))
    rp = RatePoint(args.qp)
    env = _env_from_args(args)
    _check_model_choices(env, cond)
    codec = make_codec(args.codec, cond, env)
    codec.check()
    seq = Sequence(name=inp.stem, frames=frames, fps=fps)
    out = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="gfvc-encode-") as tmp:
        res = codec.encode(seq, rp, Path(tmp))
        _install_file(Path(res.bitstream), out)  # the output appears complete or not at all
    bits = out.stat().st_size * 8
    print(f"{out}: {args.codec} QP {args.qp}, {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}, "
          f"{bits} bits, {bits / 1000 / (frames.shape[0] / fps):.2f} kbps at {fps:g} fps")
    return 0


def identify_bitstream(path: Path) -> tuple[str, float | None]:
    """Which codec decodes a bitstream written by the suite, and its frame rate if stored.

    The suite's container names its codec; a raw VVC elementary stream (anchor
    output, VTM or VVenC) starts with a start code and is decoded by the native
    VVC decoder of the ``vvenc`` anchor.
    """
    from gfvc import container

    if container.is_container(path):
        hdr = container.peek(path)  # verifies the whole file (BitstreamError if damaged)
        return hdr.codec, hdr.fps
    head = path.read_bytes()[:4]
    if head.startswith(b"\x00\x00\x00\x01") or head.startswith(b"\x00\x00\x01"):
        return "vvenc", None
    raise InputError(f"{path}: not a bitstream written by this suite (neither a gfvc container nor a VVC stream)")


def cmd_decode(args: argparse.Namespace) -> int:
    from gfvc.runner import make_codec
    from gfvc.video import video_format
    from test_conditions import load_condition

    bs = Path(args.bitstream)
    if not bs.is_file():
        raise InputError(f"{bs}: no such bitstream file")
    out = Path(args.output)
    video_format(out, must_exist=False)  # an unsupported output name fails before any decoding
    name, fps = identify_bitstream(bs)
    cond = load_condition(args.condition)
    env = _env_from_args(args)
    _check_model_choices(env, cond)
    codec = make_codec(name, cond, env)
    with tempfile.TemporaryDirectory(prefix="gfvc-decode-") as tmp:
        dec = codec.decode(bs, Path(tmp))
    fps = fps or 25.0
    for p, what in _write_decoded(out, dec.frames, dec.extras, fps):
        print(f"{p}: {what}")
    print(f"{out}: {dec.frames.shape[0]} frames {dec.frames.shape[2]}x{dec.frames.shape[1]} decoded by {name}")
    return 0


def _install_file(src: Path, out: Path) -> None:
    """Copy ``src`` to ``out`` through a temporary file in the same folder (never a half-written ``out``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_decoded(out: Path, frames: Any, extras: dict[str, Any], fps: float) -> list[tuple[Path, str]]:
    """Write the decoded video (and extras as .npy next to it) so that nothing appears half-written.

    Everything goes to temporary names in the target folder first and is
    renamed into place at the end; on an error the temporaries are removed.
    """
    import numpy as np

    from gfvc.video import video_format, write_video

    tag = f".tmp{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, str]] = []
    if video_format(out, must_exist=False) == "png":  # a folder of PNGs (+ extras inside it)
        tmp_dir = out.with_name(f".{out.name}{tag}")
        try:
            tmp_dir.mkdir()  # an existing folder is a PNG folder whatever its name
            write_video(tmp_dir, frames, fps)
            for k, arr in extras.items():
                np.save(tmp_dir / f"{k}.npy", arr)
                written.append((out / f"{k}.npy", f"{k} {tuple(arr.shape)}"))
            if out.exists():
                for f in sorted(tmp_dir.iterdir()):
                    os.replace(f, out / f.name)
                tmp_dir.rmdir()
            else:
                os.replace(tmp_dir, out)
        finally:
            if tmp_dir.exists():
                shutil.rmtree(tmp_dir, ignore_errors=True)
        return written
    moves: list[tuple[Path, Path]] = []
    try:
        tmp_video = out.with_name(f".{out.stem}{tag}{out.suffix}")
        moves.append((tmp_video, out))
        write_video(tmp_video, frames, fps)
        for k, arr in extras.items():
            final = out.with_name(out.stem + f".{k}.npy")
            tmp = final.with_name(f".{final.stem}{tag}.npy")
            moves.append((tmp, final))
            np.save(tmp, arr)
            written.append((final, f"{k} {tuple(arr.shape)}"))
        for tmp, final in moves:
            os.replace(tmp, final)
    finally:
        for tmp, _ in moves:
            if tmp.exists():
                tmp.unlink()
    return written
