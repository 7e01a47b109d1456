"""`mapperctl serve deploy|status|shutdown|openapi`, `mapperctl canary start|status|run|abort`,
`mapperctl export --target vllm|tgi VERSION`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.platform.settings.serving import ServingClientSettings
from llama_mapper.platform.stack import service
from llama_mapper.platform.terminal import print_table

DEFAULT_ROUTER = "http://127.0.0.1:8000"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `serve`, `canary` and `export` on mapperctl's subparsers."""
    serve = subparsers.add_parser("serve", help="the Ray Serve app: router + vLLM engine")
    serve_commands = serve.add_subparsers(dest="serve_command", required=True, metavar="COMMAND")
    deploy = serve_commands.add_parser(
        "deploy",
        help="deploy the app on the Ray cluster (or a local one) and wait until it is warm",
        description="Settings come from MAPPER_SERVING_* variables (docs/SERVING.md); the flags "
        "override the common ones.",
    )
    deploy.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster (default: $RAY_ADDRESS, else start a local one)",
    )
    deploy.add_argument("--http-port", type=int, help="HTTP port (MAPPER_SERVING_HTTP_PORT)")
    deploy.add_argument(
        "--grpc-port", type=int, help="gRPC port, 0 disables (MAPPER_SERVING_GRPC_PORT)"
    )
    deploy.add_argument(
        "--registry",
        help="registry host:port (default $MAPPER_SERVING_REGISTRY_ADDRESS, $MAPPER_REGISTRY_ADDRESS, "
        "else the local stack's)",
    )
    deploy.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="MODEL=DIR",
        help="serve a local adapter without a registry (repeatable)",
    )
    deploy.add_argument("--rules-only", action="store_true", help="no engine: rules + fallback")
    deploy.add_argument("--block", action="store_true", help="keep running in the foreground")
    deploy.set_defaults(func=cmd_serve_deploy)
    status = serve_commands.add_parser("status", help="health and loaded adapters of the router")
    status.add_argument("--url", default=ServingClientSettings().url)
    status.set_defaults(func=cmd_serve_status)
    shutdown = serve_commands.add_parser("shutdown", help="delete the Serve app(s)")
    shutdown.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"))
    shutdown.set_defaults(func=cmd_serve_shutdown)
    openapi = serve_commands.add_parser("openapi", help="print the HTTP API's OpenAPI document")
    openapi.set_defaults(func=cmd_serve_openapi)

    canary = subparsers.add_parser("canary", help="A/B rollouts of a new adapter version")
    canary.add_argument("--model", default="mapper", help="registry model (default: %(default)s)")
    canary.add_argument("--url", default=ServingClientSettings().url, help="router URL")
    canary_commands = canary.add_subparsers(dest="canary_command", required=True, metavar="COMMAND")
    start = canary_commands.add_parser("start", help="open a rollout (and step it with --follow)")
    start.add_argument("--treatment", type=int, required=True, help="version to roll out")
    start.add_argument(
        "--control",
        type=int,
        help="version to compare with (default: the champion; 0 or no champion: the rules alone)",
    )
    start.add_argument(
        "--steps", default="5,10,25,50,100", help="weights in %% (default: %(default)s)"
    )
    start.add_argument(
        "--shadow", action="store_true", help="mirror traffic first; no answers change"
    )
    start.add_argument("--shadow-fraction", type=float, default=0.1)
    start.add_argument("--interval", type=float, default=60.0, help="seconds per step")
    start.add_argument("--min-requests", type=int, default=50, help="treatment samples per step")
    start.add_argument("--follow", action="store_true", help="run the controller loop until done")
    start.add_argument(
        "--force",
        action="store_true",
        help="open the rollout although the treatment has no passing gate or no fitted "
        "temperature (needs --reason; the history records it)",
    )
    start.add_argument("--reason", default="", help="why (recorded in the history)")
    _bench_gate_flags(start)
    start.set_defaults(func=cmd_canary_start)
    cstatus = canary_commands.add_parser("status", help="the rollout and a live table per arm")
    cstatus.set_defaults(func=cmd_canary_status)
    run = canary_commands.add_parser("run", help="run the controller loop for the open rollout")
    run.add_argument("--steps", default="5,10,25,50,100")
    run.add_argument("--interval", type=float, default=60.0)
    run.add_argument("--min-requests", type=int, default=50)
    _bench_gate_flags(run)
    run.set_defaults(func=cmd_canary_run)
    abort = canary_commands.add_parser("abort", help="treatment weight 0, stage aborted")
    abort.add_argument("--reason", default="aborted by operator")
    abort.set_defaults(func=cmd_canary_abort)

    export = subparsers.add_parser(
        "export", help="a bundle vLLM or TGI can serve (adapter/merged, tokenizer, launch args)"
    )
    export.add_argument("version", help="registry version number or alias of --model")
    export.add_argument("--target", choices=("vllm", "tgi"), required=True)
    export.add_argument("--model", default="mapper")
    export.add_argument(
        "--out", type=Path, help="bundle directory (default: exports/<model>-v<N>-<target>)"
    )
    export.add_argument(
        "--merged", action="store_true", help="vLLM: merged weights instead of a LoRA module"
    )
    export.add_argument(
        "--adapter-dir", type=Path, help="export this local adapter instead of a registry version"
    )
    export.set_defaults(func=cmd_export)


