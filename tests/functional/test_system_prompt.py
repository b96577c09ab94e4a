"""data.system_prompt: in every rendered example, through the model's own template, never trained.

Real data (the bundled Belle sample, a messages file), the tiny model's real tokenizer and template,
and Gemma-2's verbatim template (tests/chat_templates) for a template that refuses a system role.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, run_cli, tiny_run_file, write_run_file

from tui_lora.assets import builtin_path
from tui_lora.config import ConfigError, config_from_dict
from tui_lora.data.prepare import encode_records
from tui_lora.errors import UserError
from tui_lora.models import load_tokenizer
from tui_lora.probe import run_probe

PROMPT = "You are Qwyx, a terse assistant who answers in one sentence."


def encoded(tmp_path, **data):
    config = config_from_dict(tiny_run_file(tmp_path / "run", data={"max_samples": 12, **data}))
    tokenizer = load_tokenizer(config)
    examples, report = encode_records(config, tokenizer)
    return tokenizer, examples, report


def texts(tokenizer, examples) -> list[tuple[str, str]]:
    """(whole text, trained text) of each example."""
    out = []
    for ids, labels in zip(examples["input_ids"], examples["labels"]):
        trained = [token for token, label in zip(ids, labels) if label != -100]
        out.append((tokenizer.decode(ids), tokenizer.decode(trained)))
    return out


def test_the_prompt_is_in_every_example_once_and_never_trained(tmp_path):
    tokenizer, examples, report = encoded(tmp_path, system_prompt=PROMPT)
    assert report.records == 12 and report.skipped == 0
    assert "in each conversation that has none (never trained)" in report.system_prompt
    for whole, trained in texts(tokenizer, examples):
        # through the template's own system turn, in place of the default it prints when there is none
        assert whole.startswith(f"<|im_start|>system\n{PROMPT}<|im_end|>") and whole.count(PROMPT) == 1
        assert "You are a helpful assistant." not in whole
        assert trained and "Qwyx" not in trained


def test_without_a_prompt_nothing_changes(tmp_path):
    tokenizer, plain, _ = encoded(tmp_path / "a")
    _, empty, report = encoded(tmp_path / "b", system_prompt="")
    assert report.system_prompt == ""
    assert plain["input_ids"] == empty["input_ids"] and plain["labels"] == empty["labels"]
    assert plain._fingerprint == empty._fingerprint  # the same cache entry as before the setting existed


def test_missing_keeps_a_conversations_own_system_message_and_replace_replaces_it(tmp_path):
    data = tmp_path / "chats.jsonl"
    with_own = {"messages": [{"role": "system", "content": "Old house rules."},
                             {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    without = {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]}
    data.write_text(f"{json.dumps(with_own)}\n{json.dumps(without)}\n", encoding="utf-8")
    common = dict(path=str(data), validation_split=0.5, max_samples=0)
    tokenizer, kept, _ = encoded(tmp_path / "kept", **common, system_prompt=PROMPT)
    (first, _), (second, _) = texts(tokenizer, kept)
    assert "Old house rules." in first and PROMPT not in first
    assert PROMPT in second
    _, replaced, report = encoded(tmp_path / "replaced", **common, system_prompt=PROMPT, system_prompt_mode="replace")
    assert "replacing its own" in report.system_prompt
    assert all(PROMPT in whole and "Old house rules." not in whole for whole, _ in texts(tokenizer, replaced))


def test_another_prompt_is_another_cache_entry(tmp_path):
    _, first, _ = encoded(tmp_path / "a", system_prompt=PROMPT)
    _, again, _ = encoded(tmp_path / "b", system_prompt=PROMPT)
    _, other, _ = encoded(tmp_path / "c", system_prompt="Answer in French.")
    _, replaced, _ = encoded(tmp_path / "d", system_prompt=PROMPT, system_prompt_mode="replace")
    assert first._fingerprint == again._fingerprint
    assert len({first._fingerprint, other._fingerprint, replaced._fingerprint}) == 3


def test_replace_without_a_prompt_is_refused_at_validation(tmp_path):
    with pytest.raises(ConfigError) as refused:
        config_from_dict(tiny_run_file(tmp_path / "run", data={"system_prompt_mode": "replace"}))
    assert "data.system_prompt_mode" in str(refused.value) and "data.system_prompt is empty" in str(refused.value)


def model_with_template(tmp_path, template: str):
    """The tiny model with another chat template (chat_template.jinja, where transformers looks first)."""
    folder = tmp_path / "model"
    shutil.copytree(builtin_path("builtin:tiny-chat"), folder)
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


def test_a_template_without_a_system_role_is_one_line_before_any_record(tmp_path):
    # Gemma-2's own template raises "System role not supported"; without the check every record would fail
    gemma2 = (REPO / "tests" / "chat_templates" / "gemma2.jinja").read_text(encoding="utf-8")
    model = model_with_template(tmp_path, gemma2)
    raw = tiny_run_file(tmp_path / "run", model={"name_or_path": str(model)},
                        data={"system_prompt": PROMPT, "max_samples": 4})
    run_file = str(write_run_file(tmp_path / "run.toml", raw))
    line = "error: data.system_prompt: the model's chat template takes no system message (System role not supported)"
    # at validation (the tokenizer is on this machine), as the data step, and in the wizard's review
    for verb in (["validate"], ["data", "--count", "1"]):
        done = run_cli(*verb[:1], run_file, *verb[1:])
        assert done.returncode == 2, done.stderr
        errors = done.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith(line), errors
        assert "Traceback" not in done.stderr
    answer = run_probe("machine", raw)
    assert [problem.split(" (")[0] for problem in answer["problems"]] == [line.removeprefix("error: ").split(" (")[0]]
    # a data set's own prompt is named by its own key; one without a prompt passes
    own = tiny_run_file(tmp_path / "run", model={"name_or_path": str(model)},
                        data={"path": "", "max_samples": 0, "sources": [
                            {"path": "builtin:belle-sample", "max_samples": 4},
                            {"path": "builtin:belle-sample", "max_samples": 4, "system_prompt": PROMPT}]})
    done = run_cli("validate", str(write_run_file(tmp_path / "own.toml", own)))
    assert done.returncode == 2 and done.stderr.startswith("error: data.sources[2].system_prompt: the model's chat "
                                                           "template takes no system message"), done.stderr
    del own["data"]["sources"][1]["system_prompt"]
    done = run_cli("validate", str(write_run_file(tmp_path / "own.toml", own)))
    assert done.returncode == 0, done.stderr


def test_a_template_that_drops_system_messages_is_refused(tmp_path):
    # a template that prints only user and assistant turns: the prompt would vanish without a word
    drops = ("{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}"
             "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    model = model_with_template(tmp_path, drops)
    config = config_from_dict(tiny_run_file(tmp_path / "run", model={"name_or_path": str(model)},
                                            data={"system_prompt": PROMPT, "max_samples": 4}))
    with pytest.raises(UserError, match="leaves system messages out"):
        encode_records(config, load_tokenizer(config))
