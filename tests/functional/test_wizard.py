"""The wizard driven with key presses through Textual's pilot: the real app, real files, real probes."""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path

from tui_lora.config import load_run_file
from tui_lora.presets import user_presets_dir
from tui_lora.tui.app import WizardApp
from tui_lora.tui.screens.data import DataScreen
from tui_lora.tui.screens.dialogs import ConfirmDialog, HelpDialog, SaveDialog
from tui_lora.tui.screens.lora import LoraScreen
from tui_lora.tui.screens.model import ModelScreen
from tui_lora.tui.screens.quantization import QuantizationScreen
from tui_lora.tui.screens.review import ReviewScreen
from tui_lora.tui.screens.run import RunScreen
from tui_lora.tui.screens.source import SourceScreen
from tui_lora.tui.screens.start import StartScreen
from tui_lora.tui.screens.training import TrainingScreen
from tui_lora.tui.widgets.setting_field import SettingField


def drive(scenario, preset: Path | None = None, size=(80, 24)):
    """Run the app under the pilot, play `scenario(app, pilot)`, return what the app exited with."""

    async def main():
        app = WizardApp(preset)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await scenario(app, pilot)
        return app

    return asyncio.run(main())


async def type_into(pilot, key: str, text: str) -> None:
    """Focus a field the way Tab would land on it, clear it with keys, and type."""
    assert pilot.app.screen.focus_key(key), f"{key} is not on {type(pilot.app.screen).__name__}"
    await pilot.press("home", "ctrl+k", *list(text))
    await pilot.pause()


def field(app, key: str) -> SettingField:
    return next(f for f in app.screen.query(SettingField) if f.key == key)


def issue_text(app, key: str) -> str:
    return str(field(app, key).query_one(".setting-issue").render())


async def next_step(pilot, expected: type) -> None:
    await pilot.press("ctrl+n")
    await pilot.pause()
    assert isinstance(pilot.app.screen, expected), type(pilot.app.screen).__name__


async def new_run(pilot, model: str = "") -> None:
    """From the start screen: "New run, from the defaults", then the model if one is given."""
    await pilot.press("enter")
    await pilot.pause()
    if model:
        await type_into(pilot, "model.name_or_path", model)


async def through(pilot, *steps: type) -> None:
    for step in steps:
        await next_step(pilot, step)


