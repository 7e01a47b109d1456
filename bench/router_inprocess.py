"""The router's own CPU cost per request, in-process (no Ray, no engine).

`inprocess` (no Ray, no engine): the router's own CPU cost per request, measured on this
process's CPU clock in interleaved rounds, for two payloads: one the rules answer and one only the
model could map (with no engine deployed the fallback answers it, so it runs reader, rules,
fallback and result assembly, the router's whole side of a model request minus the engine call):

- `map_one`: RouterCore.map_one alone;
- `http`: the FastAPI app called as ASGI (middleware, body, request model, route, response).

`--profile` prints cProfile's top functions for the `http` rules-only path instead.

    .venv/bin/python bench/router_inprocess.py --rounds 7 --requests 400
    .venv/bin/python bench/router_inprocess.py --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from llama_mapper.bench.figures import RULES_ONLY, bootstrap_diff, model_only, pct  # noqa: F401


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=400, help="requests per path per round")
    parser.add_argument("--profile", action="store_true", help="cProfile the http path instead")
    parser.add_argument("--payload", choices=["rules", "model"], default="rules")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    out = run_profile(args) if args.profile else run_inprocess(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
