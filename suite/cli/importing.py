"""`gfvc import RUN_DIR`: results produced elsewhere, scored like the suite's own (docs/importing.md)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import reports
from gfvc.argtypes import add_offline_arg, positive_int
from gfvc.errors import ConfigError, GfvcError
from gfvc.fileio import check_output_dir
from gfvc.progress import RunProgress
from suite.cli.common import env_from_args, existing_dir, local_device
from suite.cli.run import prepare_weights
from suite.runner.control import RunLock
from suite.runner.importing import plan_import, run_import, write_import_run_json
from suite.runner.plan import failed, raise_if_failed
from tools.results_import import FAMILIES, ImportProblems, ImportSet, read_ahg, read_import_manifest

STATEMENT_OPTIONS = (("description", "--description"), ("software", "--software"), ("commit", "--commit"),
                     ("checkpoint_sha256", "--checkpoint-sha256"), ("contact", "--contact"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="bring results produced elsewhere (decoded videos + bitstreams) into a run folder",
        description="Scores decoded videos produced elsewhere with the condition's metrics and counts the rate "
                    "from their bitstream files; the records enter Table 1, plots, compare and regress like "
                    "native ones, labelled as imported. Source: an import manifest (--manifest) or the output "
                    "folder of the GFVC AhG software (--ahg). Everything is checked before anything is written.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder (created if missing)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, metavar="FILE", help="import manifest (YAML; docs/importing.md)")
    src.add_argument("--ahg", type=Path, metavar="DIR",
                     help="AhG software output: experiment/MODEL/Iframe_FORMAT (dec/, enc/, kp/) or experiment/MODEL")
    p.add_argument("--codec", metavar="NAME", help="name the records go under (required with --ahg)")
    p.add_argument("--condition", metavar="NAME|FILE",
                   help="built-in name or YAML path (required with --ahg; overrides the manifest's)")
    p.add_argument("--frames", type=positive_int, help="the condition's frame count override, as for `gfvc run`")
    p.add_argument("--qps", type=int, nargs="+", metavar="QP", help="with --ahg: import only these QPs (a "
                                                                    "sequence that has one of them must have all)")
    p.add_argument("--family", choices=FAMILIES, default=None, help="codec family (default: generative)")
    for key, opt in STATEMENT_OPTIONS:
        p.add_argument(opt, dest=f"stated_{key}", metavar="TEXT",
                       help={"description": "who produced these results, with what (free text; required unless "
                                            "the manifest has it)"}.get(key, f"provenance: {key.replace('_', ' ')}"))
    p.add_argument("--sequences", type=Path, metavar="FILE", help="sequence manifest overriding the condition's")
    p.add_argument("--data-dir", help="folder that relative sequence paths are resolved against ($GFVC_DATA_DIR)")
    p.add_argument("--force", action="store_true", help="rescore results that already have records")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the run's report")
    p.add_argument("--weights-dir", help="folder with metric weights (or $GFVC_WEIGHTS_DIR)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="torch device of the learned metrics (default auto)")
    p.add_argument("--threads-per-job", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--allow-mixed-devices", action="store_true",
                   help="write the report even if records were computed on another device type")
    add_offline_arg(p)
    p.set_defaults(func=cmd_import)


def _statement(args: argparse.Namespace) -> dict[str, str]:
    return {k: getattr(args, f"stated_{k}") for k, _ in STATEMENT_OPTIONS if getattr(args, f"stated_{k}")}


def read_source(args: argparse.Namespace) -> ImportSet:
    """The checked import set of the command line (ImportProblems / ConfigError when something is wrong)."""
    stated = _statement(args)
    sequences = args.sequences
    if args.ahg is not None:
        missing = [o for o, v in (("--codec", args.codec), ("--condition", args.condition),
                                  ("--description", stated.get("description"))) if not v]
        if missing:
            raise ConfigError(f"--ahg needs {', '.join(missing)} (the records' codec name, the test condition, and "
                              "who produced these results with what)")
        return read_ahg(args.ahg, condition=args.condition, codec=args.codec, statement=stated, frames=args.frames,
                        qps=args.qps, family=args.family or "generative", sequences=sequences)
    if args.qps:
        raise ConfigError("--qps selects QPs of an --ahg folder; a manifest lists its own results")
    s = read_import_manifest(args.manifest, condition=args.condition, frames=args.frames, codec=args.codec,
                             sequences=sequences, statement=stated)
    if args.family and args.family != s.family:
        s = dataclasses.replace(s, family=args.family)
    return s


def cmd_import(args: argparse.Namespace) -> int:
    try:
        return _import(args)
    except ImportProblems as e:  # every problem on its own line; nothing was written
        for line in e.problems:
            print(f"gfvc: error: {line}", file=sys.stderr)
        return e.exit_code


def _import(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).expanduser().resolve()
    existing_dir(args.data_dir, "--data-dir")
    check_output_dir(run_dir, what="run folder", create=False)
    env = local_device(env_from_args(args))
    s = read_source(args)
    data_dir = Path(args.data_dir) if args.data_dir else None
    plan = plan_import(s, run_dir, env, data_dir)
    argv = ["gfvc", *getattr(args, "argv", sys.argv[1:])]
    check_output_dir(run_dir, what="run folder")
    with RunLock(run_dir).acquire(argv):
        weights = prepare_weights(s.condition, env)
        run_json = write_import_run_json(plan, argv, weights)
        history = (run_json.get("superseded") or {}).get(s.codec) or []
        if history and history[-1].get("replaced") == run_json["updated"]:
            print(f"gfvc: import: {s.codec} now holds other files or another stated provenance than the earlier "
                  "import into this folder: its older records stay in records/ but reports use only these "
                  "(run.json: superseded)", file=sys.stderr)
        if s.not_covered:
            print(f"gfvc: import: note: {s.codec} has results for {len(s.sequences) - len(s.not_covered)} of "
                  f"{len(s.sequences)} sequences of {s.condition.name}; none for {', '.join(s.not_covered[:5])}"
                  + (" ..." if len(s.not_covered) > 5 else ""), file=sys.stderr)
        progress: list[RunProgress] = []

        def start(todo: list[Any], kept: list[dict[str, Any]]) -> None:
            print(f"gfvc: import {s.codec} ({s.source}: {s.root}) into {run_dir}, condition {s.condition.name} "
                  f"v{s.condition.version}: {len(plan.jobs)} results ({len(kept)} already imported, {len(todo)} to "
                  f"score), device {env.device}", file=sys.stderr)
            progress.append(RunProgress(todo, slots=1))

        try:
            records = run_import(plan, force=args.force, on_start=start,
                                 on_done=lambda r: progress[0].done(r))
        finally:
            if progress:
                progress[0].close()
    if not args.no_report:
        try:
            out = reports.build_report(run_dir, allow_mixed_devices=args.allow_mixed_devices)
            if out.get("txt"):
                print(out["txt"].read_text().rstrip())
            main = out.get("html") or out.get("md")
            if main:
                print(f"report: {main}")
        except GfvcError as e:  # the records stand; say why there is no report
            print(f"gfvc: no report: {e}", file=sys.stderr)
    print(f"results: {run_dir}")
    if failed(records):
        raise_if_failed(records)
    return 0
