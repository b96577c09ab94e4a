"""Step 1: which model, and what it is (architecture, size, the layers LoRA can adapt)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.widgets import Button, Input, Static

from tui_lora.assets import is_builtin
from tui_lora.config.rules import looks_local
from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.step import StepScreen

TRUST_WARNING = ("✗ trust_remote_code is on: Python files shipped with this model will run on this machine "
                 "with your permissions when it loads. F1 explains when that is needed.")


def describe_model(info: dict) -> str:
    """The probe's answer as a few lines: what it is, how big, what LoRA can target."""
    from tui_lora.estimate import format_count

    if not info.get("ok"):
        return f"✗ {info.get('error', 'the model could not be inspected')}"
    output = info.get("output_layer") or ""
    names = [entry["name"] for entry in info["linear"] if entry["name"] != output]
    context = info.get("context_length")
    lines = [
        f"{info['architecture']} ({info['model_type']}) · {format_count(info['parameters'])} parameters · "
        f"{info['num_layers']} layers · hidden {info['hidden_size']} · vocab {info['vocab_size']:,}"
        + (f" · context {context:,}" if context else ""),
        "LoRA can target: " + " ".join(dict.fromkeys(names)) + (f"   (output layer: {output})" if output else ""),
    ]
    return "\n".join(lines)


class ModelScreen(StepScreen):
    TITLE = "Model"
    FIELDS = ("model.name_or_path", "model.revision", "model.dtype", "model.trust_remote_code",
              "model.attn_implementation", "model.device_map", "tokenizer.name_or_path")

    _pause = None

    def body(self) -> ComposeResult:
        yield self.setting("model.name_or_path", label="model",
                           placeholder="Qwen/Qwen2.5-0.5B-Instruct, /models/my-model or builtin:tiny-chat")
        yield Static(TRUST_WARNING, id="trust-warning", markup=False)
        for key in self.FIELDS[1:-1]:
            yield self.setting(key)
        yield self.setting("tokenizer.name_or_path", label="tokenizer", placeholder="(the model's own)")
        yield Button("Inspect model", id="inspect", compact=True)
        yield Static("", id="model-info", markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        self.draft_changed()
        self._inspect_if_cheap()

    def draft_changed(self, key: str | None = None) -> None:
        self.query_one("#trust-warning").display = bool(self.draft.get("model.trust_remote_code"))
        if key in ("model.name_or_path", "model.revision", "model.trust_remote_code"):
            # Wait for a pause in typing before reading a local model's config.
            if self._pause is not None:
                self._pause.stop()
            self._pause = self.set_timer(0.6, self._inspect_if_cheap)
        self._show_info()

    def _inspect_if_cheap(self) -> None:
        """Local and builtin models are read at once; a hub id waits for Enter or the button,
        so typing a name does not send a request per keystroke."""
        ref = str(self.draft.get("model.name_or_path"))
        if ref and (is_builtin(ref) or looks_local(ref)) and self.app.known("model") is None:
            self.app.ask("model")
            self._show_info()

    @on(Button.Pressed, "#inspect")
    def _inspect(self) -> None:
        if not self.draft.get("model.name_or_path"):
            self.notify("enter a model first", severity="warning")
            return
        self.app.ask("model")
        self._show_info()

    @on(Input.Submitted, "#model--name_or_path")
    def _inspect_on_enter(self) -> None:
        if self.draft.get("model.name_or_path") and self.app.known("model") is None:
            self.app.ask("model")
            self._show_info()

    @on(ProbeAnswered)
    def _model_known(self, message: ProbeAnswered) -> None:
        if message.kind == "model":
            self._show_info()

    def _show_info(self) -> None:
        info = self.app.known("model")
        panel = self.query_one("#model-info", Static)
        if info is not None:
            panel.update(describe_model(info))
        elif self.app.asking("model"):
            panel.update("reading the model's config (no weights are loaded)…")
        elif self.draft.get("model.name_or_path"):
            panel.update("Inspect (or Enter on the model field) reads its config: architecture, size and the "
                         "layers LoRA can adapt. Nothing large is downloaded.")
        else:
            panel.update("")
