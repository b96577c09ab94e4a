"""Step 2: where hub ids come from — Hugging Face, a mirror, ModelScope, the cache only, or nowhere."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.widgets import Button, RadioButton, RadioSet, Static

from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.step import StepScreen
from tui_lora.tui.widgets.choices import mark_chosen

MIRROR = "https://hf-mirror.com"

# Each choice is a few hub.* values; the fields below the choice show (and edit) them.
CHOICES = (
    ("huggingface", "Hugging Face (huggingface.co)", {"hub.source": "huggingface", "hub.endpoint": "",
                                                      "hub.offline": False}),
    ("mirror", f"A Hugging Face mirror (HF_ENDPOINT), e.g. {MIRROR}", {"hub.source": "huggingface",
                                                                       "hub.offline": False}),
    ("modelscope", "ModelScope (modelscope.cn)", {"hub.source": "modelscope", "hub.endpoint": "",
                                                  "hub.offline": False}),
    ("offline", "Offline: only what is already in the cache", {"hub.offline": True}),
    ("local", "Local files only (no hub ids)", {"hub.source": "local", "hub.endpoint": "", "hub.offline": False}),
)


def current_choice(draft) -> str:
    if draft.get("hub.source") == "local":
        return "local"
    if draft.get("hub.offline"):
        return "offline"
    if draft.get("hub.source") == "modelscope":
        return "modelscope"
    return "mirror" if draft.get("hub.endpoint") else "huggingface"


class SourceScreen(StepScreen):
    TITLE = "Source"
    FIELDS = ("hub.source", "hub.endpoint", "hub.offline", "hub.timeout", "hub.cache_dir")

    def body(self) -> ComposeResult:
        chosen = current_choice(self.draft)
        with RadioSet(id="source-choice", compact=True):
            for name, label, _ in CHOICES:
                yield RadioButton(label, value=name == chosen, id=f"source-{name}")
        yield self.setting("hub.endpoint", placeholder="empty: https://huggingface.co")
        yield self.setting("hub.timeout")
        yield self.setting("hub.cache_dir", placeholder="empty: the library's default cache")
        yield Button("Test connection", id="test-connection", compact=True)
        yield Static("Test connection checks the endpoint and whether the model and data ids exist there.",
                     id="hub-report", markup=False)

    @on(RadioSet.Changed, "#source-choice")
    def _chosen(self, event: RadioSet.Changed) -> None:
        mark_chosen(event.radio_set)
        name = (event.pressed.id or "").removeprefix("source-")
        values = dict(next(values for choice, _, values in CHOICES if choice == name))
        if name == "mirror" and not self.draft.get("hub.endpoint"):
            values["hub.endpoint"] = MIRROR
        if name == "offline" and self.draft.get("hub.source") == "local":
            values["hub.source"] = "huggingface"
        self.set_values(values)

    def on_mount(self) -> None:
        super().on_mount()
        mark_chosen(self.query_one("#source-choice", RadioSet))

    def draft_changed(self, key: str | None = None) -> None:
        # Typing a mirror URL (or clearing it) moves the choice above along with it.
        button = self.query_one(f"#source-{current_choice(self.draft)}", RadioButton)
        if not button.value:
            button.value = True
        mark_chosen(self.query_one("#source-choice", RadioSet))

    @on(Button.Pressed, "#test-connection")
    def _test(self) -> None:
        self.app.ask("hub")
        self.query_one("#hub-report", Static).update("checking…")

    @on(ProbeAnswered)
    def _hub_checked(self, message: ProbeAnswered) -> None:
        if message.kind != "hub":
            return
        answer = self.app.known("hub")
        if answer is None:  # the draft changed while the check ran: its answer is about another setting
            return
        report = self.query_one("#hub-report", Static)
        if "lines" in answer:
            report.update(("✓ " if answer["ok"] else "✗ ") + "\n".join(answer["lines"]))
        else:
            report.update(f"✗ {answer.get('error', 'the check failed')}")