async def settle(pilot) -> None:
    """Wait for probes (child processes) to answer and their results to be drawn."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def test_walk_from_start_to_a_saved_preset_with_keys(tmp_path):
    run_folder = tmp_path / "runs" / "wizard"

    async def scenario(app, pilot):
        assert isinstance(app.screen, StartScreen)
        await pilot.press("enter")  # "New run, from the defaults"
        await pilot.pause()
        assert isinstance(app.screen, ModelScreen)
        await type_into(pilot, "model.name_or_path", "builtin:tiny-chat")
        await type_into(pilot, "model.device_map", "cpu")
        await next_step(pilot, SourceScreen)
        await pilot.press("down", "enter")  # the choice list has the focus; the mirror is the second choice
        await pilot.pause()
        assert app.draft.get("hub.endpoint") == "https://hf-mirror.com"
        await next_step(pilot, QuantizationScreen)
        app.screen.query_one("#quant-choice").focus()
        await pilot.press("down", "down", "enter")  # 4-bit
        await pilot.pause()
        assert app.draft.get("quantization.load_in_4bit") is True
        await next_step(pilot, LoraScreen)
        await type_into(pilot, "lora.r", "16")
        await type_into(pilot, "lora.lora_alpha", "32")
        await type_into(pilot, "lora.target_modules", "q_proj, v_proj")
        await next_step(pilot, DataScreen)
        await type_into(pilot, "data.path", "builtin:belle-sample")
        await type_into(pilot, "tokenizer.max_length", "256")
        await next_step(pilot, TrainingScreen)
        await type_into(pilot, "training.output_dir", str(run_folder))
        await type_into(pilot, "training.learning_rate", "1e-4")
        await type_into(pilot, "training.max_steps", "20")
        await next_step(pilot, ReviewScreen)
        await type_into(pilot, "description", "made by the pilot")
        await settle(pilot)
        assert "No problems" in str(app.screen.query_one("#issues-title").render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SaveDialog)
        await pilot.press("home", "ctrl+k", *"pilot-run", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)
        assert "tui-lora run ~" in str(app.screen.query_one("#command").render()) or \
            "tui-lora run /" in str(app.screen.query_one("#command").render())
        await pilot.press("ctrl+q")  # saved: quits without asking
        await pilot.pause()

    app = drive(scenario)
    saved = user_presets_dir() / "pilot-run.toml"
    body = tomllib.loads(saved.read_text(encoding="utf-8"))
    assert body["description"] == "made by the pilot"
    assert body["model"]["name_or_path"] == "builtin:tiny-chat" and body["model"]["device_map"] == "cpu"
    assert body["hub"] == {**body["hub"], "source": "huggingface", "endpoint": "https://hf-mirror.com",
                           "offline": False}
    assert body["quantization"]["load_in_4bit"] is True and body["quantization"]["load_in_8bit"] is False
    assert body["lora"]["r"] == 16 and body["lora"]["lora_alpha"] == 32
    assert body["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert body["data"]["path"] == "builtin:belle-sample" and body["tokenizer"]["max_length"] == 256
    assert body["training"]["output_dir"] == str(run_folder)
    assert body["training"]["learning_rate"] == 1e-4 and body["training"]["max_steps"] == 20
    load_run_file(saved)  # what the wizard writes, `tui-lora run` takes unchanged
    assert app.return_value is None


def test_going_back_keeps_what_was_typed(tmp_path):
    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen)
        await type_into(pilot, "lora.r", "32")
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, QuantizationScreen)
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert isinstance(app.screen, ModelScreen)
        assert app.screen.query_one("#model--name_or_path").value == "builtin:tiny-chat"
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen)
        assert app.screen.query_one("#lora--r").value == "32"
        await pilot.press("escape", "escape", "escape", "escape")
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)

    drive(scenario)


def test_invalid_input_is_refused_on_the_field():
    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen)
        await type_into(pilot, "lora.r", "abc")
        assert "'abc' has the wrong type; it must be an integer" in issue_text(app, "lora.r")
        assert field(app, "lora.r").has_class("-invalid")
        await type_into(pilot, "lora.lora_dropout", "1.5")
        assert "too large; it must be below 1.0" in issue_text(app, "lora.lora_dropout")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, LoraScreen)  # refused: the step keeps the user until it is fixed
        assert app.focused.id == "lora--r"
        await type_into(pilot, "lora.r", "8")
        await type_into(pilot, "lora.lora_dropout", "0.1")
        assert not field(app, "lora.r").has_class("-invalid")
        await next_step(pilot, DataScreen)

    drive(scenario)


def test_a_rule_across_fields_is_flagged_as_the_user_types():
    async def scenario(app, pilot):
        await new_run(pilot)
        app.push_screen(TrainingScreen())
        await pilot.pause()
        app.screen.focus_key("training.fp16")
        await pilot.press("space")
        app.screen.focus_key("training.bf16")
        await pilot.press("space")
        await pilot.pause()
        assert "fp16 and bf16 are both true; choose one" in issue_text(app, "training.bf16")
        await pilot.press("space")
        await pilot.pause()
        assert issue_text(app, "training.bf16") == ""

    drive(scenario)


def test_review_lists_every_problem_and_jumps_to_its_field():
    async def scenario(app, pilot):
        await new_run(pilot)
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen, DataScreen, TrainingScreen, ReviewScreen)
        listing = app.screen.query_one("#issues")
        texts = [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]
        assert any(text.startswith("model.name_or_path: is required") for text in texts)
        assert any(text.startswith("data.path: is required") for text in texts)
        listing.focus()
        data_issue = next(i for i, text in enumerate(texts) if text.startswith("data.path"))
        listing.highlighted = data_issue
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, DataScreen)
        assert app.focused.id == "data--path"
        await type_into(pilot, "data.path", "builtin:belle-sample")
        await next_step(pilot, TrainingScreen)
        await next_step(pilot, ReviewScreen)
        listing = app.screen.query_one("#issues")
        assert not any(str(listing.get_option_at_index(i).prompt).startswith("data.path")
                       for i in range(listing.option_count))

    drive(scenario)


def hand_written(path: Path, output_dir: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# written by hand, with comments\n"
        "description = \"hand-written\"\n"
        "[model]\nname_or_path = \"builtin:tiny-chat\"\ndevice_map = \"cpu\"\n"
        "[data]\npath = \"builtin:belle-sample\"\nmax_samples = 64\n"
        f"[training]\noutput_dir = \"{output_dir}\"\nlearning_rate = 0.0003\nmax_steps = 5\n"
        "[early_stopping]\nenabled = true\npatience = 2\n",
        encoding="utf-8")
    return path


def test_open_and_edit_an_existing_preset(tmp_path):
    preset = hand_written(user_presets_dir() / "mine.toml", tmp_path / "run")
    before = load_run_file(preset)

    async def scenario(app, pilot):
        options = app.screen.query_one("#start-choices")
        index = next(i for i in range(options.option_count) if options.get_option_at_index(i).id == "user:mine")
        options.highlighted = index
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ModelScreen)
        assert app.screen.query_one("#model--device_map").value == "cpu"
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen, DataScreen, TrainingScreen)
        assert app.screen.query_one("#training--learning_rate").value == "0.0003"
        assert app.screen.query_one("#early_stopping--enabled").value is True
        await type_into(pilot, "training.learning_rate", "5e-5")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.query_one("#preset-name").value == "mine"
        assert "the preset you are editing" in str(app.screen.query_one("#save-target").render())
        await pilot.press("enter")
        await pilot.pause()
        assert not app.dirty

    drive(scenario)
    after = load_run_file(preset)
    assert after.training.learning_rate == 5e-5
    after.training.learning_rate = before.training.learning_rate
    assert after == before  # nothing else changed, nothing lost


def test_the_command_line_opens_a_preset_straight_at_the_model_step(tmp_path):
    preset = hand_written(tmp_path / "elsewhere.toml", tmp_path / "run")

    async def scenario(app, pilot):
        assert isinstance(app.screen, ModelScreen)
        assert app.screen.query_one("#model--name_or_path").value == "builtin:tiny-chat"
        await pilot.press("ctrl+s")
        await pilot.pause()
        # a file opened from anywhere is saved back where it came from
        assert app.screen.query_one("#preset-name").value.endswith("/elsewhere.toml")
        assert "the file you opened" in str(app.screen.query_one("#save-target").render())

    drive(scenario, preset=preset)


def test_edit_saves_back_into_the_opened_file_keeping_comments_and_layout(tmp_path, monkeypatch):
    """`tui-lora edit my-run.toml`, change one value, Ctrl+S: that file, only that value's line changed."""
    monkeypatch.chdir(tmp_path)
    text = ("# my run: keep this comment\n"
            "description = \"hand-written\"\n\n"
            "[model]\nname_or_path = \"builtin:tiny-chat\"   # the embedded model\ndevice_map = \"cpu\"\n\n"
            "[data]\npath = \"builtin:belle-sample\"\n\n"
            "[training]\n# how fast\nlearning_rate = 3e-4\nmax_steps = 5\noutput_dir = \"runs/mine\"\n")
    Path("my-run.toml").write_text(text, encoding="utf-8")

    async def scenario(app, pilot):
        app.screen.query_one("#next").focus()
        await pilot.press("6")  # straight to the training step (outside a text box a digit is a step)
        await pilot.pause()
        assert isinstance(app.screen, TrainingScreen)
        await type_into(pilot, "training.max_steps", "12")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.query_one("#preset-name").value == "./my-run.toml"
        await pilot.press("enter")
        await pilot.pause()
        assert not app.dirty and isinstance(app.screen, TrainingScreen)

    app = drive(scenario, preset=Path("my-run.toml"))
    assert Path("my-run.toml").read_text(encoding="utf-8") == text.replace("max_steps = 5", "max_steps = 12")
    assert not list(user_presets_dir().glob("my-run*"))  # nothing went into the presets folder
    assert app.return_value is None


