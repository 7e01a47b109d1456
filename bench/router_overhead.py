"""Router overhead: what the router adds to a request, in-process and end to end.

`inprocess` (no Ray, no engine): the router's own CPU cost per request, measured on this
process's CPU clock in interleaved rounds, for two payloads: one the rules answer and one only the
model could map (with no engine deployed the fallback answers it, so it runs reader, rules,
fallback and result assembly, the router's whole side of a model request minus the engine call):

- `map_one`: RouterCore.map_one alone;
- `http`: the FastAPI app called as ASGI (middleware, body, request model, route, response).

`--profile` prints cProfile's top functions for the `http` rules-only path instead.

`serve`: the issue's definition, "p95 through the router minus p95 straight to the engine
deployment". Starts its own Ray and the Serve app (router + vLLM engine, a random-init rank-8
LoRA as a local adapter, HTTP on a free port) and sends model-only prompts ONE AT A TIME, each
round alternating (a) POST /v1/map through Serve's HTTP proxy and the router and (b) the same
kind of query straight to the engine deployment's handle from this driver; every prompt is
distinct (no full-prompt prefix-cache hits), both arms get prompts of the same shape, and the
order inside a pair alternates. Reports p50/p95 per arm, the p95 difference with a bootstrap
95 % interval, the median of per-round median differences, and rules-only one-at-a-time through
the router (the floor: proxy + router with no engine call).

    .venv/bin/python bench/router_overhead.py inprocess --rounds 7 --requests 400
    .venv/bin/python bench/router_overhead.py inprocess --profile
    .venv/bin/python bench/router_overhead.py serve --rounds 10 --per-round 20
    .venv/bin/python bench/router_overhead.py floor --against /tmp/before/pkg

`floor` (no engine, no vLLM): rules-only answers one at a time through Serve's proxy and the
router, this tree's code against the code on another PYTHONPATH (a directory holding a
`llama_mapper` package, e.g. an export of the previous commit), each app in a Ray of its own on a
free port, requests alternated between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RULES_ONLY = {
    "detector": "presidio",
    "output": [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99}],
}
RAW_LABELS = [
    "customer reference", "loyalty card", "badge id", "vehicle plate", "employee number",
    "device imei", "session cookie", "voice print", "face embedding", "salary figure",
    "medical record no", "insurance policy", "tax file", "crypto address", "api secret",
    "hate remark", "threat phrase", "self injury talk", "adult content", "weapon recipe",
]  # fmt: skip


def model_only(i: int, tag: str) -> dict[str, Any]:
    """A one-finding output no rule maps (a detector without a table, a label no table holds)."""
    label = f"{RAW_LABELS[i % len(RAW_LABELS)]} {tag}{i}"
    return {"detector": "acme-scanner", "output": [{"type": label, "confidence": 0.9}]}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


# --- in-process ----------------------------------------------------------------------------------


class AsgiCaller:
    """Calls an ASGI app the way a server would, without sockets: POST path with a JSON body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
        }
        done = asyncio.Event()
        delivered = False
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    done.set()

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def _router(settings_kw: dict[str, Any] | None = None) -> tuple[Any, AsgiCaller]:
    from llama_mapper.platform.settings.serving import ServingSettings
    from llama_mapper.serving.api import build_app
    from llama_mapper.serving.router_core import RouterCore

    # Rate limiting stays on (the default), every request from one client address: its cost is
    # part of the router's, and the bucket never runs dry at these settings.
    settings = ServingSettings(rate_limit_rps=1e9, rate_limit_burst=1e9, **(settings_kw or {}))
    core = RouterCore(settings, None, None)
    return core, AsgiCaller(build_app(lambda: core))


async def _inprocess(rounds: int, requests: int) -> dict[str, Any]:
    core, caller = _router()
    bodies = {
        "rules-only": [RULES_ONLY] * requests,
        "model-only prompt (no engine: fallback)": [model_only(i, "p") for i in range(requests)],
    }
    encoded = {name: [json.dumps(b).encode() for b in items] for name, items in bodies.items()}

    async def via_core(items: list[dict[str, Any]]) -> None:
        for i, body in enumerate(items):
            await core.map_one(body["detector"], body["output"], request_id=f"r{i}")

    async def via_http(items: list[bytes]) -> None:
        for body in items:
            status, _ = await caller.post("/v1/map", body)
            if status != 200:
                raise SystemExit(f"/v1/map answered {status}")

    cases = {}
    for name in bodies:
        cases[f"map_one, {name}"] = (via_core, bodies[name])
        cases[f"http, {name}"] = (via_http, encoded[name])
    # Warm-up: imports, schema compilation, first-call caches, and the steady state of a router
    # that has served a while (the arm's latency window holds its last 5,000 requests).
    for i in range(5000):
        body = RULES_ONLY if i % 2 else bodies[list(bodies)[1]][i % requests]
        await core.map_one(body["detector"], body["output"], request_id=f"w{i}")
    for fn, items in cases.values():
        await fn(items[:50])
    cpu_us: dict[str, list[float]] = {name: [] for name in cases}
    wall_us: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        for name in order:
            fn, items = cases[name]
            c0, w0 = time.process_time(), time.perf_counter()
            await fn(items)
            cpu_us[name].append((time.process_time() - c0) / len(items) * 1e6)
            wall_us[name].append((time.perf_counter() - w0) / len(items) * 1e6)
    return {
        name: {
            "cpu_us_median": statistics.median(cpu_us[name]),
            "cpu_us_min": min(cpu_us[name]),
            "wall_us_median": statistics.median(wall_us[name]),
            "rounds_cpu_us": [round(v, 1) for v in cpu_us[name]],
        }
        for name in cases
    }


