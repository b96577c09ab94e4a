"""Real training runs on the shipped tiny model: LoRA, QLoRA 4-bit and 8-bit, early stopping, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib

import pytest
from conftest import REPO, run_cli, tiny_run_file, write_run_file

from tui_lora.runs.events import read_events
from tui_lora.runs.folder import RunFolder


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def test_demo_style_lora_run_from_the_command_line(tmp_path):
    """The headless command end to end: exit 0, a complete run folder, evaluation loss going down."""
    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(
        tmp_path / "run", training={"max_steps": 8, "eval_on_start": True, "eval_steps": 4, "save_steps": 4,
                                    "report_to": ["tensorboard"]}))
    done = run_cli("run", str(run_file))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    assert "[finished]" in done.stdout  # not a terminal here: plain lines

    folder = RunFolder(tmp_path / "run")
    events = list(read_events(folder.events))
    assert [e["state"] for e in of_type(events, "status")][-1] == "finished"
    train = of_type(events, "train")
    assert [e["step"] for e in train] == list(range(1, 9))
    assert all(e["tokens_per_second"] > 0 and e["learning_rate"] > 0 for e in train[1:])
    evals = of_type(events, "eval")
    assert [e["step"] for e in evals][:3] == [0, 4, 8]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert len(of_type(events, "progress")) == 8

    resolved = tomllib.loads(folder.run_file.read_text())
    assert resolved["model"]["name_or_path"] == "builtin:tiny-chat"
    assert resolved["training"]["output_dir"] == str(folder.path)
    assert resolved["collator"]["label_pad_token_id"] == -100  # every default is written out
    assert [p.name for p in folder.checkpoints()] == ["checkpoint-4", "checkpoint-8"]
    assert list(folder.tensorboard.rglob("events.out.tfevents.*"))
    assert not folder.lock_file.exists()

    # the adapter loads on the base model through peft, with the tokenizer and chat template beside it
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tui_lora.assets import BUILTINS

    base = AutoModelForCausalLM.from_pretrained(BUILTINS["tiny-chat"])
    model = PeftModel.from_pretrained(base, folder.adapter)
    assert model.peft_config["default"].r == 4
    tokenizer = AutoTokenizer.from_pretrained(folder.adapter)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "You are a helpful assistant." in text


def test_same_folder_twice_is_refused_and_nothing_is_touched(tmp_path, train_in_process):
    raw = tiny_run_file(tmp_path / "run", training={"max_steps": 2, "eval_strategy": "no"},
                        data={"validation_split": 0.0})
    folder, _, _ = train_in_process(raw)
    before = folder.events.read_text()
    run_file = write_run_file(tmp_path / "run.toml", raw)
    again = run_cli("run", str(run_file))
    assert again.returncode == 2
    # finished: --resume alone would be refused, so the advice says what to raise; the free folder is named
    assert "already holds a run (it has finished: train it further with --resume and a higher" in again.stderr
    assert f"--set training.output_dir={folder.path}-2" in again.stderr
    assert again.stderr.count("\n") == 1
    assert folder.events.read_text() == before


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_on_a_quantised_base(tmp_path, train_in_process, bits):
    quant = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True} if bits == 4 else {"load_in_8bit": True}
    # evaluation between training steps: on the CPU, bitsandbytes repacks 4-bit weights for inference
    # at eval time, which broke the next training step until the engine turned that off
    raw = tiny_run_file(tmp_path / "run", quantization=quant,
                        training={"max_steps": 3, "eval_steps": 2, "save_strategy": "no"})
    folder, result, events = train_in_process(raw)
    assert [e["step"] for e in of_type(events, "eval")] == [2, 3]
    model_event = of_type(events, "model")[0]
    assert model_event["quantization"] == f"{bits}-bit"
    losses = [e["loss"] for e in of_type(events, "train")]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)  # finite, real losses
    assert (folder.adapter / "adapter_model.safetensors").exists()
    assert result["step"] == 3


def test_early_stopping_stops_the_run(tmp_path, train_in_process):
    # An improvement threshold no evaluation can meet: the run must stop after `patience` evaluations.
    raw = tiny_run_file(tmp_path / "run", training={"max_steps": 40, "eval_steps": 2, "save_steps": 2,
                                                    "load_best_model_at_end": True},
                        early_stopping={"enabled": True, "patience": 2, "threshold": 100.0})
    folder, result, events = train_in_process(raw)
    assert result["stopped_early"] is True
    assert result["step"] < 40
    assert [e["step"] for e in of_type(events, "eval")][:3] == [2, 4, 6]
    assert result["step"] == 6  # first eval sets the best, two more without improvement stop it
    # checkpoints are staged under .partial/ and renamed: the best one is recorded under its final name
    state = json.loads((folder.path / "checkpoint-6" / "trainer_state.json").read_text(encoding="utf-8"))
    best = folder.path / f"checkpoint-{state['best_global_step']}"
    assert state["best_model_checkpoint"] == str(best) and (best / "adapter_model.safetensors").is_file()


def test_interrupt_saves_a_checkpoint_and_resume_reaches_the_same_end(tmp_path, train_in_process):
    """SIGINT mid-run: checkpoint, exit 130; --resume then ends where an uninterrupted run ends."""
    common = dict(training={"max_steps": 10, "eval_strategy": "no", "save_strategy": "steps", "save_steps": 100,
                            "lr_scheduler_type": "linear", "logging_steps": 1},
                  data={"validation_split": 0.0, "max_samples": 64})
    _, straight_result, straight_events = train_in_process(tiny_run_file(tmp_path / "straight", **common))

    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(tmp_path / "cut", **common))
    process = subprocess.Popen([sys.executable, "-m", "tui_lora.cli", "run", str(run_file), "--plain"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = RunFolder(tmp_path / "cut")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        steps = [e["step"] for e in read_events(folder.events) if e["type"] == "progress"]
        if steps and steps[-1] >= 3:
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    events = list(read_events(folder.events))
    assert of_type(events, "status")[-1]["state"] == "interrupted"
    checkpoint = folder.latest_checkpoint()
    stopped_at = int(checkpoint.name.split("-")[1])
    assert 3 <= stopped_at < 10

    resumed = run_cli("run", str(run_file), "--resume", "--plain")
    assert resumed.returncode == 0, resumed.stderr
    events = list(read_events(folder.events))
    second_session = events[max(i for i, e in enumerate(events) if e.get("state") == "starting"):]
    steps = [e["step"] for e in of_type(second_session, "train")]
    assert steps[0] == stopped_at + 1 and steps[-1] == 10
    # Same schedule (learning rates), same batches in the same order (token counts), same losses. The
    # losses get a tolerance: two uninterrupted CPU runs already differ in the 4th digit after a few steps.
    straight = {e["step"]: e for e in of_type(straight_events, "train")}
    straight_tokens = {e["step"]: e["tokens_seen"] for e in of_type(straight_events, "progress")}
    for event in of_type(second_session, "train"):
        assert event["learning_rate"] == pytest.approx(straight[event["step"]]["learning_rate"], rel=1e-6)
        assert event["loss"] == pytest.approx(straight[event["step"]]["loss"], rel=1e-2)
    for event in of_type(second_session, "progress"):
        assert event["tokens_seen"] == straight_tokens[event["step"]]


def test_target_modules_that_match_nothing_fail_before_loading_weights(tmp_path):
    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(
        tmp_path / "run", lora={"target_modules": ["query_key_value"]}))
    done = run_cli("run", str(run_file))
    assert done.returncode == 2
    assert "lora.target_modules: 'query_key_value' match no layer LoRA can adapt in this model" in done.stderr
    assert "q_proj" in done.stderr and "Traceback" not in done.stderr
    events = list(read_events(RunFolder(tmp_path / "run").events))
    assert of_type(events, "status")[-1]["state"] == "failed"
    assert not of_type(events, "model")  # the weights never loaded

    # nothing was trained, so the corrected run may use the same folder
    write_run_file(run_file, tiny_run_file(tmp_path / "run", training={"max_steps": 1, "eval_strategy": "no"},
                                           data={"validation_split": 0.0}))
    again = run_cli("run", str(run_file))
    assert again.returncode == 0, again.stderr
    states = [e["state"] for e in of_type(read_events(RunFolder(tmp_path / "run").events), "status")]
    assert states[0] == "starting" and "failed" in states and states[-1] == "finished"


def test_resume_must_continue_the_same_run(tmp_path, train_in_process):
    raw = tiny_run_file(tmp_path / "run", training={"max_steps": 2, "eval_strategy": "no", "save_steps": 2},
                        data={"validation_split": 0.0})
    folder, _, _ = train_in_process(raw)
    saved = folder.run_file.read_text()
    run_file = write_run_file(tmp_path / "run.toml", raw)

    finished = run_cli("run", str(run_file), "--resume")
    assert finished.returncode == 2
    assert "checkpoint-2 is already at the end of the run (step 2" in finished.stderr

    changed = run_cli("run", str(run_file), "--resume", "--set", "lora.r=16", "--set", "training.max_steps=4")
    assert changed.returncode == 2
    assert "--resume: changed since the run being resumed" in changed.stderr and ": lora.r;" in changed.stderr
    assert folder.run_file.read_text() == saved  # the record of the run is untouched

    longer = run_cli("run", str(run_file), "--resume", "--set", "training.max_steps=3")
    assert longer.returncode == 0, longer.stderr
    assert [e["step"] for e in of_type(read_events(folder.events), "train")][-1] == 3


def test_a_diverging_loss_fails_the_run_instead_of_showing_zero(tmp_path):
    # DoRA on the tied output layer of the random tiny model gives a NaN loss at the first step
    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(
        tmp_path / "run", lora={"use_dora": True, "target_modules": ["q_proj", "lm_head"]},
        training={"max_steps": 5, "eval_strategy": "no"}, data={"validation_split": 0.0}))
    done = run_cli("run", str(run_file))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TrainingDiverged: loss became nan at step 1" in done.stderr
    assert "loss 0.0000" not in done.stdout


def test_default_template_is_saved_with_the_adapter(tmp_path, train_in_process):
    import shutil

    from tui_lora.assets import BUILTINS
    from tui_lora.data.encode import DEFAULT_CHAT_TEMPLATE

    model = tmp_path / "no-template"
    shutil.copytree(BUILTINS["tiny-chat"], model)
    (model / "chat_template.jinja").unlink()
    folder, _, events = train_in_process(tiny_run_file(
        tmp_path / "run", model={"name_or_path": str(model)},
        training={"max_steps": 1, "eval_strategy": "no"}, data={"validation_split": 0.0}))
    assert any("no chat template" in e.get("message", "") for e in of_type(events, "log"))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(folder.adapter).chat_template == DEFAULT_CHAT_TEMPLATE


def test_event_log_lines_are_json(tmp_path, train_in_process):
    folder, _, _ = train_in_process(tiny_run_file(tmp_path / "run", training={"max_steps": 2}))
    for line in folder.events.read_text().splitlines():
        event = json.loads(line)
        assert {"t", "type"} <= set(event)


def test_streaming_data_trains_for_max_steps(tmp_path, train_in_process):
    raw = tiny_run_file(tmp_path / "run", data={"streaming": True, "validation_split": 0.0, "max_samples": 0},
                        training={"max_steps": 3, "eval_strategy": "no", "save_strategy": "no"})
    folder, result, events = train_in_process(raw)
    assert result["step"] == 3
    assert [e["step"] for e in of_type(events, "train")] == [1, 2, 3]
    assert (folder.adapter / "adapter_model.safetensors").exists()


def test_modules_to_save_must_name_a_module(tmp_path, train_in_process):
    from tui_lora.errors import UserError

    with pytest.raises(UserError, match="lora.modules_to_save: 'lm_haed' name no module of this model"):
        train_in_process(tiny_run_file(tmp_path / "run", lora={"modules_to_save": ["lm_haed"]}))