def test_saving_never_replaces_a_preset_silently(tmp_path):
    existing = hand_written(user_presets_dir() / "taken.toml", tmp_path / "run")
    original = existing.read_text(encoding="utf-8")

    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("home", "ctrl+k", *"taken")
        await pilot.pause()
        assert "already exists" in str(app.screen.query_one("#save-target").render())
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")  # keep it
        await pilot.pause()
        assert existing.read_text(encoding="utf-8") == original
        assert isinstance(app.screen, SaveDialog)
        await pilot.press("home", "ctrl+k", *"bad/name", "enter")
        await pilot.pause()
        assert isinstance(app.screen, SaveDialog)  # refused, with the reason shown
        assert "✗" in str(app.screen.query_one("#save-target").render())

    drive(scenario)


def test_quitting_with_unsaved_changes_asks_first():
    async def scenario(app, pilot):
        await new_run(pilot)
        await type_into(pilot, "model.revision", "v2")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")  # stay
        await pilot.pause()
        assert isinstance(app.screen, ModelScreen) and app.is_running
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.click("#quit")
        await pilot.pause()

    app = drive(scenario)
    assert app.return_value is None and not app.is_running


def test_help_opens_on_f1_for_the_focused_field():
    async def scenario(app, pilot):
        await new_run(pilot)
        app.screen.focus_key("model.trust_remote_code")
        await pilot.pause()
        assert "model.trust_remote_code" in str(app.screen.query_one("#help-line").render())
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpDialog)
        text = " ".join(str(static.render()) for static in app.screen.query("Static"))
        assert "permissions" in text and "default: False" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ModelScreen)
        await pilot.press("space")  # turning it on shows what it means
        await pilot.pause()
        assert app.screen.query_one("#trust-warning").display

    drive(scenario)


