"""Column and role mapping: records in the user's own layout, read through data.*_column / *_roles.

Real files in layouts auto-detection does not know, the tiny model's real tokenizer and template,
and labels checked token by token: exactly the mapped replies (and their end marker) are trained.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, tiny_run_file, trained_pieces, write_run_file

from tui_lora.config import ConfigError, config_from_dict
from tui_lora.data.prepare import encode_records
from tui_lora.models import load_tokenizer

DIALOG = [
    {"dialog": [{"speaker": "A", "text": "What is LoRA?"}, {"speaker": "B", "text": "A low-rank adapter."},
                {"speaker": "A", "text": "Is it small?"}, {"speaker": "B", "text": "A few megabytes."}],
     "persona": "You are a patient tutor."},
    {"dialog": [{"speaker": "S", "text": "Be brief."}, {"speaker": "A", "text": "你好"},
                {"speaker": "B", "text": "你好！有什么可以帮你？"}], "persona": ""},
    {"dialog": [{"speaker": "A", "text": "Hi"}, {"speaker": "C", "text": "Who am I?"}], "persona": ""},
]
DIALOG_MAPPING = dict(messages_column="dialog", role_key="speaker", content_key="text", user_roles=["A"],
                      assistant_roles=["B"], system_roles=["S"], system_column="persona")


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return str(path)


def encoded(tmp_path, **data):
    config = config_from_dict(tiny_run_file(tmp_path / "run", data={"validation_split": 0.5, "max_samples": 0,
                                                                    **data}))
    tokenizer = load_tokenizer(config)
    examples, report = encode_records(config, tokenizer)
    return tokenizer, examples, report


def test_a_dialog_with_its_own_speakers_trains_exactly_the_replies(tmp_path):
    path = write_jsonl(tmp_path / "dialog.jsonl", DIALOG)
    tokenizer, examples, report = encoded(tmp_path, path=path, max_bad_share=0.5, **DIALOG_MAPPING)
    assert report.format == "messages" and report.records == 3 and report.skipped == 1
    assert report.bad_records[0][0] == 3 and "speaker 'C', which the mapping does not name" in report.bad_records[0][1]
    first, second = examples["input_ids"], examples["labels"]
    assert trained_pieces(tokenizer, first[0], second[0]) == ["A low-rank adapter.<|im_end|>",
                                                              "A few megabytes.<|im_end|>"]
    assert trained_pieces(tokenizer, first[1], second[1]) == ["你好！有什么可以帮你？<|im_end|>"]
    whole = tokenizer.decode(first[0])
    assert whole.startswith("<|im_start|>system\nYou are a patient tutor.<|im_end|>")  # the persona column
    assert "<|im_start|>user\nWhat is LoRA?<|im_end|>" in whole
    # a system turn by its own speaker value; the empty persona adds nothing beside it
    assert tokenizer.decode(first[1]).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n你好")


def test_instruction_records_under_other_column_names(tmp_path):
    records = [{"question": "Translate to French", "context": "good morning", "answer": "bonjour"},
               {"question": "Capital of Japan?", "context": "", "answer": "Tokyo."}]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    tokenizer, examples, report = encoded(tmp_path, path=path, prompt_column="question", input_column="context",
                                          reply_column="answer")
    assert report.format == "alpaca" and report.skipped == 0
    whole = [tokenizer.decode(ids) for ids in examples["input_ids"]]
    assert "<|im_start|>user\nTranslate to French\ngood morning<|im_end|>" in whole[0]
    assert "<|im_start|>user\nCapital of Japan?<|im_end|>" in whole[1]
    assert trained_pieces(tokenizer, examples["input_ids"][0], examples["labels"][0]) == ["bonjour<|im_end|>"]


def test_the_mapping_is_part_of_the_cache_key(tmp_path):
    path = write_jsonl(tmp_path / "dialog.jsonl", DIALOG[:2])
    _, mapped, _ = encoded(tmp_path / "a", path=path, **DIALOG_MAPPING)
    _, again, _ = encoded(tmp_path / "b", path=path, **DIALOG_MAPPING)
    _, other, _ = encoded(tmp_path / "c", path=path, **{**DIALOG_MAPPING, "system_column": ""})
    assert mapped._fingerprint == again._fingerprint != other._fingerprint


def test_a_column_the_file_lacks_is_one_line_naming_it_and_the_columns_there(tmp_path):
    path = write_jsonl(tmp_path / "dialog.jsonl", DIALOG)
    raw = tiny_run_file(tmp_path / "run", data={"path": path, **DIALOG_MAPPING, "messages_column": "dialogue"})
    done = run_cli("data", str(write_run_file(tmp_path / "run.toml", raw)), "--count", "1")
    assert done.returncode == 2, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: data.messages_column: the data has no column 'dialogue'; its columns are dialog, persona "
        f"(data.path {path})"]
    assert "Traceback" not in done.stderr and "tokenising" not in done.stderr  # refused before any record is mapped


@pytest.mark.parametrize("data, key, words", [
    ({"messages_column": "dialog", "prompt_column": "q", "reply_column": "a"}, "data.messages_column",
     "two layouts"),
    ({"prompt_column": "q"}, "data.reply_column", "is needed with data.prompt_column"),
    ({"input_column": "c"}, "data.input_column", "only applies with data.prompt_column"),
    ({"system_column": "persona"}, "data.system_column", "only applies with"),
    ({"messages_column": "dialog", "format": "sharegpt"}, "data.format", "leave format = \"auto\""),
    ({"messages_column": "dialog", "assistant_roles": []}, "data.assistant_roles", "is empty"),
    ({"messages_column": "dialog", "user_roles": ["A"], "assistant_roles": ["A"]}, "data.assistant_roles",
     "'A' is also in data.user_roles"),
])
def test_a_mapping_that_makes_no_sense_is_refused_at_validation(tmp_path, data, key, words):
    with pytest.raises(ConfigError) as refused:
        config_from_dict(tiny_run_file(tmp_path / "run", data=data))
    assert f"{key}" in str(refused.value) and words in str(refused.value)
