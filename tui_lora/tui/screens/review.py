"""Step 7: the whole run file, every problem with a jump to its field, the command, save and start.

"No problems" means what Start will find: the run file's own problems, the run folder (a new run
never goes into a folder that holds one), this machine (checked in a child process by the same
functions `tui-lora run` calls before it loads anything), and why the last Start failed.
"""

from __future__ import annotations

import shlex

from textual import on
from textual.app import ComposeResult
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

from tui_lora.runs.launcher import needs_launcher
from tui_lora.config.load import ConfigIssue
from tui_lora.tui.draft import OUTPUT_DIR, issue_from_line, machine_issues
from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.data import mix_lines
from tui_lora.tui.screens.step import StepScreen
from tui_lora.tui.screens.training import launch_line

CHECK_PAUSE = 0.5  # seconds of quiet in the description before the machine is asked again


class ReviewScreen(StepScreen):
    TITLE = "Review"
    FIELDS = ("description",)
    HELP = {"next": "Start the run (Ctrl+N): save the run file if it changed, train in a process of its own "
                    "and watch it here.",
            "queue": "Queue the run: save the run file if it changed; it starts, in the background, when the "
                     "runs queued ahead of it have ended (tui-lora queue lists and changes the queue).",
            "new-folder": "Take the new run folder offered: training.output_dir is set to it."}

    _pause = None

    def body(self) -> ComposeResult:
        yield self.setting("description", placeholder="one line: what this run is for")
        yield Static("", id="review-warnings", markup=False)
        yield Static("", id="issues-title", markup=False)
        yield OptionList(id="issues", compact=True)
        yield Button("", id="new-folder", compact=True)
        yield Static("", id="command", markup=False)
        yield Static("", id="toml")

    def on_mount(self) -> None:
        super().on_mount()
        next_button = self.query_one("#next", Button)
        next_button.label = "Start ›"
        buttons = self.query_one("#step-buttons")
        buttons.mount(Button("Save preset", id="save", compact=True), before=next_button)
        # Queue: on a shared machine, start it after the runs already queued (tui-lora run --queue)
        buttons.mount(Button("Queue", id="queue", compact=True), before=next_button)
        self.draft_changed()
        self.app.ask("machine")

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.app.ask("machine")  # a step visited since may have changed precision or quantisation

    @on(ProbeAnswered)
    def _machine_checked(self, message: ProbeAnswered) -> None:
        if message.kind == "machine":
            self.draft_changed()

    def draft_changed(self, key: str | None = None) -> None:
        from rich.syntax import Syntax

        if key is not None:
            if self._pause is not None:
                self._pause.stop()
            self._pause = self.set_timer(CHECK_PAUSE, lambda: self.app.ask("machine"))
        issues = self._all_issues()
        checking = self.app.known("machine") is None
        if issues:
            title = f"✗ {len(issues)} problem(s); Enter on one goes to its field:"
        elif checking:
            title = "… checking this machine (what tui-lora run checks before it loads anything)"
        else:
            title = "✓ No problems: the run file is ready."
        self.query_one("#issues-title", Static).update(title)
        listing = self.query_one("#issues", OptionList)
        listing.clear_options()
        listing.add_options([Option(str(issue), id=f"issue-{number}") for number, issue in enumerate(issues)])
        listing.display = bool(issues)
        self._issues = issues
        fix = self.query_one("#new-folder", Button)
        fix.display = bool(self.draft.folder_issues())
        if fix.display:
            self._free_folder = self.draft.free_folder()
            fix.label = f"Use a new folder: {self._free_folder}"
        warnings, shown = self._warnings(), self.query_one("#review-warnings", Static)
        shown.update("\n".join(warnings))
        shown.display = bool(warnings)
        self.query_one("#command", Static).update(self._command())
        # word_wrap: a long value (a path, a description) shows whole instead of being cut at the edge
        self.query_one("#toml", Static).update(Syntax(self.draft.to_toml(), "toml", theme="ansi_dark",
                                                      background_color="default", word_wrap=True))

    def _all_issues(self) -> list[ConfigIssue]:
        issues = self.draft.check.issues + self.draft.folder_issues() + machine_issues(self.app.known("machine"))
        if self.app.start_failure:
            failure = issue_from_line(self.app.start_failure)
            issues.append(ConfigIssue(failure.key, f"{failure.message} (the last Start)"))
        return issues

    def _warnings(self) -> list[str]:
        """What must not hide inside the TOML: code from the model that will run, secrets that were dropped."""
        from tui_lora.secret_guard import WHERE_TOKENS_COME_FROM

        lines = []
        if self.draft.get("model.trust_remote_code") is True:
            model = self.draft.get("model.name_or_path") or "the model"
            lines.append(f"⚠ trust_remote_code is on: Python code shipped with {model} will run on this machine, "
                         "with your permissions, when the model loads. Keep it on only for a repository whose "
                         "authors you trust.")
        machine = self.app.known("machine")
        if machine is not None and not machine.get("ok"):
            lines.append(f"⚠ This machine could not be checked ({machine.get('error')}); the run checks it again "
                         "when it starts.")
        if self.draft.removed_secrets:
            lines.append(f"✗ Removed from this run file: {', '.join(self.draft.removed_secrets)}. Secrets never go "
                         f"in a run file; {WHERE_TOKENS_COME_FROM}. Saving writes the file without them.")
        return lines

    def _command(self) -> str:
        config = self.draft.check.config
        chosen = "" if self.draft.names(OUTPUT_DIR) else " (a new folder named for this run; set " \
                                                          "training.output_dir to choose another)"
        lines = [*mix_lines(config.data), f"Run folder: {config.training.output_dir}{chosen}", self._headless()]
        if needs_launcher(config):
            # several processes: what `tui-lora run` starts, exactly (and what --print-command prints)
            lines.append(launch_line(config, self.app.preset_path))
        return "\n".join(lines)

    def _headless(self) -> str:
        from tui_lora.places import display_path
        from tui_lora.tui.screens.dialogs import _bundled_name

        if self.app.preset_path is None:
            return "Headless: save the preset (Ctrl+S), then run it with tui-lora run NAME"
        path = _bundled_name(self.app.preset_path) or display_path(self.app.preset_path)
        unsaved = " (save first: there are unsaved changes)" if self.app.dirty else ""
        return f"Headless: tui-lora run {shlex.quote(path) if not path.startswith('~') else path}{unsaved}"

    @on(OptionList.OptionSelected, "#issues")
    def _jump(self, event: OptionList.OptionSelected) -> None:
        issue = self._issues[int((event.option.id or "issue-0").removeprefix("issue-"))]
        if issue.key == "description" or not issue.key:
            return
        self.app.jump_to(issue.key)

    @on(Button.Pressed, "#new-folder")
    def _take_new_folder(self) -> None:
        self.app.edit(OUTPUT_DIR, self._free_folder)
        self.draft_changed(OUTPUT_DIR)
        self.query_one("#next", Button).focus()  # the button is gone: Enter now starts the run
        self.notify(f"training.output_dir = {self._free_folder}", title="New run folder")

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.app.action_save()

    @on(Button.Pressed, "#queue")
    def _queue(self) -> None:
        self.app.start_run(queued=True)

    def action_next(self) -> None:
        self.app.start_run()
