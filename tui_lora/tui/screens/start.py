"""The first screen: a new run, a preset (bundled or the user's own), or a recent run folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from tui_lora.errors import UserError
from tui_lora.runs.events import STOPPED_STATES
from tui_lora.tui.draft import Draft
from tui_lora.tui.screens.dialogs import ConfirmDialog


START_HELP = ("Enter: open · the next steps go through the model, source, quantisation, LoRA, data and training "
              "settings, then a review that saves a preset or starts the run.")
COMPARE_HELP = ("Enter: tick two recent runs or more, then see their loss curves on one plot, their figures in a "
                "table and the settings that differ")


def _label(name: str, path: Path) -> str:
    """One line per preset: its name, then its description; the list cuts it with … where the terminal
    ends (app.tcss), and the help line below shows the whole of the highlighted one."""
    return f"  {name:28} {_description(path)}"


def _run_label(folder: Path) -> str:
    from tui_lora.places import display_path
    from tui_lora.runs.status import progress_text, read_status

    status = read_status(folder)
    return f"  {status.state:12} {progress_text(status):22} {display_path(folder)}"


def home_as_tilde(text: str) -> str:
    """A message with the home folder written as ~, as every path on screen is (the message names files)."""
    from tui_lora.tui.screens.training import display_path_words

    return display_path_words(text)


def resumable(status) -> bool:
    """A run that stopped before its end and left a checkpoint to go on from."""
    return status.state in (*STOPPED_STATES, "died", "failed") and status.latest_checkpoint is not None


def _description(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            text = tomllib.load(handle).get("description", "")
    except (OSError, tomllib.TOMLDecodeError):
        return "(cannot be read)"
    return text if isinstance(text, str) else ""


class StartScreen(Screen):
    def compose(self) -> ComposeResult:
        from tui_lora.presets import bundled_presets
        from tui_lora.places import display_path, recent_runs
        from tui_lora.presets import user_presets, user_presets_dir

        self.choices: dict[str, Path | None] = {"new": None}
        options: list[Option | None] = [Option("New run, from the defaults", id="new"), None,
                                        Option(Content.from_markup("[b]Bundled presets[/b]"), disabled=True)]
        for name, path in bundled_presets().items():
            options.append(self._option(f"bundled:{name}", path, _label(name, path)))
        options += [None, Option(Content.from_markup("[b]Your presets[/b]  in $where", where=display_path(user_presets_dir())),
                                     disabled=True)]
        mine = user_presets()
        if not mine:
            options.append(Option("  none yet: save one from the review step (Ctrl+S)", disabled=True))
        for name, path in mine.items():
            options.append(self._option(f"user:{name}", path, _label(name, path)))
        runs = recent_runs()
        if runs:
            options += [None, Option(Content.from_markup("[b]Recent run folders[/b]"), disabled=True)]
        if len(runs) >= 2:  # one run alone has nothing to be compared with
            options.append(Option("  Compare runs…", id="compare"))
        for folder in runs:
            options.append(self._option(f"run:{folder}", folder / "run.toml", _run_label(folder)))
        yield Static("[b]tui-lora[/b]   LoRA and QLoRA fine-tuning of chat models. Choose where to start:",
                     id="step-title")
        yield OptionList(*options, id="start-choices")
        yield Static(START_HELP, id="help-line", markup=False)
        yield Footer()

    @on(OptionList.OptionHighlighted, "#start-choices")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        """The help line speaks of the highlighted choice, whole: what a preset is for, where it lives."""
        from tui_lora.places import display_path

        option_id = event.option.id or ""
        path = self.choices.get(option_id)
        if option_id == "compare":
            text = COMPARE_HELP
        elif path is None:
            text = START_HELP
        elif option_id.startswith("run:"):
            from tui_lora.runs.status import read_status

            status = read_status(path.parent)
            parts = ["Enter: watch it, resume it, or start a new run from its settings ·",
                     f"{display_path(path.parent)}: {status.state}.", home_as_tilde(status.message)]
            text = " ".join(part for part in parts if part)
        else:
            description = _description(path) or "(no description)"
            text = f"{description}  ({display_path(path)}; Enter opens it at the model step)"
        self.query_one("#help-line", Static).update(text)

    def _option(self, option_id: str, path: Path, label: str) -> Option:
        self.choices[option_id] = path
        return Option(Content(label), id=option_id)  # plain text: a description may hold [brackets]

    @on(OptionList.OptionSelected, "#start-choices")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        path = self.choices.get(option_id)
        if option_id == "compare":
            self._compare()
        elif path is None:
            self.app.begin(Draft(), None)
        elif option_id.startswith("run:"):
            self._run_chosen(path.parent)
        else:
            self._open(path)

    def _compare(self) -> None:
        """Choose the runs, then see them side by side (the list read again: a run may have started since)."""
        from tui_lora.places import recent_runs
        from tui_lora.tui.screens.compare import CompareChooser, CompareScreen

        def chosen(runs) -> None:
            if runs:
                self.app.push_screen(CompareScreen(runs))

        self.app.push_screen(CompareChooser([(folder, _run_label(folder)) for folder in recent_runs()]), chosen)

    def _open(self, path: Path) -> None:
        try:
            draft = Draft.from_file(path)
        except UserError as exc:
            self.notify(str(exc), title="Cannot open", severity="error")
            return
        self.app.begin(draft, path)

    def _run_chosen(self, folder: Path) -> None:
        """A recent run: watch it, resume it when it stopped early, or start a new run from its settings."""
        from tui_lora.runs.status import progress_text, read_status

        status = read_status(folder)
        answers = [("watch", "Watch")]
        if resumable(status):
            answers.append(("resume", f"Resume from {status.latest_checkpoint.name}"))
        answers += [("edit", "New run from its settings"), ("cancel", "Cancel")]

        def answered(choice: str | None) -> None:
            if choice == "watch":
                self.app.watch_run(folder)
            elif choice == "resume":
                self.app.resume_run(folder)
            elif choice == "edit":
                self._open(folder / "run.toml")

        from tui_lora.places import display_path

        self.app.push_screen(ConfirmDialog(f"{display_path(folder)}: {status.state}, {progress_text(status)}. "
                                           f"{home_as_tilde(status.message)}".strip(), answers), answered)
