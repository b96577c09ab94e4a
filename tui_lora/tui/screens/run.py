"""Watching a run: progress, loss plot and log, read from the run folder's event log.

The screen holds nothing of the training but a file offset: the run is its own process,
so leaving (or losing the SSH connection) changes nothing for it, and attaching later
replays the log from the start so the plot and the counters come back whole. A thread
worker reads and parses the log (megabytes of it when a long run is replayed) and posts
what it found; the screen folds that in and draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from rich.text import Text
from textual.widgets import Button, Footer, ProgressBar, RichLog, Static

from tui_lora.runs.events import STOPPED_STATES, Event, EventTail
from tui_lora.runs.display import clock
from tui_lora.tui.run_model import RunProgress, kept_checkpoints
from tui_lora.tui.screens.chat import ChatScreen
from tui_lora.tui.screens.dialogs import ConfirmDialog
from tui_lora.tui.widgets.loss_plot import LossPlot

POLL_SECONDS = 0.25  # how often the log is read and the screen redrawn: at most 4 times a second
OWNER_SECONDS = 2.0  # how often the training process is looked for: cheap, but not worth doing 4 times a second
LOG_LINES = 5000     # the log pane keeps this many lines; the full log stays in the run folder


@dataclass
class LogRead(Message, bubble=False):
    """One read of the run folder: the events appended since the last one, and, when they were looked at this
    time, whether the training process is there and which checkpoints the folder still holds (else None)."""

    events: list[Event]
    alive: bool | None
    kept: list[int] | None


def number(value, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def next_steps(adapter: str, folder: Path) -> list[str]:
    from tui_lora.places import display_path

    folder = display_path(folder)
    return ["next steps:",
            f"  the adapter is in {adapter} (with its tokenizer and chat template)",
            f"  load it: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), \"{adapter}\")",
            f"  chat with it: c here, or tui-lora chat {folder} (--compare: beside the base model)",
            f"  measure it: tui-lora eval {folder}    merge it: tui-lora merge {folder} --out DIR",
            "  list runs: tui-lora runs"]


class RunScreen(Screen[tuple[str, str]]):
    """Dismissed (when the wizard started the run) with the run's (state, message), so the wizard can show why
    a run that did not finish stopped, beside the fields that fix it."""

    BINDINGS = [
        Binding("a", "abort", "Abort"),
        Binding("c", "chat", "Chat"),
        Binding("l", "leave", "Leave"),
        Binding("end", "follow_log", "Follow log", show=False),
    ]

    def __init__(self, folder: Path, can_go_back: bool = False) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.can_go_back = can_go_back  # a screen below to return to (the wizard's review), else leaving exits
        self.logged: list[str] = []  # the log pane's lines as text, before wrapping (the last LOG_LINES)
        self.kept: list[int] = []  # steps of the checkpoints still in the run folder
        self.progress = RunProgress()
        self.tail = EventTail(self.folder / "events.jsonl")
        self._owner_checked = 0.0
        self._alive = True
        self._reading = False  # a read is on its way: the next tick waits for it, so events stay in order

    def compose(self) -> ComposeResult:
        from tui_lora.places import display_path

        yield Static(f"[b]tui-lora[/b]  run  {display_path(self.folder)}", id="step-title", markup=True)
        with Horizontal(classes="bar-row"):
            yield Static("steps", classes="bar-label")
            yield ProgressBar(id="steps-bar", show_eta=False)
            yield Static("", id="steps-text", markup=False)
        with Horizontal(classes="bar-row"):
            yield Static("epoch", classes="bar-label")
            yield ProgressBar(id="epoch-bar", show_eta=False)
            yield Static("", id="epoch-text", markup=False)
        yield Static("", id="run-state", markup=False)
        yield Static("", id="run-stats", markup=False)
        yield LossPlot(id="loss-plot")
        # Wrapped, not cut: the commands in "next steps" and long warnings must be readable whole.
        yield RichLog(id="run-log", max_lines=LOG_LINES, auto_scroll=True, wrap=True, min_width=20, markup=False,
                      highlight=False)
        with Horizontal(id="step-buttons"):
            yield Button("Abort", id="abort", compact=True, variant="error")
            yield Button("Chat", id="chat", compact=True, variant="primary")
            yield Button("Leave", id="leave", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self._poll()
        self.set_interval(POLL_SECONDS, self._poll)

    # ------------------------------------------------------------ reading the log

    def _poll(self) -> None:
        if not self._reading:
            self._reading = True
            self._read()

    @work(thread=True, group="run-log")
    def _read(self) -> None:
        """Off the UI thread: read and parse what the log gained, look for the process now and then."""
        events = self.tail.read()
        alive = kept = None
        now = time.monotonic()
        if now - self._owner_checked > OWNER_SECONDS:
            self._owner_checked = now
            alive = self._run_alive()
        if alive is not None or any(event.get("type") == "checkpoint" for event in events):
            # The folder, not the events, says which checkpoints are left (save_total_limit deletes old ones).
            kept = kept_checkpoints(self.folder)
        self.post_message(LogRead(events, alive, kept))

    @on(LogRead)
    def _log_read(self, message: LogRead) -> None:
        self._reading = False
        events = message.events
        lines: list[str] = []
        for event in events:
            for level, text in self.progress.apply(event):
                lines.append(text if level == "info" else f"{level}: {text}")
            if event.get("type") == "status" and event.get("state") == "finished":
                lines += next_steps(self.progress.adapter or str(self.folder / "adapter"), self.folder)
        if lines:
            log = self.query_one("#run-log", RichLog)
            for line in lines:
                log.write(Text(line))
            self.logged = (self.logged + lines)[-LOG_LINES:]
        if message.alive is not None:
            self._alive = message.alive
        if message.kept is not None:
            self.kept = message.kept
        if events or not self._alive:
            self._draw(plot=bool(events))

    def _earlier_sessions(self) -> str:
        """After a resume the clock times this session; the whole run's time is given beside it."""
        p = self.progress
        return f" ({clock(p.elapsed_total)} in all)" if p.session_first_step and p.elapsed_total else ""

    def _run_alive(self) -> bool:
        from tui_lora.runs.folder import RunFolder

        return RunFolder(self.folder).owner() is not None

    # ------------------------------------------------------------ drawing

    def _draw(self, plot: bool) -> None:
        p = self.progress
        steps = self.query_one("#steps-bar", ProgressBar)
        # An unknown total animates as "busy"; once the run has ended (or its process is gone) nothing is busy.
        over = p.final or not self._alive
        steps.update(total=p.max_steps or (max(p.step, 1) if over else None), progress=p.step)
        self.query_one("#steps-text", Static).update(
            f"{p.step}/{p.max_steps or '?'}  {clock(p.elapsed)} elapsed{self._earlier_sessions()}  ETA {clock(p.eta)}")
        self.query_one("#epoch-bar", ProgressBar).update(total=1.0, progress=p.epoch_fraction)
        self.query_one("#epoch-text", Static).update(
            f"{p.epoch:.2f} of {p.num_epochs:g}" if p.num_epochs else "-")
        self.query_one("#run-state", Static).update(self._state_line())
        stats = (f"loss {number(p.loss, '.4f')}  lr {number(p.learning_rate, '.2e')}  "
                 f"grad {number(p.grad_norm, '.3g')}  {number(p.tokens_per_second, ',.0f')} tok/s")
        if p.gpu_memory is not None:
            stats += f"  GPU {p.gpu_memory / 2**30:.1f} GiB"
        if p.eval_loss is not None:
            stats += f"\neval_loss {p.eval_loss:.4f} at step {p.eval_step}"
        if p.early_stopping is not None:
            waited, patience = p.early_stopping
            stats += f"  early stopping {waited}/{patience} evaluations without improvement"
        if self.kept:
            stats += f"  checkpoints at {', '.join(str(step) for step in self.kept[-4:])}"
        self.query_one("#run-stats", Static).update(stats)
        if plot:
            self.query_one("#loss-plot", LossPlot).show(p.train_points, p.eval_points)
        running = not p.final and self._alive
        finished = p.state == "finished"
        if self.query_one("#abort", Button).display != running or self.query_one("#chat", Button).display != finished:
            self.query_one("#abort", Button).display = running
            self.query_one("#chat", Button).display = finished
            self.refresh_bindings()

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "abort":
            return not self.progress.final and self._alive  # nothing to abort: the key leaves the footer
        if action == "chat":
            return self.progress.state == "finished"  # the adapter is saved when the run finishes
        return True

    def _state_line(self) -> str:
        p = self.progress
        if p.state == "finished":
            metrics = (p.result or {}).get("metrics", {})
            loss = f" · eval_loss {metrics['eval_loss']:.4f}" if isinstance(metrics.get("eval_loss"), float) else ""
            return f"✓ finished at step {p.step}{loss} · adapter: {p.adapter}"
        if p.state in STOPPED_STATES:
            return f"■ {p.state}: {p.message}"
        if p.state == "failed":
            from tui_lora.places import display_path

            return f"✗ failed: {p.message} (full log: {display_path(self.folder / 'train.log')})"
        if not self._alive and p.state != "new":
            from tui_lora.places import display_path

            return (f"✗ the training process is gone (killed, or the machine restarted) at step {p.step}; "
                    f"resume: tui-lora run {display_path(self.folder / 'run.toml')} --resume")
        if p.state == "new":
            return "waiting for the run to start…"
        return f"● {p.state}: {p.message}"

    # ------------------------------------------------------------ actions

    @on(Button.Pressed, "#abort")
    def action_abort(self) -> None:
        if self.progress.final or not self._alive:
            self.notify("the run is not running", severity="warning")
            return

        def answered(choice: str | None) -> None:
            if choice != "abort":
                return
            from tui_lora.runs.detach import abort

            pid = abort(self.folder)
            self.notify("stop requested: a checkpoint is saved after the current step, then the run ends"
                        if pid else "no training process holds this run folder", title="Abort")

        self.app.push_screen(ConfirmDialog("Abort the run? It saves a checkpoint after the current step and stops; "
                                           "tui-lora run … --resume continues it later.",
                                           [("abort", "Abort the run"), ("keep", "Keep training")],
                                           focus="keep"), answered)  # Enter must not end hours of training

    @on(Button.Pressed, "#chat")
    def action_chat(self) -> None:
        if self.progress.state != "finished":
            self.notify("the adapter is saved when the run finishes", severity="warning")
            return
        self.app.push_screen(ChatScreen(self.folder))

    @property
    def live(self) -> bool:
        return not self.progress.final and self._alive

    @on(Button.Pressed, "#leave")
    def action_leave(self) -> None:
        if self.live:
            self.app.exit(("left", self.folder))  # the run goes on; the command line says how to come back
        elif self.can_go_back:
            self.dismiss((self.progress.state if self.progress.final else "died", self.progress.message))
        else:
            self.app.exit(None)

    def action_follow_log(self) -> None:
        self.query_one("#run-log", RichLog).scroll_end(animate=False)
