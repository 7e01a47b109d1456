"""Serving throughput: the Ray Serve + vLLM stack against the transformers + PEFT baseline server.

Same base, same adapter, same prompts (one finding per request that only the model can map), same
closed-loop concurrency. Phases run one after the other so they never share the cores:

1. baseline: bench/baseline_server.py (FastAPI, one `generate` at a time) in a subprocess;
2. stack: `deploy()` of the Serve app (router + engine) with the adapter as a local model;
3. engine direct: the same queries straight to the engine deployment's handle, at the same
   concurrency (under queueing the router's own overhead is lost in the noise: measure it one
   request at a time with bench/router_serve.py);
4. rules-only through the router: payloads the rules answer (the router's own cost).

The compute ceiling is measured in the same run (llama_mapper/bench/compute.py): a matmul probe
where the engine computes, in its dtype, before the first phase and after the last, and each
model-bound phase's FLOPs from its requests' tokens
(prompt tokens the prefix cache did not serve, generated tokens, attention, LoRA). Each phase's
share is its achieved GFLOP/s over the lower of the two probes.

    .venv/bin/python bench/serving_throughput.py --requests 96 --concurrency 16 [--block-size 32]

The same bench runs unchanged on a GPU host (`--device auto` finds it): both servers and the probe
run on the first CUDA device in bfloat16, the engine with the GPU profile and a GPU reserved for
its replica; `--base meta-llama/Meta-Llama-3-8B-Instruct` (or microsoft/Phi-3-mini-4k-instruct)
where the weights can be had, else the bundled base. Every figure is labelled with the device.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from llama_mapper.bench.figures import RAW_LABELS as FIGURE_LABELS

# The model-only labels of llama_mapper.bench.figures (one list), and four of the attack kind.
RAW_LABELS = [*FIGURE_LABELS, "guard bypass", "prompt leak", "system override", "malware link"]


def payloads(n: int, phase: str) -> list[dict[str, Any]]:
    """n distinct one-finding outputs; `phase` keeps prompt sets apart, so no phase is served from
    the prefix cache of another (only the shared system prompt is cached across phases)."""
    return [
        {
            "detector": f"acme-scanner-{i % 3}",
            "output": [
                {"type": f"{RAW_LABELS[i % len(RAW_LABELS)]} {phase}{i}", "confidence": 0.9}
            ],
        }
        for i in range(n)
    ]


RULES_ONLY = {
    "detector": "presidio",
    "output": [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(name: str, latencies: list[float], wall: float, errors: int) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return (
            ordered[max(0, round(q / 100 * len(ordered)) - 1)] * 1000 if ordered else float("nan")
        )

    return {
        "phase": name,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "wall_s": wall,
    }


# Labels of the findings answered, per phase and request: the generated tokens of the compute count.
ANSWERED: dict[int, dict[int, list[str]]] = {}


async def closed_loop(
    url: str, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[list[float], float, int, list[str]]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    methods: list[str] = []
    answers = ANSWERED.setdefault(id(bodies), {})
    errors = 0
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(index: int, body: dict[str, Any]) -> None:
            nonlocal errors
            async with sem:
                started = time.perf_counter()
                r = await client.post(f"{url}/v1/map", json=body)
                latencies.append(time.perf_counter() - started)
                if r.status_code != 200:
                    errors += 1
                else:
                    findings = r.json()["result"]["findings"]
                    methods.extend(f["method"] for f in findings)
                    answers[index] = [f["label"] for f in findings]

        started = time.perf_counter()
        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        return latencies, time.perf_counter() - started, errors, methods


def attention_projections(model: Any) -> list[str]:
    """The attention projections this architecture names: q/k/v/o (Llama, SmolLM2, Qwen) or the
    fused qkv + o (Phi-3)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for wanted in (["q_proj", "k_proj", "v_proj", "o_proj"], ["qkv_proj", "o_proj"]):
        if set(wanted) <= names:
            return wanted
    raise SystemExit(f"no q/k/v/o or qkv/o projections in {type(model).__name__}")


