"""Step 3: load the base model in 16-bit, 8-bit or 4-bit, with what each costs in GPU memory."""

from __future__ import annotations

import os
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.widgets import RadioButton, RadioSet, Static

from tui_lora.config.schema import QuantizationSettings
from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.step import StepScreen
from tui_lora.tui.widgets.choices import mark_chosen
from tui_lora.tui.widgets.setting_field import SettingField

MODES = (
    ("none", "None: 16-bit weights (LoRA)", {"quantization.load_in_8bit": False, "quantization.load_in_4bit": False}),
    ("8-bit", "8-bit (bitsandbytes LLM.int8, QLoRA 8-bit)", {"quantization.load_in_8bit": True,
                                                             "quantization.load_in_4bit": False}),
    ("4-bit", "4-bit (bitsandbytes NF4/FP4, QLoRA)", {"quantization.load_in_8bit": False,
                                                      "quantization.load_in_4bit": True}),
)
FOUR_BIT_KEYS = ("quantization.quant_type", "quantization.double_quant", "quantization.compute_dtype")


def current_mode(draft) -> str:
    """The choice in the run's own words (config.quantization.mode: "4-bit", "8-bit", "none"), from the two
    switches as the draft holds them. Not draft.check.config: there a value the schema refuses (a hand-edited
    load_in_4bit = "yes") has fallen back to its default, and the buttons show what the run file says."""
    return QuantizationSettings(load_in_8bit=draft.get("quantization.load_in_8bit"),
                                load_in_4bit=draft.get("quantization.load_in_4bit")).mode


def _button_id(mode: str) -> str:
    return "quant-" + mode.replace("-", "")  # "quant-4bit": a plain id


def cuda_visible() -> bool:
    """A cheap look for an NVIDIA GPU without importing torch (the model probe gives the exact answer)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def memory_table(info: dict, config, mode: str) -> str:
    from tui_lora.estimate import format_bytes, memory_estimate

    estimate = memory_estimate(info, config)
    rows = [f"  {'':8} {'weights':>10} {'LoRA+optim':>11} {'activations':>12} {'total':>10}"]
    for name, parts in estimate.items():
        marker = "▶" if name == mode else " "
        rows.append(f"{marker} {name:8} {format_bytes(parts['weights']):>10} "
                    f"{format_bytes(parts['adapter_and_optimizer']):>11} {format_bytes(parts['activations']):>12} "
                    f"{format_bytes(parts['total']):>10}")
    return "\n".join(rows)


class QuantizationScreen(StepScreen):
    TITLE = "Quantisation"
    FIELDS = ("quantization.load_in_8bit", "quantization.load_in_4bit") + FOUR_BIT_KEYS

    def body(self) -> ComposeResult:
        mode = current_mode(self.draft)
        with RadioSet(id="quant-choice", compact=True):
            for name, label, _ in MODES:
                yield RadioButton(label, value=name == mode, id=_button_id(name))
        for key in FOUR_BIT_KEYS:
            yield self.setting(key)
        yield Static("", id="cuda-warning", markup=False)
        yield Static("", id="memory", markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        self.app.ask_model_unless_known()
        self.draft_changed()

    @on(RadioSet.Changed, "#quant-choice")
    def _chosen(self, event: RadioSet.Changed) -> None:
        values = next(values for name, _, values in MODES if _button_id(name) == event.pressed.id)
        self.set_values(values)

    def draft_changed(self, key: str | None = None) -> None:
        mark_chosen(self.query_one("#quant-choice", RadioSet))
        four_bit = current_mode(self.draft) == "4-bit"
        for field in self.query(SettingField):
            if field.key in FOUR_BIT_KEYS:
                field.disabled = not four_bit
        self._show_memory()

    @on(ProbeAnswered)
    def _model_known(self, message: ProbeAnswered) -> None:
        if message.kind == "model":
            self._show_memory()

    def _show_memory(self) -> None:
        info = self.app.known("model")
        mode = current_mode(self.draft)
        gpus = info.get("cuda") if info and info.get("ok") else None
        warning = self.query_one("#cuda-warning", Static)
        no_gpu = (gpus == []) if gpus is not None else not cuda_visible()
        if no_gpu:
            warning.update("✗ No CUDA GPU is visible here. 8-bit and 4-bit need bitsandbytes on a GPU to be fast "
                           "(on a CPU they run, slowly); bf16/fp16 training needs a GPU.")
        else:
            names = ", ".join(f"{gpu['name']} ({gpu['memory'] / 2**30:.0f} GiB)" for gpu in gpus or [])
            warning.update(f"GPU: {names}" if names else "")
        memory = self.query_one("#memory", Static)
        if info and info.get("ok"):
            memory.update("Estimated GPU memory for training (rough; batch and length from the training and "
                          "data steps):\n" + memory_table(info, self.draft.check.config, mode))
        elif info:
            memory.update(f"No estimate: {info.get('error')}")
        elif self.app.asking("model"):
            memory.update("reading the model's config for a memory estimate…")
        else:
            memory.update("Choose a model on the Model step to see memory estimates.")
