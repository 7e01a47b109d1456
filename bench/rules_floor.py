"""The rules-only floor through Serve's proxy and the router, this tree against another.

`floor` (no engine, no vLLM): rules-only answers one at a time through Serve's proxy and the
router, this tree's code against the code on another PYTHONPATH (a directory holding a
`llama_mapper` package, e.g. an export of the previous commit), each app in a Ray of its own on a
free port, requests alternated between the two. `--engine`: each app also runs its vLLM engine
(the bundled base, a random rank-8 adapter), idle, as a deployed stack does between model
requests; the floor is then measured with the engine's processes up.


    .venv/bin/python bench/rules_floor.py --against /tmp/before/pkg
    .venv/bin/python bench/rules_floor.py --engine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from llama_mapper.bench.figures import RULES_ONLY, bootstrap_diff, model_only, pct  # noqa: F401


def run_rules_app(args: argparse.Namespace) -> dict[str, Any]:
    """A rules-only Serve app (router, no engine) in a Ray of its own, until stdin closes."""
    import ray
    from ray import serve

    from llama_mapper.platform.settings.serving import ServingSettings, ray_serve_env
    from llama_mapper.serving.app import deploy

    if args.adapter:
        settings = ServingSettings(
            http_port=args.port,
            grpc_port=0,
            local_adapters={"mapper": args.adapter},
            rate_limit_rps=0,
        )
    else:
        settings = ServingSettings(
            http_port=args.port, grpc_port=0, engine_enabled=False, rate_limit_rps=0
        )
    num_cpus = 4 if args.adapter else 2  # as serving_throughput's stack: engine + router
    ray_serve_env()  # as the shipped Ray images set it
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        info = deploy(settings, warm_up=bool(args.adapter), timeout_s=600)
        if args.adapter:
            engine = (
                f"engine up: deployed in {info['deploy_s']:.1f}s, warm-up {info['warm_up_s']:.1f}s"
            )
            print(engine, file=sys.stderr, flush=True)
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
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from serving_throughput import make_adapter

    with tempfile.TemporaryDirectory() as tmp:
        adapter = None
        if args.engine:
            from llama_mapper.inference.base_model import prepare_base_model

            adapter = make_adapter(prepare_base_model().path, Path(tmp) / "adapter")
        return _floor(args, adapter)


def _floor(args: argparse.Namespace, adapter: Path | None) -> dict[str, Any]:
    import subprocess

    import httpx
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
            command = [sys.executable, __file__, "rules-app", "--port", str(port)]
            proc = subprocess.Popen(
                command + (["--adapter", str(adapter)] if adapter else []),
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
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode")
    app = sub.add_parser(
        "rules-app", help="(used by the floor) one rules-only app until stdin closes"
    )
    app.add_argument("--port", type=int, required=True)
    app.add_argument("--adapter", type=Path, help="run the engine with this adapter")
    parser.add_argument("--engine", action="store_true", help="each app runs its engine, idle")
    parser.add_argument("--against", type=Path, help="PYTHONPATH holding the other llama_mapper")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=50, help="requests per app per round")
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    out = run_rules_app(args) if args.mode == "rules-app" else run_floor(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