def _registry() -> Any:
    from llama_mapper.registry.client import RegistryClient

    return RegistryClient.from_env(actor=os.environ.get("USER", "mapperctl"))


def _bench_gate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bench-gate",
        action="store_true",
        help="each interval, a Locust run against the router judges the treatment arm's p95 and "
        "error rate against the registry targets (and drives the canary's traffic)",
    )
    parser.add_argument("--profile", default="cpu-2core", help="hardware profile of the targets")
    parser.add_argument("--bench-users", type=int, default=4, help="Locust users per bench gate")
    parser.add_argument(
        "--lease",
        type=float,
        default=None,
        help="seconds the split holds without a step of this controller (default: three "
        "intervals, at least 120); a controller that dies leaves control answering after it",
    )


def _controller(args: argparse.Namespace) -> Any:
    from llama_mapper.platform.settings.serving import ServingSettings
    from llama_mapper.serving.canary import Gates
    from llama_mapper.serving.controller import CanaryController, http_stats
    from llama_mapper.serving.registry_source import RegistrySource

    analyst = ServingSettings().analyst_model
    if args.model == analyst:
        # /v1/analyze answers from the analyst's champion only (no arms, no per-arm windows).
        raise FailedPrecondition(
            f"{analyst} versions take traffic by promotion, not by canary: gate the version "
            f"(`mapperctl eval gate --model {analyst} N`), then "
            f"`mapperctl registry promote {analyst} N` (docs/REGISTRY.md)"
        )
    steps = tuple(float(s) / 100 for s in getattr(args, "steps", "5,10,25,50,100").split(","))
    if not steps or any(not 0 < s <= 1 for s in steps) or list(steps) != sorted(steps):
        raise FailedPrecondition("--steps must be increasing percentages in (0, 100]")
    gates = Gates(min_requests=getattr(args, "min_requests", 50))
    token = ServingClientSettings().bearer()
    return CanaryController(
        RegistrySource(_registry()),
        http_stats(args.url, token),
        model=args.model,
        gates=gates,
        steps=steps,
        hardware_profile=getattr(args, "profile", "cpu-2core"),
        bench_gate=_bench_gate(args) if getattr(args, "bench_gate", False) else None,
        lease_s=getattr(args, "lease", None) or max(120.0, 3 * getattr(args, "interval", 60.0)),
    )


def _bench_gate(args: argparse.Namespace) -> Any:
    """A Locust run per canary interval, judged on the treatment arm (`--bench-gate`)."""
    from llama_mapper.bench.canary_gate import run_bench_gate

    def gate(rollout: Any) -> tuple[bool, str]:
        result = run_bench_gate(
            args.model,
            rollout.treatment_version,
            args.profile,
            host=args.url,
            arm="treatment",
            users=args.bench_users,
            duration_s=args.interval,
        )
        reasons = "; ".join(result.verdict.reasons) or "within targets"
        print(f"bench gate at {rollout.treatment_weight:.0%}: {reasons} ({result.report_dir})")
        return result.passed, reasons

    return gate


def cmd_serve_deploy(args: argparse.Namespace) -> int:
    import ray

    from llama_mapper.platform.settings.serving import ServingSettings, ray_serve_env
    from llama_mapper.serving.app import deploy

    overrides: dict[str, Any] = {}
    if args.http_port is not None:
        overrides["http_port"] = args.http_port
    if args.grpc_port is not None:
        overrides["grpc_port"] = args.grpc_port
    if args.registry:
        overrides["registry_address"] = args.registry
    elif not ServingSettings().registry_address and not args.adapter:
        # After `make up`, as for every other command: the local stack's registry (without one
        # the app would serve no champion and follow no rollout).
        overrides["registry_address"] = service("registry").address
    if args.adapter:
        overrides["local_adapters"] = dict(item.split("=", 1) for item in args.adapter)
    if args.rules_only:
        overrides["engine_enabled"] = False
    settings = ServingSettings(**overrides)
    ray_serve_env()
    ray.init(address=args.address, ignore_reinit_error=True, log_to_driver=False)
    info = deploy(settings)
    print(
        json.dumps(
            {k: v for k, v in info.items() if k != "health"}
            | {"adapters": info["health"].get("adapters")},
            indent=2,
        )
    )
    if args.block:
        import time

        while True:
            time.sleep(3600)
    return 0


