"""After training, on a real tiny run: chat (CLI and TUI), eval against the base model, merge without peft.

The module trains the shipped tiny model once, on conversations whose every reply is the same
short sentence, long enough for greedy decoding to answer with exactly that sentence and then
its end-of-turn token, where the untrained base model babbles until the token limit. That makes
"the adapter is what answered" and "generation stopped at the end of the turn" checkable.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, run_cli, tiny_run_file, train_run

from tui_lora.runs.events import read_events



@pytest.fixture(autouse=True)
def environment_as_it_was():
    """The chat screen quiets the libraries through this process's environment (as the wizard's process
    would); give the tests after these their environment back, or their commands would inherit it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


REPLY = "Sure, here it is."
TOPICS = ["rivers", "tea", "stars", "trains", "maps", "bread", "music", "cats", "rain", "books"]


def write_conversations(path, count: int = 64):
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            question = f"Tell me about {TOPICS[i % len(TOPICS)]}, number {i}."
            handle.write(json.dumps({"messages": [{"role": "user", "content": question},
                                                  {"role": "assistant", "content": REPLY}]}) + "\n")
    return path


def train(raw: dict):
    return train_run(raw)[0].path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_conversations(tmp_path_factory.mktemp("data") / "short.jsonl")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_file):
    """A finished run whose adapter (on every projection and lm_head, tied to the embeddings) says REPLY."""
    folder = tmp_path_factory.mktemp("after") / "run"
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    # one evaluation batch holds the whole validation split, so the Trainer's eval_loss is a token mean too
    return train(tiny_run_file(
        folder, tokenizer={"max_length": 128}, lora={"target_modules": targets},
        data={"path": str(data_file), "max_samples": 0, "validation_split": 0.25},
        training={"max_steps": 40, "learning_rate": 1e-2, "per_device_train_batch_size": 8,
                  "per_device_eval_batch_size": 16, "eval_strategy": "steps", "eval_steps": 40,
                  "save_strategy": "no", "logging_steps": 10}))


@pytest.fixture(scope="module")
def chat_model(trained_run):
    from tui_lora.after.chat import ChatModel
    from tui_lora.after.loading import find_adapter

    return ChatModel.load(find_adapter(str(trained_run)))


def chat_input(tokenizer, question: str = "Hello, who are you?"):
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         return_dict=True, return_tensors="pt")


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, done.stderr + done.stdout
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr


# ---------------------------------------------------------------- chat


def test_chat_prompt_answers_once_and_stops_at_the_end_of_turn(trained_run):
    done = run_cli("chat", str(trained_run), "--prompt", "Tell me about clouds.", "--temperature", "0",
                   "--max-new-tokens", "64")
    assert done.returncode == 0, done.stderr
    # the reply alone on stdout (loading notes go to stderr), without the end-of-turn token's text
    assert done.stdout == REPLY + "\n"
    assert "<|im_end|>" not in done.stdout
    assert "cut at --max-new-tokens" not in done.stderr and "Traceback" not in done.stderr


def test_answers_stream_and_say_why_they_stopped(chat_model):
    from tui_lora.after.chat import GenerationSettings

    pieces: list[str] = []
    greedy = GenerationSettings(max_new_tokens=24, temperature=0)
    reply = chat_model.answer([{"role": "user", "content": "What is tea?"}], greedy, pieces.append)
    assert reply.text == REPLY and reply.stopped_by == "end_of_turn"
    assert len(pieces) > 1 and "".join(pieces).strip() == REPLY  # streamed piece by piece
    # the end-of-turn token is the last generated token: the sentence's tokens plus one
    assert reply.new_tokens == len(chat_model.tokenizer.encode(REPLY, add_special_tokens=False)) + 1

    base = chat_model.answer([{"role": "user", "content": "What is tea?"}], greedy, use_adapter=False)
    assert base.stopped_by == "max_new_tokens" and base.new_tokens == 24 and base.text != REPLY


def test_sampling_with_a_seed_repeats_itself(chat_model):
    from tui_lora.after.chat import GenerationSettings

    sampled = GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    question = [{"role": "user", "content": "Say something."}]
    first = chat_model.answer(question, sampled, use_adapter=False)
    again = chat_model.answer(question, sampled, use_adapter=False)
    other = chat_model.answer(question, GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=8),
                              use_adapter=False)
    assert first.text == again.text
    assert other.text != first.text


