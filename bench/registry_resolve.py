"""Resolve-alias latency and throughput of the registry over loopback, against a plain SQL floor.

    .venv/bin/python bench/registry_resolve.py                      # SQLite + local files
    .venv/bin/python bench/registry_resolve.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench
    .venv/bin/python bench/registry_resolve.py --write-docs         # append the figures to docs/BENCHMARKS.md

The server runs in its own process (`python -m llama_mapper.registry.server`), so the load
generator does not share its interpreter. Phases, all in one run:
  1. SQL floor: the same alias -> version join the store runs, straight through SQLAlchemy, one
     thread (what the database costs before gRPC, protobuf and the servicer).
  2. Open loop at --rate requests/s for --seconds: requests are fired on schedule whether or not
     earlier ones finished, so latency includes any queueing (the goal: p99 < 5 ms at 500/s).
  3. Closed loop, --concurrency threads for --seconds: the most the server answers.
No MLflow-like registry is installed here, so the SQL query is the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the test helpers, as the tests import them

import grpc  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from llama_mapper._proto.registry.v1 import registry_pb2 as pb  # noqa: E402
from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc  # noqa: E402
from llama_mapper.registry.client import RegistryClient  # noqa: E402
from llama_mapper.registry.db import make_engine  # noqa: E402
from llama_mapper.registry.schema import AliasRow, ModelRow, VersionRow  # noqa: E402
from tests.support.registry import TOKEN, lineage, make_adapter  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, latencies_s: list[float], elapsed_s: float) -> dict:
    ms = [v * 1000 for v in latencies_s]
    return {
        "phase": name,
        "requests": len(ms),
        "rps": len(ms) / elapsed_s,
        "p50": statistics.median(ms),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
    }


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_mapper.registry.server"],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        match = re.search(r"registry listening on [^ ]+:(\d+)", line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(match.group(1))
    raise RuntimeError(f"registry server did not start (exit {proc.wait()})")


def sql_floor(database_url: str, n: int) -> dict:
    engine = make_engine(database_url)
    query = (
        select(ModelRow, VersionRow)
        .join(AliasRow, AliasRow.model_id == ModelRow.id)
        .join(
            VersionRow,
            (VersionRow.model_id == ModelRow.id) & (VersionRow.version == AliasRow.version),
        )
        .where(ModelRow.name == "mapper", AliasRow.name == "champion")
    )
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        with Session(engine) as session:
            row = session.execute(query).first()
            assert row is not None
        latencies.append(time.perf_counter() - t0)
    result = summary("SQL floor (SQLAlchemy, 1 thread)", latencies, time.perf_counter() - started)
    engine.dispose()
    return result


def open_loop(stub, rate: float, seconds: float) -> dict:
    request = pb.ResolveAliasRequest(model="mapper", alias="champion")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    pending = threading.Semaphore(0)
    total = int(rate * seconds)
    interval = 1.0 / rate

    def done(sent_at: float):
        def callback(future) -> None:
            elapsed = time.perf_counter() - sent_at
            with lock:
                if future.exception() is None:
                    latencies.append(elapsed)
                else:
                    errors.append(str(future.exception()))
            pending.release()

        return callback

    started = time.perf_counter()
    next_at = started
    for _ in range(total):
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent_at = time.perf_counter()
        stub.ResolveAlias.future(request, timeout=10).add_done_callback(done(sent_at))
    for _ in range(total):
        pending.acquire()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} errors, first: {errors[0]}")
    return summary(f"gRPC open loop at {rate:g}/s", latencies, elapsed)


def closed_loop(address: str, concurrency: int, seconds: float) -> dict:
    request = pb.ResolveAliasRequest(model="mapper", alias="champion")
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def run() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.RegistryServiceStub(channel)
            stub.ResolveAlias(request)
            mine = []
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                stub.ResolveAlias(request, timeout=10)
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(
        f"gRPC closed loop, {concurrency} clients", latencies, time.perf_counter() - started
    )


def markdown(results: list[dict], args: argparse.Namespace, backend: str) -> str:
    lines = [
        "",
        f"### Registry: resolve alias ({datetime.now(UTC):%Y-%m-%d}, {backend}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end)",
        "",
        "`.venv/bin/python bench/registry_resolve.py"
        + (f" --database-url {args.database_url.split('@')[0]}@..." if args.database_url else "")
        + f" --rate {args.rate:g} --seconds {args.seconds:g}`",
        "",
        "| phase | requests | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['phase']} | {r['requests']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | "
            f"{r['p99']:.2f} | {r['max']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each gRPC phase")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop client threads")
    parser.add_argument("--sql-queries", type=int, default=5000, help="SQL floor iterations")
    parser.add_argument("--write-docs", action="store_true", help="append to docs/BENCHMARKS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/registry.db"
        env = {
            "MAPPER_REGISTRY_PORT": "0",
            "MAPPER_REGISTRY_TOKEN": TOKEN,
            "MAPPER_REGISTRY_DATABASE_URL": database_url,
            "MAPPER_REGISTRY_ARTIFACT_URI": f"{tmp}/artifacts",
        }
        proc, port = start_server(env)
        address = f"127.0.0.1:{port}"
        try:
            with RegistryClient(address, token=TOKEN) as client:
                if not any(m.name == "mapper" for m in client.list_models()):
                    client.register_directory(
                        "mapper", make_adapter(Path(tmp) / "adapter"), lineage=lineage()
                    )
                current = (
                    client.resolve_alias("mapper", "champion").version
                    if _has_champion(client)
                    else 0
                )
                client.set_alias("mapper", "champion", 1, expected_version=current)
            results = [sql_floor(database_url, args.sql_queries)]
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.RegistryServiceStub(channel)
                for _ in range(200):  # warm up the channel, the server's pool and caches
                    stub.ResolveAlias(pb.ResolveAliasRequest(model="mapper", alias="champion"))
                results.append(open_loop(stub, args.rate, args.seconds))
            results.append(closed_loop(address, args.concurrency, args.seconds))
        finally:
            proc.terminate()
            proc.wait(15)

    backend = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    text = markdown(results, args, backend)
    print(text)
    if args.write_docs:
        docs = REPO / "docs" / "BENCHMARKS.md"
        existing = docs.read_text() if docs.exists() else "# Benchmarks\n"
        if "## Registry" not in existing:
            existing += (
                "\n## Registry\n\nResolve-alias latency over loopback gRPC against the same query "
                "through SQLAlchemy (the floor; no MLflow-like registry is installable here). "
                "Goal: p99 < 5 ms at 500 requests/s.\n"
            )
        docs.write_text(existing.rstrip("\n") + "\n" + text)
    return 0


def _has_champion(client: RegistryClient) -> bool:
    return any(a.name == "champion" for m in client.list_models() for a in m.aliases)


if __name__ == "__main__":
    sys.exit(main())
