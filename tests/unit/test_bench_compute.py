"""The compute count of the serving bench: FLOPs per request from its tokens (pure arithmetic)."""

import pytest

from llama_mapper.bench.compute import ModelShape, cached_prefix, request_cost

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
