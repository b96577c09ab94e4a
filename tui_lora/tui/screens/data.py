"""Step 5: the conversations — where they are, how they are read and cut, and what gets trained.

The preview encodes the first records in a child process with the run's own code and
shows one example the way `tui-lora data` does: trained tokens highlighted.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.widgets import Button, Static

from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.step import StepScreen

PREVIEW_HINT = "Preview reads the first records and shows one example with its trained tokens highlighted."


def describe_data(answer: dict) -> str:
    if not answer.get("ok"):
        return f"✗ {answer.get('error', 'the data could not be read')}"
    sampled = " (the first records only)" if answer.get("sampled") else ""
    lines = [f"format {answer['format']} · {answer['records']:,} records read{sampled} · "
             f"{answer['skipped']:,} skipped · {answer['truncated']:,} shortened to fit max_length"]
    for reason, count in answer.get("skip_reasons", {}).items():
        lines.append(f"  {count:,} × {reason}")
    sources = answer.get("sources") or []
    if len(sources) > 1:  # [[data.sources]] (edited in the run file): what each gave, the example from each in turn
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
    MORE = ("data.max_samples", "data.streaming", "data.max_bad_share", "data.map_batch_size", "data.num_proc",
            "collator.padding", "collator.pad_to_multiple_of", "collator.packing")
    MAPPING = ("data.messages_column", "data.role_key", "data.content_key", "data.user_roles",
               "data.assistant_roles", "data.system_roles", "data.prompt_column", "data.input_column",
               "data.reply_column", "data.system_column")
    FIELDS = BASIC + MORE + MAPPING

    def body(self) -> ComposeResult:
        yield self.setting("data.path", label="path",
                           placeholder="data.jsonl, a folder, BelleGroup/multiturn_chat_0.8M or builtin:belle-sample")
        for key in self.BASIC[1:]:
            yield self.setting(key)
        # The preview sits right after the settings that change what it shows; the rest are for tuning.
        yield Button("Preview", id="preview", compact=True)
        yield Static(PREVIEW_HINT, id="data-summary", markup=False)
        yield Static("", id="data-example")
        yield Static("More data settings", classes="group-title")
        for key in self.MORE:
            yield self.setting(key)
        yield Static("Records in a layout of their own (column mapping)", classes="group-title")
        for key in self.MAPPING:
            yield self.setting(key)

    @on(Button.Pressed, "#preview")
    def _preview(self) -> None:
        if self.draft.check.blocking(self.FIELDS):
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
