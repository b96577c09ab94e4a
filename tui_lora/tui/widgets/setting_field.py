"""One run-file setting on a wizard step: its name, an editor the schema picks, and its problems.

The editor follows the field's schema type: a checkbox for true/false, a drop-down for a
fixed set of choices, a text box for everything else. What the user types goes into the
draft as it is typed, and the problems shown under it come from the shared validator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

from tui_lora.config.load import ConfigIssue
from tui_lora.tui.draft import field_spec, parse_text, value_text


def editor_id(key: str) -> str:
    """A widget id for a setting key ("lora.r" -> "lora--r", "data.sources[2].path" -> "data--sources-2--path"):
    ids cannot hold dots or brackets."""
    return key.replace("[", "-").replace("]", "").replace(".", "--")


def _on_off(value: Any) -> str:
    # Said in words as well as by the tick, so the state reads the same without colour.
    return "on" if value else "off"


class SettingField(Vertical):
    """A labelled editor bound to one key of the draft."""

    @dataclass
    class Edited(Message):
        key: str
        value: Any

    def __init__(self, key: str, value: Any, label: str | None = None, placeholder: str = "") -> None:
        super().__init__(classes="setting")
        self.key = key
        self.spec = field_spec(key)
        self.label = label or key.rsplit(".", 1)[-1]
        self._initial = value
        self._placeholder = placeholder
        self._shown = ""

    @property
    def help(self) -> str:
        return self.spec.metadata["help"]

    def compose(self) -> ComposeResult:
        with Horizontal(classes="setting-row"):
            yield Label(self.label, classes="setting-label")
            yield self._make_editor(self._initial)
        yield Static("", classes="setting-issue")

    def _make_editor(self, value: Any):
        choices = self.spec.metadata["choices"]
        name = editor_id(self.key)
        if self.spec.type == "bool":
            return Checkbox(_on_off(value), value=bool(value), id=name, compact=True, classes="editor")
        if choices and len(choices) > 1:
            options = [(str(choice), choice) for choice in choices]
            known = value in choices
            # A hand-written file may hold a value that is not a choice: show it, never replace it.
            return Select(options, value=value if known else Select.NULL, allow_blank=not known,
                          prompt=f"{value!r} (not allowed)", id=name, compact=True, classes="editor")
        return Input(value_text(value), placeholder=self._placeholder, id=name, compact=True, classes="editor")

    @property
    def editor(self):
        return self.query_one(".editor")

    def show(self, value: Any) -> None:
        """Fill the editor from the draft (after going back, or after another field changed this one)."""
        # Setting the editor echoes an Edited message with the draft's own value: the draft ignores it.
        editor = self.editor
        if isinstance(editor, Checkbox):
            editor.value = bool(value)
            editor.label = _on_off(value)
        elif isinstance(editor, Select):
            if value in (self.spec.metadata["choices"] or ()):
                editor.value = value
        elif parse_text(self.key, editor.value) != value:
            editor.value = value_text(value)

    def show_issues(self, issues: list[ConfigIssue]) -> None:
        text = "\n".join(f"✗ {issue.message}" for issue in issues)
        if text == self._shown:
            return  # nothing new: skip the re-layout a Static update costs on every keystroke
        self._shown = text
        self.query_one(".setting-issue", Static).update(text)
        self.set_class(bool(issues), "-invalid")

    def _edited(self, value: Any) -> None:
        self.post_message(self.Edited(self.key, value))

    @on(Input.Changed, ".editor")
    def _text_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._edited(parse_text(self.key, event.value))

    @on(Checkbox.Changed, ".editor")
    def _checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        event.checkbox.label = _on_off(event.value)
        self._edited(event.value)

    @on(Select.Changed, ".editor")
    def _choice_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL:
            self._edited(event.value)