def run_inprocess(args: argparse.Namespace) -> dict[str, Any]:
    import llama_mapper

    rows = asyncio.run(_inprocess(args.rounds, args.requests))
    print(f"code: {llama_mapper.__path__[0]}; load average {os.getloadavg()[0]:.1f}")
    print("| path | CPU us/request (median of rounds) | min | wall us/request |")
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['cpu_us_median']:.0f} | {row['cpu_us_min']:.0f} | "
            f"{row['wall_us_median']:.0f} |"
        )
    return {"rows": rows, "load": os.getloadavg()[0], "code": llama_mapper.__path__[0]}


def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    _core, caller = _router()
    rules = json.dumps(RULES_ONLY).encode()
    model = [json.dumps(model_only(i, "p")).encode() for i in range(args.requests)]

    async def go(profiler: cProfile.Profile | None) -> None:
        for i in range(args.requests):
            if profiler:
                profiler.enable()
            await caller.post("/v1/map", rules if args.payload == "rules" else model[i])
            if profiler:
                profiler.disable()

    asyncio.run(go(None))
    profiler = cProfile.Profile()
    asyncio.run(go(profiler))
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    return {}


# --- end to end through Ray Serve ----------------------------------------------------------------


def bootstrap_diff(a: list[float], b: list[float], q: float, n: int = 2000) -> tuple[float, float]:
    """95 % interval of pct(a, q) - pct(b, q), resampling each arm."""
    rng = random.Random(0)
    diffs = sorted(
        pct(rng.choices(a, k=len(a)), q) - pct(rng.choices(b, k=len(b)), q) for _ in range(n)
    )
    return diffs[int(0.025 * n)], diffs[int(0.975 * n) - 1]


