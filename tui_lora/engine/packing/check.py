"""The check each packed attention passes before a run uses it: a packed forward of three made-up examples
gives the padded forward's logits at every trained position, and its backward pass runs."""

from __future__ import annotations

import torch

from tui_lora.config.schema import IGNORED_LABEL
from tui_lora.engine.model import base_model
from tui_lora.engine.packing.collator import PackedCollator, packed_model_inputs
from tui_lora.engine.packing.loss import hidden_states_from


def _probe_batch(vocab_size: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    examples = []
    for length in (11, 6, 9):
        ids = torch.randint(3, vocab_size, (length,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORED_LABEL] * 2 + ids[2:]})
    return examples


def disagreement(model, head) -> str:
    """Empty when a packed forward of three made-up examples gives the padded forward's logits at
    every trained position and its backward pass runs; "head" when, with `head`, the chunked loss's
    own projection would not give the model's logits; otherwise what differs."""
    base = base_model(model)
    device = base.get_input_embeddings().weight.device
    examples = _probe_batch(base.config.vocab_size)
    pad_id = base.config.pad_token_id if isinstance(base.config.pad_token_id, int) else 0
    packed_batch = packed_model_inputs({k: v.to(device) for k, v in PackedCollator()(examples).items()})
    was_training = model.training
    model.eval()  # no dropout: both forwards must see the same weights
    try:
        with torch.no_grad():
            reference = model(**{k: v.to(device) for k, v in _pad(examples, pad_id).items()}).logits
            # the trained targets are tokens 2.. of each example, predicted at positions 1..length-2
            expected = torch.cat([reference[row, 1:len(e["input_ids"]) - 1] for row, e in enumerate(examples)])
            logits = model(**packed_batch).logits.reshape(-1, expected.shape[-1])
            if head is not None:
                with hidden_states_from(head):
                    hidden = model(**packed_batch).logits
                projected = head(hidden.reshape(-1, hidden.shape[-1]))
                if projected.shape != logits.shape or not torch.allclose(projected.float(), logits.float(),
                                                                         **_tolerance(logits.dtype)):
                    return "head"
        _backward_runs(model, packed_batch)
    finally:
        model.train(was_training)
    if logits.shape != expected.shape:
        return f"packed forward gave {tuple(logits.shape)} logits where {tuple(expected.shape)} were expected"
    if not torch.allclose(logits.float(), expected.float(), **_tolerance(logits.dtype)):
        worst = (logits.float() - expected.float()).abs().max().item()
        return f"packed logits differ from padded ones by up to {worst:.3g}"
    return ""


def _backward_runs(model, packed_batch: dict) -> None:
    """A kernel may have a forward and no backward: run one, and leave no gradient behind."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        return
    before = [p.grad for p in trainable]
    with torch.enable_grad():
        model(**packed_batch).logits.float().square().mean().backward()
    for param, grad in zip(trainable, before):
        param.grad = grad


def _pad(examples: list[dict], pad_id: int) -> dict:
    longest = max(len(e["input_ids"]) for e in examples)
    ids = [e["input_ids"] + [pad_id] * (longest - len(e["input_ids"])) for e in examples]
    mask = [[1] * len(e["input_ids"]) + [0] * (longest - len(e["input_ids"])) for e in examples]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def _tolerance(dtype) -> dict:
    if dtype in (torch.float16, torch.bfloat16):
        return {"rtol": 5e-2, "atol": 5e-2}
    return {"rtol": 1e-4, "atol": 1e-4}