def make_adapter(base_dir: Path, out: Path, seed: int = 7, dtype: str = "float32") -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype))
    peft = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=attention_projections(model),
            task_type="CAUSAL_LM",
        ),
    )
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft.save_pretrained(out)
    return out


def wait_http(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


def run_baseline(
    base: Path, adapter: Path, bodies: list[dict[str, Any]], concurrency: int, engine: Any
) -> dict[str, Any]:
    from llama_mapper.inference.vllm_engine.config import engine_dtype

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("baseline_server.py")),
            "--base-dir",
            str(base),
            "--adapter-dir",
            str(adapter),
            "--port",
            str(port),
            "--device",
            "cuda" if engine.device_profile == "gpu" else "cpu",
            "--dtype",
            engine_dtype(engine),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url)
        asyncio.run(closed_loop(url, payloads(4, "warm"), 1))  # warm-up
        latencies, wall, errors, methods = asyncio.run(closed_loop(url, bodies, concurrency))
        out = summary("transformers+PEFT baseline", latencies, wall, errors)
        out["model_findings"] = methods.count("model") + methods.count("fallback")
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def run_stack(
    adapter: Path, bodies: list[dict[str, Any]], concurrency: int, engine: Any
) -> list[dict[str, Any]]:
    import ray
    from ray import serve

    from llama_mapper.domain.prompt import finding_payload
    from llama_mapper.domain.readers.generic import extract_generic
    from llama_mapper.inference.model import MapperQuery
    from llama_mapper.platform.settings.serving import ServingSettings, ray_serve_env
    from llama_mapper.serving.app import deploy

    settings = ServingSettings(
        http_port=free_port(),
        grpc_port=0,
        local_adapters={"mapper": adapter},
        rate_limit_rps=0,
        deadline_s=600,
        threshold=0.0,  # keep every valid model label: the point is that the model answers
        engine=engine,
    )
    # "local": a Ray of its own, never a cluster someone else started on this machine.
    ray_serve_env()  # as the shipped Ray images set it
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    results = []
    try:
        info = deploy(settings, timeout_s=600)
        url = info["url"]
        print(
            f"stack deployed in {info['deploy_s']:.1f}s, warm-up {info['warm_up_s']:.1f}s",
            file=sys.stderr,
        )
        # Warm-up at the measured concurrency on prompts of its own (kernels for every batch shape).
        asyncio.run(closed_loop(url, payloads(2 * concurrency, "warm"), concurrency))
        latencies, wall, errors, methods = asyncio.run(closed_loop(url, bodies, concurrency))
        row = summary("Ray Serve + vLLM stack (HTTP, router)", latencies, wall, errors)
        row["methods"] = {m: methods.count(m) for m in sorted(set(methods))}
        results.append(row)
        if row["methods"].get("fallback", 0) > len(bodies) // 2:
            metrics = httpx.get(f"{url}/metrics", timeout=30).text
            reasons = [
                line for line in metrics.splitlines() if line.startswith("mapper_fallbacks_total")
            ]
            raise SystemExit(f"the stack answered by fallback, not the model: {reasons}")

        handle = serve.get_deployment_handle("MapperEngine", app_name=settings.app_name)
        queries = []
        for body in payloads(len(bodies), "direct"):
            (finding,) = extract_generic(body["detector"], body["output"])
            queries.append(MapperQuery(body["detector"], finding_payload(finding)))

        async def direct() -> tuple[list[float], float]:
            sem = asyncio.Semaphore(concurrency)
            lat: list[float] = []

            async def one(q: MapperQuery) -> None:
                async with sem:
                    t = time.perf_counter()
                    await handle.predict.remote("mapper-local", [q])
                    lat.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(q) for q in queries))
            return lat, time.perf_counter() - t0

        lat, wall = asyncio.run(direct())
        results.append(summary("engine deployment direct (handle)", lat, wall, 0))
        latencies, wall, errors, _ = asyncio.run(closed_loop(url, [RULES_ONLY] * 400, concurrency))
        results.append(summary("router, rules-only answers (HTTP)", latencies, wall, errors))
        # One at a time: the router's own cost per request (HTTP proxy + FastAPI + rules + result).
        latencies, wall, errors, _ = asyncio.run(closed_loop(url, [RULES_ONLY] * 200, 1))
        results.append(
            summary("router, rules-only answers, one at a time", latencies, wall, errors)
        )

        async def hot_load() -> tuple[float, list[float], float, int, list[str]]:
            # A second adapter is added to the engine while the same load runs.
            load = asyncio.ensure_future(
                closed_loop(url, payloads(len(bodies), "hot"), concurrency)
            )
            await asyncio.sleep(1.0)
            t = time.perf_counter()
            await handle.load_local.remote("hotload", str(adapter))
            hot_s = time.perf_counter() - t
            lat, wall, errs, meths = await load
            return hot_s, lat, wall, errs, meths

        hot_s, latencies, wall, errors, methods = asyncio.run(hot_load())
        row = summary("stack while an adapter hot-loads", latencies, wall, errors)
        row["hot_load_s"] = hot_s
        row["methods"] = {m: methods.count(m) for m in sorted(set(methods))}
        results.append(row)
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


