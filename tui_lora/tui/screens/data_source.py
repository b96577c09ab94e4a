"""The data step's editor for one of several data sets: one [[data.sources]] table.

Its fields are that table's keys (data.sources[N].path, .weight, the column mapping …), edited in
the draft as they are typed and checked by the same validator as every other field. "Show the
first record" asks a child process for the source's first record, raw and as the conversation its
mapping and system prompt make of it, so a mapping is checked against the file before any run.
"""

from __future__ import annotations

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui_lora.config.schema import MAPPING_KEYS
from tui_lora.tui.draft import source_field_key
from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.widgets.setting_field import SettingField

OWN_KEYS = ("path", "format", "split", "weight", "max_samples", "system_prompt")
DONE_HINT = "Back to the data step (Esc); what was typed is kept."
RECORD_HINT = "Show the first record: the file's first record, and the conversation this mapping makes of it."
PLACEHOLDERS = {"path": "a .jsonl file, a folder, a hub data set id or builtin:belle-sample",
                "system_prompt": "empty: data.system_prompt"}


def describe_record(answer: dict) -> Text:
    """A source's first record as the records probe read it: its columns, the raw JSON, the conversation."""
    text = Text()
    if answer.get("columns"):
        text.append(f"columns: {', '.join(answer['columns'])}\n", style="bold")
        text.append(answer["record"] + "\n")
    if answer.get("error"):
        text.append(f"✗ {answer['error']}", style="bold")
        return text
    text.append(f"as a conversation ({answer['format']}):\n", style="bold")
    for message in answer["messages"]:
        text.append(f"{message['role']:>9}: ", style="bold")
        text.append(message["content"].replace("\n", " ⏎ ") + "\n")
    return text


class RecordView(Static):
    """The first record, brought into view (its top first) once it is laid out at its new height."""

    _pending = False

    def show(self, text: Text) -> None:
        self._pending = True
        self.update(text)
        self.call_after_refresh(self._bring_into_view)  # the height may stay the same: then no Resize comes

    def say(self, line: str) -> None:
        """A line that is not a record (the hint, "reading…"): shown where it is."""
        self._pending = False
        self.update(line)

    def on_resize(self) -> None:
        self._bring_into_view()
        self._pending = False

    def _bring_into_view(self) -> None:
        if self._pending:
            self.scroll_visible(animate=False, top=True)


class DataSourceDialog(ModalScreen[None]):
    """Edit data set `number` of the draft's [[data.sources]]; Esc or Done goes back to the data step."""

    # A modal screen does not pass keys on to the app's bindings: help is bound here too.
    BINDINGS = [Binding("escape", "dismiss", "Done"), Binding("f1", "help", "Help")]

    def __init__(self, number: int, focus: str = "path") -> None:
        super().__init__()
        self.number, self.first_focus = number, focus

    @property
    def draft(self):
        return self.app.draft

    def key(self, name: str) -> str:
        return source_field_key(self.number, name)

    def compose(self) -> ComposeResult:
        count = len(self.draft.sources())
        with Vertical(id="source-dialog"):
            yield Static(f"[b]Data set {self.number} of {count}[/b]  ([[data.sources]] table {self.number})",
                         classes="dialog-title")
            with VerticalScroll(id="source-body"):
                for name in OWN_KEYS:
                    yield self._field(name)
                yield Static("Records in a layout of their own (column mapping)", classes="group-title")
                for name in MAPPING_KEYS:
                    yield self._field(name)
                yield Button("Show the first record", id="first-record", compact=True)
                yield RecordView(RECORD_HINT, id="record-view")
            yield Static("", id="source-help")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Done", id="done", compact=True, variant="primary")

    def _field(self, name: str) -> SettingField:
        key = self.key(name)
        return SettingField(key, self.draft.get(key), label=name, placeholder=PLACEHOLDERS.get(name, ""))

    def on_mount(self) -> None:
        self._refresh_issues()
        self.focus_key(self.key(self.first_focus))

    def focus_key(self, key: str) -> bool:
        """Focus the field of `key` (as a step's focus_key does); False when this editor has none."""
        for field in self.query(SettingField):
            if field.key == key:
                field.editor.focus()
                self.call_after_refresh(field.scroll_visible, animate=False)
                return True
        return False

    def action_help(self) -> None:
        self.app.action_help()

    # ------------------------------------------------------------ editing

    @on(SettingField.Edited)
    def _edited(self, event: SettingField.Edited) -> None:
        event.stop()
        if self.app.edit(event.key, event.value):
            self._refresh_issues()
            if self.app.known("records") is None:
                self.query_one("#record-view", RecordView).say(RECORD_HINT)

    def _refresh_issues(self) -> None:
        check = self.draft.check
        for field in self.query(SettingField):
            field.show_issues(check.for_key(field.key))

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        field = next((node for node in event.widget.ancestors_with_self if isinstance(node, SettingField)), None)
        self.app.focused_key = field.key if field is not None else ""
        if field is not None:
            shown = f"{field.key}: {field.help}  (F1: more)"
        else:
            shown = RECORD_HINT if event.widget.id == "first-record" else DONE_HINT
        self.query_one("#source-help", Static).update(Text(shown))

    # ------------------------------------------------------------ the first record

    @on(Button.Pressed, "#first-record")
    def _ask_first_record(self) -> None:
        self.app.ask("records")
        self.query_one("#record-view", RecordView).say("reading the first record…")

    @on(ProbeAnswered)
    def _answered(self, message: ProbeAnswered) -> None:
        if message.kind != "records":
            return
        answer = self.app.known("records")
        if answer is None:  # about an earlier draft; the one now is asked when the button is pressed again
            return
        view = self.query_one("#record-view", RecordView)
        if not answer.get("ok"):
            view.show(Text(f"✗ {answer.get('error', 'the first record could not be read')}"))
            return
        sources = answer.get("sources") or []
        view.show(describe_record(sources[self.number - 1]) if self.number <= len(sources)
                  else Text("✗ this data set is no longer in the run file"))

    @on(Button.Pressed, "#done")
    def _done(self) -> None:
        self.dismiss()

