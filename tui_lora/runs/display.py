"""What `tui-lora run` shows: rich progress bars on a terminal, plain lines anywhere else.

Both displays are event listeners: they see exactly what events.jsonl records,
so what a user watches live is what `attach` and the TUI will replay later.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from tui_lora.runs.events import FINAL_STATES, Event


def _number(value, fmt: str = ".4g") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def describe_train(event: Event) -> str:
    return (f"loss {_number(event.get('loss'), '.4f')}  lr {_number(event.get('learning_rate'), '.2e')}  "
            f"grad {_number(event.get('grad_norm'), '.3g')}  {_number(event.get('tokens_per_second'), ',.0f')} tok/s")


def describe_eval(event: Event) -> str:
    metrics = "  ".join(f"{key} {_number(value, '.4f')}" for key, value in event.items()
                        if key.startswith("eval_") and not key.endswith(("_runtime", "per_second")))
    return f"eval at step {event.get('step')} (epoch {_number(event.get('epoch'), '.2f')}): {metrics}"


def describe_data(event: Event) -> str:
    reasons = "; ".join(f"{count} × {reason}" for reason, count in (event.get("skip_reasons") or {}).items())
    line = (f"data: {event.get('records')} records as {event.get('format')!r}, {event.get('skipped')} skipped"
            f"{f' ({reasons})' if reasons else ''}, {event.get('truncated')} shortened to max_length; "
            f"{event.get('train_examples')} train / {event.get('eval_examples')} eval examples, "
            f"{event.get('trained_tokens'):,} of {event.get('train_tokens'):,} tokens trained")
    sources = event.get("sources") or []
    if len(sources) < 2:
        return line
    mixed = sum(source.get("trained_tokens", 0) for source in sources) or 1
    parts = [f"{source.get('path')} {source.get('train_examples')} train "
             f"({source.get('trained_tokens', 0) / mixed:.0%} of trained tokens)" for source in sources]
    return f"{line}; {event.get('mix')}: {', '.join(parts)}"


def describe_parameters(event: Event) -> str:
    """A model event's counts: "77,824 trainable of 1,194,112 parameters (6.517%)" (the TUI's line too)."""
    trainable, total = event.get("trainable_parameters", 0), event.get("total_parameters", 0) or 1
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.3f}%)"


def describe_model(event: Event) -> str:
    return f"model: {describe_parameters(event)}, quantization {event.get('quantization')}"


def describe_checkpoint(event: Event, folder: str = "") -> str:
    kept = event.get("checkpoints")
    # what save_total_limit left on disk, so nobody goes looking for a checkpoint it has removed
    now = ""
    if isinstance(kept, list) and kept:
        shown = ", ".join(str(step) for step in kept[-4:])
        now = f" (on disk: steps {'…, ' if len(kept) > 4 else ''}{shown})"
    where = f"{folder.rstrip('/')}/{event.get('path')}" if folder else event.get("path")
    return f"checkpoint saved at step {event.get('step')}: {where}{now}"


def describe_download(event: Event) -> str | None:
    """A line when a download starts and ends; per-file progress only feeds the event log."""
    if event.get("state") == "start":
        size = event.get("bytes_to_fetch")
        what = (f"{event.get('files_to_fetch')} of {event.get('files')} files, {size / 1e6:,.1f} MB to fetch"
                if size is not None else "fetching")
        return f"download: {event.get('repo')} from {event.get('source')}: {what}"
    if event.get("state") == "done":
        return f"download: {event.get('repo')} ready in {event.get('folder')}"
    if isinstance(event.get("files_done"), int) and event.get("files"):
        return f"download: {event.get('repo')}: {event['files_done']}/{event['files']} files"
    return None


def clock(seconds: float | None) -> str:
    """0:07, 1:27, 1:02:03; "-" for a time not known yet."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def describe_result(event: Event) -> str:
    metrics = event.get("metrics", {})
    first, last = (event.get("train_loss_steps") or [1, None])[:2]
    # after a resume the Trainer's train_loss covers the steps of this session only: say which
    covered = f" (steps {first}-{last}, this session)" if isinstance(first, int) and first > 1 else ""
    parts = [f"{key} {_number(value, '.4f')}{covered if key == 'train_loss' else ''}"
             for key, value in metrics.items() if key in ("train_loss", "eval_loss")]
    early = " (stopped early)" if event.get("stopped_early") else ""
    return f"done at step {event.get('step')}{early}: {'  '.join(parts)}; adapter in {event.get('adapter')}"


