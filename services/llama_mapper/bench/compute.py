"""What this machine can compute, and what a served request costs: the same-run compute ceiling.

`matmul_probe` measures matmul GFLOP/s with torch where the engine computes and in its dtype (the
CPU's threads as vLLM binds them, or the GPU), at the model's own shapes (a batch
of tokens through the MLP and attention projections) and at large square sizes, and keeps the
best: the peak a dense forward pass could reach on this machine now. `device_label` names the
device for the figures' label.
`RequestCost` counts a mapper request's model FLOPs from its tokens: the prompt tokens the prefix
cache did not serve, the generated tokens, attention over the context, and the LoRA matmuls. A
phase's compute share is its requests/s times FLOPs per request over the probe's peak.

    .venv/bin/python -m llama_mapper.bench.compute     # the probe alone, and one request's cost
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def device_label(device: str = "cpu") -> str:
    """What the figures were measured on, for their label: the GPU's name, or the CPU's model
    name and the cores this process may use."""
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        return f"{torch.cuda.get_device_name(index)} (CUDA {torch.version.cuda})"
    import platform

    from llama_mapper.inference.vllm_engine.config import cpuinfo_value

    name = cpuinfo_value(("model name",)) or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"


def probe_shapes(shape: ModelShape | None = None) -> dict[str, tuple[int, int, int]]:
    """The matmuls probed: a batch of 256 tokens through the model's MLP and attention
    projections (the bundled base's when no shape is given) and two large squares."""
    hidden, intermediate = (shape.hidden, shape.intermediate) if shape else (576, 1536)
    return {
        f"mlp 256x{hidden}x{intermediate}": (256, hidden, intermediate),
        f"attn 256x{hidden}x{hidden}": (256, hidden, hidden),
        "square 1024": (1024, 1024, 1024),
        "square 2048": (2048, 2048, 2048),
        **({"square 8192": (8192, 8192, 8192)} if shape and shape.hidden >= 2048 else {}),
    }


def matmul_probe(
    seconds: float = 2.0,
    threads: int | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    shape: ModelShape | None = None,
) -> dict[str, Any]:
    """Best GFLOP/s over the model's shapes and square ones (each timed ~seconds/shapes), in the
    engine's dtype on the engine's device (CUDA timings wait for the device to finish)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    kind = getattr(torch, dtype)
    shapes = probe_shapes(shape)
    out: dict[str, Any] = {}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device=device, dtype=kind)
        b = torch.randn(k, n, device=device, dtype=kind)
        for _ in range(3):
            torch.mm(a, b)
        sync()
        reps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / len(shapes):
            for _ in range(10 if cuda else 1):  # a launch is microseconds: time batches of them
                torch.mm(a, b)
                reps += 1
            sync()
        elapsed = time.perf_counter() - started
        out[name] = 2 * m * k * n * reps / elapsed / 1e9
    out["peak"] = max(out.values())
    out["threads"] = torch.get_num_threads()
    out["device"] = device
    out["dtype"] = dtype
    out["label"] = device_label(device)
    return out


def engine_probe(
    seconds: float = 2.0, config: Any = None, shape: ModelShape | None = None
) -> dict[str, Any]:
    """matmul_probe in a fresh process with the engine's environment: on the CPU profile Intel
    OpenMP preloaded and threads bound as vLLM binds them; on the GPU profile the first CUDA
    device in the engine's dtype. The peak the engine's own kernels could reach."""
    import subprocess
    import sys

    from llama_mapper.inference.vllm_engine.config import (
        VllmEngineConfig,
        cpu_environment,
        engine_dtype,
    )

    config = config or VllmEngineConfig()
    env = {**os.environ, **cpu_environment(config)}
    request = {
        "seconds": seconds,
        "device": "cuda" if config.device_profile == "gpu" else "cpu",
        "dtype": engine_dtype(config),
        "shape": asdict(shape) if shape else None,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "llama_mapper.bench.compute", "--probe", json.dumps(request)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Every projection a decoder layer multiplies a token through (unfused names).
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
    head_dim: int = 0  # 0: hidden // heads

    @staticmethod
    def from_config(
        path: Path, lora_rank: int = 0, lora_modules: tuple[str, ...] | None = None
    ) -> ModelShape:
        config = json.loads((path / "config.json").read_text())
        return ModelShape(
            layers=config["num_hidden_layers"],
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            vocab=config["vocab_size"],
            lora_rank=lora_rank,
            **({"lora_modules": tuple(lora_modules)} if lora_modules else {}),
            head_dim=config.get("head_dim") or 0,
        )

    @staticmethod
    def from_adapter(base: Path, adapter: Path) -> ModelShape:
        """The base's shape with the adapter's rank and target modules (adapter_config.json)."""
        config = json.loads((adapter / "adapter_config.json").read_text())
        modules = config.get("target_modules") or ()
        if isinstance(modules, str):  # PEFT allows a regex or "all-linear": count every projection
            modules = MODULES
        return ModelShape.from_config(base, config.get("r", 0), tuple(sorted(modules)) or None)

    def _dims(self, module: str) -> tuple[int, int]:
        head = self.head_dim or self.hidden // self.heads
        q, kv = self.heads * head, self.kv_heads * head
        dims = {
            "q_proj": (self.hidden, q),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
            # Fused projections (Phi-3): one matrix where Llama has two or three.
            "qkv_proj": (self.hidden, q + 2 * kv),
            "gate_up_proj": (self.hidden, 2 * self.intermediate),
        }
        if module not in dims:
            raise ValueError(f"unknown projection {module!r}: expected one of {sorted(dims)}")
        return dims[module]

    def dense_flops_per_token(self) -> float:
        """2 x the weights every token multiplies through: projections, MLP, the LM head."""
        per_layer = sum(a * b for a, b in map(self._dims, MODULES))
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
        request = json.loads(sys.argv[2])
        fields = request.get("shape")
        shape = (
            ModelShape(**{**fields, "lora_modules": tuple(fields["lora_modules"])})
            if fields
            else None
        )
        probe = matmul_probe(
            request["seconds"], device=request["device"], dtype=request["dtype"], shape=shape
        )
        print(json.dumps(probe))
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
