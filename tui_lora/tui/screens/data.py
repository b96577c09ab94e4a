"""Step 5: the conversations — where they are, how they are read and cut, and what gets trained.

The preview encodes the first records in a child process with the run's own code and
shows one example the way `tui-lora data` does: trained tokens highlighted.
"""

from __future__ import annotations

from dataclasses import fields

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

from tui_lora.config.schema import MAPPING_KEYS, PER_SOURCE_KEYS, DataSettings, DataSource
from tui_lora.tui.draft import source_field_key, source_key
from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.data_source import DataSourceDialog
from tui_lora.tui.screens.step import StepScreen
from tui_lora.tui.widgets.setting_field import SettingField

PREVIEW_HINT = "Preview reads the first records and shows one example with its trained tokens highlighted."
SOURCES_HINT = ("One data set: its settings are below. Several (Belle and your own conversations, each with its "
                "own layout and weight): Add a data set.")


def source_line(number: int, source: DataSource, settings: DataSettings, problems: int = 0) -> str:
    """One data set of several, in a line: where, how it is read, its share of the mix."""
    parts = [f"{number}. {source.path or '(no path yet)'}"]
    if source.format != "auto":
        parts.append(source.format)
    if source.messages_column or source.prompt_column:
        parts.append(f"mapped ({source.messages_column or source.prompt_column})")
    if settings.mix != "concat" and len(settings.sources) > 1:
        parts.append(f"weight {source.weight:g} ({settings.shares()[number - 1]:.0%})")
    if source.max_samples:
        parts.append(f"first {source.max_samples:,}")
    if source.system_prompt:
        parts.append("its own system prompt")
    if problems:
        parts.append(f"✗ {problems} problem(s)")
    return " · ".join(parts)


def mix_lines(settings: DataSettings) -> list[str]:
    """How the run's data sets combine and each one's line (the review's summary); empty for one data set."""
    if not settings.sources:
        return []
    held = "of each data set" if settings.validation_per_source else "of all of them together"
    lines = [f"Data: {settings.mix_rule() or '1 data set'}; validation {settings.validation_split:.0%} {held}"]
    return lines + [f"  {source_line(number, source, settings)}" for number, source in enumerate(settings.sources, 1)]


def describe_data(answer: dict) -> str:
    if not answer.get("ok"):
        return f"✗ {answer.get('error', 'the data could not be read')}"
    sampled = " (the first records only)" if answer.get("sampled") else ""
    lines = [f"format {answer['format']} · {answer['records']:,} records read{sampled} · "
             f"{answer['skipped']:,} skipped · {answer['truncated']:,} shortened to fit max_length"]
    for reason, count in answer.get("skip_reasons", {}).items():
        lines.append(f"  {count:,} × {reason}")
    sources = answer.get("sources") or []
    if len(sources) > 1:  # [[data.sources]]: what each gave (the examples come from each in turn)
        for number, source in enumerate(sources, 1):
            lines.append(f"source {number}: {source['path']} ({source['format']}) · {source['records']:,} records · "
                         f"{source['skipped']:,} skipped · {source['truncated']:,} shortened")
    if answer.get("used_default_template"):
        lines.append("the tokenizer has no chat template: tui-lora's default ChatML is used (and saved)")
    return "\n".join(lines)


