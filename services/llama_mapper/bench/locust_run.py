"""One bench run: targets from the registry, a reachability check, Locust as subprocesses, a verdict."""

# Locust runs in its own processes (`python -m locust -f services/llama_mapper/bench/locustfile.py --headless ...`, or a
# `--master` and N `--worker`s) because it patches everything with gevent on import: the caller
# (mapperctl, the canary controller, pytest) keeps its threads and its gRPC channels intact. The
# run's files land in one report directory: Locust's CSV, HTML and JSON stats, the payload file,
# the log, a latency-over-time PNG and `summary.json`.

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc

from llama_mapper.bench import locust_stats as report
from llama_mapper.bench.payloads import write_payloads
from llama_mapper.bench.shapes import SHAPES
from llama_mapper.bench.targets import BenchTargets, Verdict, judge, load_targets, resolve_version
from llama_mapper.bench.traffic import DEFAULT_TASK_WEIGHTS, parse_weights
from llama_mapper.domain.errors import InvalidArgument, Unavailable
from llama_mapper.platform.settings.bench import LocustSettings, report_root
from llama_mapper.platform.settings.serving import ServingClientSettings
from llama_mapper.registry.client import RegistryClient

log = logging.getLogger(__name__)

# Shipped as a module of this package, so an installed package finds it as a checkout does.
DEFAULT_LOCUSTFILE = Path(__file__).with_name("locustfile.py")
HTTP_USER, GRPC_USER = "MapperHttpUser", "MapperGrpcUser"
PREFIX = "locust"
# Beyond the run time: start-up, the stop timeout and writing the reports.
SLACK_S = 90.0
STOP_TIMEOUT_S = 10
_TIMESPAN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h30m` -> seconds; InvalidArgument naming --duration otherwise."""
    match = _TIMESPAN.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise InvalidArgument(f"--duration {text!r}: use seconds (90, 90s) or 5m, 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


@dataclass(frozen=True)
class BenchConfig:
    """One bench run's settings; each check names the flag to fix."""

    model: str = "mapper"
    version: int | None = None
    alias: str | None = None
    profile: str = "cpu-2core"
    host: str = field(default_factory=lambda: ServingClientSettings().url)
    grpc_host: str | None = None
    users: int = 20
    spawn_rate: float = 5.0
    duration_s: float = 60.0
    shape: str = "standard"
    workers: int = 0
    tasks: str = ",".join(f"{k}={v}" for k, v in DEFAULT_TASK_WEIGHTS.items())
    tenants: int = 200
    batch_size: int = 10
    arm: str | None = None
    report_root: Path = field(default_factory=report_root)
    locustfile: Path = DEFAULT_LOCUSTFILE
    record: bool = True
    token: str | None = None
    # Extra MAPPER_BENCH_* variables for the locustfile (e.g. MAPPER_BENCH_WAIT_S).
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.version is not None and self.alias is not None:
            raise InvalidArgument("pass --version or --alias, not both")
        if self.users < 1:
            raise InvalidArgument(f"--users must be >= 1, got {self.users}")
        if self.spawn_rate <= 0:
            raise InvalidArgument(f"--spawn-rate must be > 0, got {self.spawn_rate}")
        if self.duration_s < 1:
            raise InvalidArgument(f"--duration must be at least 1s, got {self.duration_s:g}s")
        if self.shape not in SHAPES:
            raise InvalidArgument(f"--shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if self.workers < 0:
            raise InvalidArgument(f"--workers must be >= 0, got {self.workers}")
        if not 1 <= self.batch_size <= 100:
            raise InvalidArgument(f"--batch-size must be in 1..100, got {self.batch_size}")
        if not self.host.startswith(("http://", "https://")):
            raise InvalidArgument(f"--host must be an http(s):// URL, got {self.host!r}")
        try:
            parse_weights(self.tasks)
        except ValueError as error:
            raise InvalidArgument(f"--tasks: {error}") from None
        if not self.locustfile.is_file():
            raise InvalidArgument(f"--locustfile {self.locustfile} does not exist")


@dataclass
class BenchResult:
    """What a bench run measured and decided; `exit_code` is mapperctl's (0 pass, 1 miss)."""

    model: str
    version: int
    targets: BenchTargets
    verdict: Verdict
    aggregate: report.Row
    judged: report.Row
    arms: list[report.Row]
    rows: list[report.Row]
    report_dir: Path
    duration_s: float
    # One row per route (map, batch, analyze; Map, MapBatch over gRPC) across arms.
    routes: list[report.Row] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict.passed else 1

    def values(self) -> dict[str, float]:
        """The numbers recorded on the version in the registry (NaN left out); the targets and
        the settings go to the record's config_json."""
        row = self.judged
        values = {
            "requests": float(row.requests),
            "error_rate": row.error_rate,
            "requests_per_s": row.rps,
            "p50_latency_ms": row.p50_ms,
            "p95_latency_ms": row.p95_ms,
            "p99_latency_ms": row.p99_ms,
            "passed": 1.0 if self.passed else 0.0,
        }
        for arm in self.arms:
            values[f"{arm.name}.error_rate"] = arm.error_rate
            values[f"{arm.name}.p95_latency_ms"] = arm.p95_ms
        for route in self.routes:
            values[f"route.{route.name}.requests"] = float(route.requests)
            values[f"route.{route.name}.error_rate"] = route.error_rate
            values[f"route.{route.name}.p95_latency_ms"] = route.p95_ms
        return {k: v for k, v in values.items() if not math.isnan(v)}


# --- before the run ------------------------------------------------------------------------------


def check_reachable(host: str, grpc_host: str | None, *, timeout_s: float = 5.0) -> None:
    """Unavailable, naming the address tried, unless /healthz answers 200 (and gRPC connects)."""
    url = host.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s) checked
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise Unavailable(
            f"serving stack not reachable at {url} ({reason}): start it (`make up`, then "
            "`mapperctl serve deploy`) or point --host at it"
        ) from None
    if status != 200:
        raise Unavailable(f"serving stack at {url} is not ready: /healthz answered {status}")
    if grpc_host:
        with grpc.insecure_channel(grpc_host) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout_s)
            except grpc.FutureTimeoutError:
                raise Unavailable(
                    f"gRPC endpoint not reachable at {grpc_host} within {timeout_s:g}s"
                ) from None


def served_models(host: str, token: str | None = None, *, timeout_s: float = 10.0) -> set[str]:
    """Registry model names with a ready adapter on the router (`GET /v1/models`)."""
    request = urllib.request.Request(host.rstrip("/") + "/v1/models")  # noqa: S310 - http(s) checked
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            listing = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return set()
    return {
        str(entry.get("model"))
        for entry in listing.get("data", [])
        if entry.get("kind") == "adapter" and entry.get("status") == "ready"
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def locust_env(config: BenchConfig, payloads: Path) -> dict[str, str]:
    """The variables services/llama_mapper/bench/locustfile.py reads (declared together at its top)."""
    settings = LocustSettings(
        payloads=payloads,
        shape=config.shape,
        tasks=config.tasks,
        tenants=config.tenants,
        batch_size=config.batch_size,
        grpc_host=config.grpc_host or "",
        token=config.token or ServingClientSettings().bearer() or "",
    )
    return {**os.environ, **settings.to_env(), **config.extra_env}


def locust_commands(config: BenchConfig, report_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The headless (or master) command and the worker commands, as argument lists."""
    users = [HTTP_USER, GRPC_USER] if config.grpc_host else [HTTP_USER]
    base = [sys.executable, "-m", "locust", "-f", str(config.locustfile)]
    main = [
        *base,
        "--headless",
        "--host",
        config.host,
        "-u",
        str(config.users),
        "-r",
        f"{config.spawn_rate:g}",
        "-t",
        f"{math.ceil(config.duration_s)}s",
        "--csv",
        str(report_dir / PREFIX),
        "--csv-full-history",
        "--html",
        str(report_dir / "report.html"),
        "--json-file",
        str(report_dir / PREFIX),
        "--only-summary",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--exit-code-on-error",
        "0",
    ]
    workers: list[list[str]] = []
    if config.workers:
        port = _free_port()
        main += [
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(config.workers),
            "--expect-workers-max-wait",
            "60",
        ]
        worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        workers = [[*worker, *users] for _ in range(config.workers)]
    return [*main, *users], workers


# --- the run -------------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_locust(config: BenchConfig, report_dir: Path, payloads: Path) -> None:
    """Runs the load (master and workers when asked) and waits; the log goes to locust.log."""
    main, workers = locust_commands(config, report_dir)
    env = locust_env(config, payloads)
    timeout_s = config.duration_s + SLACK_S + (60 if workers else 0)
    with open(report_dir / "locust.log", "w", encoding="utf-8") as logfile:
        procs = [
            subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT)
            for cmd in workers
        ]
        master = subprocess.Popen(main, env=env, stdout=logfile, stderr=subprocess.STDOUT)
        try:
            code = master.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            for proc in [master, *procs]:
                _stop(proc)
    stats = report_dir / f"{PREFIX}{report.STATS_SUFFIX}"
    if code is None or not stats.is_file():
        tail = (report_dir / "locust.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        raise Unavailable(
            f"Locust {'timed out' if code is None else f'exited with {code}'} without stats; "
            f"log {report_dir / 'locust.log'}:\n{tail}"
        )


def new_report_dir(root: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path


def collect(
    config: BenchConfig, targets: BenchTargets, report_dir: Path, duration_s: float
) -> BenchResult:
    """Reads Locust's files back, judges, plots; pure of the registry."""
    rows = report.read_stats_csv(report_dir / f"{PREFIX}{report.STATS_SUFFIX}")
    arms = report.arm_rows(report_dir / f"{PREFIX}.json", rows)
    routes = report.route_rows(report_dir / f"{PREFIX}.json", rows)
    aggregate = report.aggregate(rows)
    judged = aggregate
    if config.arm:
        judged = next(
            (a for a in arms if a.name == config.arm),
            report.Row("arm", config.arm, config.arm, 0, 0, 0.0, *(math.nan,) * 4),
        )
    verdict = judge(
        requests=judged.requests,
        failures=judged.failures,
        p95_ms=judged.p95_ms,
        p95_target_ms=targets.p95_latency_ms,
        max_error_rate=targets.max_error_rate,
    )
    if config.arm and judged.requests == 0:
        verdict = Verdict(False, (f"no request reached arm {config.arm!r}",))
    history = report.read_history_csv(report_dir / f"{PREFIX}{report.HISTORY_SUFFIX}")
    report.plot_latency(
        {"router": history},
        report_dir / "latency.png",
        title=f"{config.model} v{targets.version} on {config.profile}: {config.shape} shape, "
        f"{config.users} users",
        target_p95_ms=targets.p95_latency_ms,
    )
    return BenchResult(
        model=config.model,
        version=targets.version,
        targets=targets,
        verdict=verdict,
        aggregate=aggregate,
        judged=judged,
        arms=arms,
        rows=rows,
        report_dir=report_dir,
        duration_s=duration_s,
        routes=routes,
    )


def _config_json(config: BenchConfig, result: BenchResult, golden_sha256: str) -> str:
    settings = asdict(config)
    for key in ("report_root", "locustfile", "token", "extra_env", "record"):
        settings.pop(key)
    settings.update(
        report_dir=str(result.report_dir),
        golden_sha256=golden_sha256,
        judged=config.arm or "aggregate",
        targets=asdict(result.targets),
        reasons=list(result.verdict.reasons),
    )
    return json.dumps(settings, sort_keys=True)


def run_bench(config: BenchConfig, client: RegistryClient) -> BenchResult:
    """Targets, reachability, load, verdict, and the record on the version in the registry."""
    version = resolve_version(client, config.model, version=config.version, alias=config.alias)
    targets = load_targets(client, config.model, version, config.profile)
    check_reachable(config.host, config.grpc_host)
    token = config.token or ServingClientSettings().bearer()
    # /v1/analyze is in the mix either way: without an analyst adapter the rubric's catalogue
    # writes the remediation, and the summary says which answered.
    analyst = "adapter" if "analyst" in served_models(config.host, token) else "catalogue"
    report_dir = new_report_dir(config.report_root)
    payloads = write_payloads(report_dir / "payloads.jsonl")
    log.info("bench %s v%s: report in %s", config.model, version, report_dir)
    started = time.monotonic()
    run_locust(config, report_dir, payloads.path)
    result = collect(config, targets, report_dir, time.monotonic() - started)
    config_json = _config_json(config, result, payloads.golden_sha256)
    summary = {
        "model": config.model,
        "version": version,
        "targets": asdict(targets),
        "passed": result.passed,
        "reasons": list(result.verdict.reasons),
        "values": result.values(),
        "rows": [report.row_dict(r) for r in [*result.rows, *result.arms]],
        "routes": {r.name: report.row_dict(r) for r in result.routes},
        "analyst": analyst,
        "config": json.loads(config_json),
        "payloads": {
            "map": payloads.map_count,
            "analyze": payloads.analyze_count,
            "skipped": dict(payloads.skipped),
        },
    }
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if config.record:
        client.record_benchmark(
            config.model, version, config.profile, result.values(), config_json=config_json
        )
    return result


def print_result(result: BenchResult, stream=None) -> None:
    out = stream or sys.stdout
    targets = result.targets
    budget = f"{100 * targets.max_error_rate:g}%" + (
        "" if targets.error_budget_from_registry else " (default: no max_error_rate target)"
    )
    print(
        f"{result.model} v{result.version} on {targets.hardware_profile}: "
        f"target p95 <= {targets.p95_latency_ms:g} ms, errors <= {budget}",
        file=out,
    )
    print(
        report.format_rows([*result.rows[:-1], *result.arms, *result.routes, result.aggregate]),
        file=out,
    )
    judged = "aggregate" if result.judged is result.aggregate else f"arm {result.judged.name}"
    if result.passed:
        print(
            f"PASS ({judged}): p95 {result.judged.p95_ms:.0f} ms, "
            f"errors {100 * result.judged.error_rate:.2f}%",
            file=out,
        )
    else:
        print(f"FAIL ({judged}): " + "; ".join(result.verdict.reasons), file=out)
    print(f"report: {result.report_dir} (report.html, latency.png, {PREFIX}_stats.csv)", file=out)
