"""`mapperctl eval run|compare|gate`: evaluation from a terminal, in-process on the same code as the
service (runs land in the same report directories, so the server and the CLI share history)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from llama_mapper.cli.table import print_table
from llama_mapper.core.errors import InvalidArgument
from llama_mapper.evaluation.runner import RunOptions
from llama_mapper.evaluation.settings import EvaluationSettings


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `eval ...` on mapperctl's subparsers; each command sets `func(args) -> int`."""
    defaults = EvaluationSettings()
    evaluation = subparsers.add_parser(
        "eval", help="evaluate mappers, compare versions, check gates"
    )
    evaluation.add_argument(
        "--reports-dir",
        type=Path,
        default=defaults.reports_dir,
        help="run directories (default %(default)s)",
    )
    evaluation.add_argument(
        "--registry", default=None, help="registry host:port (default $MAPPER_REGISTRY_ADDRESS)"
    )
    commands = evaluation.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="evaluate a model version, the rules, or the hybrid")
    run.add_argument("--model", default="mapper", help="registry model name (default %(default)s)")
    which = run.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="the version to evaluate")
    which.add_argument("--alias", help="evaluate the version an alias points to, e.g. champion")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--rules-only", action="store_true", help="the rules mapper alone, no model")
    mode.add_argument("--hybrid", action="store_true", help="rules first, the model for the rest")
    run.add_argument(
        "--eval-set", default="", help="eval set directory or .jsonl (default: the golden set)"
    )
    run.add_argument(
        "--held-out", default="", help="held-out set (e.g. a built mapper-heldout.jsonl)"
    )
    run.add_argument(
        "--calibration-set", default="", help="calibration split (e.g. a built mapper-eval.jsonl)"
    )
    run.add_argument("--analyst-version", type=int, help="also evaluate this analyst version")
    run.add_argument(
        "--analyst-model", default="analyst", help="analyst model name (default %(default)s)"
    )
    run.add_argument(
        "--analyst-set", default="", help="analyst cases (e.g. a built analyst-eval.jsonl)"
    )
    run.add_argument("--expected-sha256", default="", help="refuse an eval set with another digest")
    run.add_argument("--max-cases", type=int, default=0, help="first N cases only (never recorded)")
    run.add_argument("--no-robustness", action="store_true", help="skip the robustness suite")
    run.add_argument("--no-calibrate", action="store_true", help="do not fit a temperature")
    run.add_argument(
        "--no-record", action="store_true", help="do not write metrics to the registry"
    )
    run.add_argument(
        "--profile",
        default=defaults.hardware_profile,
        help="hardware profile (default %(default)s)",
    )
    run.add_argument(
        "--engine",
        choices=("auto", "vllm", "transformers"),
        default=defaults.engine,
        help="batch engine",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of perturbations and splits")
    run.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    run.set_defaults(func=cmd_run)

    compare = commands.add_parser(
        "compare", help="a candidate against a baseline (default: the champion)"
    )
    compare.add_argument("candidate", type=int, help="candidate version")
    compare.add_argument("--model", default="mapper")
    compare.add_argument(
        "--baseline", type=int, default=None, help="baseline version (default: champion)"
    )
    compare.add_argument("--eval-set-sha256", default="", help="compare runs on this eval set")
    compare.add_argument(
        "--alpha", type=float, default=0.05, help="significance level (default %(default)s)"
    )
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(func=cmd_compare)

    gate = commands.add_parser("gate", help="check a version against its targets and the champion")
    gate.add_argument("version", type=int)
    gate.add_argument("--model", default="mapper")
    gate.add_argument(
        "--profile",
        default=defaults.hardware_profile,
        help="hardware profile (default %(default)s)",
    )
    gate.add_argument("--alpha", type=float, default=0.05)
    gate.add_argument("--json", action="store_true")
    gate.set_defaults(func=cmd_gate)
    return evaluation


def _service(args: argparse.Namespace, engine: str | None = None) -> Any:
    from llama_mapper.evaluation.server import build_service

    try:
        from llama_mapper.cli.stack import use_local_token

        use_local_token()
    except ImportError:  # the stack module is optional in slim images
        pass
    overrides: dict[str, Any] = {"reports_dir": args.reports_dir}
    if args.registry:
        overrides["registry_address"] = args.registry
    if engine:
        overrides["engine"] = engine
    return build_service(EvaluationSettings(**overrides))


def cmd_run(args: argparse.Namespace) -> int:
    from llama_mapper.evaluation.report import SUMMARY_MD, load_report
    from llama_mapper.evaluation.service import FAILED, RunRequest

    if args.rules_only:
        mode = "rules"
    else:
        if args.version is None and args.alias is None:
            raise InvalidArgument("name --version N or --alias NAME (or pass --rules-only)")
        mode = "hybrid" if args.hybrid else "model"
    service = _service(args, args.engine)
    try:
        info = service.start(
            RunRequest(
                mode=mode,
                model=args.model,
                version=args.version,
                alias=args.alias,
                eval_set_uri=args.eval_set,
                expected_eval_set_sha256=args.expected_sha256,
                held_out_set_uri=args.held_out,
                calibration_set_uri=args.calibration_set,
                record_in_registry=not args.no_record and mode != "rules",
                analyst_model=args.analyst_model if args.analyst_version else "",
                analyst_version=args.analyst_version,
                analyst_set_uri=args.analyst_set,
                options=RunOptions(
                    robustness=not args.no_robustness,
                    calibrate=not args.no_calibrate,
                    hardware_profile=args.profile,
                    max_cases=args.max_cases,
                    seed=args.seed,
                    show_progress=sys.stderr.isatty(),
                ),
            )
        )
        print(f"run {info.run_id}: {mode} on eval set {info.eval_set_sha256[:12]}", file=sys.stderr)
        *_, info = service.watch(info.run_id, interval_s=2.0)
    finally:
        service.close()
    if info.state == FAILED:
        print(f"mapperctl eval run: {info.run_id} failed: {info.failure_reason}", file=sys.stderr)
        return 1
    report_dir = Path(info.report_dir)
    if args.json:
        print(json.dumps(load_report(report_dir), indent=2, sort_keys=True))
    else:
        print((report_dir / SUMMARY_MD).read_text(encoding="utf-8"))
        print(f"report: {report_dir}")
    return 0


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def cmd_compare(args: argparse.Namespace) -> int:
    service = _service(args)
    try:
        cand, base, comparison = service.compare(
            args.model, args.candidate, args.baseline, args.eval_set_sha256, args.alpha
        )
    finally:
        service.close()
    if args.json:
        print(
            json.dumps(
                {"candidate_run": cand.run_id, "baseline_run": base.run_id, **comparison}, indent=2
            )
        )
        return 0
    print(
        f"{args.model} v{cand.version} (run {cand.run_id}) vs v{base.version} (run {base.run_id}), eval set {comparison['eval_set_sha256'][:12]}\n"
    )
    print_table(
        ("metric", "candidate", "baseline", "delta"),
        [
            (d["metric"], _fmt(d["candidate"]), _fmt(d["baseline"]), f"{d['delta']:+.4g}")
            for d in comparison["deltas"]
        ],
    )
    m = comparison["mcnemar"]
    test = "exact binomial" if m["exact"] else f"chi-square {m['statistic']:.3f}"
    print(
        f"\nMcNemar ({test}): only candidate right {m['candidate_only_correct']}, only baseline right "
        f"{m['baseline_only_correct']}, p = {m['p_value']:.4g}"
    )
    print(
        "significant regression"
        if comparison["significant_regression"]
        else "no significant regression"
    )
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    service = _service(args)
    try:
        outcome = service.gate(args.model, args.version, args.profile, args.alpha)
    finally:
        service.close()
    if args.json:
        printable = {
            **outcome,
            "run": outcome["run"].run_id,
            "baseline_run": getattr(outcome["baseline_run"], "run_id", None),
        }
        print(json.dumps(printable, indent=2))
    else:
        print_table(
            ("criterion", "target", "actual", "result", "why"),
            [
                (
                    c["name"],
                    _fmt(c["target"]),
                    _fmt(c["actual"]),
                    "pass" if c["passed"] else "FAIL",
                    c["message"],
                )
                for c in outcome["criteria"]
            ],
        )
        verdict = "PASSED" if outcome["passed"] else "FAILED"
        print(
            f"\n{args.model} v{args.version} on {outcome['hardware_profile']}: gate {verdict} (run {outcome['run'].run_id}); recorded in the registry"
        )
    return 0 if outcome["passed"] else 1
