"""`mapperctl bench run`: load the serving stack with Locust and judge it against the registry's targets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llama_mapper.bench.locust_run import (
    DEFAULT_LOCUSTFILE,
    BenchConfig,
    parse_duration,
    print_result,
    run_bench,
)
from llama_mapper.bench.shapes import SHAPES
from llama_mapper.platform.settings.bench import report_root
from llama_mapper.platform.settings.registry import RegistryClientSettings
from llama_mapper.platform.settings.serving import ServingClientSettings
from llama_mapper.registry.client import RegistryClient


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `bench ...` on mapperctl's subparsers; each command sets `func(args) -> int`."""
    bench = subparsers.add_parser("bench", help="Locust load against the serving stack")
    commands = bench.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the load, judge p95 and errors against the registry's targets, record the result",
        description="Exit codes: 0 within target, 1 p95 or error rate missed the target, "
        "2 refused (no target, stack unreachable, bad flag).",
    )
    run.add_argument("--model", default="mapper", help="registry model (default: %(default)s)")
    which = run.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, default=None, help="version to bench")
    which.add_argument("--alias", default=None, help="alias to bench (default: champion)")
    run.add_argument(
        "--profile",
        default="cpu-2core",
        help="hardware profile of the targets (default: %(default)s)",
    )
    run.add_argument("--users", type=int, default=20, help="target users (default: %(default)s)")
    run.add_argument(
        "--spawn-rate",
        type=float,
        default=5.0,
        help="users started per second (default: %(default)s)",
    )
    run.add_argument(
        "--duration", default="60s", help="run time: 90, 90s, 5m, 1h30m (default: %(default)s)"
    )
    run.add_argument(
        "--shape",
        choices=SHAPES,
        default="standard",
        help="standard: ramp, steady, 2x spike, recover; soak: ramp then hold; "
        "constant: hold --users (default: %(default)s)",
    )
    run.add_argument(
        "--host",
        default=ServingClientSettings().url,
        help="router URL (default $MAPPER_SERVING_URL or %(default)s)",
    )
    run.add_argument(
        "--grpc-host", default=None, help="router gRPC host:port: adds the gRPC user to the mix"
    )
    run.add_argument(
        "--workers",
        type=int,
        default=0,
        help="distributed Locust: one master and this many worker processes (default: single process)",
    )
    run.add_argument(
        "--tasks",
        default="map=8,batch=1,analyze=1",
        help="HTTP task weights (default: %(default)s)",
    )
    run.add_argument(
        "--tenants", type=int, default=200, help="tenants in the Zipf mix (default: %(default)s)"
    )
    run.add_argument(
        "--batch-size", type=int, default=10, help="items per batch call (default: %(default)s)"
    )
    run.add_argument(
        "--arm",
        default=None,
        help="judge only this router arm (e.g. treatment) instead of all traffic",
    )
    run.add_argument(
        "--report-dir",
        type=Path,
        default=report_root(),
        help="reports go to a timestamped directory under this (default: %(default)s)",
    )
    run.add_argument("--locustfile", type=Path, default=DEFAULT_LOCUSTFILE, help=argparse.SUPPRESS)
    run.add_argument(
        "--no-record", action="store_true", help="do not record the result in the registry"
    )
    run.add_argument(
        "--registry",
        default=RegistryClientSettings().address,
        help="registry host:port (default $MAPPER_REGISTRY_ADDRESS or %(default)s)",
    )
    run.add_argument(
        "--token", default=None, help="registry bearer token (default $MAPPER_REGISTRY_TOKEN)"
    )
    run.set_defaults(func=cmd_run)

    compare = commands.add_parser(
        "compare",
        help="the same load against the router and other endpoints in turn: ratios and one plot",
    )
    compare.add_argument(
        "--host", default=ServingClientSettings().url, help="router URL (the reference)"
    )
    compare.add_argument(
        "--baseline-host",
        default=None,
        help="transformers + PEFT baseline (bench/baseline_server.py)",
    )
    compare.add_argument(
        "--engine-host", default=None, help="the engine deployment straight, same /v1/map contract"
    )
    compare.add_argument("--users", type=int, default=8, help="default: %(default)s")
    compare.add_argument("--spawn-rate", type=float, default=4.0, help="default: %(default)s")
    compare.add_argument("--duration", default="60s", help="per endpoint (default: %(default)s)")
    compare.add_argument("--shape", choices=SHAPES, default="constant", help="default: %(default)s")
    compare.add_argument(
        "--tasks", default="map=1", help="the baseline serves /v1/map only (default: %(default)s)"
    )
    compare.add_argument("--report-dir", type=Path, default=report_root())
    compare.set_defaults(func=cmd_compare)
    return bench


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        model=args.model,
        version=args.version,
        alias=args.alias,
        profile=args.profile,
        host=args.host,
        grpc_host=args.grpc_host,
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration_s=parse_duration(args.duration),
        shape=args.shape,
        workers=args.workers,
        tasks=args.tasks,
        tenants=args.tenants,
        batch_size=args.batch_size,
        arm=args.arm,
        report_root=args.report_dir,
        locustfile=args.locustfile,
        record=not args.no_record,
    )


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with RegistryClient.from_env(address=args.registry, token=args.token) as client:
        result = run_bench(config, client)
    print_result(result)
    return result.exit_code


def cmd_compare(args: argparse.Namespace) -> int:
    from llama_mapper.bench.compare import COLUMNS, compare, ratio_rows
    from llama_mapper.domain.errors import InvalidArgument
    from llama_mapper.platform.terminal import print_table

    endpoints = {
        label: host
        for label, host in (("baseline", args.baseline_host), ("engine", args.engine_host))
        if host
    }
    if not endpoints:
        raise InvalidArgument("pass --baseline-host and/or --engine-host to compare with")
    config = BenchConfig(
        host=args.host,
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration_s=parse_duration(args.duration),
        shape=args.shape,
        tasks=args.tasks,
        report_root=args.report_dir,
        record=False,
    )
    root, measured = compare(config, endpoints)
    print_table(COLUMNS, ratio_rows(measured))
    print(f"report: {root} (compare.txt, latency.png, one Locust report per endpoint)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m llama_mapper.cli.bench run ...`: the same command and exit codes as mapperctl's."""
    from llama_mapper.domain.errors import MapperError
    from llama_mapper.platform.stack import use_local_token

    parser = argparse.ArgumentParser(prog="mapperctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    use_local_token()
    try:
        return args.func(args)
    except MapperError as error:
        print(f"mapperctl: {error.code}: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
