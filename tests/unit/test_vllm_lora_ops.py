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


def cpu_wrapper(indices):
    """vLLM's CPU punica wrapper on these token indices, decoding (no engine)."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    wrapper = PunicaWrapperCPU.__new__(PunicaWrapperCPU)
    wrapper.is_prefill = False
    wrapper._token_lora_indices = torch.tensor(indices)
    wrapper.indices_len = [len(indices)]
    return wrapper


@pytest.mark.parametrize(
    "indices", [[0] * 9, [1, 1, 0, 2, 2, 2, 0, 1, 0], [2, -1, 0, -1, 2, 2, 0, 1, -1], [-1] * 9]
)
def test_the_fused_merged_layer_equals_vllms_slice_by_slice_linear(grouped, indices):
    """q/k/v slices of different widths, three adapters of a four-slot stack; the last slot is
    empty, as it is unless every slot is full (the torch ops index it with -1)."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    fused = PunicaWrapperCPU.add_lora_linear
    original = fused.__wrapped__
    torch.manual_seed(1)
    slices, rank, width = (64, 16, 16), 8, 48
    a = tuple(torch.randn(4, 1, rank, width) for _ in slices)
    b = tuple(torch.randn(4, 1, size, rank) for size in slices)
    for stacked in (*a, *b):
        stacked[3].zero_()
    x = torch.randn(9, width)
    want = torch.randn(9, sum(slices))
    got = want.clone()
    wrapper = cpu_wrapper(indices)
    original(wrapper, want, x, a, b, 0.5, slices)
    assert fused(wrapper, got, x, a, b, 0.5, slices) is None
    assert torch.allclose(want, got, atol=1e-4)
    # Tokens without an adapter are left as the base layer computed them.
    untouched = torch.tensor(indices) < 0
    base = torch.zeros(9, sum(slices))
    fused(wrapper, base, x, a, b, 0.5, slices)
    assert torch.count_nonzero(base[untouched]) == 0
