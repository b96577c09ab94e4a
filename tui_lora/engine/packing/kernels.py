"""Attention that stays inside each example of a packed row, registered with transformers by name.

A packed forward passes the example boundaries (cu_seq_lens_q, from collator.packed_model_inputs);
a call without them is an ordinary padded forward and takes transformers' own SDPA path.
"""

from __future__ import annotations

import functools
import inspect
import itertools

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

SDPA_PER_EXAMPLE = "tui_lora_sdpa_per_example"
TORCH_VARLEN = "tui_lora_torch_varlen"
FLASH = ("flash_attention_2", "flash_attention_3")


def _unpacked(function):
    """Calls without example boundaries (an ordinary padded forward) take transformers' own SDPA path."""

    def attention(module, query, key, value, attention_mask, *args, cu_seq_lens_q=None, **kwargs):
        if cu_seq_lens_q is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
        if query.shape[0] != 1 or kwargs.get("softcap") is not None:
            raise ValueError("packed attention takes one row of examples and no soft-capping")
        return function(module, query, key, value, cu_seq_lens_q, **kwargs)

    return attention


def _check_window(sliding_window, longest: int) -> None:
    if sliding_window is not None and longest > sliding_window:
        raise ValueError(f"an example of {longest} tokens is longer than the sliding window ({sliding_window})")


@_unpacked
def sdpa_per_example(module, query, key, value, cu_seq_lens, dropout=0.0, scaling=None, sliding_window=None,
                     **kwargs):
    """One causal SDPA call per example: the CPU path, and the fallback on GPUs without varlen."""
    bounds = cu_seq_lens.tolist()
    _check_window(sliding_window, max(b - a for a, b in itertools.pairwise(bounds)))
    gqa = query.shape[1] != key.shape[1]
    outputs = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True,
                                              dropout_p=dropout, scale=scaling, enable_gqa=gqa)
               for a, b in itertools.pairwise(bounds)]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


@functools.cache
def torch_varlen_kernel():
    """(torch's varlen_attn or None, the names of its parameters): they differ between torch versions."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, set()
    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


@_unpacked
def torch_varlen(module, query, key, value, cu_seq_lens, dropout=0.0, scaling=None, sliding_window=None,
                 max_length_q=None, **kwargs):
    """torch's flash-attention varlen kernel (CUDA, float16/bfloat16): every example in one call."""
    varlen_attn, params = torch_varlen_kernel()
    if varlen_attn is None:
        raise RuntimeError(f"torch {torch.__version__} has no torch.nn.attention.varlen")
    longest = int(max_length_q) if max_length_q is not None else int(cu_seq_lens.diff().max())
    _check_window(sliding_window, longest)
    if dropout:
        raise ValueError("torch varlen attention has no dropout")
    # (1, heads, tokens, dim) -> (tokens, heads, dim)
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))
    options = {}
    # torch 2.9-2.11 take is_causal; later versions a window, where (-1, 0) means causal
    options.update({"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)})
    if "scale" in params:
        options["scale"] = scaling
    elif scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-9:
        raise ValueError("this torch's varlen attention has no scale argument")
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            options["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    cu = cu_seq_lens.to(device=q.device, dtype=torch.int32)
    out = varlen_attn(q, k, v, cu, cu, longest, longest, **options)
    return out.unsqueeze(0), None


def _no_mask_when_packed(*args, attention_mask=None, **kwargs):
    """Packed rows need no mask (the attention reads the boundaries); padded calls get SDPA's usual one."""
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


PACKED_ATTENTION = {SDPA_PER_EXAMPLE: sdpa_per_example, TORCH_VARLEN: torch_varlen}


@functools.cache
def register_attention() -> None:
    """Make these attention names known to transformers, once a process; a model can be set to one only after.

    Registering changes transformers' global tables, so it waits until a plan sets a model to one of
    them (plan.BatchingPlan.apply) instead of happening whenever this module is imported.
    """
    for name, function in PACKED_ATTENTION.items():
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, _no_mask_when_packed)