def run_serve(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    from llama_mapper.inference.base_model import prepare_base_model
    from llama_mapper.inference.hybrid import HybridMapper
    from llama_mapper.platform.settings.serving import ServingSettings
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


# --- the floor, this tree against another, end to end (no engine) -------------------------------


def run_rules_app(args: argparse.Namespace) -> dict[str, Any]:
    """A rules-only Serve app (router, no engine) in a Ray of its own, until stdin closes."""
    import ray
    from ray import serve

    from llama_mapper.platform.settings.serving import ServingSettings
    from llama_mapper.serving.app import deploy

    settings = ServingSettings(
        http_port=args.port, grpc_port=0, engine_enabled=False, rate_limit_rps=0
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        deploy(settings, warm_up=False, timeout_s=300)
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        serve.shutdown()
        ray.shutdown()
    return {}


def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Rules-only answers one at a time through Serve's HTTP proxy and the router: this tree, and
    with --against the code on another PYTHONPATH, each app in a Ray of its own, requests
    alternated between them so machine noise hits both alike."""
    import subprocess

    import httpx

    sys.path.insert(0, str(Path(__file__).parent))
    from serving_throughput import free_port

    trees = {
        "this tree": None,
        **({f"PYTHONPATH={args.against}": args.against} if args.against else {}),
    }
    apps: dict[str, tuple[subprocess.Popen[str], str]] = {}
    try:
        for name, pythonpath in trees.items():
            # One after the other: two Rays starting at once on a busy 2-core machine time out.
            env = {**os.environ, "RAY_raylet_start_wait_time_s": "120"}
            if pythonpath:
                env["PYTHONPATH"] = str(pythonpath)
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, __file__, "rules-app", "--port", str(port)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            apps[name] = (proc, f"http://127.0.0.1:{port}")
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "ready":
                    break
            else:
                raise SystemExit(f"{name}: the rules-only app did not start")
        # GET /healthz crosses the same proxy, replica and guard but maps nothing: the hop's
        # own cost, next to what the rules-only answer adds.
        paths = {"POST /v1/map rules-only": "/v1/map", "GET /healthz": "/healthz"}
        lat: dict[str, list[list[float]]] = {f"{a}, {p}": [] for a in apps for p in paths}
        with httpx.Client(timeout=60) as client:
            for name, (_, url) in apps.items():
                # Which code answers: a request id over the schema's 128 characters is refused
                # with 422 since this change (it was a 500 before).
                probe = client.post(
                    f"{url}/v1/map", json=RULES_ONLY, headers={"x-request-id": "r" * 129}
                )
                print(f"{name}: 129-character request id -> {probe.status_code}", file=sys.stderr)
                for _ in range(args.warm):
                    client.post(f"{url}/v1/map", json=RULES_ONLY).raise_for_status()
            for r in range(args.rounds):
                for name in lat:
                    lat[name].append([])
                order = list(apps) if r % 2 == 0 else list(reversed(apps))
                for _ in range(args.per_round):
                    for name in order:
                        for label, path in paths.items():
                            url = f"{apps[name][1]}{path}"
                            t = time.perf_counter()
                            if path == "/healthz":
                                client.get(url).raise_for_status()
                            else:
                                client.post(url, json=RULES_ONLY).raise_for_status()
                            lat[f"{name}, {label}"][-1].append(time.perf_counter() - t)
    finally:
        for proc, _ in apps.values():
            if proc.stdin:
                proc.stdin.close()
        for proc, _ in apps.values():
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.terminate()
    rows, diffs = {}, {}
    flat = {name: [v for rd in rounds for v in rd] for name, rounds in lat.items()}
    print("| code, request (one at a time) | requests | p50 ms | p95 ms | median of round p50s |")
    print("|---|---:|---:|---:|---:|")
    for name, rounds in lat.items():
        rows[name] = {
            "requests": len(flat[name]),
            "p50_ms": pct(flat[name], 50) * 1e3,
            "p95_ms": pct(flat[name], 95) * 1e3,
            "round_p50_ms": [round(statistics.median(rd) * 1e3, 2) for rd in rounds],
        }
        row = rows[name]
        print(
            f"| {name} | {row['requests']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
            f"{statistics.median(row['round_p50_ms']):.1f} |"
        )
    pairs = [(f"{a}, {p}", f"{a}, GET /healthz") for a in apps for p in list(paths)[:1]]
    if args.against:
        this, other = apps
        pairs += [(f"{this}, {p}", f"{other}, {p}") for p in paths]
    for a, b in pairs:
        lo, hi = bootstrap_diff(flat[a], flat[b], 95)
        diffs[f"{a} - {b}"] = {
            "p50_ms": (pct(flat[a], 50) - pct(flat[b], 50)) * 1e3,
            "p95_ms": (pct(flat[a], 95) - pct(flat[b], 95)) * 1e3,
            "p95_ci_ms": (lo * 1e3, hi * 1e3),
        }
        print(
            f"{a} - {b}: p50 {(pct(flat[a], 50) - pct(flat[b], 50)) * 1e3:.1f} ms, p95 "
            f"{(pct(flat[a], 95) - pct(flat[b], 95)) * 1e3:.1f} ms (bootstrap 95% "
            f"{lo * 1e3:.1f}..{hi * 1e3:.1f})"
        )
    print(f"load average {os.getloadavg()}")
    return {"rows": rows, "differences": diffs, "load": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    inproc = sub.add_parser("inprocess", help="the router's CPU cost per request, no Ray")
    inproc.add_argument("--rounds", type=int, default=7)
    inproc.add_argument("--requests", type=int, default=400, help="requests per path per round")
    inproc.add_argument("--profile", action="store_true", help="cProfile the http path instead")
    inproc.add_argument("--payload", choices=["rules", "model"], default="rules")
    e2e = sub.add_parser("serve", help="router vs engine handle through Ray Serve + vLLM")
    e2e.add_argument("--rounds", type=int, default=10)
    e2e.add_argument("--per-round", type=int, default=20, help="request pairs per round")
    e2e.add_argument("--warm", type=int, default=8, help="warm-up pairs")
    e2e.add_argument("--adapter-dir", type=Path, help="default: a random-init rank-8 LoRA")
    floor = sub.add_parser("floor", help="rules-only through Serve (no engine), A/B by code")
    floor.add_argument("--against", type=Path, help="PYTHONPATH holding the other llama_mapper")
    floor.add_argument("--rounds", type=int, default=10)
    floor.add_argument("--per-round", type=int, default=50, help="requests per app per round")
    floor.add_argument("--warm", type=int, default=20)
    app = sub.add_parser("rules-app", help="(used by floor) one rules-only app until stdin closes")
    app.add_argument("--port", type=int, required=True)
    for p in (inproc, e2e, floor):
        p.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.mode == "serve":
        out = run_serve(args)
    elif args.mode == "floor":
        out = run_floor(args)
    elif args.mode == "rules-app":
        out = run_rules_app(args)
    elif args.profile:
        out = run_profile(args)
    else:
        out = run_inprocess(args)
    if getattr(args, "json", None):
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