def cmd_serve_status(args: argparse.Namespace) -> int:
    import httpx

    health = httpx.get(f"{args.url}/healthz", timeout=10).json()
    print(json.dumps(health, indent=2))
    return 0


def cmd_serve_shutdown(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    ray.init(address=args.address, ignore_reinit_error=True, log_to_driver=False)
    serve.shutdown()
    return 0


def cmd_serve_openapi(args: argparse.Namespace) -> int:
    from llama_mapper.serving.api import build_app

    app = build_app(lambda: None)  # type: ignore[arg-type,return-value]
    print(json.dumps(app.openapi(), indent=2, sort_keys=True))
    return 0


def _print_status(status: dict[str, Any]) -> None:
    rollout = status["rollout"]
    if rollout is None:
        print("no rollout")
    else:
        print(
            f"{rollout.model}: v{rollout.control_version} (control) vs v{rollout.treatment_version} "
            f"(treatment) at {rollout.treatment_weight:.0%}, stage {rollout.stage}, revision {rollout.revision}"
        )
        lease = status.get("lease")
        if lease is None:
            print("lease: none (the split holds until the rollout is finished)")
        elif lease["holds"]:
            print(f"lease: {lease['seconds_left']:.0f} s left (the controller renews it each step)")
        else:
            print(
                f"lease: ended {-lease['seconds_left']:.0f} s ago: every request goes to control "
                "and the registry aborts the rollout"
            )
    stats = status["stats"]
    rows = []
    for arm, s in sorted(stats.get("arms", {}).items()):
        queries = s["model_queries"] or 0
        rows.append(
            (
                arm,
                s["requests"],
                f"{s['errors'] / s['requests']:.2%}" if s["requests"] else "-",
                f"{s['p95_ms']:.1f}" if s["p95_ms"] is not None else "-",
                f"{s['schema_valid'] / queries:.2%}" if queries else "-",
                f"{s['fallbacks'] / queries:.2%}" if queries else "-",
                f"{s['agreements']}/{s['agreement_pairs']}",
                f"{s['feedback_correct']}/{s['feedback']}",
            )
        )
    print_table(
        ("arm", "requests", "errors", "p95 ms", "schema-valid", "fallback", "agree", "feedback ok"),
        rows,
    )


def cmd_canary_start(args: argparse.Namespace) -> int:
    controller = _controller(args)
    if args.force and not args.reason:
        raise FailedPrecondition("--force needs --reason (the history records why)")
    rollout = controller.start(
        args.treatment,
        control=args.control,
        shadow=args.shadow,
        shadow_fraction=args.shadow_fraction,
        force=args.force,
        reason=args.reason,
    )
    print(
        f"rollout of {args.model} v{rollout.treatment_version} started: {rollout.stage} at {rollout.treatment_weight:.0%}"
    )
    if args.follow:
        return _follow(controller, args.interval)
    return 0


def _follow(controller: Any, interval: float) -> int:
    from llama_mapper.serving.canary import PROMOTE

    decision = controller.run(interval_s=interval)
    print(f"{decision.action}: {decision.reason}")
    return 0 if decision.action == PROMOTE else 1


def cmd_canary_run(args: argparse.Namespace) -> int:
    return _follow(_controller(args), args.interval)


def cmd_canary_status(args: argparse.Namespace) -> int:
    _print_status(_controller(args).status())
    return 0


def cmd_canary_abort(args: argparse.Namespace) -> int:
    rollout = _controller(args).abort(args.reason)
    print(
        f"rollout of {rollout.model} v{rollout.treatment_version} aborted (revision {rollout.revision})"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from llama_mapper.serving.export import export_bundle

    provenance: dict[str, Any] = {}
    if args.adapter_dir:
        adapter_dir, label = args.adapter_dir, args.version
        name = f"{args.model}-{label}"
        manifest = export_bundle(
            args.target,
            adapter_dir,
            args.out or Path("exports") / f"{name}-{args.target}",
            name=name,
            merged=args.merged or None,
        )
    else:
        client = _registry()
        version = (
            int(args.version)
            if args.version.isdigit()
            else int(client.resolve_alias(args.model, args.version).version)
        )
        record = client.get_version(args.model, version).version
        provenance = {
            "registry_model": args.model,
            "registry_version": version,
            "artifact_sha256": record.artifact_sha256,
            "base_model_sha256": record.lineage.base_model_sha256,
        }
        name = f"{args.model}-v{version}"
        with tempfile.TemporaryDirectory() as tmp:
            adapter_dir = client.download(args.model, version, Path(tmp) / "adapter")
            manifest = export_bundle(
                args.target,
                adapter_dir,
                args.out or Path("exports") / f"{name}-{args.target}",
                name=name,
                merged=args.merged or None,
                provenance=provenance,
            )
    print(
        json.dumps(
            {k: manifest[k] for k in ("target", "name", "merged", "base_model_sha256")}, indent=2
        ),
        file=sys.stdout,
    )
    return 0
