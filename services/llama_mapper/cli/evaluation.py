"""`mapperctl eval run|compare|gate`: through the evaluation service when one answers, else
in-process on the same code (runs land in the same report directories, so both share history)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from llama_mapper.domain.errors import InvalidArgument, Unavailable
from llama_mapper.evaluation.run import RunOptions
from llama_mapper.platform.settings.evaluation import EvaluationSettings
from llama_mapper.platform.stack import healthy, service, use_local_token
from llama_mapper.platform.terminal import print_table

if TYPE_CHECKING:  # imported when a command runs: every mapperctl start builds this parser
    from llama_mapper.evaluation.client import EvaluationClient
    from llama_mapper.evaluation.service import EvaluationService, RunInfo

# host:port of the evaluation service mapperctl talks to (a client setting, not the server's).
ADDRESS_ENV = "MAPPER_EVALUATION_ADDRESS"
WHERE = (
    "Each command goes through the evaluation service at --address (default $"
    + ADDRESS_ENV
    + ", else the local stack's when it answers health checks). It runs in-process, on this "
    "process's code and registry settings, when no address is set and no local stack answers, "
    "with --in-process, or when --reports-dir, --registry or --engine configure an in-process run. "
    "An address that is given and does not answer is an error."
)


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=None,
        help=f"the evaluation service (default ${ADDRESS_ENV}, else the local stack's evaluation "
        "service if it answers, else in-process)",
    )
    where.add_argument(
        "--in-process",
        action="store_true",
        help="run on this process's code even when an evaluation service answers",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `eval ...` on mapperctl's subparsers; each command sets `func(args) -> int`."""
    evaluation = subparsers.add_parser(
        "eval",
        help="evaluate mappers, compare versions, check gates (through the evaluation service)",
        description=WHERE,
    )
    evaluation.add_argument(
        "--reports-dir",
        type=Path,
        default=None,
        help="run directories of an in-process run (default $MAPPER_EVALUATION_REPORTS_DIR or "
        "var/evaluation/runs)",
    )
    evaluation.add_argument(
        "--registry",
        default=None,
        help="registry host:port of an in-process run (default $MAPPER_REGISTRY_ADDRESS)",
    )
    commands = evaluation.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="evaluate a model version, the rules, or the hybrid", description=WHERE
    )
    _add_target_options(run)
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
        default=None,
        help="hardware profile (default: the evaluating side's $MAPPER_EVALUATION_HARDWARE_PROFILE, "
        "cpu-2core)",
    )
    run.add_argument(
        "--engine",
        choices=("auto", "vllm", "transformers"),
        default=None,
        help="batch engine of an in-process run (default $MAPPER_EVALUATION_ENGINE or auto); "
        "a service uses its own",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of perturbations and splits")
    run.add_argument(
        "--json",
        action="store_true",
        help="print report.json (plus report_dir) instead of the summary",
    )
    run.set_defaults(func=cmd_run)

    compare = commands.add_parser(
        "compare", help="a candidate against a baseline (default: the champion)", description=WHERE
    )
    _add_target_options(compare)
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

    gate = commands.add_parser(
        "gate",
        help="check a version against its targets and the champion (exit 1 when it fails)",
        description=WHERE,
    )
    _add_target_options(gate)
    gate.add_argument("version", type=int)
    gate.add_argument("--model", default="mapper")
    gate.add_argument(
        "--profile",
        default=None,
        help="hardware profile whose targets apply (default: the evaluating side's "
        "$MAPPER_EVALUATION_HARDWARE_PROFILE, cpu-2core)",
    )
    gate.add_argument("--alpha", type=float, default=0.05)
    gate.add_argument("--json", action="store_true")
    gate.set_defaults(func=cmd_gate)
    return evaluation


def _service(args: argparse.Namespace) -> EvaluationService:
    from llama_mapper.evaluation.server import build_service

    use_local_token()
    overrides: dict[str, Any] = {}
    if args.reports_dir:
        overrides["reports_dir"] = args.reports_dir
    if args.registry:
        overrides["registry_address"] = args.registry
    if getattr(args, "engine", None):
        overrides["engine"] = args.engine
    return build_service(EvaluationSettings(**overrides))


def _local_stack_address() -> str | None:
    """The local stack's evaluation service when it answers health checks."""
    address = service("evaluation").address
    return address if healthy(address) else None


def _evaluator(args: argparse.Namespace) -> EvaluationService | EvaluationClient:
    """The evaluation service's client, or the service itself in this process (see WHERE)."""
    named = {"--reports-dir": args.reports_dir, "--registry": args.registry}
    named["--engine"] = getattr(args, "engine", None)
    local_flags = [flag for flag, value in named.items() if value is not None]
    if args.address and local_flags:
        raise InvalidArgument(
            f"{', '.join(local_flags)} configure an in-process run; the evaluation service at "
            f"{args.address} uses its own settings: drop them or --address"
        )
    address = None
    if not args.in_process and not local_flags:
        settings = EvaluationSettings()
        configured = "address" in settings.model_fields_set
        address = args.address or (settings.address if configured else _local_stack_address())
    if address is None:
        print("evaluating in-process", file=sys.stderr)
        return _service(args)
    from llama_mapper.evaluation.client import EvaluationClient

    # The token the service checks, resolved as a service started from this environment resolves
    # it: MAPPER_EVALUATION_TOKEN, else the registry token (mapperctl's main() has already taken
    # the local stack's from var/registry-token when MAPPER_REGISTRY_TOKEN is unset).
    token = EvaluationSettings().caller_token()
    try:
        client = EvaluationClient.connect(
            address, token=token, ca_file=EvaluationSettings().ca_file
        )
    except Unavailable as exc:
        raise Unavailable(
            f"{exc.message}: start the stack (`mapperctl stack up`), point --address or "
            f"${ADDRESS_ENV} at a running service, or pass --in-process"
        ) from None
    print(f"evaluating through the evaluation service at {address}", file=sys.stderr)
    return client


def _follow(snapshots: Iterable[RunInfo]) -> RunInfo:
    """Progress on stderr (a bar per phase on a terminal, a line per phase otherwise); returns the
    last, terminal snapshot."""
    tty = sys.stderr.isatty()
    bar: tqdm | None = None
    phase = None
    last = None
    try:
        for info in snapshots:
            last = info
            if info.phase != phase:
                if bar is not None:
                    bar.close()
                    bar = None
                phase = info.phase
                if phase and phase != "done":
                    if tty:
                        bar = tqdm(desc=phase, unit="case", leave=False, file=sys.stderr)
                    else:
                        total = f": {info.cases_total} cases" if info.cases_total else ""
                        print(f"  {phase}{total}", file=sys.stderr)
            if bar is not None:
                bar.total = info.cases_total or None
                bar.n = info.cases_done
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    assert last is not None  # both sources yield at least the terminal snapshot
    print(f"run {last.run_id} {last.state.lower()} after {last.elapsed_s:.1f} s", file=sys.stderr)
    return last


def cmd_run(args: argparse.Namespace) -> int:
    from llama_mapper.evaluation.report_dir import summary_markdown
    from llama_mapper.evaluation.service import FAILED, RunRequest

    if args.rules_only:
        mode = "rules"
    else:
        if args.version is None and args.alias is None:
            raise InvalidArgument("name --version N or --alias NAME (or pass --rules-only)")
        mode = "hybrid" if args.hybrid else "model"
    request = RunRequest(
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
            hardware_profile=args.profile or "",  # empty: the evaluating side's default
            max_cases=args.max_cases,
            seed=args.seed,
            show_progress=False,  # _follow draws the progress, whichever side runs
        ),
    )
    evaluator = _evaluator(args)
    remote = getattr(evaluator, "address", None)
    info = None
    try:
        info = evaluator.start(request)
        on = f" on eval set {info.eval_set_sha256[:12]}" if info.eval_set_sha256 else ""
        print(f"run {info.run_id}: {mode}{on}", file=sys.stderr)
        info = _follow(evaluator.watch(info.run_id))
        if info.state == FAILED:
            print(
                f"mapperctl eval run: {info.run_id} failed: {info.failure_reason}", file=sys.stderr
            )
            return 1
        info, report = evaluator.report(info.run_id)
    except KeyboardInterrupt:
        if remote and info is not None:
            print(f"run {info.run_id} goes on at the evaluation service {remote}", file=sys.stderr)
        raise
    finally:
        evaluator.close()
    if args.json:
        print(json.dumps({**report, "report_dir": info.report_dir}, indent=2, sort_keys=True))
    else:
        print(summary_markdown(report))
        where = f" (written by the evaluation service at {remote})" if remote else ""
        print(f"report: {info.report_dir}{where}")
    return 0


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def cmd_compare(args: argparse.Namespace) -> int:
    evaluator = _evaluator(args)
    try:
        cand, base, comparison = evaluator.compare(
            args.model, args.candidate, args.baseline, args.eval_set_sha256, args.alpha
        )
    finally:
        evaluator.close()
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
    evaluator = _evaluator(args)
    try:
        outcome = evaluator.gate(args.model, args.version, args.profile or "", args.alpha)
    finally:
        evaluator.close()
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