# vLLM's block size when none is given (the CPU platform's, the GPU's).
VLLM_DEFAULT_BLOCK = {"cpu": 128, "gpu": 16}


def bench_engine(device: str, base_model: str, dtype: str | None, block_size: int | None) -> Any:
    """The engine both servers run: the CPU profile (float32) or, on a GPU host, the GPU profile
    (bfloat16): the same bench unchanged, its figures labelled by device."""
    import torch

    from llama_mapper.inference.vllm_engine.config import VllmEngineConfig

    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    if device == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--device gpu: torch sees no CUDA device on this machine")
    return VllmEngineConfig(
        base_model=base_model,
        device_profile=device,
        dtype=dtype or ("bfloat16" if device == "gpu" else "float32"),
        block_size=block_size,
    )


def generated_tokens(tokenizer: Any, label: str, choice: tuple[str, ...], decisive: bool) -> int:
    """Tokens generated for `label` chosen among `choice`: its tokens and the end token, or, when
    decoding stops at the decisive prefix, its tokens up to the one that completes that prefix.
    (The engine step in flight when the stop is seen computes one more token for the request,
    which is thrown away and not counted: the share is then a lower bound.)"""
    from llama_mapper.inference.vllm_engine.decoding import decisive_prefixes

    ids = tokenizer(label, add_special_tokens=False).input_ids
    stop = next((s for s, chosen in decisive_prefixes(choice).items() if chosen == label), None)
    if decisive and stop is not None:
        for count in range(1, len(ids) + 1):
            if tokenizer.decode(ids[:count]).startswith(stop):
                return count
    return len(ids) + 1


