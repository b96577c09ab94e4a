"""Small modal screens: help for a field, a question with a few answers, and saving a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tui_lora.errors import UserError
from tui_lora.tui.draft import Draft, field_spec, value_text

# Longer explanations for the settings where a one-line help is not enough to choose well.
MORE_HELP = {
    "model.trust_remote_code": (
        "Some models (older ChatGLM, Baichuan, InternLM, some Qwen and Phi versions) ship Python files that "
        "transformers imports to build them. With this on, that code runs on this machine with your "
        "permissions, when the model loads. Turn it on only for models whose authors you trust, and pin "
        "model.revision to a commit so the code cannot change under you."),
    "lora.lora_alpha": (
        "The update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA). alpha = 2·r is the common choice; "
        "alpha = r keeps the scale at 1. Raising r without raising alpha makes each step smaller."),
    "lora.target_modules": (
        "\"all-linear\" adapts every linear layer except the output layer: the QLoRA paper's choice and the "
        "best default. Attention only (q_proj, v_proj) trains fewer parameters and is a little faster."),
    "data.train_on": (
        "assistant: the loss covers every assistant reply, not the user turns or the template. "
        "last: only the final reply of each conversation. all: every token, including the prompts."),
    "training.gradient_accumulation_steps": (
        "The effective batch is per_device_train_batch_size × gradient_accumulation_steps × number of GPUs."),
}


def _facts(key: str, value: Any) -> list[str]:
    spec = field_spec(key)
    meta = spec.metadata
    lines = [f"type: {spec.type}"]
    if meta["choices"]:
        lines.append("allowed: " + ", ".join(repr(choice) for choice in meta["choices"]))
    if meta["item_choices"]:
        lines.append("allowed in the list: " + ", ".join(repr(choice) for choice in meta["item_choices"]))
    low, high = meta["min"], meta["max"]
    if low is not None or high is not None:
        upper = "" if high is None else (f" and below {high}" if meta["max_exclusive"] else f" and at most {high}")
        lines.append(f"range: at least {low}{upper}" if low is not None else f"range: {upper.strip()}")
    if meta["why"]:
        lines.append(f"why: {meta['why']}")
    default = spec.default_factory() if callable(getattr(spec, "default_factory", None)) else spec.default
    lines.append(f"default: {value_text(default) or '(empty)'}   now: {value_text(value) or '(empty)'}")
    return lines


class HelpDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, key: str, value: Any) -> None:
        super().__init__()
        self.key, self.value = key, value

    def compose(self) -> ComposeResult:
        spec = field_spec(self.key)
        with Vertical(id="dialog"):
            yield Static(f"[b]{self.key}[/b]", classes="dialog-title")
            yield Static(spec.metadata["help"])
            if self.key in MORE_HELP:
                yield Static(MORE_HELP[self.key])
            yield Static("\n".join(_facts(self.key, self.value)), classes="dialog-facts", markup=False)
            yield Static("In the run file: " + (f"[{self.key.split('.')[0]}] {self.key.split('.')[1]} = …"
                                                 if "." in self.key else f"{self.key} = …"), markup=False)
            yield Button("Close", id="close", compact=True)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss()


class ConfirmDialog(ModalScreen[str]):
    """A question and a row of answers; dismisses with the chosen answer's id (Esc: the last one)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, answers: list[tuple[str, str]]) -> None:
        super().__init__()
        self.question, self.answers = question, answers

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, markup=False)
            with Horizontal(classes="dialog-buttons"):
                for answer, label in self.answers:
                    yield Button(label, id=answer, compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_cancel(self) -> None:
        self.dismiss(self.answers[-1][0])


class SaveDialog(ModalScreen[Path | None]):
    """Ask for a preset name, show where it goes, and never replace a file without asking."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, draft: Draft, current: Path | None) -> None:
        super().__init__()
        self.draft, self.current = draft, current

    def compose(self) -> ComposeResult:
        from tui_lora.places import display_path, user_presets_dir

        name = self.current.stem if self.current else _suggested_name(self.draft)
        with Vertical(id="dialog"):
            yield Static("[b]Save the run file as a preset[/b]", classes="dialog-title")
            yield Static(f"Presets live in {display_path(user_presets_dir())}", markup=False)
            yield Input(name, placeholder="name, e.g. qwen-belle-r16", id="preset-name", compact=True)
            yield Static("", id="save-target", markup=False)
            problems = len(self.draft.check.issues)
            if problems:
                yield Static(f"The run file has {problems} problem(s); it is saved as it is, and the review lists "
                             "them.", classes="dialog-warning", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", compact=True, variant="primary")
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self._describe(self.query_one("#preset-name", Input).value)

    @on(Input.Changed, "#preset-name")
    def _name_changed(self, event: Input.Changed) -> None:
        self._describe(event.value)

    def _describe(self, name: str) -> None:
        from tui_lora.places import display_path, preset_path

        target = self.query_one("#save-target", Static)
        try:
            path = preset_path(name)
        except UserError as exc:
            target.update(f"✗ {exc}")
            return
        if path == self.current:
            target.update(f"→ {display_path(path)} (the preset you are editing)")
        elif path.exists():
            target.update(f"→ {display_path(path)} already exists: you will be asked before it is replaced")
        else:
            target.update(f"→ {display_path(path)}")

    @on(Input.Submitted, "#preset-name")
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        from tui_lora.config.write import write_atomic
        from tui_lora.places import preset_path

        try:
            path = preset_path(self.query_one("#preset-name", Input).value)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return

        def write(replace: bool) -> None:
            try:
                write_atomic(path, self.draft.to_toml(), overwrite=replace)
            except UserError as exc:
                self.notify(str(exc), title="Not saved", severity="error")
                return
            self.dismiss(path)

        if path.exists() and path != self.current:
            def answered(choice: str | None) -> None:
                if choice == "replace":
                    write(True)

            self.app.push_screen(ConfirmDialog(f"{path.name} already exists. Replace it?",
                                               [("replace", "Replace"), ("keep", "Keep it")]), answered)
            return
        write(path == self.current)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def _suggested_name(draft: Draft) -> str:
    """A starting name: the file the draft came from, or its run folder's name (a run folder's
    run.toml is named after the folder)."""
    source = draft.source
    if source is not None:
        return source.parent.name if source.name == "run.toml" else source.stem
    folder = Path(str(draft.get("training.output_dir"))).name
    return folder if folder and folder not in (".", "run") else ""
