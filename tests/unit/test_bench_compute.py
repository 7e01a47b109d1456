"""The compute count of the serving bench: FLOPs per request from its tokens (pure arithmetic)."""

import json

import pytest

from llama_mapper.bench.compute import (
    MODULES,
    ModelShape,
    cached_prefix,
    device_label,
    matmul_probe,
    probe_shapes,
    request_cost,
)

SMOLLM = ModelShape(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, vocab=49152)


def test_dense_flops_are_twice_the_weights_a_token_multiplies_through():
    per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3  # q, o; k, v (3 kv heads); MLP
    assert SMOLLM.dense_flops_per_token() == 2 * (30 * per_layer + 576 * 49152)
    # ~106 M weights in the layers: a 135M model once the embeddings are counted.
    assert 100e6 < 30 * per_layer < 110e6


def test_the_prefix_cache_removes_prefill_and_nothing_else():
    cold = request_cost(SMOLLM, prompt_tokens=100, cached_tokens=0, generated_tokens=6)
    warm = request_cost(SMOLLM, prompt_tokens=100, cached_tokens=64, generated_tokens=6)
    assert warm.decode_flops == cold.decode_flops
    assert warm.prefill_flops < 0.45 * cold.prefill_flops
    lora = ModelShape(**{**SMOLLM.__dict__, "lora_rank": 16})
    assert request_cost(lora, 100, 64, 6).lora_flops == pytest.approx(
        (36 + 6) * lora.lora_flops_per_token()
    )


def test_only_whole_shared_blocks_are_cached_and_never_the_last_token():
    shared = list(range(70))
    prompts = [[*shared, 1000 + i, 2000 + i] for i in range(3)]
    assert cached_prefix(prompts, 32) == 64
    assert cached_prefix(prompts, 128) == 0
    assert (
        cached_prefix([shared, shared], 16) == 64
    )  # identical prompts: the last token is computed
    assert cached_prefix([], 32) == 0


PHI3_MINI = {  # microsoft/Phi-3-mini-4k-instruct's config.json, the fields the count reads
    "num_hidden_layers": 32,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
}


def test_fused_projections_count_what_their_parts_count(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(PHI3_MINI))
    unfused = ModelShape.from_config(tmp_path, lora_rank=8)
    fused = ModelShape.from_config(tmp_path, lora_rank=8, lora_modules=("qkv_proj", "o_proj"))
    # Phi-3's qkv_proj is q, k and v in one matrix: the same LoRA FLOPs would differ (one A for
    # three B's) but the dense count is the same; ~3.6 B weights in the layers.
    assert 3.5e9 < unfused.dense_flops_per_token() / 2 - 3072 * 32064 < 3.7e9
    hidden, rank = 3072, 8
    assert fused.lora_flops_per_token() == 32 * 2 * rank * ((hidden + 3 * hidden) + 2 * hidden)
    with pytest.raises(ValueError, match="unknown projection"):
        ModelShape(**{**SMOLLM.__dict__, "lora_rank": 8, "lora_modules": ("w_pack",)})._dims(
            "w_pack"
        )


def test_the_adapters_rank_and_targets_come_from_its_config(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir()
    adapter.mkdir()
    (base / "config.json").write_text(json.dumps(PHI3_MINI))
    (adapter / "adapter_config.json").write_text(
        json.dumps({"r": 16, "target_modules": ["o_proj", "qkv_proj"]})
    )
    shape = ModelShape.from_adapter(base, adapter)
    assert (shape.lora_rank, shape.lora_modules) == (16, ("o_proj", "qkv_proj"))
    (adapter / "adapter_config.json").write_text(
        json.dumps({"r": 4, "target_modules": "all-linear"})
    )
    assert set(ModelShape.from_adapter(base, adapter).lora_modules) == set(MODULES)


def test_the_probe_names_its_device_and_measures_in_the_engines_dtype():
    probe = matmul_probe(0.2, shape=SMOLLM)
    assert probe["device"] == "cpu" and probe["dtype"] == "float32"
    assert probe["label"] == device_label("cpu") and "cores" in probe["label"]
    assert probe["peak"] == max(v for k, v in probe.items() if k in probe_shapes(SMOLLM)) > 0
    # A large model's probe includes the square its layers are near.
    llama8b = ModelShape(
        layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256
    )
    assert "square 8192" in probe_shapes(llama8b) and "mlp 256x4096x14336" in probe_shapes(llama8b)