def test_a_conversation_from_stdin_compares_with_the_base_model(trained_run):
    done = run_cli("chat", str(trained_run), "--compare", "--temperature", "0", "--max-new-tokens", "12",
                   input="Hello there\n/reset\n/nonsense\nWhat about maps?\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines.count(f"adapter> {REPLY}") == 2
    assert len([line for line in lines if line.startswith("base> ")]) == 2
    assert "(a new conversation)" in done.stderr and "unknown command /nonsense" in done.stderr
    assert "(base: cut at --max-new-tokens 12" in done.stderr and "Traceback" not in done.stderr


def test_chat_json_reports_both_models(trained_run):
    done = run_cli("chat", str(trained_run), "--prompt", "Hi", "--compare", "--json", "--temperature", "0",
                   "--max-new-tokens", "10", "--system", "You are terse.")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["adapter"]["text"] == REPLY and answer["adapter"]["stopped_by"] == "end_of_turn"
    assert answer["base"]["stopped_by"] == "max_new_tokens" and answer["base"]["new_tokens"] == 10


def test_long_conversations_lose_their_oldest_exchanges(chat_model):
    from tui_lora.after.chat import GenerationSettings

    history = []
    for i in range(60):
        history += [{"role": "user", "content": f"question {i} " + "words " * 20},
                    {"role": "assistant", "content": REPLY}]
    history.append({"role": "user", "content": "And now?"})
    full = len(chat_model._prompt_ids(history))
    assert full > chat_model.context  # longer than the model can see
    reply = chat_model.answer(history, GenerationSettings(max_new_tokens=16, temperature=0))
    assert chat_model.context - 16 - 60 < reply.prompt_tokens <= chat_model.context - 16  # as much as fits
    assert reply.new_tokens > 0


# ---------------------------------------------------------------- the TUI


def test_the_finished_run_screen_opens_a_chat_that_answers(trained_run):
    from textual.widgets import Input

    from tui_lora.after.chat import GenerationSettings
    from tui_lora.tui.attach import AttachApp
    from tui_lora.tui.screens.chat import ChatScreen
    from tui_lora.tui.screens.run import RunScreen

    async def until(pilot, condition, seconds, what):
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await pilot.pause(0.2)

    async def main():
        app = AttachApp(trained_run)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.5)
            assert app.screen.query_one("#chat").display  # finished: the Chat button shows
            await pilot.press("c")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, ChatScreen)
            await until(pilot, lambda: screen.model is not None, 60, "the model to load")
            screen.settings = GenerationSettings(max_new_tokens=32, temperature=0)
            screen.query_one("#chat-input", Input).value = "Tell me about snow."
            await pilot.press("enter")
            await until(pilot, lambda: screen.replies, 60, "the reply")
            await pilot.pause(0.2)
            assert screen.replies[0].text == REPLY and screen.replies[0].stopped_by == "end_of_turn"
            log = [str(line) for line in screen.query_one("#chat-log").lines]
            assert "you> Tell me about snow." in log and f"adapter> {REPLY}" in log
            assert screen.messages[-1] == {"role": "assistant", "content": REPLY}
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, RunScreen)

    asyncio.run(main())


# ---------------------------------------------------------------- eval


