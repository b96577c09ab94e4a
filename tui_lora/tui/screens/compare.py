"""Several runs side by side: a chooser over the recent run folders, then their loss curves on one plot, a table of
their figures and the settings that differ (what `tui-lora compare` prints, on a screen)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, SelectionList, Static
from textual.widgets.selection_list import Selection

from tui_lora.errors import UserError, first_line
from tui_lora.runs import compare
from tui_lora.runs.compare import RunCurves
from tui_lora.tui.screens.training import display_path_words

COMPARE_HELP = "Esc: back · ↑↓ PgUp PgDn: scroll · Tab: the table, then ←→ for all its columns"
SAME_SETTINGS = "the settings are the same (but for the run folders)"


class CompareChooser(ModalScreen[list[RunCurves] | None]):
    """Tick two recent runs or more. The folders are read here, so one that cannot be read is said at once and
    the ticks stay to change; dismissed with what the folders hold, or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, choices: list[tuple[Path, str]]) -> None:
        super().__init__()
        self.choices = choices  # (folder, its line as the start screen shows it), newest first

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="compare-chooser"):
            yield Static("Compare runs: tick two or more (Space or Enter ticks), then Compare.", markup=False)
            # plain text: a folder name may hold [brackets]
            yield SelectionList(*(Selection(Content(label.strip()), folder) for folder, label in self.choices),
                                id="compare-choices")
            # the ticked and unticked boxes differ only in colour: say in words which are ticked
            yield Static(self._ticked_text([]), id="compare-ticked", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Compare", id="compare-go", compact=True, variant="primary")
                yield Button("Cancel", id="cancel", compact=True)

    def _ticked_text(self, ticked: list[Path]) -> str:
        if not ticked:
            return "none ticked yet"
        from tui_lora.places import display_path

        names = [display_path(folder) for folder, _ in self.choices if folder in ticked]
        return f"{len(names)} ticked: {', '.join(names)}"

    @on(SelectionList.SelectedChanged, "#compare-choices")
    def _ticks_changed(self, event: SelectionList.SelectedChanged) -> None:
        self.query_one("#compare-ticked", Static).update(self._ticked_text(event.selection_list.selected))

    @on(Button.Pressed, "#compare-go")
    def _compare(self) -> None:
        choices = self.query_one("#compare-choices", SelectionList)
        ticked = set(choices.selected)
        # in the order listed, not the order ticked: the marks a, b, c… then follow the list
        folders = [str(folder) for folder, _ in self.choices if folder in ticked]
        if len(folders) < 2:
            self.notify("tick two runs or more to compare (Space ticks the highlighted one)", title="Compare",
                        severity="warning")
            choices.focus()  # back where the ticking is done
            return
        try:
            runs = compare.compare(folders)
        except (UserError, OSError) as exc:  # a folder gone or damaged since the list was made
            self.notify(display_path_words(first_line(exc)), title="Cannot compare", severity="error")
            return
        self.dismiss(runs)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class CurvesPlot(Static):
    """Every run's curves on one plot, drawn again at the width the plot is given."""

    def __init__(self, runs: list[RunCurves], **kwargs) -> None:
        super().__init__("", **kwargs)
        self.runs = runs

    def draw(self) -> None:
        # A third of the screen's height, so the table starts in sight at 80x24; the height comes from the
        # screen, not from this widget, so drawing again never changes what it is drawn for.
        rows = max(6, min(16, self.screen.size.height // 3))
        text = compare.plot_text(self.runs, width=max(20, self.content_size.width), height=rows)
        text.rstrip()  # its last newline would be a blank line above the table
        self.update(text)

    def on_resize(self) -> None:
        self.draw()


def settings_text(runs: list[RunCurves]) -> Text:
    """The settings that differ, a column a run under its mark, aligned; or one line saying there are none."""
    header, *rows = compare.settings_rows(runs)
    if not rows:
        return Text(SAME_SETTINGS)
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    text = Text()
    for number, row in enumerate((header, *rows)):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        text.append(line + ("\n" if number < len(rows) else ""), style="bold" if number == 0 else "")
    return text


class CompareScreen(Screen):
    """The chosen runs side by side, read once when chosen (a finished run does not change; one still training is
    as it was then: compare again for more)."""

    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, runs: list[RunCurves]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        yield Static(f"[b]tui-lora[/b]  compare {len(self.runs)} runs", id="step-title")
        with VerticalScroll(id="compare-body"):
            yield CurvesPlot(self.runs, id="compare-plot")
            yield Static("Figures", classes="group-title")
            # the run column stays put while ←→ bring the other columns in at 80 columns
            yield DataTable(id="compare-table", cursor_type="none", zebra_stripes=True, fixed_columns=1)
            yield Static("Settings that differ", classes="group-title")
            yield Static(settings_text(self.runs), id="compare-settings")
        yield Static(COMPARE_HELP, id="help-line", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        header, *rows = compare.table_rows(self.runs)
        table = self.query_one("#compare-table", DataTable)
        table.add_columns(*header)
        table.add_rows(rows)
        self.call_after_refresh(self.query_one(CurvesPlot).draw)  # once the plot has its width

    def on_resize(self) -> None:
        # a taller or shorter screen changes the plot's height even when its width stays the same
        self.query_one(CurvesPlot).draw()

    def action_back(self) -> None:
        self.dismiss()
