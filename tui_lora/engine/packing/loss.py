"""The packed loss: cross-entropy read only at trained positions, the output layer applied a chunk at a time.

Full-vocabulary logits are never made for every position. The loss is normalised as the padded path's:
summed over the trained tokens of the whole optimizer step and divided by their number (the Trainer's
num_items_in_batch).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tui_lora.config.schema import IGNORED_LABEL
from tui_lora.engine.model import base_model
from tui_lora.engine.packing.collator import packed_model_inputs

# Logits held at once by the chunked loss: 2**26 float32 values (256 MiB), whatever the vocabulary.
CHUNK_LOGITS = 2**26


class _LinearCrossEntropy(torch.autograd.Function):
    """sum of cross-entropy(hidden @ weight.T, targets), a chunk of positions at a time.

    The gradient for `hidden` is worked out chunk by chunk during the forward pass (softmax minus
    one-hot, times the weight), so neither pass ever holds more than one chunk of logits. The
    weight is frozen (a LoRA run does not train the output layer), so it gets no gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        needs_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(hidden) if needs_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            stop = min(start + chunk, hidden.shape[0])
            logits = (hidden[start:stop] @ weight.T).float()
            target = targets[start:stop]
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, target[:, None]).squeeze(1)).sum()
            if needs_grad:
                probs = torch.exp(logits.sub_(log_norm[:, None]))
                probs[torch.arange(stop - start, device=probs.device), target] -= 1
                grad[start:stop] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None


def _identity(hidden):
    return hidden


@contextmanager
def hidden_states_from(head):
    """Let the model return its last hidden states where it would return logits (the chunked loss
    applies the output layer itself)."""
    head.forward = _identity  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        del head.forward


def fusable_head(model):
    """The output layer when the chunked loss can stand in for it: a plain frozen Linear without
    bias, hooks or a replaced forward (an adapter, modules_to_save or accelerate's hooks rule it out)."""
    head = base_model(model).get_output_embeddings()
    if (type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad
            or "forward" in vars(head) or head._forward_hooks or head._forward_pre_hooks):
        return None
    return head


def chunk_positions(head) -> int:
    """Positions the chunked loss projects at once: CHUNK_LOGITS logits, at least one position."""
    return max(1, CHUNK_LOGITS // head.out_features)


def labelled_token_loss(model, inputs: dict, num_items_in_batch=None, head=None):
    """(loss, outputs) of a packed batch (PackedCollator's): cross-entropy over trained tokens only.

    The model projects only the positions whose next token is trained (logits_to_keep); with `head`
    the projection happens here instead, chunked. The sum is divided by
    num_items_in_batch (trained tokens in the whole optimizer step, as the model's own loss does),
    or by this batch's trained tokens when the Trainer does not count them.
    """
    shifted = inputs["labels"][..., 1:]
    targets = shifted[shifted != IGNORED_LABEL]
    with hidden_states_from(head) if head is not None else nullcontext():
        outputs = model(**packed_model_inputs(inputs))
    kept = outputs.logits.reshape(-1, outputs.logits.shape[-1])
    if head is not None:
        total = _LinearCrossEntropy.apply(kept, head.weight, targets, chunk_positions(head))
    else:
        total = F.cross_entropy(kept.float(), targets, reduction="sum")
    if targets.numel() == 0:
        total = kept.sum() * 0.0  # keeps the graph, so backward still works on a batch with nothing to train
    count = num_items_in_batch if num_items_in_batch is not None else max(targets.numel(), 1)
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count, outputs


@dataclass(frozen=True)
class PackedLoss:
    """labelled_token_loss as the part of a Trainer that computes its loss (trainer.RunTrainer's packed_loss);
    `head`: the output layer the chunked loss applies (None: the model's own output layer projects)."""

    head: object = None

    def __call__(self, model, inputs: dict, num_items_in_batch=None):
        return labelled_token_loss(model, inputs, num_items_in_batch, self.head)
