"""Step 6: the Trainer's settings, early stopping and the launch (how many processes and machines),
grouped the way people reason about them."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.widgets import Static

from tui_lora.tui.screens.step import StepScreen

GROUPS = (
    ("Where and how long", ("training.output_dir", "training.num_train_epochs", "training.max_steps",
                            "training.seed")),
    ("Batch", ("training.per_device_train_batch_size", "training.gradient_accumulation_steps",
               "training.per_device_eval_batch_size", "training.gradient_checkpointing",
               "training.dataloader_num_workers")),
    ("Optimizer and schedule", ("training.learning_rate", "training.lr_scheduler_type",
                                "training.lr_scheduler_kwargs", "training.warmup_ratio", "training.warmup_steps",
                                "training.optim", "training.weight_decay", "training.max_grad_norm",
                                "training.neftune_noise_alpha")),
    ("Precision", ("training.bf16", "training.fp16")),
    ("Evaluation and checkpoints", ("training.eval_strategy", "training.eval_steps", "training.eval_on_start",
                                    "training.save_strategy", "training.save_steps", "training.save_total_limit",
                                    "training.load_best_model_at_end", "training.metric_for_best_model")),
    ("Logging", ("training.logging_steps", "training.report_to", "training.logging_dir")),
    ("Early stopping", ("early_stopping.enabled", "early_stopping.patience", "early_stopping.threshold")),
    ("Several GPUs or machines (accelerate launch)", (
        "launch.num_processes", "launch.num_machines", "launch.machine_rank", "launch.main_process_ip",
        "launch.main_process_port", "launch.mixed_precision", "launch.config_file")),
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
        config = self.draft.check.config
        t, processes = config.training, config.launch.num_processes
        per_process = t.per_device_train_batch_size * t.gradient_accumulation_steps
        across = f" × {processes} processes = {per_process * processes}" if processes > 1 else ""
        self.query_one("#batch-line", Static).update(
            f"Effective batch: {t.per_device_train_batch_size} × {t.gradient_accumulation_steps} = {per_process} "
            f"examples per optimizer step on each GPU{across}\n{launch_line(config, self.app.preset_path)}")


def launch_line(config, preset_path) -> str:
    """How the run starts: in the tui-lora process, or the exact accelerate launch command."""
    from tui_lora.runs.launcher import needs_launcher, printable_command

    if not needs_launcher(config):
        return "Launch: one process, inside tui-lora run (launch.num_processes = 1)"
    unsaved = Path.cwd() / "PRESET.toml"  # not saved yet: the command names the preset still to be saved
    command = printable_command(config, preset_path or unsaved).replace(str(unsaved), "PRESET.toml")
    return f"Launch: {display_path_words(command)}"


def display_path_words(command: str) -> str:
    """The command with the home folder written as ~, as the other paths on screen are."""
    home = str(Path.home())
    return command.replace(home + "/", "~/") if home not in ("/", "") else command