def test_model_probe_fills_layers_count_and_memory_without_loading_weights():
    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        await pilot.pause(0.8)  # the pause in typing after which a local model is read
        await settle(pilot)
        info = str(app.screen.query_one("#model-info").render())
        assert "Qwen2ForCausalLM" in info and "q_proj" in info and "lm_head" in info
        await next_step(pilot, SourceScreen)
        await next_step(pilot, QuantizationScreen)
        memory = str(app.screen.query_one("#memory").render())
        assert "4-bit" in memory and "8-bit" in memory
        await next_step(pilot, LoraScreen)
        choices = app.screen.query_one("#target-choices")
        values = [choices.get_option_at_index(i).value for i in range(choices.option_count)]
        assert values[0] == "all-linear" and "q_proj" in values and "lm_head" not in values
        before = str(app.screen.query_one("#trainable").render())
        await type_into(pilot, "lora.r", "16")
        after = str(app.screen.query_one("#trainable").render())
        assert before.startswith("Trainable parameters:") and after != before
        choices.focus()
        await pilot.press("enter")  # untick all-linear: an empty list is flagged on the field
        await pilot.pause()
        assert app.draft.get("lora.target_modules") == []
        await pilot.press("down", "enter")  # tick q_proj
        await pilot.pause()
        assert app.draft.get("lora.target_modules") == ["q_proj"]
        # the state in a glyph as well as in colour (NO_COLOR shows no colour at all)
        prompts = {choices.get_option_at_index(i).value: str(choices.get_option_at_index(i).prompt)
                   for i in range(choices.option_count)}
        assert prompts["q_proj"] == "✓ q_proj" and prompts["k_proj"] == "  k_proj"
        assert not prompts["all-linear"].startswith("✓")
        assert app.screen.query_one("#lora--target_modules").value == "q_proj"

    drive(scenario)


