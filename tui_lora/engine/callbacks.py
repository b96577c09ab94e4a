"""Trainer callbacks: Trainer state -> events, and a clean stop on Ctrl+C / SIGTERM.

In a run of several processes every callback runs in each of them; events come from the main
process only (the others' EventLog writes nowhere too), and a stop is agreed by all of them.
"""

from __future__ import annotations

import math
import os
import time

from pathlib import Path

from transformers import TrainerCallback

from tui_lora.runs.events import EventLog, read_events
from tui_lora.runs.folder import RunFolder


class EventsCallback(TrainerCallback):
    """Turns the Trainer's progress and logs into events.jsonl lines (from the main process only)."""

    def __init__(self, events: EventLog, early_stopping=None):
        self.events = events
        self.early_stopping = early_stopping
        self.num_epochs = 0
        self.started = time.monotonic()
        self.last_tokens = (0, self.started)  # (tokens seen, when) at the previous train log
        self.resumed_from = 0  # the step this session started from (a resumed run starts past 0)
        self.trained_before = 0.0  # seconds the sessions this one continues spent training

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.started = time.monotonic()
        self.last_tokens = (state.num_input_tokens_seen, self.started)
        self.num_epochs = state.num_train_epochs  # what the Trainer will really do, max_steps included
        self.resumed_from = state.global_step
        self.trained_before = _trained_before(self.events.path) if state.global_step else 0.0
        what = (f"resuming at step {state.global_step} of {state.max_steps}" if state.global_step
                else f"training for {state.max_steps} steps")
        self.events.status("training", what, max_steps=state.max_steps, resumed_from=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        # elapsed: this session (what its pace and ETA are measured on); elapsed_total: every session of the
        # run so far, so a resumed run's clock does not start again at 0:00 as if nothing came before
        elapsed = time.monotonic() - self.started
        self.events.emit("progress", step=state.global_step, max_steps=state.max_steps,
                         epoch=round(state.epoch or 0.0, 4), num_epochs=self.num_epochs,
                         tokens_seen=state.num_input_tokens_seen, elapsed=round(elapsed, 2),
                         elapsed_total=round(self.trained_before + elapsed, 2))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = dict(logs or {})
        epoch = round(state.epoch or 0.0, 4)
        if any(key.startswith("eval_") for key in logs):
            metrics = {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, (int, float))}
            self.events.emit("eval", step=state.global_step, epoch=epoch, **metrics)
        elif "loss" in logs:
            now = time.monotonic()
            tokens, then = self.last_tokens
            rate = (state.num_input_tokens_seen - tokens) / (now - then) if now > then else 0.0
            self.last_tokens = (state.num_input_tokens_seen, now)
            self.events.emit("train", step=state.global_step, epoch=epoch, loss=logs["loss"],
                             learning_rate=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                             tokens_per_second=round(rate, 1), **_gpu_memory())
        elif "train_runtime" in logs:
            self.events.emit("summary", step=state.global_step, **{k: v for k, v in logs.items()
                                                                    if isinstance(v, (int, float))})

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.early_stopping is not None:
            self.events.emit("early_stopping", step=state.global_step,
                             evaluations_without_improvement=self.early_stopping.early_stopping_patience_counter,
                             patience=self.early_stopping.early_stopping_patience)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        # The Trainer calls this after the checkpoint is in place and save_total_limit has removed the oldest
        # (checkpoints.WholeCheckpoints): "checkpoints" is what exists now, so no reader lists a deleted one.
        kept = RunFolder(args.output_dir).checkpoint_steps()
        self.events.emit("checkpoint", step=state.global_step, path=f"checkpoint-{state.global_step}",
                         checkpoints=kept)


def _trained_before(log: Path | None) -> float:
    """Seconds of training in the sessions a resumed one continues: each session's last `elapsed`, summed
    since the last session that started afresh (a run that trained nothing worth keeping starts one)."""
    if log is None:
        return 0.0
    total = session = 0.0
    for event in read_events(log):
        if event.get("type") == "status" and event.get("state") == "starting":
            total = 0.0 if not event.get("resumed_from") else total + session
            session = 0.0
        elif event.get("type") == "progress" and isinstance(event.get("elapsed"), (int, float)):
            session = event["elapsed"]
    return total + session


def _gpu_memory() -> dict:
    """Peak GPU memory so far, in bytes, when training on a CUDA GPU (nothing on a CPU)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu_memory": torch.cuda.max_memory_allocated(), "gpu_memory_reserved": torch.cuda.max_memory_reserved()}


class GracefulStop(TrainerCallback):
    """Turns a stop request (a signal, see session.StopRequest) into: save a checkpoint, stop."""

    def __init__(self, stop):
        self.stop = stop

    def on_train_begin(self, args, state, control, **kwargs):
        self.stop.training = True

    def on_step_end(self, args, state, control, **kwargs):
        if _any_process(bool(self.stop.signal), args):
            # Another process may have been signalled alone (the launcher signals them all, a scheduler may not)
            self.stop.signal = self.stop.signal or "SIGTERM"
            control.should_save = True
            control.should_training_stop = True


def _any_process(flag: bool, args) -> bool:
    """True when flag is true in any process of the run. Every process must stop after the same step: one
    that went on would wait forever for the others in its next step's gradient exchange."""
    if args.world_size <= 1:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class TrainingDiverged(RuntimeError):
    """The loss stopped being a number: every later step would be wasted GPU time."""


class DivergenceCheck(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainingDiverged(
                    f"{key} became {value} at step {state.global_step}; lower training.learning_rate, keep "
                    "training.max_grad_norm above 0, or try without lora.use_dora")


# Test hook: TUI_LORA_TEST_FAIL_AT=RANK:STEP makes the process of that global rank raise at that step, so the
# tests can show that one failing process ends a multi-process run with its error. Only tests set it.
FAULT_ENV = "TUI_LORA_TEST_FAIL_AT"


class InjectedFault(RuntimeError):
    """The failure TUI_LORA_TEST_FAIL_AT asks for."""


class _FailAt(TrainerCallback):
    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_step_end(self, args, state, control, **kwargs):
        if args.process_index == self.rank and state.global_step >= self.step:
            raise InjectedFault(f"failing on purpose at step {state.global_step} in process {self.rank} "
                                f"({FAULT_ENV})")


def injected_fault() -> list[TrainerCallback]:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return []
    rank, _, step = spec.partition(":")
    return [_FailAt(int(rank), int(step or 1))]
