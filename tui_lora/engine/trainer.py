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
    `loraplus_lr_ratio`: above 0, the optimizer is peft's LoRA+ one (the B matrices at that many times the
    learning rate), of the optimizer class and settings the arguments choose.
    `lengths`: each training example's token count, for a length-grouped sampler (group_by_length) that would
    otherwise count them by reading every example.
    """

    def __init__(self, *args, packed_loss=None, loraplus_lr_ratio: float = 0.0, lengths: list[int] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.packed_loss = packed_loss
        self.loraplus_lr_ratio = loraplus_lr_ratio
        self.lengths = lengths

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.loraplus_lr_ratio:
            from peft.optimizers import create_loraplus_optimizer

            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            learning_rate = optimizer_kwargs.pop("lr", self.args.learning_rate)
            self.optimizer = create_loraplus_optimizer(self.model if model is None else model, optimizer_cls,
                                                       lr=learning_rate, loraplus_lr_ratio=self.loraplus_lr_ratio,
                                                       weight_decay=self.args.weight_decay, **optimizer_kwargs)
        return super().create_optimizer(model)

    def _get_train_sampler(self, train_dataset=None):
        # The one place the Trainer picks the sampler; only the lengths it would count itself are given here.
        if self.lengths is None:
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=self.lengths)

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