def test_data_preview_shows_the_detected_format_and_trained_tokens():
    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        app.push_screen(DataScreen())
        await pilot.pause()
        await type_into(pilot, "data.path", "builtin:belle-sample")
        await pilot.click("#preview")
        await settle(pilot)
        summary = str(app.screen.query_one("#data-summary").render())
        assert summary.startswith("format belle")
        example = app.screen.query_one("#data-example").render()
        assert "trained (highlighted)" in str(example)

    drive(scenario)


def test_start_runs_the_preset_in_its_own_process_and_shows_it(tmp_path):
    preset = hand_written(user_presets_dir() / "ready.toml", tmp_path / "run")

    async def scenario(app, pilot):
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen, DataScreen, TrainingScreen, ReviewScreen)
        await pilot.press("ctrl+n")  # Start
        deadline = time.monotonic() + 60
        while not isinstance(app.screen, RunScreen):
            assert time.monotonic() < deadline, "the run screen never came"
            await pilot.pause(0.2)
        screen = app.screen
        while not screen.progress.final:
            assert time.monotonic() < deadline + 120, "the run never ended"
            await pilot.pause(0.25)
        assert screen.progress.state == "finished" and screen.progress.step == 5
        await pilot.press("ctrl+q")  # the run is over: leaving says nothing more
        await pilot.pause()

    app = drive(scenario, preset=preset)
    assert app.return_value is None
    assert (tmp_path / "run" / "adapter").is_dir()


def test_training_step_edits_the_launch_and_the_review_shows_the_exact_command():
    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        app.push_screen(TrainingScreen())
        await pilot.pause()
        batch = str(app.screen.query_one("#batch-line").render())
        assert "Launch: one process, inside tui-lora run" in batch
        await type_into(pilot, "launch.num_processes", "2")
        await type_into(pilot, "launch.num_machines", "2")
        assert "is required with 2 machines" in issue_text(app, "launch.main_process_ip")
        await type_into(pilot, "launch.num_machines", "1")
        assert issue_text(app, "launch.main_process_ip") == ""
        batch = str(app.screen.query_one("#batch-line").render())
        assert "4 × 1 = 4 examples per optimizer step on each GPU × 2 processes = 8" in batch
        assert "launch --multi_gpu --dynamo_backend no --num_processes 2" in batch
        assert "-m tui_lora.engine.worker PRESET.toml" in batch  # not saved yet
        app.push_screen(ReviewScreen())
        await pilot.pause()
        command = str(app.screen.query_one("#command").render())
        assert "--num_processes 2 --num_machines 1 --machine_rank 0 --main_process_port 0" in command
        assert "[launch]" in str(app.draft.to_toml()) and "num_processes = 2" in app.draft.to_toml()

    drive(scenario, size=(200, 50))


def test_review_shows_trust_remote_code_and_the_secrets_taken_out_of_an_opened_preset(tmp_path):
    preset = user_presets_dir() / "with-token.toml"
    preset.parent.mkdir(parents=True, exist_ok=True)
    preset.write_text("[model]\nname_or_path = \"builtin:tiny-chat\"\ntrust_remote_code = true\n"
                      "[data]\npath = \"builtin:belle-sample\"\n"
                      f"[training]\noutput_dir = \"{tmp_path / 'run'}\"\n"
                      "[hub]\ntoken = \"s3cr3t-in-the-file\"\noffline = true\n", encoding="utf-8")

    async def scenario(app, pilot):
        assert app.dirty  # the file still holds the token until it is saved again
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen, DataScreen, TrainingScreen, ReviewScreen)
        warnings = app.screen.query_one("#review-warnings")
        text = str(warnings.render())
        assert warnings.display
        assert ("⚠ trust_remote_code is on: Python code shipped with builtin:tiny-chat will run on this machine, "
                "with your permissions") in text
        assert "✗ Removed from this run file: hub.token. Secrets never go in a run file" in text
        assert "HF_TOKEN" in text and "s3cr3t" not in text
        assert "s3cr3t" not in app.draft.to_toml() and "offline = true" in app.draft.to_toml()
        await settle(pilot)  # the machine check (a child process) has answered
        assert "✓ No problems" in str(app.screen.query_one("#issues-title").render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert not app.dirty
        app.jump_to("model.trust_remote_code")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, ModelScreen) and app.focused.id == "model--trust_remote_code"
        await pilot.press("space")
        await pilot.pause()
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen, DataScreen, TrainingScreen, ReviewScreen)
        assert not app.screen.query_one("#review-warnings").display  # trust off, nothing was removed this time

    drive(scenario, preset=preset)
    saved = preset.read_text(encoding="utf-8")
    assert "s3cr3t" not in saved and "token" not in tomllib.loads(saved)["hub"]
    assert load_run_file(preset).model.trust_remote_code is True  # saved before it was turned off


