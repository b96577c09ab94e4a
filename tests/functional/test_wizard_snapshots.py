"""Snapshots (SVG) of every wizard screen at 80×24 and 120×40, and of the dialogs at 80×24.

After an intended UI change, regenerate the snapshots, look at the new SVGs (open them in a
browser, or `rsvg-convert FILE.svg -o /tmp/x.png`), then commit them with the change:

    python -m pytest -n 0 tests/functional/test_wizard_snapshots.py --snapshot-update

A failing run writes snapshot_report.html (old and new side by side) in the current folder.

What keeps them the same from run to run and machine to machine:
- HOME is a fresh temporary folder with the XDG folders inside it, so the presets folder
  is shown as ~/.config/tui-lora/presets wherever the test runs, and there are no saved
  presets and no recent runs; the working folder is empty too (training.output_dir is the
  relative runs/snap).
- CUDA_VISIBLE_DEVICES is empty, so the quantisation step says "no GPU" on every machine.
- Each probe (a child process) runs for real, once per test session per question; later
  identical questions get the same answer from memory (the answers depend only on the
  draft, and this keeps the whole file to about a minute). Every screenshot waits for the
  probe workers to finish and their answers to be drawn.
- Animations are off (a scroll lands at once) and the text cursor does not blink.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from test_wizard import settle
from textual import events
from textual.widgets import Input

import tui_lora.probe
from tui_lora.tui.app import WizardApp
from tui_lora.tui.draft import parse_text
from tui_lora.tui.screens.data import DataScreen
from tui_lora.tui.screens.dialogs import HelpDialog, SaveDialog
from tui_lora.tui.screens.lora import LoraScreen
from tui_lora.tui.screens.model import ModelScreen
from tui_lora.tui.screens.quantization import QuantizationScreen
from tui_lora.tui.screens.review import ReviewScreen
from tui_lora.tui.screens.source import SourceScreen
from tui_lora.tui.screens.start import StartScreen
from tui_lora.tui.screens.training import TrainingScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
MODEL = "builtin:tiny-chat"
DATA = "builtin:belle-sample"
OUTPUT_DIR = "runs/snap"

_answers: dict[tuple[str, str], dict] = {}


@pytest.fixture(autouse=True)
def fixed_surroundings(tmp_path, monkeypatch):
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.chdir(work)

    real_probe = tui_lora.probe.run_probe

    def probe_once(kind: str, raw: dict, *args, **kwargs) -> dict:
        asked = (kind, json.dumps(raw, sort_keys=True))
        if asked in _answers:
            return copy.deepcopy(_answers[asked])
        answer = real_probe(kind, raw, *args, **kwargs)
        if answer.get("ok"):  # never keep a failure (a probe stopped as its app closed, say)
            _answers[asked] = copy.deepcopy(answer)
        return answer

    # The app imports run_probe from the module inside its worker, so this is the one it calls.
    monkeypatch.setattr(tui_lora.probe, "run_probe", probe_once)


# ---------------------------------------------------------------- getting somewhere with keys


def wizard() -> WizardApp:
    app = WizardApp()
    # Scrolling (a focus change scrolls its widget into view) jumps instead of gliding, so a
    # screenshot never catches a scroll half-way or one that ends after a later scroll.
    app.animation_level = "none"
    return app


async def paste_into(pilot, key: str, text: str) -> None:
    """Focus a field, clear it with keys and paste the text, as a terminal delivers a paste.

    Typing key by key (test_wizard.type_into) costs about 0.1 s a key under the pilot;
    a paste is one event through the same editor and the same draft update.
    """
    assert pilot.app.screen.focus_key(key), f"{key} is not on {type(pilot.app.screen).__name__}"
    await pilot.press("home", "ctrl+k")
    pilot.app.post_message(events.Paste(text))
    await pilot.pause()
    assert pilot.app.draft.get(key) == parse_text(key, text), pilot.app.draft.get(key)


async def ready(pilot) -> None:
    """Probes answered and drawn, and the cursor held still for the picture."""
    await settle(pilot)
    for editor in pilot.app.screen.query(Input):
        editor.cursor_blink = False
    await pilot.pause()


async def new_run(pilot, model: str = MODEL) -> None:
    """Start screen -> New run -> the model typed, and Enter on it to read its config at once."""
    await pilot.press("enter")
    await pilot.pause()
    assert isinstance(pilot.app.screen, ModelScreen)
    if model:
        await paste_into(pilot, "model.name_or_path", model)
        await pilot.press("enter")
        await settle(pilot)


async def walk_to(pilot, target: type, model: str = MODEL, data: str = DATA) -> None:
    """From the start screen to `target` with Ctrl+N, filling the data and training steps on the way."""
    await new_run(pilot, model)
    while not isinstance(pilot.app.screen, target):
        screen = pilot.app.screen
        if isinstance(screen, DataScreen) and data:
            await paste_into(pilot, "data.path", data)
        if isinstance(screen, TrainingScreen):
            await paste_into(pilot, "training.output_dir", OUTPUT_DIR)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert pilot.app.screen is not screen, f"Ctrl+N did not leave {type(screen).__name__}"
    await settle(pilot)


async def press_button(pilot, button_id: str) -> None:
    """Tab-like: focus the button (which scrolls it into view) and press Enter."""
    pilot.app.screen.query_one(f"#{button_id}").focus()
    await pilot.pause()
    await pilot.press("enter")
    await settle(pilot)


async def walk_to_data_sets(pilot) -> None:
    """The data step with Belle, then "Add a data set": a file of its own layout (in the working folder), mapped,
    in the editor of data set 2."""
    from tui_lora.tui.screens.data_source import DataSourceDialog

    Path("mine.jsonl").write_text('{"talk": [{"who": "A", "say": "Question 0?"}, {"who": "B", "say": "Answer 0."}], '
                                  '"persona": "You answer in one line."}\n', encoding="utf-8")
    await walk_to(pilot, DataScreen)
    await paste_into(pilot, "data.path", DATA)
    await press_button(pilot, "add-source")
    assert isinstance(pilot.app.screen, DataSourceDialog)
    for name, value in (("path", "mine.jsonl"), ("weight", "2"), ("messages_column", "talk"), ("role_key", "who"),
                        ("content_key", "say"), ("user_roles", "A"), ("assistant_roles", "B"),
                        ("system_column", "persona")):
        await paste_into(pilot, f"data.sources[2].{name}", value)


def show(pilot, widget_id: str, top: bool = False) -> None:
    """Scroll the step so a widget is in view (at the top of the view with top=True)."""
    pilot.app.screen.query_one(f"#{widget_id}").scroll_visible(animate=False, top=top)


# ---------------------------------------------------------------- the steps


@pytest.mark.parametrize("size", SIZES)
class TestSteps:
    def test_start(self, snap_compare, size):
        async def run_before(pilot):
            assert isinstance(pilot.app.screen, StartScreen)
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_model_inspected(self, snap_compare, size):
        async def run_before(pilot):
            await new_run(pilot)
            text = str(pilot.app.screen.query_one("#model-info").render())
            assert "Qwen2ForCausalLM" in text, text
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_source_after_test_connection(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to(pilot, SourceScreen)
            await press_button(pilot, "test-connection")
            report = str(pilot.app.screen.query_one("#hub-report").render())
            assert "nothing to fetch" in report, report
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_quantisation_memory_table(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to(pilot, QuantizationScreen)
            assert "activations" in str(pilot.app.screen.query_one("#memory").render())
            show(pilot, "memory")
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_lora_trainable_and_module_ticks(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to(pilot, LoraScreen)
            assert str(pilot.app.screen.query_one("#trainable").render()).startswith("Trainable parameters:")
            pilot.app.screen.query_one("#target-choices").focus()  # where Tab goes to tick layers
            await pilot.pause()
            show(pilot, "trainable")
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_data_after_preview(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to(pilot, DataScreen)
            await paste_into(pilot, "data.path", DATA)
            await press_button(pilot, "preview")
            summary = str(pilot.app.screen.query_one("#data-summary").render())
            assert summary.startswith("format belle"), summary
            show(pilot, "preview", top=True)  # the focused button, the summary and the example below
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_data_sets_listed_with_their_mix(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to_data_sets(pilot)
            await pilot.press("escape")
            await pilot.pause()
            pilot.app.screen.query_one("#data--mix").value = "interleave_over"
            await pilot.pause()
            assert pilot.app.screen.query_one("#sources").option_count == 2
            pilot.app.screen.query_one("#sources").focus()
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_data_set_editor_with_its_first_record(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to_data_sets(pilot)
            await press_button(pilot, "first-record")
            view = str(pilot.app.screen.query_one("#record-view").render())
            assert "assistant: Answer 0." in view, view
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_training(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to(pilot, TrainingScreen)
            await paste_into(pilot, "training.output_dir", OUTPUT_DIR)
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)


# ---------------------------------------------------------------- the review


@pytest.mark.parametrize("size", SIZES)
class TestReview:
    def test_review_with_problems(self, snap_compare, size):
        """No model and no data: the review lists what is missing."""

        async def run_before(pilot):
            await walk_to(pilot, ReviewScreen, model="", data="")
            assert pilot.app.screen.query_one("#issues").option_count >= 2
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)

    def test_review_ready(self, snap_compare, size):
        async def run_before(pilot):
            await walk_to(pilot, ReviewScreen)
            # longer than the terminal is wide: the TOML below wraps it instead of cutting it off
            await paste_into(pilot, "description", "LoRA on the embedded tiny model with the Belle sample, "
                                                   "to check the whole pipeline before renting a GPU for the real run")
            await ready(pilot)
            assert "No problems" in str(pilot.app.screen.query_one("#issues-title").render())
            pilot.app.screen.query_one("#next").focus()  # Start: its own help line
            await pilot.pause()

        assert snap_compare(wizard(), terminal_size=size, run_before=run_before)


# ---------------------------------------------------------------- dialogs (80×24 only)


class TestDialogs:
    def test_help_for_trust_remote_code(self, snap_compare):
        async def run_before(pilot):
            await new_run(pilot)
            assert pilot.app.screen.focus_key("model.trust_remote_code")
            await pilot.pause()
            await pilot.press("f1")
            await pilot.pause()
            assert isinstance(pilot.app.screen, HelpDialog)
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=(80, 24), run_before=run_before)

    def test_save(self, snap_compare):
        async def run_before(pilot):
            await walk_to(pilot, ReviewScreen)
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert isinstance(pilot.app.screen, SaveDialog)
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=(80, 24), run_before=run_before)


    def test_recent_run_with_a_long_answer(self, snap_compare):
        """A stopped run with a checkpoint: four answers, one per line, all whole at 80 columns."""
        from tui_lora.places import record_run

        folder = recorded_run(Path.home() / "runs" / "stopped", 12, finished=False)
        checkpoint = folder / "checkpoint-10"
        checkpoint.mkdir()
        (checkpoint / "trainer_state.json").write_text('{"global_step": 10}', encoding="utf-8")
        (folder / "run.toml").write_text("[training]\nmax_steps = 20\n", encoding="utf-8")
        record_run(folder)

        async def run_before(pilot):
            options = pilot.app.screen.query_one("#start-choices")
            options.highlighted = next(i for i in range(options.option_count)
                                       if options.get_option_at_index(i).id == f"run:{folder}")
            await pilot.press("enter")
            await pilot.pause()
            await ready(pilot)

        assert snap_compare(wizard(), terminal_size=(80, 24), run_before=run_before)


# ---------------------------------------------------------------- without colour


def recorded_run(folder: Path, last_step: int, finished: bool) -> Path:
    """An event log as a real run writes it, with fixed times and losses, and no live process."""
    folder.mkdir(parents=True)
    events = [{"t": 1000.0, "type": "status", "state": "starting", "message": f"run folder ~/runs/{folder.name}"},
              {"t": 1001.0, "type": "model", "trainable_parameters": 77824, "total_parameters": 1194112,
               "quantization": "none"},
              {"t": 1002.0, "type": "status", "state": "training", "message": "training for 20 steps",
               "max_steps": 20, "resumed_from": 0}]
    for step in range(1, last_step + 1):
        events.append({"t": 1002.0 + step, "type": "progress", "step": step, "max_steps": 20, "epoch": step / 10,
                       "num_epochs": 2.0, "elapsed": float(step)})
        events.append({"t": 1002.0 + step, "type": "train", "step": step, "loss": 7.8 - 0.1 * step + 0.05 * (step % 3),
                       "learning_rate": 2e-4 * (1 - step / 20), "grad_norm": 1.5, "tokens_per_second": 4100.0})
        if step % 10 == 0:
            events.append({"t": 1002.5 + step, "type": "eval", "step": step, "eval_loss": 7.5 - 0.08 * step})
            events.append({"t": 1002.6 + step, "type": "checkpoint", "step": step, "path": f"checkpoint-{step}"})
    if finished:
        adapter = f"~/runs/{folder.name}/adapter"  # as shown; a real log holds the absolute path
        events += [{"t": 1030.0, "type": "result", "adapter": adapter, "step": 20,
                    "metrics": {"eval_loss": 5.9, "train_loss": 6.6}},
                   {"t": 1030.1, "type": "status", "state": "finished", "message": f"adapter saved to {adapter}",
                    "adapter": adapter}]
    (folder / "events.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    return folder


class TestRunScreen:
    @pytest.mark.parametrize("size", SIZES)
    def test_finished_run(self, snap_compare, size):
        from tui_lora.tui.attach import AttachApp

        folder = recorded_run(Path.home() / "runs" / "snap", 20, finished=True)
        assert snap_compare(AttachApp(folder), terminal_size=size, run_before=lambda pilot: pilot.pause(0.6))

    def test_run_whose_process_died(self, snap_compare):
        from tui_lora.tui.attach import AttachApp

        folder = recorded_run(Path.home() / "runs" / "died", 12, finished=False)
        assert snap_compare(AttachApp(folder), terminal_size=(80, 24), run_before=lambda pilot: pilot.pause(0.6))


class TestNoColor:
    def test_lora_without_colour(self, snap_compare, monkeypatch):
        """NO_COLOR=1: Textual reads it when the app is made, and draws in monochrome."""
        monkeypatch.setenv("NO_COLOR", "1")
        app = wizard()
        assert app.no_color

        async def run_before(pilot):
            await walk_to(pilot, LoraScreen)
            pilot.app.screen.query_one("#target-choices").focus()
            await pilot.pause()
            show(pilot, "trainable")
            await ready(pilot)

        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshots_show_no_temporary_paths():
    """A random folder in a snapshot would make it differ on every run."""
    folder = Path(__file__).parent / "__snapshots__" / Path(__file__).stem
    for svg in folder.glob("*.svg"):
        text = svg.read_text(encoding="utf-8")
        assert "pytest-" not in text and "/tmp/" not in text, svg.name