class DataScreen(StepScreen):
    TITLE = "Data"
    # what the preview depends on first; then tuning; then the column mapping, last, as most data needs none
    BASIC = ("data.path", "data.format", "data.split", "data.validation_split", "tokenizer.max_length",
             "tokenizer.truncation", "data.train_on", "data.system_prompt", "data.system_prompt_mode")
    MIXING = ("data.mix", "data.validation_per_source")
    MORE = ("data.max_samples", "data.streaming", "data.max_bad_share", "data.map_batch_size", "data.num_proc",
            "collator.padding", "collator.pad_to_multiple_of", "collator.packing", "collator.group_by_length")
    MAPPING = tuple(f"data.{name}" for name in MAPPING_KEYS)
    FIELDS = BASIC + MIXING + MORE + MAPPING
    HELP = {"sources": "The run's data sets ([[data.sources]]): Enter on one edits it.",
            "add-source": "Another data set in this run, with its own file, layout, weight and system prompt (the "
                          "one above becomes the first of the list).",
            "edit-source": "Edit the highlighted data set: its path, weight, cap, system prompt and column mapping.",
            "remove-source": "Take the highlighted data set out of the run (it asks first)."}
    # What each data set sets for itself: here in [data] for one, in its own editor when there are several.
    ONE_SOURCE = tuple(f"data.{name}" for name in PER_SOURCE_KEYS)

    def setting(self, key: str, **options) -> SettingField:
        field = super().setting(key, **options)
        field.display = self._shown(key)  # from the start, so focus never lands on a hidden field
        return field

    def _shown(self, key: str) -> bool:
        """Whether this step shows `key` now: with several data sets, the [data] keys each one sets for itself
        are hidden (unless a hand-edited file sets them, where the validator's line says to move them), and
        the keys about mixing are shown."""
        several = bool(self.draft.sources())
        if key in self.ONE_SOURCE:
            return not several or self.draft.names(key)
        if key in self.MIXING:
            return several or self.draft.names(key)
        if key == "collator.group_by_length":  # it matters for padded batches only
            return self.draft.get("collator.packing") == "off" or self.draft.names(key)
        return True

    def body(self) -> ComposeResult:
        yield self.setting("data.path", label="path",
                           placeholder="data.jsonl, a folder, BelleGroup/multiturn_chat_0.8M or builtin:belle-sample")
        yield Static(SOURCES_HINT, id="sources-title", markup=False)
        yield OptionList(id="sources", compact=True)
        with Horizontal(id="source-buttons"):
            yield Button("Add a data set", id="add-source", compact=True)
            yield Button("Edit", id="edit-source", compact=True)
            yield Button("Remove", id="remove-source", compact=True)
        for key in self.MIXING:
            yield self.setting(key)
        for key in self.BASIC[1:]:
            yield self.setting(key)
        # The preview sits right after the settings that change what it shows; the rest are for tuning.
        yield Button("Preview", id="preview", compact=True)
        yield Static(PREVIEW_HINT, id="data-summary", markup=False)
        yield Static("", id="data-example")
        yield Static("More data settings", classes="group-title")
        for key in self.MORE:
            yield self.setting(key)
        mapping_title = Static("Records in a layout of their own (column mapping)", classes="group-title",
                               id="mapping-title")
        mapping_title.display = not self.draft.sources()
        yield mapping_title
        for key in self.MAPPING:
            yield self.setting(key)

    def on_mount(self) -> None:
        super().on_mount()
        self._show_sources()
        if self.draft.sources():  # the first thing on the step, in place of the hidden data.path
            self.query_one("#sources", OptionList).focus()

    # ------------------------------------------------------------ several data sets

    def _show_sources(self) -> None:
        """One data set: its keys on this step. Several: a line each (Enter edits one) and how they mix."""
        several = bool(self.draft.sources())
        for field in self.query(SettingField):
            field.display = self._shown(field.key)
        self.query_one("#mapping-title").display = not several
        self.query_one("#edit-source").display = self.query_one("#remove-source").display = several
        listing = self.query_one("#sources", OptionList)
        listing.display = several
        title = self.query_one("#sources-title", Static)
        if not several:
            title.update(SOURCES_HINT)
            return
        settings = self.draft.check.config.data
        title.update(f"Data sets: {settings.mix_rule() or '1 data set'}. Enter on one edits it.")
        highlighted = listing.highlighted
        listing.clear_options()
        listing.add_options([Option(source_line(number, source, settings, self._problems(number)),
                                    id=f"source-{number}")
                             for number, source in enumerate(settings.sources, 1)])
        if listing.option_count:
            listing.highlighted = min(highlighted or 0, listing.option_count - 1)

    def _problems(self, number: int) -> int:
        prefix = source_field_key(number, "")
        return sum(1 for issue in self.draft.check.issues if issue.key.startswith(prefix))

    def edited_keys(self) -> list[str]:
        """This step's fields and every data set's keys: a value one cannot take keeps the user here."""
        names = [f.name for f in fields(DataSource)]
        return super().edited_keys() + [source_field_key(number, name)
                                        for number in range(1, len(self.draft.sources()) + 1) for name in names]

    def focus_key(self, key: str) -> bool:
        in_source = source_key(key)
        if in_source is None:
            return super().focus_key(key)
        if in_source[0] > len(self.draft.sources()):
            return False
        self.app.push_screen(DataSourceDialog(*in_source))
        return True

    @on(Button.Pressed, "#add-source")
    def _add_source(self) -> None:
        number = self.app.add_source()
        self._show_sources()
        self.app.push_screen(DataSourceDialog(number))

    @on(OptionList.OptionSelected, "#sources")
    def _source_chosen(self, event: OptionList.OptionSelected) -> None:
        self.app.push_screen(DataSourceDialog(event.option_index + 1))

    @on(Button.Pressed, "#edit-source")
    def _edit_source(self) -> None:
        self.app.push_screen(DataSourceDialog((self.query_one("#sources", OptionList).highlighted or 0) + 1))

    @on(Button.Pressed, "#remove-source")
    def _remove_source(self) -> None:
        from tui_lora.tui.screens.dialogs import ConfirmDialog

        number = (self.query_one("#sources", OptionList).highlighted or 0) + 1
        path = self.draft.get(source_field_key(number, "path")) or "(no path yet)"
        last = len(self.draft.sources()) == 2

        def answered(choice: str | None) -> None:
            if choice == "remove":
                self.app.remove_source(number)
                for field in self.query(SettingField):
                    field.show(self.draft.get(field.key))
                self.refresh_issues()
                self.draft_changed("data.sources")
                self.focus_key("data.path" if not self.draft.sources() else "data.mix")

        then = " The other becomes the run's one data set again, with its settings here." if last else ""
        self.app.push_screen(ConfirmDialog(f"Remove data set {number} ({path}) and its settings?{then}",
                                           [("remove", "Remove"), ("keep", "Keep")], focus="keep"), answered)

    @on(Button.Pressed, "#preview")
    def _preview(self) -> None:
        if self.draft.check.blocking(self.edited_keys()):
            self.notify("fix the values marked above first", severity="warning")
            return
        self.app.ask("data")
        self.query_one("#data-summary", Static).update("reading and encoding the first records…")
        self.query_one("#data-example", Static).display = False

    @on(ProbeAnswered)
    def _data_read(self, message: ProbeAnswered) -> None:
        if message.kind == "data":
            self._show_preview()

    def draft_changed(self, key: str | None = None) -> None:
        self._show_sources()
        if key is not None and self.app.known("data") is None and not self.app.asking("data"):
            self.query_one("#data-summary", Static).update(PREVIEW_HINT)
            self.query_one("#data-example", Static).display = False

    def _show_preview(self) -> None:
        from rich.text import Text

        from tui_lora.data.preview import example_text

        answer = self.app.known("data")
        if answer is None:
            return
        self.query_one("#data-summary", Static).update(describe_data(answer))
        examples = answer.get("examples") or []
        example = self.query_one("#data-example", Static)
        example.display = bool(answer.get("ok") and examples)
        if not example.display:
            return
        first = examples[0]
        title = Text(f"example 1: {first['tokens']} tokens, {first['trained']} trained (highlighted)\n",
                     style="bold")
        example.update(title + example_text((text, trained) for text, trained in first["segments"]))
        self.call_after_refresh(example.scroll_visible)
