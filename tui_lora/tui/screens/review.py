"""Step 7: the whole run file, every problem with a jump to its field, the command, save and start."""

from __future__ import annotations

import shlex

from textual import on
from textual.app import ComposeResult
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

from tui_lora.accelerate_launch import needs_launcher
from tui_lora.tui.screens.step import StepScreen
from tui_lora.tui.screens.training import launch_line


class ReviewScreen(StepScreen):
    TITLE = "Review"
    FIELDS = ("description",)

    def body(self) -> ComposeResult:
        yield self.setting("description", placeholder="one line: what this run is for")
        yield Static("", id="review-warnings", markup=False)
        yield Static("", id="issues-title", markup=False)
        yield OptionList(id="issues", compact=True)
        yield Static("", id="command", markup=False)
        yield Static("", id="toml")

    def on_mount(self) -> None:
        super().on_mount()
        next_button = self.query_one("#next", Button)
        next_button.label = "Start ›"
        self.query_one("#step-buttons").mount(Button("Save preset", id="save", compact=True), before=next_button)
        self.draft_changed()

    def draft_changed(self, key: str | None = None) -> None:
        from rich.syntax import Syntax

        issues = self.draft.check.issues
        self.query_one("#issues-title", Static).update(
            f"✗ {len(issues)} problem(s); Enter on one goes to its field:" if issues
            else "✓ No problems: the run file is ready.")
        listing = self.query_one("#issues", OptionList)
        listing.clear_options()
        listing.add_options([Option(str(issue), id=f"issue-{number}") for number, issue in enumerate(issues)])
        listing.display = bool(issues)
        self._issues = issues
        warnings, shown = self._warnings(), self.query_one("#review-warnings", Static)
        shown.update("\n".join(warnings))
        shown.display = bool(warnings)
        self.query_one("#command", Static).update(self._command())
        self.query_one("#toml", Static).update(Syntax(self.draft.to_toml(), "toml", theme="ansi_dark",
                                                      background_color="default"))

    def _warnings(self) -> list[str]:
        """What must not hide inside the TOML: code from the model that will run, secrets that were dropped."""
        from tui_lora.secret_guard import WHERE_TOKENS_COME_FROM

        lines = []
        if self.draft.get("model.trust_remote_code") is True:
            model = self.draft.get("model.name_or_path") or "the model"
            lines.append(f"⚠ trust_remote_code is on: Python code shipped with {model} will run on this machine, "
                         "with your permissions, when the model loads. Keep it on only for a repository whose "
                         "authors you trust.")
        if self.draft.removed_secrets:
            lines.append(f"✗ Removed from this run file: {', '.join(self.draft.removed_secrets)}. Secrets never go "
                         f"in a run file; {WHERE_TOKENS_COME_FROM}. Saving writes the file without them.")
        return lines

    def _command(self) -> str:
        config = self.draft.check.config
        headless = self._headless()
        if not needs_launcher(config):
            return headless
        # several processes: what `tui-lora run` starts, exactly (and what --print-command prints)
        return f"{headless}\n{launch_line(config, self.app.preset_path)}"

    def _headless(self) -> str:
        from tui_lora.places import display_path

        if self.app.preset_path is None:
            return "Headless: save the preset (Ctrl+S), then run it with tui-lora run NAME"
        path = display_path(self.app.preset_path)
        unsaved = " (save first: there are unsaved changes)" if self.app.dirty else ""
        return f"Headless: tui-lora run {shlex.quote(path) if not path.startswith('~') else path}{unsaved}"

    @on(OptionList.OptionSelected, "#issues")
    def _jump(self, event: OptionList.OptionSelected) -> None:
        issue = self._issues[int((event.option.id or "issue-0").removeprefix("issue-"))]
        if issue.key == "description" or not issue.key:
            return
        self.app.jump_to(issue.key)

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.app.action_save()

    def action_next(self) -> None:
        self.app.start_run()
