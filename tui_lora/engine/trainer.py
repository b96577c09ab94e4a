"""The Trainer tui-lora runs: the library's, with whole checkpoints and, for packed batches, the packed loss."""

from __future__ import annotations

from transformers import Trainer

from tui_lora.engine.checkpoints import WholeCheckpoints


class RunTrainer(WholeCheckpoints, Trainer):
    """Everything (schedules, gradient accumulation, the num_items_in_batch count, evaluation) is the
    library's; checkpoints are staged whole (WholeCheckpoints).

    `packed_loss`: for packed batches, what computes the loss from (model, inputs, num_items_in_batch)
    and returns (loss, outputs), such as packing.loss.PackedLoss; None for padded batches, whose loss
    is the model's own.
    """

    def __init__(self, *args, packed_loss=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.packed_loss = packed_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.packed_loss is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        loss, outputs = self.packed_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every process's tokens, and both DDP's gradients and the evaluation loop's
            # gathered losses are averaged over processes: scaled back, each is the mean over all tokens
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
