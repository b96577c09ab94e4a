"""What every wizard step shares: a title, its settings, a help line, Back and Next.

A step lists the run-file keys it edits in FIELDS; the base class builds a SettingField
for each, keeps their problem lines current as the draft changes, and refuses to move
on while one of them holds a value its field cannot take.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static

from tui_lora.tui.draft import field_spec
from tui_lora.tui.widgets.setting_field import SettingField

STEP_TITLES = ("Model", "Source", "Quantisation", "LoRA", "Data", "Training", "Review")

# Widgets that edit a setting without being its SettingField: their help is that setting's.
WIDGET_KEYS = {"target-choices": "lora.target_modules", "source-choice": "hub.source",
               "quant-choice": "quantization.load_in_4bit"}
WIDGET_HELP = {
    "inspect": "Read the model's config (no weights): architecture, size, the layers LoRA can adapt.",
    "test-connection": "Check the endpoint, and whether the model and data ids exist there (tui-lora hub check).",
    "preview": "Encode the first records with the run's own code and show one example, trained tokens highlighted.",
    "back": "Back to the previous step (Esc); nothing typed is lost.",
    "next": "On to the next step (Ctrl+N; keys 1-7 or a click on the step bar go to any step); a value a field "
            "cannot take keeps you here.",
    "save": "Save the run file as a preset (Ctrl+S).",
    "issues": "Enter on a problem goes to its field.",
}


class StepScreen(Screen):
    TITLE: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[str, ...]] = ()
    HELP: ClassVar[dict[str, str]] = {}  # this step's own help for a widget id, over WIDGET_HELP
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n", "next", "Next"),
        # Page keys scroll the step from wherever the focus is (a button or a checkbox has no use for them).
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        # A text box takes digits as text first, so these only act outside one.
        *(Binding(str(number), f"go_to({number})", f"Step {number}", show=False) for number in range(1, 8)),
    ]

    @property
    def draft(self):
        return self.app.draft

    @property
    def number(self) -> int:
        return STEP_TITLES.index(self.TITLE) + 1

    def compose(self) -> ComposeResult:
        yield Static(self._title_line(), id="step-title")
        body = VerticalScroll(id="step-body")
        body.can_focus = False  # Tab goes straight to the first setting, not to the scroll area
        with body:
            yield from self.body()
        yield Static("", id="help-line")
        with Horizontal(id="step-buttons"):
            yield Button("‹ Back", id="back", compact=True)
            yield Button("Next ›", id="next", compact=True, variant="primary")
        yield Footer()

    def _title_line(self) -> Content:
        """"tui-lora  4/7  Model › Source › … › Review" with this step in bold: where am I, what is left."""
        parts = [Content.styled("tui-lora", "bold"), Content(f"  {self.number}/{len(STEP_TITLES)}  ")]
        for position, title in enumerate(STEP_TITLES):
            if position:
                parts.append(Content(" › "))
            # Each name is a link: a click goes to that step (as its number key does).
            link = f"screen.go_to({position + 1})"
            parts.append(Content.styled(title, "bold reverse") if title == self.TITLE
                         else Content.from_markup(f"[@click={link}]$title[/]", title=title))
        return Content.assemble(*parts)

    def body(self) -> ComposeResult:
        for key in self.FIELDS:
            yield self.setting(key)

    def setting(self, key: str, **options) -> SettingField:
        return SettingField(key, self.draft.get(key), **options)

    def on_mount(self) -> None:
        self.refresh_issues()

    def on_screen_resume(self) -> None:
        # Another step (or the review's jump) may have changed values shown here.
        for field in self.query(SettingField):
            field.show(self.draft.get(field.key))
        self.refresh_issues()
        self.draft_changed()

    # ------------------------------------------------------------ the draft

    @on(SettingField.Edited)
    def _edited(self, event: SettingField.Edited) -> None:
        if self.app.edit(event.key, event.value):
            self.refresh_issues()
            self.draft_changed(event.key)

    def set_values(self, values: dict) -> bool:
        """Edit several keys at once (a choice that stands for a few settings); the fields follow."""
        changed = False
        for key, value in values.items():
            changed |= self.app.edit(key, value)
        if changed:
            for field in self.query(SettingField):
                field.show(self.draft.get(field.key))
            self.refresh_issues()
            self.draft_changed(next(iter(values)) if len(values) == 1 else None)
        return changed

    def edited_keys(self) -> list[str]:
        """The keys this step edits (a value one of them cannot take keeps the user on the step)."""
        return [field.key for field in self.query(SettingField)]

    def refresh_issues(self) -> None:
        check = self.draft.check
        for field in self.query(SettingField):
            field.show_issues(check.for_key(field.key))

    def draft_changed(self, key: str | None = None) -> None:
        """Hook for steps that show something derived from the draft (estimates, hints)."""

    # ------------------------------------------------------------ help

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """The help line always speaks of what has the focus; F1 follows it."""
        widget = event.widget
        field = next((node for node in widget.ancestors_with_self if isinstance(node, SettingField)), None)
        key = field.key if field is not None else WIDGET_KEYS.get(widget.id or "", "")
        self.app.focused_key = key
        if key:
            self.query_one("#help-line", Static).update(f"{key}: {field_spec(key).metadata['help']}  (F1: more)")
        else:
            self.query_one("#help-line", Static).update(self.HELP.get(widget.id or "")
                                                        or WIDGET_HELP.get(widget.id or "", ""))
        # The help line may have grown a line and shrunk the step's view under the widget just scrolled
        # into it: scroll again once the new layout is in place.
        if self.query_one("#step-body") in widget.ancestors:
            self.call_after_refresh(widget.scroll_visible, animate=False)

    @on(Input.Submitted)
    def _enter_moves_on(self, event: Input.Submitted) -> None:
        self.focus_next()

    def focus_key(self, key: str) -> bool:
        fields = [field for field in self.query(SettingField) if field.key == key]
        if not fields:
            return False
        fields[0].editor.focus()
        fields[0].scroll_visible()
        return True

    # ------------------------------------------------------------ moving

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()

    @on(Button.Pressed, "#next")
    def _next_pressed(self) -> None:
        self.action_next()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_page(self, direction: int) -> None:
        body = self.query_one("#step-body", VerticalScroll)
        if direction > 0:
            body.scroll_page_down(animate=False)
        else:
            body.scroll_page_up(animate=False)

    def action_go_to(self, number: int) -> None:
        """Step `number` at once; leaving forward is refused as Next refuses it (a value a field cannot take)."""
        if number == self.number:
            return
        if number > self.number:
            blocking = self.draft.check.blocking(self.edited_keys())
            if blocking:
                self.notify(f"{blocking[0]}", title="Fix this first", severity="error")
                self.focus_key(blocking[0].key)
                return
        self.app.go_to_step(number)

    def action_next(self) -> None:
        blocking = self.draft.check.blocking(self.edited_keys())
        if blocking:
            self.notify(f"{blocking[0]}", title="Fix this first", severity="error")
            self.focus_key(blocking[0].key)
            return
        self.app.next_step(self)
