"""Step 6: the Trainer's settings and early stopping, grouped the way people reason about them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from tui_lora.tui.screens.step import StepScreen

GROUPS = (
    ("Where and how long", ("training.output_dir", "training.num_train_epochs", "training.max_steps",
                            "training.seed")),
    ("Batch", ("training.per_device_train_batch_size", "training.gradient_accumulation_steps",
               "training.per_device_eval_batch_size", "training.gradient_checkpointing",
               "training.dataloader_num_workers")),
    ("Optimizer and schedule", ("training.learning_rate", "training.lr_scheduler_type", "training.warmup_ratio",
                                "training.warmup_steps", "training.optim", "training.weight_decay",
                                "training.max_grad_norm")),
    ("Precision", ("training.bf16", "training.fp16")),
    ("Evaluation and checkpoints", ("training.eval_strategy", "training.eval_steps", "training.eval_on_start",
                                    "training.save_strategy", "training.save_steps", "training.save_total_limit",
                                    "training.load_best_model_at_end", "training.metric_for_best_model")),
    ("Logging", ("training.logging_steps", "training.report_to", "training.logging_dir")),
    ("Early stopping", ("early_stopping.enabled", "early_stopping.patience", "early_stopping.threshold")),
)


class TrainingScreen(StepScreen):
    TITLE = "Training"
    FIELDS = tuple(key for _, keys in GROUPS for key in keys)

    def body(self) -> ComposeResult:
        for title, keys in GROUPS:
            yield Static(title, classes="group-title")
            for key in keys:
                yield self.setting(key)
        yield Static("", id="batch-line", markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        self.draft_changed()

    def draft_changed(self, key: str | None = None) -> None:
        t = self.draft.check.config.training
        self.query_one("#batch-line", Static).update(
            f"Effective batch: {t.per_device_train_batch_size} × {t.gradient_accumulation_steps} = "
            f"{t.per_device_train_batch_size * t.gradient_accumulation_steps} examples per optimizer step "
            "on each GPU")
