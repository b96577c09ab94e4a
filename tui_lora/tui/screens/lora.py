"""Step 4: the adapter — rank, scale, dropout, which layers, and how many parameters that trains."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.widgets import SelectionList, Static
from textual.widgets.selection_list import Selection

from tui_lora.tui.messages import ProbeAnswered
from tui_lora.tui.screens.step import StepScreen

ALL_LINEAR = "all-linear"
TICKED, UNTICKED = "✓ ", "  "  # the tick box differs only in colour; this reads the same without it (NO_COLOR)


def alpha_hint(r, alpha) -> str:
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        return ""
    if alpha in (r, 2 * r):
        return f"alpha {alpha} = {'2·r' if alpha == 2 * r else 'r'}: scale {alpha / r:g}"
    return f"suggested alpha: {2 * r} (2·r) or {r} (r)"


class LoraScreen(StepScreen):
    TITLE = "LoRA"
    FIELDS = ("lora.r", "lora.lora_alpha", "lora.lora_dropout", "lora.bias", "lora.target_modules",
              "lora.use_rslora", "lora.use_dora", "lora.modules_to_save", "lora.init_lora_weights",
              "lora.loraplus_lr_ratio")

    def body(self) -> ComposeResult:
        # The count comes first, so it stays in sight while r and alpha change it on a 24-line terminal.
        yield Static("", id="trainable", markup=False)
        yield self.setting("lora.r")
        yield self.setting("lora.lora_alpha")
        yield Static("", id="alpha-hint", markup=False)
        for key in ("lora.lora_dropout", "lora.bias", "lora.target_modules"):
            yield self.setting(key)
        yield SelectionList(id="target-choices", compact=True)
        for key in ("lora.use_rslora", "lora.use_dora", "lora.modules_to_save"):
            yield self.setting(key)
        # How the adapter starts and how fast B learns: for users who know they want PiSSA, LoftQ or LoRA+.
        yield Static("Initialisation and LoRA+", classes="group-title")
        yield self.setting("lora.init_lora_weights",
                           placeholder="default, gaussian, orthogonal, pissa, pissa_niter_16, olora, eva, loftq")
        yield self.setting("lora.loraplus_lr_ratio")

    def on_mount(self) -> None:
        super().on_mount()
        self.app.ask_model_unless_known()
        self._fill_choices()
        self.draft_changed()

    @on(ProbeAnswered)
    def _model_known(self, message: ProbeAnswered) -> None:
        if message.kind == "model":
            self._fill_choices()
            self._show_trainable()

    def draft_changed(self, key: str | None = None) -> None:
        self.query_one("#alpha-hint", Static).update(alpha_hint(self.draft.get("lora.r"),
                                                                self.draft.get("lora.lora_alpha")))
        if key == "lora.target_modules":
            self._tick_choices()
        self._show_trainable()

    # ------------------------------------------------------------ target modules

    def _module_names(self) -> list[str]:
        info = self.app.known("model")
        if not info or not info.get("ok"):
            return []
        output = info.get("output_layer")
        return list(dict.fromkeys(entry["name"] for entry in info["linear"] if entry["name"] != output))

    def _fill_choices(self) -> None:
        """The model's real layer names as ticks; without them the text field above is the way in."""
        choices = self.query_one("#target-choices", SelectionList)
        names = self._module_names()
        choices.display = bool(names)
        choices.clear_options()
        choices.add_options([Selection(self._prompt(name), name, id=f"target-{number}")
                             for number, name in enumerate([ALL_LINEAR] + names)])
        if names:
            choices.highlighted = 0  # so Enter or Space acts at once when Tab lands here
        self._tick_choices()

    def _wanted(self) -> set[str]:
        """The ticks the draft's target_modules stands for."""
        targets = self.draft.get("lora.target_modules")
        wanted = {ALL_LINEAR} if targets == ALL_LINEAR else set(targets if isinstance(targets, list) else [])
        return wanted & ({ALL_LINEAR} | set(self._module_names()))

    @staticmethod
    def _prompt(name: str, ticked: bool = False) -> str:
        # The glyph goes first, where a narrow terminal never cuts it off.
        label = f"{ALL_LINEAR} (every linear layer but the output)" if name == ALL_LINEAR else name
        return (TICKED if ticked else UNTICKED) + label

    def _tick_choices(self) -> None:
        choices = self.query_one("#target-choices", SelectionList)
        wanted = self._wanted()
        for number, name in enumerate([ALL_LINEAR] + self._module_names()):
            if name in wanted:
                choices.select(name)
            else:
                choices.deselect(name)
            prompt = self._prompt(name, name in wanted)
            if str(choices.get_option_at_index(number).prompt) != prompt:
                choices.replace_option_prompt_at_index(number, prompt)

    @on(SelectionList.SelectedChanged, "#target-choices")
    def _ticked(self, event: SelectionList.SelectedChanged) -> None:
        selected = list(event.selection_list.selected)
        if set(selected) == self._wanted():
            return  # the echo of _tick_choices, or a tick that changes nothing
        before = self.draft.get("lora.target_modules")
        if ALL_LINEAR in selected and (before != ALL_LINEAR or len(selected) == 1):
            value = ALL_LINEAR
        else:
            # Ticking a name while all-linear is on means the user wants a list instead.
            value = [name for name in self._module_names() if name in selected]
        self.set_values({"lora.target_modules": value})

    # ------------------------------------------------------------ size

    def _show_trainable(self) -> None:
        line = self.query_one("#trainable", Static)
        info = self.app.known("model")
        if info is None:
            line.update("reading the model's config to count trainable parameters…" if self.app.asking("model")
                        else "Choose a model on the Model step to see how many parameters this trains.")
            return
        if not info.get("ok"):
            line.update(f"No parameter count: {info.get('error')}")
            return
        if self.draft.check.blocking(self.FIELDS):
            line.update("Trainable parameters: fix the values above first.")
            return
        from tui_lora.estimate import format_count, total_parameters, trainable_parameters, trainable_share

        lora = self.draft.check.config.lora
        # Counted from the config (no weights loaded), as the run's model line will count it: a share of every
        # parameter the wrapped model holds, the adapter's own included.
        line.update(f"Trainable parameters: {format_count(trainable_parameters(info, lora))} "
                    f"({trainable_share(info, lora):.2%} of {format_count(total_parameters(info, lora))}; "
                    "from the config alone)")
