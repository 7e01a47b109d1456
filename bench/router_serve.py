"""Router overhead end to end through Ray Serve: p95 through the router minus p95 to the engine.

`serve`: the issue's definition, "p95 through the router minus p95 straight to the engine
deployment". Starts its own Ray and the Serve app (router + vLLM engine, a random-init rank-8
LoRA as a local adapter, HTTP on a free port) and sends model-only prompts ONE AT A TIME, each
round alternating (a) POST /v1/map through Serve's HTTP proxy and the router and (b) the same
kind of query straight to the engine deployment's handle from this driver; every prompt is
distinct (no full-prompt prefix-cache hits), both arms get prompts of the same shape, and the
order inside a pair alternates. Reports p50/p95 per arm, the p95 difference with a bootstrap
95 % interval, the median of per-round median differences, and rules-only one-at-a-time through
the router (the floor: proxy + router with no engine call).

    .venv/bin/python bench/router_serve.py --rounds 10 --per-round 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llama_mapper.bench.figures import RULES_ONLY, bootstrap_diff, model_only, pct


def run_serve(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    from llama_mapper.inference.base_model import prepare_base_model
    from llama_mapper.inference.hybrid import HybridMapper
    from llama_mapper.platform.settings.serving import ServingSettings, ray_serve_env
    from llama_mapper.serving.app import deploy

    sys.path.insert(0, str(Path(__file__).parent))
    from serving_throughput import free_port, make_adapter

    hybrid = HybridMapper()

    def queries_of(body: dict[str, Any]) -> list[Any]:
        plan = hybrid.plan(body["detector"], body["output"])
        assert not plan.ruled and len(plan.pending) == 1, "a model-only prompt must reach the model"
        return plan.queries

    base = prepare_base_model()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = args.adapter_dir or make_adapter(base.path, Path(tmp) / "adapter")
        settings = ServingSettings(
            http_port=free_port(),
            grpc_port=0,
            local_adapters={"mapper": adapter},
            rate_limit_rps=0,
            deadline_s=600,
            threshold=0.0,  # every valid model label is kept: the model answers every request
        )
        # "local": a Ray of its own, never a cluster someone else started on this machine.
        ray_serve_env()  # as the shipped Ray images set it
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            info = deploy(settings, timeout_s=600)
            print(
                f"stack deployed in {info['deploy_s']:.1f}s, warm-up {info['warm_up_s']:.1f}s",
                file=sys.stderr,
            )
            handle = serve.get_deployment_handle("MapperEngine", app_name=settings.app_name)
            return asyncio.run(_serve_rounds(args, info["url"], handle, queries_of))
        finally:
            serve.shutdown()
            ray.shutdown()


async def _serve_rounds(args: argparse.Namespace, url: str, handle: Any, queries_of: Any) -> Any:
    import httpx

    router: list[list[float]] = []
    direct: list[list[float]] = []
    rules: list[list[float]] = []
    methods: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def via_router(body: dict[str, Any]) -> float:
            t = time.perf_counter()
            r = await client.post("/v1/map", json=body)
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            if body is not RULES_ONLY:  # who answered the model-only prompts
                for finding in r.json()["result"]["findings"]:
                    methods[finding["method"]] = methods.get(finding["method"], 0) + 1
            return elapsed

        async def via_handle(body: dict[str, Any]) -> float:
            queries = queries_of(body)  # built before the clock starts: the router's work, not
            t = time.perf_counter()  # the engine's
            await handle.predict.remote("mapper-local", queries)
            return time.perf_counter() - t

        # Warm-up on prompts of its own: connection, handle routing, kernels for batch size 1.
        for i in range(args.warm):
            await via_router(model_only(i, "warm-r"))
            await via_handle(model_only(i, "warm-d"))
            await via_router(RULES_ONLY)
        methods.clear()
        n = 0
        for r in range(args.rounds):
            router.append([])
            direct.append([])
            rules.append([])
            for _ in range(args.per_round):
                # Same label template for the pair, distinct text; who goes first alternates.
                a, b = model_only(n, "r"), model_only(n, "d")
                if n % 2 == 0:
                    router[-1].append(await via_router(a))
                    direct[-1].append(await via_handle(b))
                else:
                    direct[-1].append(await via_handle(b))
                    router[-1].append(await via_router(a))
                rules[-1].append(await via_router(RULES_ONLY))
                n += 1
            print(
                f"round {r + 1}/{args.rounds}: router p50 {pct(router[-1], 50) * 1e3:.1f} ms, "
                f"direct p50 {pct(direct[-1], 50) * 1e3:.1f} ms, load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
            )
    flat = {
        "model-only through the router (HTTP)": [x for rd in router for x in rd],
        "model-only straight to the engine handle": [x for rd in direct for x in rd],
        "rules-only through the router (HTTP)": [x for rd in rules for x in rd],
    }
    rows = {
        name: {"requests": len(v), "p50_ms": pct(v, 50) * 1e3, "p95_ms": pct(v, 95) * 1e3}
        for name, v in flat.items()
    }
    r_all, d_all = list(flat.values())[:2]
    lo95, hi95 = bootstrap_diff(r_all, d_all, 95)
    lo50, hi50 = bootstrap_diff(r_all, d_all, 50)
    per_round = [
        statistics.median(rd) - statistics.median(dd) for rd, dd in zip(router, direct, strict=True)
    ]
    overhead = {
        "p95_diff_ms": (pct(r_all, 95) - pct(d_all, 95)) * 1e3,
        "p95_diff_ci_ms": (lo95 * 1e3, hi95 * 1e3),
        "p50_diff_ms": (pct(r_all, 50) - pct(d_all, 50)) * 1e3,
        "p50_diff_ci_ms": (lo50 * 1e3, hi50 * 1e3),
        "per_round_median_diff_ms": [round(d * 1e3, 2) for d in per_round],
        "median_of_round_diffs_ms": statistics.median(per_round) * 1e3,
        "methods": methods,
        "load": os.getloadavg(),
    }
    print("| path, one at a time | requests | p50 ms | p95 ms |\n|---|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['requests']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} |")
    print(
        f"\nrouter overhead: p95 {overhead['p95_diff_ms']:.1f} ms (bootstrap 95% "
        f"{lo95 * 1e3:.1f}..{hi95 * 1e3:.1f}), p50 {overhead['p50_diff_ms']:.1f} ms "
        f"({lo50 * 1e3:.1f}..{hi50 * 1e3:.1f}); median of per-round median differences "
        f"{overhead['median_of_round_diffs_ms']:.1f} ms {overhead['per_round_median_diff_ms']}; "
        f"model-only prompts answered by method {methods}; load average {overhead['load']}"
    )
    return {"rows": rows, "overhead": overhead}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=20, help="request pairs per round")
    parser.add_argument("--warm", type=int, default=8, help="warm-up pairs")
    parser.add_argument("--adapter-dir", type=Path, help="default: a random-init rank-8 LoRA")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    out = run_serve(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