# ---------------------------------------------------------------- what a new user meets in the first hour


def review_issues(app) -> list[str]:
    listing = app.screen.query_one("#issues")
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)] if listing.display else []


def test_the_review_says_what_start_would_refuse_on_this_machine(tmp_path):
    """bf16 on a machine without a bf16 GPU: the review says so (asked of check_hardware itself), Start refuses."""
    preset = hand_written(tmp_path / "bf16.toml", tmp_path / "run")

    async def scenario(app, pilot):
        app.screen.query_one("#next").focus()  # digits go to a step outside a text box
        await pilot.press("6")
        await pilot.pause()
        app.screen.focus_key("training.bf16")
        await pilot.press("space")
        await pilot.pause()
        app.screen.query_one("#next").focus()
        await pilot.press("7")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)
        await settle(pilot)
        issues = review_issues(app)
        assert any(issue.startswith("training.bf16: this machine has no GPU with bfloat16 support")
                   for issue in issues), issues
        assert "No problems" not in str(app.screen.query_one("#issues-title").render())
        await pilot.press("ctrl+n")  # Start
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)  # refused, nothing started
        assert not (tmp_path / "run").exists()

    drive(scenario, preset=preset)


def test_a_failed_start_leads_back_to_the_review_with_the_reason(tmp_path):
    """The run fails in its own process (a layer the model lacks): leaving goes back to the review, which
    lists the failure with a jump to the field; the step bar is no longer busy."""
    preset = hand_written(user_presets_dir() / "bad-layer.toml", tmp_path / "run")
    preset.write_text(preset.read_text(encoding="utf-8") + "[lora]\ntarget_modules = [\"no_such_layer\"]\n",
                      encoding="utf-8")

    async def scenario(app, pilot):
        app.screen.query_one("#next").focus()
        await pilot.press("7")
        await settle(pilot)
        assert "No problems" in str(app.screen.query_one("#issues-title").render())
        await pilot.press("ctrl+n")  # Start
        deadline = time.monotonic() + 90
        while not (isinstance(app.screen, RunScreen) and app.screen.progress.final):
            assert time.monotonic() < deadline, "the run never failed"
            await pilot.pause(0.25)
        await pilot.pause(0.5)
        assert app.screen.progress.state == "failed"
        assert app.screen.query_one("#steps-bar").total is not None  # no "busy" animation for a run that ended
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen) and app.is_running
        failure = next(issue for issue in review_issues(app) if issue.startswith("lora.target_modules:"))
        assert "no_such_layer" in failure and failure.endswith("(the last Start)")
        listing = app.screen.query_one("#issues")
        listing.focus()
        listing.highlighted = review_issues(app).index(failure)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, LoraScreen) and app.focused.id == "lora--target_modules"

    drive(scenario, preset=preset)


