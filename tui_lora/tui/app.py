"""The wizard: a start screen, then one screen per step, ending in a review that saves or starts.

The app owns the draft run file and what is known about the model (from a probe in a
child process); screens read both and send edits back through `edit`. Moving forward
pushes the next step, Esc pops back, and the review can pop straight to any field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.worker import get_current_worker

from tui_lora.tui.draft import Draft
from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.data import DataScreen
from tui_lora.tui.screens.data_source import DataSourceDialog
from tui_lora.tui.screens.dialogs import ConfirmDialog, HelpDialog, SaveDialog
from tui_lora.tui.screens.lora import LoraScreen
from tui_lora.tui.screens.model import ModelScreen
from tui_lora.tui.screens.quantization import QuantizationScreen
from tui_lora.tui.screens.review import ReviewScreen
from tui_lora.tui.screens.source import SourceScreen
from tui_lora.tui.screens.start import StartScreen
from tui_lora.tui.screens.step import StepScreen
from tui_lora.tui.screens.training import TrainingScreen

STEPS: tuple[type[StepScreen], ...] = (ModelScreen, SourceScreen, QuantizationScreen, LoraScreen, DataScreen,
                                       TrainingScreen, ReviewScreen)
# Keys without a field of their own are edited on the step of their section.
SECTION_STEPS = {"model": ModelScreen, "tokenizer": DataScreen, "hub": SourceScreen,
                 "quantization": QuantizationScreen, "lora": LoraScreen, "data": DataScreen,
                 "collator": DataScreen, "training": TrainingScreen, "early_stopping": TrainingScreen}

# What decides the model probe's answer: a change to any of these asks again.
MODEL_KEYS = ("model.name_or_path", "model.revision", "model.trust_remote_code", "hub.source", "hub.endpoint",
              "hub.offline", "hub.cache_dir")


@dataclass
class RunLaunched(Message):
    """The training process is running, detached, in `folder`."""

    folder: Path


@dataclass
class LaunchFailed(Message):
    """The training process did not start: why, in one line."""

    reason: str


def bundled(path: Path) -> bool:
    from tui_lora.presets import bundled_presets

    return path.resolve() in {found.resolve() for found in bundled_presets().values()}


def run_record(path: Path) -> bool:
    """A run folder's run.toml: the record of a run that happened, not a file to edit in place."""
    return path.name == "run.toml" and (path.parent / "events.jsonl").exists()


def step_for(key: str) -> type[StepScreen]:
    for step in STEPS:
        if key in step.FIELDS:
            return step
    return SECTION_STEPS.get(key.split(".", 1)[0], ReviewScreen)


class WizardApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "tui-lora"
    ENABLE_COMMAND_PALETTE = False  # every action has a key in the footer; the palette only adds noise
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, preset: Path | None = None) -> None:
        super().__init__()
        self.draft = Draft()
        # The file that holds this draft as it was opened or last saved (what Start runs while nothing changed),
        # and whether saving may write back into it: not into a bundled preset or a run folder's record.
        self.preset_path: Path | None = None
        self.own_file = False
        self.start_failure = ""  # why the last Start did not get a run going: shown on the review
        self._start_after_check: bool | None = None  # once the machine check answers: start (False) or queue (True)
        self.dirty = False
        self.focused_key = ""
        self.probes: dict[str, tuple[tuple, dict]] = {}  # kind -> (what was asked, the answer)
        self._asking: dict[str, tuple] = {}
        self._open_first = preset

    def on_mount(self) -> None:
        self.push_screen(StartScreen())
        if self._open_first is not None:
            self.begin(Draft.from_file(self._open_first), self._open_first)

    # ------------------------------------------------------------ the draft

    def begin(self, draft: Draft, preset_path: Path | None) -> None:
        """Start editing: a new draft from the start screen (or the command line)."""
        self.draft = draft
        self.preset_path = preset_path
        self.own_file = preset_path is not None and not bundled(preset_path) and not run_record(preset_path)
        self.dirty = bool(draft.removed_secrets)  # the file still holds them until it is saved again
        self.start_failure = ""
        self.probes.clear()
        self.push_screen(STEPS[0]())

    def edit(self, key: str, value: Any) -> bool:
        changed = self.draft.set(key, value)
        if changed:
            self._changed()
        return changed

    def add_source(self) -> int:
        """A new data set in [[data.sources]] (the first time, [data]'s own becomes data set 1); its number."""
        number = self.draft.add_source()
        self._changed()
        return number

    def remove_source(self, number: int) -> None:
        self.draft.remove_source(number)
        self._changed()

    def _changed(self) -> None:
        self.dirty = True
        self.start_failure = ""  # it was about the run file before this change

    # ------------------------------------------------------------ moving between steps

    def next_step(self, screen: StepScreen) -> None:
        position = STEPS.index(type(screen))
        if position + 1 < len(STEPS):
            self.push_screen(STEPS[position + 1]())

    def go_to_step(self, number: int) -> None:
        """Straight to step `number` (1-7): back by leaving the later steps, forward through the ones between,
        so Esc still walks back one step at a time."""
        target = STEPS[number - 1]
        if any(isinstance(screen, target) for screen in self.screen_stack):
            while not isinstance(self.screen, target):
                self.pop_screen()
            return
        position = STEPS.index(type(self.screen))
        for step in STEPS[position + 1:number]:
            self.push_screen(step())

    def jump_to(self, key: str) -> None:
        """From the review, back to the step that edits `key`, with that field focused."""
        target = step_for(key)
        while not isinstance(self.screen, (target, StartScreen)):
            self.pop_screen()
        if isinstance(self.screen, StepScreen):
            self.call_after_refresh(self.screen.focus_key, key)

    # ------------------------------------------------------------ probes (child processes)

    def probe_key(self, kind: str) -> tuple:
        if kind == "model":
            return tuple(repr(self.draft.get(key)) for key in MODEL_KEYS)
        if kind == "machine":
            # The description and the run folder say nothing about the machine: changing them asks nothing again.
            import tomli_w

            body = {k: v for k, v in self.draft.file_body().items() if k != "description"}
            if isinstance(body.get("training"), dict):
                body["training"] = {k: v for k, v in body["training"].items() if k != "output_dir"}
            return (tomli_w.dumps(body),)
        return (self.draft.to_toml(),)

    def known(self, kind: str) -> dict | None:
        """The latest answer for the draft as it is now, or None."""
        asked = self.probes.get(kind)
        return asked[1] if asked and asked[0] == self.probe_key(kind) else None

    def asking(self, kind: str) -> bool:
        return self._asking.get(kind) == self.probe_key(kind)

    def ask(self, kind: str) -> None:
        """Start a probe for the current draft unless one is already on its way."""
        key = self.probe_key(kind)
        if self._asking.get(kind) == key:
            return
        self._asking[kind] = key
        self._probe(kind, key, copy.deepcopy(self.draft.raw))

    def ask_model_unless_known(self) -> None:
        """Steps that need the model's layers ask for them on arrival, once per model."""
        if self.known("model") is None and self.draft.get("model.name_or_path"):
            self.ask("model")

    @work(thread=True, group="probes")
    def _probe(self, kind: str, key: tuple, raw: dict) -> None:
        worker = get_current_worker()
        try:
            from tui_lora.probe import run_probe

            answer = run_probe(kind, raw, cancelled=lambda: worker.is_cancelled)
        except Exception as exc:  # a bug here must show as a message on the step, not end the wizard
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not worker.is_cancelled:
            self.post_message(ProbeAnswered(kind, key, answer))

    @on(ProbeAnswered)
    def _answered(self, message: ProbeAnswered) -> None:
        if self._asking.get(message.kind) == message.key:
            del self._asking[message.kind]
        self.probes[message.kind] = (message.key, message.answer)
        # The screen on top shows what it needs of the answer (a ProbeAnswered handler of its own).
        self.screen.post_message(ProbeAnswered(message.kind, message.key, message.answer))
        if message.kind == "machine" and self._start_after_check is not None and self.known("machine") is not None:
            queued, self._start_after_check = self._start_after_check, None
            self.start_run(queued)

    # ------------------------------------------------------------ saving, help, quitting

    def check_action(self, action: str, parameters) -> bool | None:
        # Saving and help are about the run file being edited: the start and run screens have none.
        if action in ("save", "help"):
            return isinstance(self.screen, StepScreen)
        return True

    def action_save(self, then=None) -> None:
        """Ask where to save (the opened file, or a name), write it, then do `then` (start, quit)."""
        def saved(path: Path | None) -> None:
            if path is None:
                return
            self.preset_path, self.own_file, self.dirty = path, True, False
            # From now on the draft is that file (no secrets in it, every key it holds): the next save
            # changes only what changes after this one.
            self.draft = Draft.from_file(path)
            from tui_lora.presets import user_presets_dir

            preset = path.parent.resolve() == user_presets_dir().resolve()
            self.notify(f"saved {path}", title="Preset saved" if preset else "Saved")
            if isinstance(self.screen, StepScreen):
                self.screen.draft_changed()
            if then is not None:
                then()

        self.push_screen(SaveDialog(self.draft, self.preset_path if self.own_file else None,
                                    shown_from=self.preset_path), saved)

    def start_problems(self) -> list:
        """Everything `tui-lora run` would refuse before loading: the run file's problems, the run folder,
        and (once the review's check has answered) this machine."""
        from tui_lora.tui.draft import machine_issues

        return self.draft.check.issues + self.draft.folder_issues() + machine_issues(self.known("machine"))

    def start_run(self, queued: bool = False) -> None:
        """Check, save if needed, start the run in its own process and watch it on the run screen; or, queued,
        put it in the run queue (tui_lora/runs/queue.py) to start when the runs ahead of it have ended."""
        title = "Queue" if queued else "Start"
        if self.known("machine") is None:  # the review asked already; go on once it has answered
            self._start_after_check = queued
            self.ask("machine")
            self.notify("checking this machine first (what tui-lora run checks before loading)…", title=title)
            return
        problems = self.start_problems()
        if problems:
            self.notify(f"{problems[0]}", title="Fix this first (the review lists every problem)", severity="error")
            return
        # The fresh folder the review showed goes into the run file, so it is the folder this run gets.
        self.dirty |= self.draft.pin_output_dir()
        if self.preset_path is None or self.dirty:
            self.action_save(then=lambda: self.start_run(queued))
            return
        if queued:
            self._enqueue(self.preset_path)
            return
        self.notify("starting the training process…", title=title)
        self._launch(self.preset_path)

    @work(thread=True, group="launch", exclusive=True)
    def _enqueue(self, preset: Path) -> None:
        from tui_lora.errors import first_line
        from tui_lora.runs import queue

        try:
            entry, now = queue.enqueue(preset)
        except Exception as exc:  # a UserError is one line; anything else is shown the same way
            self.post_message(LaunchFailed(first_line(exc)))
            return
        if entry.state == queue.RUNNING:
            self.post_message(RunLaunched(Path(entry.folder)))  # nothing ahead of it: watch it as for Start
        elif entry.state == queue.WAITING:
            waiting = now.waiting()
            self.call_from_thread(self.notify, f"entry {entry.id}, position {waiting.index(entry) + 1} of "
                                  f"{len(waiting)}: it starts when the runs ahead of it have ended "
                                  "(tui-lora queue lists them)", title="Queued", timeout=8)
        else:
            self.post_message(LaunchFailed(entry.message or f"the queued run {entry.state}"))

    def resume_run(self, folder: Path) -> None:
        """Go on from a stopped run's latest checkpoint, with the run file it recorded."""
        self.notify(f"resuming {folder.name} from its latest checkpoint…", title="Resume")
        self._launch(folder / "run.toml", "latest")

    @work(thread=True, group="launch", exclusive=True)
    def _launch(self, preset: Path, resume: str | None = None) -> None:
        from tui_lora.runs.detach import start_detached

        try:
            started = start_detached(preset, resume=resume)
        except Exception as exc:  # a UserError or RunFailed is one line; anything else is shown the same way
            from tui_lora.errors import first_line

            self.post_message(LaunchFailed(first_line(exc)))
            return
        self.post_message(RunLaunched(started.folder))

    @on(RunLaunched)
    def _launched(self, message: RunLaunched) -> None:
        self.watch_run(message.folder)

    @on(LaunchFailed)
    def _did_not_start(self, message: LaunchFailed) -> None:
        self.start_failure = message.reason
        if isinstance(self.screen, StepScreen):
            self.screen.draft_changed()
        self.notify(message.reason, title="The run did not start (the review shows why)", severity="error",
                    timeout=10)

    def watch_run(self, folder: Path) -> None:
        from tui_lora.tui.screens.run import RunScreen

        def left(outcome: tuple[str, str] | None) -> None:
            # Back from a run that did not finish: the review says what went wrong, next to the fields to fix.
            if outcome is not None and outcome[0] != "finished" and isinstance(self.screen, StepScreen):
                # the message alone, so a "key: problem" line keeps its key (the review jumps to that field)
                self.start_failure = outcome[1] or f"the run {outcome[0]}"
                self.screen.draft_changed()

        self.push_screen(RunScreen(folder, can_go_back=True), left)

    def action_help(self) -> None:
        if self.focused_key and isinstance(self.screen, (StepScreen, DataSourceDialog)):
            self.push_screen(HelpDialog(self.focused_key, self.draft.get(self.focused_key)))

    async def action_quit(self) -> None:
        from tui_lora.tui.screens.run import RunScreen

        if isinstance(self.screen, RunScreen) and self.screen.live:
            self.screen.action_leave()  # the run goes on; say how to come back
            return
        if not self.dirty:
            self.exit()
            return

        def answered(choice: str | None) -> None:
            if choice == "quit":
                self.exit()
            elif choice == "save":
                self.action_save(then=self.exit)

        self.push_screen(ConfirmDialog("The run file has changes that are not saved.",
                                       [("save", "Save…"), ("quit", "Quit without saving"), ("stay", "Stay")]),
                         answered)
