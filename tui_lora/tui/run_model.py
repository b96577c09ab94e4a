"""What the run screen shows, folded from the run's events: no Textual here, so it is easy to test.

Replaying a whole events.jsonl and following it live go through the same `apply`, so a
screen attached late shows what one watching from the start would show, plot included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tui_lora.runs.display import describe_parameters
from tui_lora.runs.events import FINAL_STATES, STOPPED_STATES, Event, add_curve_point

PLOT_POINTS = 2000  # older points are thinned out: a plot is a few hundred cells wide anyway


def kept_checkpoints(folder) -> list[int]:
    """Steps of the checkpoints still in the run folder, oldest first. The events say when each was saved;
    only the folder says which ones save_total_limit (or a person) has deleted since."""
    from tui_lora.runs.folder import RunFolder

    return RunFolder(folder).checkpoint_steps()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass
class RunProgress:
    state: str = "new"
    message: str = ""
    step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    num_epochs: float = 0.0
    elapsed: float = 0.0            # seconds of training in this (possibly resumed) session
    elapsed_total: float | None = None  # seconds of training in every session of the run (older logs lack it)
    session_first_step: int = 0     # where this session started counting: a resumed run starts past 0
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    gpu_memory: int | None = None
    eval_loss: float | None = None
    eval_step: int | None = None
    early_stopping: tuple[int, int] | None = None  # (evaluations without improvement, patience)
    checkpoints: list[int] = field(default_factory=list)  # every checkpoint saved; kept_checkpoints: those left
    train_points: list[tuple[float, float]] = field(default_factory=list)
    eval_points: list[tuple[float, float]] = field(default_factory=list)
    result: dict | None = None
    adapter: str | None = None
    model_line: str = ""
    data_line: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at this session's pace (steps before a resume do not count: they took no time here)."""
        done = self.step - self.session_first_step
        if done <= 0 or not self.max_steps or self.final:
            return None
        return self.elapsed / done * (self.max_steps - self.step)

    @property
    def epoch_fraction(self) -> float:
        if not self.num_epochs:
            return 0.0
        if self.epoch >= self.num_epochs:
            return 1.0
        return self.epoch - math.floor(self.epoch)

    def apply(self, event: Event) -> list[tuple[str, str]]:
        """Take one event in; returns (level, text) lines for the log pane."""
        kind = event.get("type")
        handler = getattr(self, f"_on_{kind}", None)
        return handler(event) or [] if handler else []

    # ------------------------------------------------------------ one method per event type

    def _on_status(self, event: Event):
        self.state = str(event.get("state", self.state))
        self.message = str(event.get("message", ""))
        if self.state == "starting":
            self.result = None
        if self.state == "training":
            self.max_steps = int(event.get("max_steps") or self.max_steps)
            self.session_first_step = int(event.get("resumed_from") or 0)
            self.step = max(self.step, self.session_first_step)
        if event.get("adapter"):
            self.adapter = str(event["adapter"])
        level = "error" if self.state == "failed" else "warning" if self.state in STOPPED_STATES else "info"
        return [(level, f"{self.state}: {self.message}" if self.message else self.state)]

    def _on_progress(self, event: Event):
        self.step = int(event.get("step") or 0)
        self.max_steps = int(event.get("max_steps") or self.max_steps)
        self.epoch = _number(event.get("epoch")) or 0.0
        self.num_epochs = _number(event.get("num_epochs")) or self.num_epochs
        self.elapsed = _number(event.get("elapsed")) or self.elapsed
        self.elapsed_total = _number(event.get("elapsed_total")) or self.elapsed_total

    def _on_train(self, event: Event):
        self.loss = _number(event.get("loss"))
        self.learning_rate = _number(event.get("learning_rate"))
        self.grad_norm = _number(event.get("grad_norm"))
        self.tokens_per_second = _number(event.get("tokens_per_second"))
        if isinstance(event.get("gpu_memory"), int):
            self.gpu_memory = event["gpu_memory"]
        step = _number(event.get("step"))
        if step is not None and self.loss is not None:
            self._add(self.train_points, (step, self.loss))

    def _on_eval(self, event: Event):
        self.eval_loss = _number(event.get("eval_loss"))
        self.eval_step = event.get("step")
        step = _number(event.get("step"))
        if step is not None and self.eval_loss is not None:
            self._add(self.eval_points, (step, self.eval_loss))
        return [("info", f"eval at step {event.get('step')}: eval_loss {self.eval_loss:.4f}"
                 if self.eval_loss is not None else f"eval at step {event.get('step')}")]

    def _on_early_stopping(self, event: Event):
        self.early_stopping = (int(event.get("evaluations_without_improvement") or 0),
                               int(event.get("patience") or 0))

    def _on_checkpoint(self, event: Event):
        step = int(event.get("step") or 0)
        if step not in self.checkpoints:
            self.checkpoints.append(step)
        return [("info", f"checkpoint saved: {event.get('path')}")]

    def _on_log(self, event: Event):
        return [(str(event.get("level", "info")), str(event.get("message", "")))]

    def _on_model(self, event: Event):
        # the counts as `tui-lora run` prints them; the word as the wizard spells it
        self.model_line = f"{describe_parameters(event)}, quantisation {event.get('quantization')}"
        return [("info", f"model: {self.model_line}")]

    def _on_data(self, event: Event):
        self.data_line = (f"{event.get('train_examples')} train / {event.get('eval_examples')} eval examples "
                          f"({event.get('format')}), {event.get('skipped')} skipped")
        return [("info", f"data: {self.data_line}")]

    def _on_download(self, event: Event):
        if event.get("state") == "done":
            return [("info", f"downloaded {event.get('repo')}")]
        if event.get("state") == "start":
            return [("info", f"downloading {event.get('repo')} from {event.get('source')}")]

    def _on_result(self, event: Event):
        self.result = event
        self.adapter = str(event.get("adapter") or self.adapter or "")

    @staticmethod
    def _add(points: list, point: tuple[float, float]) -> None:
        add_curve_point(points, point)
        if len(points) > PLOT_POINTS:
            del points[1:PLOT_POINTS // 2:2]  # thin the older half, keep the newest exact