class PlainDisplay:
    """One line per event that matters; for logs, CI and nohup."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.folder = ""  # the run folder, from the starting event: checkpoint lines give the whole path
        self.max_steps = self.num_epochs = None  # from the training status and the progress events

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __call__(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "status" and event.get("state") == "starting":
            self.folder = str(event.get("folder") or "")
        if kind == "status" and event.get("state") == "training":
            self.max_steps = event.get("max_steps") or self.max_steps
        if kind == "progress":
            self.max_steps = event.get("max_steps") or self.max_steps
            self.num_epochs = event.get("num_epochs") or self.num_epochs
        if kind == "status" and event.get("state") == "failed":
            return  # the command line prints the reason as its one error line
        if kind == "status":
            self.line(f"[{event.get('state')}] {event.get('message', '')}".rstrip())
        elif kind == "train":
            steps = f"/{self.max_steps}" if self.max_steps else ""
            epochs = f"/{_number(self.num_epochs, 'g')}" if self.num_epochs else ""
            self.line(f"step {event.get('step')}{steps} epoch {_number(event.get('epoch'), '.2f')}{epochs}  "
                      f"{describe_train(event)}")
        elif kind == "checkpoint":
            self.line(describe_checkpoint(event, self.folder))
        elif kind == "eval":
            self.line(describe_eval(event))
        elif kind == "data":
            self.line(describe_data(event))
        elif kind == "model":
            self.line(describe_model(event))
        elif kind == "result":
            self.line(describe_result(event))
        elif kind == "download" and describe_download(event):
            self.line(describe_download(event))
        elif kind == "log" and event.get("level") in ("info", "warning", "error", "critical"):
            # info lines are tui-lora's own (such as which batching path runs); library chatter is warnings+
            self.line(f"{event.get('level')}: {event.get('message')}")

    def close(self) -> None:
        pass


class _StepsProgress(Progress):
    """The step bar, with the latest loss, learning rate and speed on a line of their own below it
    (on one line they push the step count and ETA off an 80-column terminal)."""

    stats = ""

    def get_renderables(self):
        yield from super().get_renderables()
        if self.stats:
            yield Text(f"  {self.stats}", style="dim")


class RichDisplay(PlainDisplay):
    """A live progress bar for the steps, with the latest loss, learning rate and speed under it."""

    def __init__(self, console: Console | None = None):
        super().__init__()
        self.console = console or Console(stderr=False)
        self.resumed = False
        self.clock = ""  # a resumed run's bar times this session; this says so and gives the whole run's time
        self.progress = _StepsProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = None

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def __call__(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "status" and event.get("state") == "training":
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task("train", total=event.get("max_steps"), epoch="0.00",
                                                   completed=event.get("resumed_from") or 0)
                self.resumed = bool(event.get("resumed_from"))
            return
        if kind == "progress" and self.task is not None:
            self.progress.update(self.task, completed=event.get("step"), total=event.get("max_steps"),
                                 epoch=f"{_number(event.get('epoch'), '.2f')}/{_number(event.get('num_epochs'), 'g')}")
            if self.resumed and isinstance(event.get("elapsed_total"), (int, float)):
                self.clock = f"  time {clock(event.get('elapsed'))} this session, {clock(event['elapsed_total'])} in all"
            return
        if kind == "train" and self.task is not None:
            self.progress.stats = describe_train(event) + self.clock
            self.progress.refresh()
            return
        if kind == "status" and event.get("state") in ("saving", *FINAL_STATES):
            self.close()
        super().__call__(event)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def display_for(stream=None) -> PlainDisplay:
    stream = stream or sys.stdout
    return RichDisplay() if stream.isatty() else PlainDisplay(stream)
