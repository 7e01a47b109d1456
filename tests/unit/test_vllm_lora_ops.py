"""The grouped CPU LoRA ops equal vLLM's per-token gather implementation (negative indices too)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

ORIGINAL = {n: getattr(lora_ops, n) for n in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")}


@pytest.fixture(scope="module")
def grouped():
    from llama_mapper.inference.vllm_engine import lora_ops as vllm_lora_ops

    assert vllm_lora_ops.install()
    assert lora_ops.bgmv_shrink is not ORIGINAL["bgmv_shrink"] or getattr(
        lora_ops, "_llama_mapper_grouped", False
    )
    return lora_ops


@pytest.mark.parametrize("indices", [[0] * 7, [0, 1, 1, -1, 2, 0, 1], [3, 3, 3, 3, 3, 3, 3]])
def test_grouped_ops_match_the_originals(grouped, indices):
    torch.manual_seed(0)
    idx = torch.tensor(indices)
    x, a, b = torch.randn(7, 64), torch.randn(4, 1, 16, 64), torch.randn(4, 1, 96, 16)
    want, got = torch.zeros(7, 16), torch.zeros(7, 16)
    ORIGINAL["bgmv_shrink"](x, a, want, idx, 0.5)
    grouped.bgmv_shrink(x, a, got, idx, 0.5)
    assert torch.allclose(want, got, atol=1e-5)
    h = torch.randn(7, 16)
    for add in (True, False):
        want = torch.randn(7, 96)
        got = want.clone()
        ORIGINAL["bgmv_expand"](h, b, want, idx, add)
        grouped.bgmv_expand(h, b, got, idx, add)
        assert torch.allclose(want, got, atol=1e-5)
        want = torch.randn(7, 300)
        got = want.clone()
        ORIGINAL["bgmv_expand_slice"](h, b, want, idx, 100, 96, add)
        grouped.bgmv_expand_slice(h, b, got, idx, 100, 96, add)
        assert torch.allclose(want, got, atol=1e-5)


def test_prefill_path_goes_through_the_grouped_ops(grouped):
    x, a = torch.randn(7, 64), torch.randn(4, 1, 16, 64)
    got, want = torch.zeros(7, 16), torch.zeros(7, 16)
    grouped.sgmv_shrink(x, a, got, None, torch.tensor([3, 4]), torch.tensor([1, 2]), 2, 4, 7, 0.5)
    ORIGINAL["bgmv_shrink"](x, a, want, torch.tensor([1, 1, 1, 2, 2, 2, 2]), 0.5)
    assert torch.allclose(want, got, atol=1e-5)
