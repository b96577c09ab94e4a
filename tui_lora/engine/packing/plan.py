"""Choosing a run's batching: packed with the first attention that passes its check, else padded, and why."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from tui_lora.config.schema import RunConfig
from tui_lora.engine.model import base_model
from tui_lora.engine.packing.check import disagreement
from tui_lora.engine.packing.kernels import (FLASH, PACKED_ATTENTION, SDPA_PER_EXAMPLE, TORCH_VARLEN,
                                             register_attention, torch_varlen_kernel)
from tui_lora.engine.packing.loss import chunk_positions, fusable_head
from tui_lora.errors import first_line


@dataclass
class BatchingPlan:
    packed: bool
    attention: str  # the implementation the model runs with ("sdpa", TORCH_VARLEN, ...)
    description: str  # the line the run log shows
    fused_head: object = None  # the output layer, when the chunked loss applies it

    def apply(self, model) -> None:
        base = base_model(model)
        if self.attention in PACKED_ATTENTION:
            register_attention()
        if base.config._attn_implementation != self.attention:
            base.set_attn_implementation(self.attention)


ATTENTION_NAMES = {
    "flash_attention_2": "flash-attention varlen",
    "flash_attention_3": "flash-attention 3 varlen",
    TORCH_VARLEN: "torch varlen flash kernel",
    SDPA_PER_EXAMPLE: "sdpa per example",
}


def padded(reason: str, attention: str) -> BatchingPlan:
    return BatchingPlan(False, attention, f"batching: padded to the longest example of each batch "
                                          f"(DataCollatorForSeq2Seq, attention {attention}); not packed: {reason}")


def loaded_attention(model) -> str:
    """The attention implementation the model was loaded with (ours are sdpa underneath)."""
    attention = base_model(model).config._attn_implementation
    return "sdpa" if attention in PACKED_ATTENTION else attention


def why_not_packed(config: RunConfig, model, n_gpu: int = 1) -> str:
    """Why packing cannot be exact (or was turned off) for this run; empty when it can."""
    base = base_model(model)
    model_config = base.config
    attention = loaded_attention(model)
    if config.collator.packing == "off":
        return "collator.packing is off"
    if config.collator.padding == "max_length":
        return "collator.padding is max_length (fixed-length batches asked for)"
    if n_gpu > 1:
        return f"{n_gpu} GPUs in one process (DataParallel splits batches by row; use accelerate or torchrun)"
    if attention not in ("sdpa", *FLASH):
        return f"attention {attention!r} cannot keep packed examples apart without a full mask (use sdpa)"
    if not getattr(base, "_supports_attention_backend", False):
        return f"{type(base).__name__} does not use transformers' attention interface"
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__}.forward takes no logits_to_keep"
    if getattr(model_config, "attn_logit_softcapping", None):
        return "the model soft-caps attention logits"
    windows = [getattr(model_config, "sliding_window", None)] if _uses_sliding_window(model_config) else []
    if windows and windows[0] and windows[0] < config.tokenizer.max_length:
        return (f"the model's sliding window ({windows[0]}) is shorter than tokenizer.max_length "
                f"({config.tokenizer.max_length})")
    return ""


def _uses_sliding_window(model_config) -> bool:
    layer_types = getattr(model_config, "layer_types", None) or []
    return "sliding_attention" in layer_types or bool(getattr(model_config, "use_sliding_window", False))


def candidates(model) -> list[str]:
    base = base_model(model)
    attention = loaded_attention(model)
    if attention in FLASH:
        return [attention]
    device = base.get_input_embeddings().weight.device
    dtype = base.get_input_embeddings().weight.dtype
    found = []
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and torch_varlen_kernel()[0] is not None \
            and not getattr(base.config, "attention_dropout", 0.0):
        found.append(TORCH_VARLEN)
    found.append(SDPA_PER_EXAMPLE)
    return found


def choose_batching(config: RunConfig, model, n_gpu: int = 1, log=lambda message: None,
                    attentions: list[str] | None = None) -> BatchingPlan:
    """The plan for this run; the model's attention implementation is set to match (plan.apply).

    `attentions`: the packed attentions to try, in order (default: `candidates(model)`); `log` hears
    why each one that failed its check was passed over."""
    original = loaded_attention(model)
    reason = why_not_packed(config, model, n_gpu)
    if reason:
        plan = padded(reason, original)
        plan.apply(model)
        return plan
    failures = []
    for attention in attentions or candidates(model):
        plan = BatchingPlan(True, attention, "")
        plan.apply(model)
        head = fusable_head(model)
        try:
            problem = disagreement(model, head)
            if problem == "head":  # the model does more than project its hidden states: use its own logits
                head, problem = None, disagreement(model, None)
        except Exception as exc:  # a kernel this machine or model cannot run: try the next one
            problem = f"{type(exc).__name__}: {first_line(exc)}"
        if not problem:
            chunk = (f"vocabulary projected {chunk_positions(head):,} positions at a time"
                     if head is not None else "the model's own output layer")
            plan.fused_head = head
            plan.description = (f"batching: padding-free packing ({ATTENTION_NAMES[attention]}, positions restart "
                                f"per example); loss on trained tokens only ({chunk})")
            for name, why in failures:
                log(f"packing: {ATTENTION_NAMES[name]} not used: {why}")
            return plan
        failures.append((attention, problem))
    plan = padded("; ".join(f"{ATTENTION_NAMES[name]}: {why}" for name, why in failures), original)
    plan.apply(model)
    return plan
