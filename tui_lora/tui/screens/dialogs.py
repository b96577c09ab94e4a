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
from tui_lora.tui.draft import Draft, field_spec, source_key, value_text

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
    "lora.init_lora_weights": (
        "Keep default unless you know why not. pissa converges faster on the same steps (PiSSA paper); use "
        "pissa_niter_16 on large models, where a full SVD of every layer takes minutes. olora is the same idea "
        "through a QR decomposition and also works on 4-bit or 8-bit weights. eva spends a pass over some "
        "batches before step 1 to start from the data. loftq is for QLoRA (4-bit) on a CUDA GPU: it starts the "
        "adapter at what quantisation lost."),
    "lora.loraplus_lr_ratio": (
        "LoRA+ trains B faster than A, which the paper found learns the same in fewer steps; 16 is its choice. "
        "Lowering learning_rate a little (half) with it is usual."),
    "training.lr_scheduler_kwargs": (
        "In the wizard, write name=value pairs: min_lr_rate=0.1 (cosine_with_min_lr), num_decay_steps=200, "
        "decay_type=1-sqrt (warmup_stable_decay), num_cycles=2 (cosine_with_restarts). In the run file it is a "
        "table: lr_scheduler_kwargs = {min_lr_rate = 0.1}."),
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


def _written_as(key: str) -> str:
    """Where a key goes in the run file: "[lora] r = …", "[[data.sources]] (data set 2) weight = …"."""
    in_source = source_key(key)
    if in_source is not None:
        return f"[[data.sources]] (data set {in_source[0]}) {in_source[1]} = …"
    section, _, name = key.partition(".")
    return f"[{section}] {name} = …" if name else f"{key} = …"


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
            yield Static(f"In the run file: {_written_as(self.key)}", markup=False)
            yield Button("Close", id="close", compact=True)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss()