def phase_costs(
    base: Path,
    adapter: Path,
    bodies: list[dict[str, Any]],
    answers: dict[int, list[str]],
    block_size: int,
    decisive: bool,
) -> dict[str, Any]:
    """Mean FLOPs per request of `bodies` answered with `answers` (labels by request): with the
    prefix cache of `block_size`-token blocks (the stack, decoding as the engine is configured)
    and without it (the baseline computes every token and decodes every label to its end)."""
    from transformers import AutoTokenizer

    from llama_mapper.bench.compute import ModelShape, cached_prefix, request_cost
    from llama_mapper.domain.prompt import finding_payload, mapper_messages
    from llama_mapper.domain.readers.generic import extract_generic
    from llama_mapper.domain.taxonomy import default_taxonomy
    from llama_mapper.inference.hybrid import HybridMapper

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    shape = ModelShape.from_adapter(base, adapter)
    prompts = []
    for body in bodies:
        (finding,) = extract_generic(body["detector"], body["output"])
        text = tokenizer.apply_chat_template(
            mapper_messages(body["detector"], finding_payload(finding)),
            tokenize=False,
            add_generation_prompt=True,
        )
        prompts.append(tokenizer(text, add_special_tokens=False).input_ids)
    cached = cached_prefix(prompts, block_size)
    # The shortlist each finding was chosen in: the router's own plan (the same code).
    hybrid, everything = HybridMapper(threshold=0.0), tuple(default_taxonomy().names)
    generated: dict[str, dict[int, int]] = {"stack": {}, "baseline": {}}
    for index, body in enumerate(bodies):
        queries = hybrid.plan(body["detector"], body["output"]).queries
        for query, label in zip(queries, answers.get(index, [])[: len(queries)], strict=False):
            choice = tuple(query.candidates) or everything
            for name, cut in (("stack", decisive), ("baseline", False)):
                generated[name][index] = generated_tokens(tokenizer, label, choice, cut)
    mean = {name: sum(g.values()) / len(g) if g else 6.0 for name, g in generated.items()}
    out: dict[str, Any] = {"block_size": block_size, "cached_tokens": cached}
    for name, cache in (("stack", cached), ("baseline", 0)):
        costs = [
            request_cost(shape, len(p), cache, generated[name].get(i, round(mean[name])))
            for i, p in enumerate(prompts)
        ]
        out[name] = {
            "flops_per_request": sum(c.total for c in costs) / len(costs),
            "prefill_share": sum(c.prefill_flops for c in costs) / sum(c.total for c in costs),
            "lora_share": sum(c.lora_flops for c in costs) / sum(c.total for c in costs),
        }
    out["prompt_tokens"] = sum(map(len, prompts)) / len(prompts)
    out["generated_tokens"] = mean["stack"]
    out["baseline_generated_tokens"] = mean["baseline"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--adapter-dir", type=Path, help="adapter to serve (default: a random-init rank-8 LoRA)"
    )
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="the engine's KV block size (default: VllmEngineConfig's)",
    )
    parser.add_argument(
        "--base",
        default=None,
        help="base model: the bundled id (default), a transformers directory or a hub id "
        "(meta-llama/Meta-Llama-3-8B-Instruct, microsoft/Phi-3-mini-4k-instruct on a GPU host)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="auto: the GPU when torch sees one; both servers run there",
    )
    parser.add_argument(
        "--dtype", default=None, help="weights dtype (default: float32 on CPU, bfloat16 on GPU)"
    )
    parser.add_argument(
        "--full-label-decoding",
        action="store_true",
        help="decode every label to its end token (the engine before decisive_stop)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    from llama_mapper.bench.compute import ModelShape, engine_probe
    from llama_mapper.inference.base_model import DEFAULT_MODEL_ID, prepare_base_model
    from llama_mapper.inference.vllm_engine.config import engine_dtype, kv_block_size

    engine = bench_engine(args.device, args.base or DEFAULT_MODEL_ID, args.dtype, args.block_size)
    if args.full_label_decoding:
        engine = engine.model_copy(update={"decisive_stop": False})
    # Prepared as every other user prepares it (the cache keeps one copy per model, whatever the
    # dtype asked): the engine and the baseline cast to theirs when they load it.
    base = prepare_base_model(engine.base_model)
    # The stack serves the prepared directory (one copy of the weights for both servers).
    engine = engine.model_copy(
        update={"base_model": str(base.path), "dtype": engine_dtype(engine)}  # 'auto' resolved
    )
    probe_shape = ModelShape.from_config(base.path)
    probe_before = engine_probe(config=engine, shape=probe_shape)
    print(f"device: {probe_before['label']} ({engine.dtype})", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        adapter = args.adapter_dir or make_adapter(
            base.path, Path(tmp) / "adapter", dtype=engine.dtype
        )
        bodies = payloads(args.requests, "measured")
        rows = [run_baseline(base.path, adapter, bodies, args.concurrency, engine)]
        rows += run_stack(adapter, bodies, args.concurrency, engine)
        probe_after = engine_probe(config=engine, shape=probe_shape)
        block = kv_block_size(engine) or VLLM_DEFAULT_BLOCK[engine.device_profile]
        costs = phase_costs(
            base.path, adapter, bodies, ANSWERED.get(id(bodies), {}), block, engine.decisive_stop
        )
    peak = min(probe_before["peak"], probe_after["peak"])
    baseline, stack, direct = rows[:3]
    for row, side in ((baseline, "baseline"), (stack, "stack"), (direct, "stack")):
        achieved = row["rps"] * costs[side]["flops_per_request"] / 1e9
        row["gflops"] = achieved
        row["compute_share"] = achieved / peak
    ratios = {
        "throughput_ratio": stack["rps"] / baseline["rps"],
        "p95_ratio": stack["p95_ms"] / baseline["p95_ms"],
        "p95_stack_minus_direct_ms": stack["p95_ms"] - direct["p95_ms"],
    }
    load = os.getloadavg()[0]
    print(
        "| phase | requests | errors | req/s | p50 ms | p95 ms | model GFLOP/s | share of probe |"
        "\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        share = f"{100 * r['compute_share']:.1f} %" if "compute_share" in r else "-"
        gflops = f"{r['gflops']:.1f}" if "gflops" in r else "-"
        print(
            f"| {r['phase']} | {r['requests']} | {r['errors']} | {r['rps']:.2f} | {r['p50_ms']:.0f} "
            f"| {r['p95_ms']:.0f} | {gflops} | {share} |"
        )
    print(
        f"\ndevice: {probe_before['label']}, {engine.dtype}, base {args.base or 'bundled'}; "
        f"matmul probe: {probe_before['peak']:.1f} GFLOP/s before, {probe_after['peak']:.1f} "
        f"after ({probe_before['threads']} threads); per request: {costs['prompt_tokens']:.1f} "
        f"prompt tokens ({costs['cached_tokens']} served by the prefix cache at block size "
        f"{costs['block_size']}), {costs['generated_tokens']:.1f} generated "
        f"({costs['baseline_generated_tokens']:.1f} by the baseline, decisive stop "
        f"{'on' if engine.decisive_stop else 'off'}); "
        f"{costs['stack']['flops_per_request'] / 1e9:.2f} GFLOP (stack, prefill "
        f"{100 * costs['stack']['prefill_share']:.0f} %, LoRA "
        f"{100 * costs['stack']['lora_share']:.1f} %) vs "
        f"{costs['baseline']['flops_per_request'] / 1e9:.2f} GFLOP (baseline, no cache); "
        f"ceiling at the probe's peak: {peak * 1e9 / costs['stack']['flops_per_request']:.1f} req/s"
    )
    print(
        f"\nstack/baseline: {ratios['throughput_ratio']:.2f}x requests/s, p95 x{ratios['p95_ratio']:.2f}; "
        f"p95 stack - p95 engine direct at this concurrency: "
        f"{ratios['p95_stack_minus_direct_ms']:.0f} ms (queueing; one at a time: "
        f"bench/router_serve.py); "
        f"load average at the end {load:.1f}"
    )
    print(
        f"stack finding methods: {stack.get('methods')}; hot-load: {rows[-1].get('hot_load_s', 0):.1f}s, "
        f"{rows[-1]['errors']} failed requests, methods {rows[-1].get('methods')}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "ratios": ratios,
                    "load": load,
                    "device": {
                        "label": probe_before["label"],
                        "profile": engine.device_profile,
                        "dtype": engine.dtype,
                        "base": args.base or "bundled",
                    },
                    "probe": {"before": probe_before, "after": probe_after},
                    "costs": costs,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