def test_eval_finds_the_adapter_better_than_the_base_on_its_training_data(trained_run, data_file):
    done = run_cli("eval", str(trained_run), "--data", str(data_file), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    scores = {score["model"]: score for score in report["scores"]}
    assert report["examples"] == 64
    assert scores["adapter"]["loss"] < scores["base"]["loss"] - 2  # the base never saw this reply
    assert scores["adapter"]["tokens"] == scores["base"]["tokens"] > 0
    for score in scores.values():
        assert score["perplexity"] == pytest.approx(math.exp(score["loss"]))


def test_eval_on_the_validation_split_matches_the_runs_own_evaluation(trained_run):
    """Same examples, same labels: the split the run held out, scored as the Trainer scored it."""
    from tui_lora.after.evaluate import evaluate, report_lines

    report = evaluate(str(trained_run), [])
    assert report.examples == 16  # a quarter of 64
    result = [e for e in read_events(trained_run / "events.jsonl") if e["type"] == "result"][-1]
    adapter = next(score for score in report.scores if score.model == "adapter")
    assert adapter.loss == pytest.approx(result["metrics"]["eval_loss"], abs=2e-3)
    lines = report_lines(report)
    assert lines[1].split() == ["model", "loss", "perplexity", "tokens"] and lines[3].startswith("adapter")


# ---------------------------------------------------------------- merge


def merged_logits_match(merged_dir, adapter_where: str, question: str = "Hello, who are you?"):
    """(max |merged - adapter| over the logits, max |adapter - base|) on one chat prompt."""
    from transformers import AutoModelForCausalLM

    from tui_lora.after.loading import find_adapter, load_adapter_model

    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    with_adapter, tokenizer = load_adapter_model(find_adapter(adapter_where))
    inputs = chat_input(tokenizer, question)
    with torch.inference_mode():
        expected = with_adapter(**inputs).logits
        with with_adapter.disable_adapter():
            base = with_adapter(**inputs).logits
        got = merged(**inputs).logits
    return (got - expected).abs().max().item(), (expected - base).abs().max().item()


def test_merged_model_answers_like_the_adapter_and_loads_without_peft(trained_run, tmp_path):
    out = tmp_path / "merged"
    done = run_cli("merge", str(trained_run), "--out", str(out), preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    assert f"merged model written to {out}" in done.stdout and "untied" in done.stdout
    # under umask 022 the weights are 0644 like the rest (safetensors alone would make them 0600)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir() if p.stat().st_mode & 0o777 != 0o644} == {}
    assert out.stat().st_mode & 0o777 == 0o755
    files = {path.name for path in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= files
    assert "adapter_config.json" not in files and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # lm_head carried an adapter and is tied to the embeddings: merged naively, logits would differ by ~0.5
    difference, adapter_effect = merged_logits_match(out, str(trained_run))
    assert adapter_effect > 0.1  # the adapter changes the logits, so matching them means something
    assert difference < 1e-4
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and "quantization_config" not in config
    assert (out / "chat_template.jinja").read_text() == (trained_run / "adapter" / "chat_template.jinja").read_text()

    # transformers alone loads it and answers as the adapter did: peft cannot even be imported here
    script = (
        "import sys; sys.modules['peft'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"path = {str(out)!r}\n"
        "tok = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path)\n"
        "inputs = tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], add_generation_prompt=True,"
        " return_dict=True, return_tensors='pt')\n"
        "out = model.generate(**inputs, max_new_tokens=20, do_sample=False)\n"
        "print(tok.decode(out[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True))\n")
    plain = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == REPLY

    # a second merge into the now non-empty folder is refused, and leaves it as it is
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_cli("merge", str(trained_run), "--out", str(out))
    assert_one_line_error(again, "not empty", "--force")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_merge_with_force_replaces_the_folder_and_an_untouched_lm_head_stays_tied(tmp_path):
    """An adapter folder on its own (no run around it), with an adapter only on q_proj and v_proj."""
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tui_lora.after.merge import merge
    from tui_lora.assets import BUILTINS

    base = AutoModelForCausalLM.from_pretrained(BUILTINS["tiny-chat"])
    torch.manual_seed(0)
    # random B (init_lora_weights=False): an adapter whose update is not zero, without training one
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(BUILTINS["tiny-chat"]).save_pretrained(tmp_path / "adapter")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old-file.txt").write_text("replaced by --force")

    result = merge(str(tmp_path / "adapter"), str(out), force=True)
    assert result.untied is False
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "generation_config.json",
                                                            "model.safetensors", "tokenizer.json",
                                                            "tokenizer_config.json", "chat_template.jinja"])
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()  # tied: stored once
    difference, adapter_effect = merged_logits_match(out, str(tmp_path / "adapter"))
    assert adapter_effect > 1e-3 and difference < 1e-4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_a_4bit_qlora_adapter_merges_into_the_base_loaded_unquantised(tmp_path):
    from tui_lora.after.merge import merge

    run = train(tiny_run_file(tmp_path / "qlora", quantization={"load_in_4bit": True},
                              lora={"target_modules": ["q_proj", "v_proj", "lm_head"], "lora_dropout": 0.0},
                              data={"max_samples": 16, "validation_split": 0.0},
                              training={"max_steps": 2, "eval_strategy": "no", "save_strategy": "no"}))
    result = merge(str(run), str(tmp_path / "merged"))
    assert result.dtype == "float32"  # the run's model.dtype, not 4-bit
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    # the merge is exact against the adapter on the unquantised base: what the merged weights are
    assert _against_unquantised(tmp_path / "merged", run) < 1e-4


def _against_unquantised(merged_dir, run) -> float:
    from transformers import AutoModelForCausalLM

    from tui_lora.after.loading import attach_adapter, find_adapter, load_base_model, load_tokenizer

    trained = find_adapter(str(run), ["quantization.load_in_4bit=false"])
    tokenizer = load_tokenizer(trained, trained.config)
    with_adapter = attach_adapter(load_base_model(trained.config), trained)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    inputs = chat_input(tokenizer)
    with torch.inference_mode():
        return (merged(**inputs).logits - with_adapter(**inputs).logits).abs().max().item()


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_line_and_exit_status_2(trained_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.toml").write_text((trained_run / "run.toml").read_text())
    (tmp_path / "notes.txt").write_text("not data")
    cases = [
        (("chat", str(tmp_path / "missing")), "no such folder"),
        (("chat", str(tmp_path)), "not a run folder"),
        (("eval", str(unfinished)), "has no adapter yet"),
        (("merge", str(trained_run), "--out", str(trained_run / "adapter"), "--force"), "the run's own files"),
        (("eval", str(trained_run), "--data", str(tmp_path / "nope.jsonl")), "--data"),
        (("eval", str(trained_run), "--data", str(tmp_path / "notes.txt")), "not a data file"),
        (("chat", str(trained_run), "--json"), "--prompt"),
        (("chat", str(trained_run), "--set", "model.dtype=float64", "--prompt", "x"), "model.dtype"),
    ]
    if not torch.cuda.is_available():  # a run trained on a GPU, chatted with elsewhere
        cases.append((("chat", str(trained_run), "--set", "model.device_map=cuda", "--prompt", "x"),
                      "--set model.device_map=cpu"))
    for args, fragment in cases:
        assert_one_line_error(run_cli(*args), fragment)