class ConfirmDialog(ModalScreen[str]):
    """A question and a row of answers; dismisses with the chosen answer's id (Esc: the last one)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, answers: list[tuple[str, str]], focus: str | None = None) -> None:
        super().__init__()
        # focus: the answer Enter gives at once; a dialog that can lose work names the safe one
        self.question, self.answers, self.first = question, answers, focus

    def compose(self) -> ComposeResult:
        # Answers that do not fit side by side in the dialog go one per line, so none is cut off
        # and Tab never lands on a button out of sight.
        row = sum(len(label) + 4 for _, label in self.answers)
        with Vertical(id="dialog"):
            yield Static(self.question, markup=False)
            with Horizontal(classes="dialog-buttons" + (" -stacked" if row > 60 else "")):
                for answer, label in self.answers:
                    yield Button(label, id=answer, compact=True)

    def on_mount(self) -> None:
        if self.first is not None:
            self.query_one(f"#{self.first}", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_cancel(self) -> None:
        self.dismiss(self.answers[-1][0])


class SaveDialog(ModalScreen[Path | None]):
    """Ask for a preset name or a file path, show where it goes, and never replace or hide a file without asking."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, draft: Draft, current: Path | None, shown_from: Path | None = None) -> None:
        super().__init__()
        # current: the file this draft may be written back to (opened with `edit`, or saved before);
        # shown_from: the file it was opened from, which may be one not to write into (a bundled preset).
        self.draft, self.shown_from = draft, shown_from
        self.current = current.expanduser().absolute() if current is not None else None  # as save_target gives it

    def compose(self) -> ComposeResult:
        from tui_lora.places import display_path
        from tui_lora.presets import user_presets_dir

        with Vertical(id="dialog"):
            yield Static("[b]Save the run file as a preset or a file[/b]", classes="dialog-title")
            yield Static(f"A preset name (kept in {display_path(user_presets_dir())}), or a path such as "
                         "./my-run.toml", markup=False)
            yield Input(self._first_text(), placeholder="name, e.g. qwen-belle-r16", id="preset-name", compact=True)
            yield Static("", id="save-target", markup=False)
            problems = len(self.draft.check.issues)
            if problems:
                yield Static(f"The run file has {problems} problem(s); it is saved as it is, and the review lists "
                             "them.", classes="dialog-warning", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", compact=True, variant="primary")
                yield Button("Cancel", id="cancel", compact=True)

    def _first_text(self) -> str:
        from tui_lora.presets import user_presets_dir

        if self.current is not None:
            if self.current.parent.resolve() == user_presets_dir().resolve():
                return self.current.stem
            return path_text(self.current)
        source = self.shown_from or self.draft.source
        if source is not None and _bundled_name(source):
            return free_preset_name(source.stem)  # a copy never takes the bundled preset's own name
        return _suggested_name(self.draft)

    def on_mount(self) -> None:
        self._describe(self.query_one("#preset-name", Input).value)

    @on(Input.Changed, "#preset-name")
    def _name_changed(self, event: Input.Changed) -> None:
        self._describe(event.value)

    def _describe(self, text: str) -> None:
        from tui_lora.places import display_path
        from tui_lora.presets import user_presets_dir

        target = self.query_one("#save-target", Static)
        try:
            path = save_target(text)
        except UserError as exc:
            target.update(f"✗ {exc}")
            return
        if path == self.current:
            mine = path.parent.resolve() == user_presets_dir().resolve()
            target.update(f"→ {display_path(path)} ({'the preset you are editing' if mine else 'the file you opened'})")
            return
        notes = []
        if path.exists():
            notes.append("already exists: you will be asked before it is replaced")
        hidden = _hides_bundled(path)
        if hidden:
            notes.append(f"a bundled preset is called {hidden}: yours would be the one tui-lora run {hidden} "
                         "finds; you will be asked")
        target.update(f"→ {display_path(path)}" + (f" {'; '.join(notes)}" if notes else ""))

    @on(Input.Submitted, "#preset-name")
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        from tui_lora.config.write import write_atomic

        try:
            path = save_target(self.query_one("#preset-name", Input).value)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return

        def write(replace: bool) -> None:
            try:
                write_atomic(path, self.draft.file_text(), overwrite=replace)
            except UserError as exc:
                self.notify(str(exc), title="Not saved", severity="error")
                return
            self.dismiss(path)

        if path == self.current:
            write(True)
            return
        reasons = []
        if path.exists():
            reasons.append(f"{path.name} already exists.")
        hidden = _hides_bundled(path)
        if hidden:
            reasons.append(f"A bundled preset is called {hidden}: this one would take its place for tui-lora run "
                           f"{hidden} and presets --copy {hidden}.")
        if not reasons:
            write(False)
            return

        def answered(choice: str | None) -> None:
            if choice == "replace":
                write(path.exists())

        self.app.push_screen(ConfirmDialog(" ".join(reasons) + " Save it anyway?",
                                           [("replace", "Save anyway"), ("keep", "Choose another name")],
                                           focus="keep"), answered)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def save_target(text: str) -> Path:
    """Where the text typed in the save dialog points: a path (it has a / or starts with ~ or .) or a preset name."""
    from tui_lora.presets import preset_path

    text = text.strip()
    if text.startswith(("~", ".")) or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if path.suffix != ".toml":
            raise UserError(f"{text}: a run file's path ends in .toml (a name without / is a preset)")
        if path.is_dir():
            raise UserError(f"{text}: is a folder; give the path of a .toml run file")
        return path.absolute()
    return preset_path(text)


def path_text(path: Path) -> str:
    """A path as the save dialog shows it: ./NAME under the working folder, else with ~ for home."""
    from tui_lora.places import display_path

    try:
        return "./" + str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return display_path(path)


def _bundled_name(path: Path) -> str | None:
    from tui_lora.presets import bundled_presets

    return next((name for name, found in bundled_presets().items() if found.resolve() == path.resolve()), None)


def _hides_bundled(path: Path) -> str | None:
    """The bundled preset a user preset at path would hide (the user's own wins a clash of names)."""
    from tui_lora.presets import bundled_presets
    from tui_lora.presets import user_presets_dir

    if path.parent.resolve() == user_presets_dir().resolve() and path.stem in bundled_presets():
        return path.stem
    return None


def free_preset_name(stem: str) -> str:
    """stem-2, stem-3 …: the first name neither a bundled preset nor one of the user's own has."""
    from tui_lora.presets import bundled_presets
    from tui_lora.presets import user_presets

    taken = set(bundled_presets()) | set(user_presets())
    counter = 2
    while f"{stem}-{counter}" in taken:
        counter += 1
    return f"{stem}-{counter}"


def _suggested_name(draft: Draft) -> str:
    """A starting name: the file the draft came from, or its run folder's name (a run folder's
    run.toml is named after the folder)."""
    source = draft.source
    if source is not None:
        return source.parent.name if source.name == "run.toml" else source.stem
    folder = Path(str(draft.get("training.output_dir"))).name
    return folder if folder and folder not in (".", "run") else ""
