"""What these cores can compute, and what a served request costs: the same-run compute ceiling.

`matmul_probe` measures float32 matmul GFLOP/s with torch on the threads the engine uses, at the
model's own shapes (a batch of tokens through the MLP and attention projections) and at a large
square size, and keeps the best: the peak a dense forward pass could reach on this machine now.
`RequestCost` counts a mapper request's model FLOPs from its tokens: the prompt tokens the prefix
cache did not serve, the generated tokens, attention over the context, and the LoRA matmuls. A
phase's compute share is its requests/s times FLOPs per request over the probe's peak.

    .venv/bin/python -m llama_mapper.bench.compute     # the probe alone, and one request's cost
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def matmul_probe(seconds: float = 2.0, threads: int | None = None) -> dict[str, float]:
    """Best float32 GFLOP/s over the model's shapes and a square one (each timed ~seconds/3)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    shapes = {
        "mlp 256x576x1536": (256, 576, 1536),
        "attn 256x576x576": (256, 576, 576),
        "square 1024": (1024, 1024, 1024),
        "square 2048": (2048, 2048, 2048),
    }
    out: dict[str, float] = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            torch.mm(a, b)
        reps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / len(shapes):
            torch.mm(a, b)
            reps += 1
        elapsed = time.perf_counter() - started
        out[name] = 2 * m * k * n * reps / elapsed / 1e9
    out["peak"] = max(out.values())
    out["threads"] = torch.get_num_threads()
    return out


def engine_probe(seconds: float = 2.0) -> dict[str, float]:
    """matmul_probe in a fresh process with the engine's CPU environment (Intel OpenMP preloaded,
    threads bound as vLLM binds them): the peak the engine's own kernels could reach."""
    import os
    import subprocess
    import sys

    from llama_mapper.inference.vllm_engine.config import VllmEngineConfig, cpu_environment

    env = {**os.environ, **cpu_environment(VllmEngineConfig())}
    proc = subprocess.run(
        [sys.executable, "-m", "llama_mapper.bench.compute", "--probe", str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    lora_rank: int = 0
    lora_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    @staticmethod
    def from_config(path: Path, lora_rank: int = 0) -> ModelShape:
        config = json.loads((path / "config.json").read_text())
        return ModelShape(
            layers=config["num_hidden_layers"],
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
            vocab=config["vocab_size"],
            lora_rank=lora_rank,
        )

    def _dims(self, module: str) -> tuple[int, int]:
        head = self.hidden // self.heads
        return {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, self.kv_heads * head),
            "v_proj": (self.hidden, self.kv_heads * head),
            "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }[module]

    def dense_flops_per_token(self) -> float:
        """2 x the weights every token multiplies through: projections, MLP, the LM head."""
        modules = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        per_layer = sum(a * b for a, b in map(self._dims, modules))
        return 2.0 * (self.layers * per_layer + self.hidden * self.vocab)

    def attention_flops(self, position: int) -> float:
        """QK^T and AV for one token attending over `position` earlier tokens."""
        return 4.0 * self.layers * self.hidden * position

    def lora_flops_per_token(self) -> float:
        if not self.lora_rank:
            return 0.0
        return (
            sum(2.0 * self.lora_rank * (a + b) for a, b in map(self._dims, self.lora_modules))
            * self.layers
        )


@dataclass(frozen=True)
class RequestCost:
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    prefill_flops: float
    decode_flops: float
    lora_flops: float

    @property
    def total(self) -> float:
        return self.prefill_flops + self.decode_flops + self.lora_flops

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def request_cost(
    shape: ModelShape, prompt_tokens: int, cached_tokens: int, generated_tokens: int
) -> RequestCost:
    """The FLOPs one request computes: uncached prompt tokens, then one step per generated token
    (the LM head only on the last prompt token and on each generated one)."""
    dense = shape.dense_flops_per_token()
    head = 2.0 * shape.hidden * shape.vocab
    uncached = max(prompt_tokens - cached_tokens, 0)
    prefill = uncached * (dense - head) + head
    prefill += sum(shape.attention_flops(p) for p in range(cached_tokens, prompt_tokens))
    decode = sum(dense + shape.attention_flops(prompt_tokens + i) for i in range(generated_tokens))
    lora = (uncached + generated_tokens) * shape.lora_flops_per_token()
    return RequestCost(prompt_tokens, cached_tokens, generated_tokens, prefill, decode, lora)


def cached_prefix(token_lists: list[list[int]], block_size: int) -> int:
    """Tokens every prompt shares, in whole KV blocks: what the prefix cache can serve."""
    if not token_lists:
        return 0
    first = token_lists[0]
    common = len(first)
    for tokens in token_lists[1:]:
        i = 0
        while i < min(common, len(tokens)) and tokens[i] == first[i]:
            i += 1
        common = i
    # vLLM never serves a whole prompt from cache: the last token is always computed.
    common = min(common, min(len(t) for t in token_lists) - 1)
    return common // block_size * block_size


def main() -> None:
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        print(json.dumps(matmul_probe(float(sys.argv[2]))))
        return
    from llama_mapper.inference.base_model import prepare_base_model

    base = prepare_base_model()
    shape = ModelShape.from_config(base.path, lora_rank=16)
    probe = engine_probe()
    print(json.dumps({"probe": probe, "shape": asdict(shape)}, indent=2))
    cost = request_cost(shape, prompt_tokens=96, cached_tokens=32, generated_tokens=6)
    print(json.dumps(cost.as_json(), indent=2))
    print(f"ceiling: {probe['peak'] * 1e9 / cost.total:.1f} requests/s at the probe's peak")


if __name__ == "__main__":
    main()