def test_a_bundled_preset_runs_as_it_is_and_a_changed_one_is_never_saved_over_it(tmp_path, monkeypatch):
    from tui_lora.presets import bundled_presets
    from tui_lora.runs.detach import abort, wait_gone
    from tui_lora.runs.folder import RunFolder

    monkeypatch.chdir(tmp_path)  # the demo's run folder is the relative runs/demo

    async def scenario(app, pilot):
        options = app.screen.query_one("#start-choices")
        options.highlighted = next(i for i in range(options.option_count)
                                   if options.get_option_at_index(i).id == "bundled:demo")
        await pilot.pause()
        help_line = str(app.screen.query_one("#help-line").render())
        assert help_line.startswith("CPU demo") and "Enter opens it" in help_line  # the whole description
        await pilot.press("enter")
        await pilot.pause()
        # changed: Start asks for a new name, never the bundled one
        app.screen.query_one("#next").focus()
        await pilot.press("6")
        await pilot.pause()
        await type_into(pilot, "training.max_steps", "3")
        app.screen.query_one("#next").focus()
        await pilot.press("7")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, SaveDialog)
        assert app.screen.query_one("#preset-name").value == "demo-2"
        await pilot.press("home", "ctrl+k", *"demo")
        await pilot.pause()
        assert "a bundled preset is called demo" in str(app.screen.query_one("#save-target").render())
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and app.focused.id == "keep"
        await pilot.press("enter")  # keep: choose another name
        await pilot.pause()
        await pilot.press("escape")  # and not now
        await pilot.pause()
        assert not (user_presets_dir() / "demo.toml").exists()
        # unchanged: Start runs the bundled file itself, saving nothing
        await pilot.press("escape", "escape", "escape", "escape", "escape", "escape", "escape")
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)
        await pilot.press("enter")
        await pilot.pause()
        app.screen.query_one("#next").focus()
        await pilot.press("7")
        await settle(pilot)
        await pilot.press("ctrl+n")
        deadline = time.monotonic() + 60
        while not isinstance(app.screen, RunScreen):
            assert time.monotonic() < deadline, "the run screen never came"
            await pilot.pause(0.2)
        assert app.screen.folder == tmp_path / "runs" / "demo"
        # the run takes its folder before it writes run.toml; on a busy machine an abort can fall between the two
        while not (app.screen.folder / "run.toml").exists():
            assert time.monotonic() < deadline, "the run never wrote its run.toml"
            await pilot.pause(0.2)
        pid = abort(app.screen.folder) or RunFolder(app.screen.folder).owner()
        if pid:
            assert wait_gone(pid, 30)

    drive(scenario)
    assert not (user_presets_dir() / "demo.toml").exists() and not (user_presets_dir() / "demo-2.toml").exists()
    # the run is the bundled file's, not the edit that was walked away from
    assert load_run_file(tmp_path / "runs" / "demo" / "run.toml").training.max_steps == \
        load_run_file(bundled_presets()["demo"]).training.max_steps != 3


def test_a_new_run_gets_a_folder_of_its_own_shown_on_the_review(tmp_path, monkeypatch):
    import datetime

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / f"tiny-chat-{datetime.date.today().isoformat()}-1").mkdir(parents=True)  # taken

    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        await through(pilot, SourceScreen, QuantizationScreen, LoraScreen, DataScreen)
        await type_into(pilot, "data.path", "builtin:belle-sample")
        await next_step(pilot, TrainingScreen)
        expected = f"runs/tiny-chat-{datetime.date.today().isoformat()}-2"
        assert app.screen.query_one("#training--output_dir").value == expected
        await next_step(pilot, ReviewScreen)
        assert f"Run folder: {expected} (a new folder" in str(app.screen.query_one("#command").render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("home", "ctrl+k", *"fresh-folder", "enter")
        await pilot.pause()
        # the Start button's help is about starting, not "the next step"
        app.screen.query_one("#next").focus()
        await pilot.pause()
        assert str(app.screen.query_one("#help-line").render()).startswith("Start the run")
        app.screen.query_one("#back").focus()
        await pilot.press("pagedown")  # from a button, too
        await pilot.pause()
        assert app.screen.query_one("#step-body").scroll_y > 0
        return expected

    app = drive(scenario)
    saved = tomllib.loads((user_presets_dir() / "fresh-folder.toml").read_text(encoding="utf-8"))
    assert saved["training"]["output_dir"].startswith("runs/tiny-chat-") and saved["training"]["output_dir"].endswith("-2")
    assert app.return_value is None


def test_a_finished_run_folder_is_offered_a_free_name_in_one_press(tmp_path):
    """Back on the review after a run finished in the preset's folder: the folder is taken; one button fixes it."""
    run = tmp_path / "done"
    (run / "adapter").mkdir(parents=True)  # what a finished run leaves: RunFolder.holds_training() reads it
    (run / "events.jsonl").write_text('{"t": 1, "type": "status", "state": "finished", "message": "done"}\n')
    preset = hand_written(user_presets_dir() / "again.toml", run)

    async def scenario(app, pilot):
        app.screen.query_one("#next").focus()
        await pilot.press("7")
        await settle(pilot)
        issues = review_issues(app)
        assert any(issue.startswith(f"training.output_dir: {run} already holds a finished run") for issue in issues)
        fix = app.screen.query_one("#new-folder")
        assert fix.display and str(fix.label) == f"Use a new folder: {run}-2"
        fix.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert app.draft.get("training.output_dir") == f"{run}-2"
        assert review_issues(app) == [] and "No problems" in str(app.screen.query_one("#issues-title").render())
        assert app.focused.id == "next"  # Enter now starts

    drive(scenario, preset=preset)


def test_save_in_the_quit_dialog_saves_then_quits():
    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.click("#save")
        await pilot.pause()
        assert isinstance(app.screen, SaveDialog)
        await pilot.press("home", "ctrl+k", *"saved-on-quit", "enter")
        await pilot.pause()

    app = drive(scenario)
    assert not app.is_running and (user_presets_dir() / "saved-on-quit.toml").is_file()


def test_steps_by_number_or_a_click_on_the_step_bar_and_tab_keeps_the_field_in_view():
    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        # "Training" on the step bar: tui-lora  1/7  Model › Source › Quantisation › LoRA › Data › Training
        title = str(app.screen.query_one("#step-title").render())
        await pilot.click("#step-title", offset=(1 + title.index("Training") + 2, 0))
        await pilot.pause()
        assert isinstance(app.screen, TrainingScreen)
        assert [type(screen) for screen in app.screen_stack[-6:]] == [
            ModelScreen, SourceScreen, QuantizationScreen, LoraScreen, DataScreen, TrainingScreen]
        body = app.screen.query_one("#step-body")
        app.screen.focus_key("training.max_grad_norm")
        for _ in range(8):  # Tab on through precision and evaluation: each lands in view, eval_strategy's drop-down too
            await pilot.press("tab")
            await pilot.pause()
            await pilot.pause()
            if app.screen.query_one("#step-body") in app.focused.ancestors:
                assert body.region.contains_region(app.focused.region), app.focused.id
        app.screen.focus_key("training.bf16")
        await pilot.press("2")
        await pilot.pause()
        assert isinstance(app.screen, SourceScreen)
    drive(scenario)


def test_notifications_leave_the_help_line_and_the_buttons_in_sight():
    from textual.widgets._toast import Toast

    async def main():
        app = WizardApp()
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.press("enter")
            await pilot.pause()
            app.notify("a message long enough to take two lines of a toast at this width", title="Saved")
            await pilot.pause(0.3)
            toast = app.screen.query_one(Toast)
            assert toast.region.bottom <= app.screen.query_one("#help-line").region.y
            assert toast.region.y >= 1  # under the step bar, which says where you are

    asyncio.run(main())


def test_the_wizard_spells_quantisation_one_way():
    """UI prose says "quantisation" (as it says initialisation, tokenising); run-file keys keep quantization.*"""
    import ast
    import re

    import tui_lora.tui

    for path in Path(tui_lora.tui.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                # a key (quantization.x), the section's name or a module's is not prose
                prose = re.sub(r"quantization[._]|^quantization$", "", node.value)
                assert "quantiz" not in prose.lower(), f"{path.name}:{node.lineno}: {node.value!r}"
