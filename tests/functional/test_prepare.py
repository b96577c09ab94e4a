"""The data path a run takes: records on disk -> prepare_datasets -> labels, on the shipped tokenizer."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_run_file

from tui_lora.config import config_from_dict
from tui_lora.models import load_tokenizer
from tui_lora.errors import UserError
from tui_lora.data.prepare import prepare_datasets

BELLE = {"instruction": "Human:What is 2 + 3?\nAssistant:2 + 3 = 5.\nHuman:And times 4?\nAssistant:5 × 4 = 20.\n"
                        "Human:用中文说一遍。\nAssistant:",
         "input": "", "output": "五乘以四等于二十。"}


def prepared(tmp_path, records, **data):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    config = config_from_dict(tiny_run_file(tmp_path / "run", data={"path": str(path), "validation_split": 0.0,
                                                                    "max_samples": 0, **data},
                                            training={"eval_strategy": "no"}))
    tokenizer = load_tokenizer(config)
    return (*prepare_datasets(config, tokenizer), tokenizer)


def test_multi_turn_belle_labels_token_by_token(tmp_path):
    train, _, report, tokenizer = prepared(tmp_path, [BELLE])
    assert report.format == "belle" and report.train_examples == 1
    ids, labels = train[0]["input_ids"], train[0]["labels"]
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."},
                {"role": "user", "content": "And times 4?"}, {"role": "assistant", "content": "5 × 4 = 20."},
                {"role": "user", "content": "用中文说一遍。"}, {"role": "assistant", "content": "五乘以四等于二十。"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ids) == rendered  # one rendering, default system prompt included once
    assert rendered.count("You are a helpful assistant.") == 1

    # walk the tokens: consecutive trained tokens form exactly the replies, each with its <|im_end|>
    spans, current = [], []
    for token, label in zip(ids, labels):
        assert label in (token, -100)
        if label == -100:
            if current:
                spans.append(tokenizer.decode(current))
            current = []
        else:
            current.append(token)
    if current:
        spans.append(tokenizer.decode(current))
    assert spans == ["2 + 3 = 5.<|im_end|>", "5 × 4 = 20.<|im_end|>", "五乘以四等于二十。<|im_end|>"]


def test_bad_rows_are_counted_and_named(tmp_path):
    broken = {"instruction": "Human:hello\nAssistant:"}  # no output
    train, _, report, _ = prepared(tmp_path, [BELLE] * 19 + [broken], format="belle")
    assert (report.records, report.skipped, report.train_examples) == (20, 1, 19)
    assert report.bad_records[0][0] == 20  # record numbers count from 1, in file order


def test_too_many_bad_rows_stop_before_training(tmp_path):
    broken = {"instruction": "Human:hello\nAssistant:"}
    with pytest.raises(UserError, match=r"data: 5 of 10 records \(50%\) could not be used.*record 6"):
        prepared(tmp_path, [BELLE] * 5 + [broken] * 5, format="belle")


def test_unknown_format_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="data.format: could not detect the format"):
        prepared(tmp_path, [{"question": "q", "answer": "a"}])


ALPACA = [{"instruction": f"Add {n} and {n}.", "input": "", "output": f"{n} + {n} = {2 * n}."} for n in range(1, 9)]


def _write(path, rows):
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")  # one JSON array
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)


def test_every_file_type_and_a_folder_give_the_same_examples(tmp_path):
    def examples(path):
        config = config_from_dict(tiny_run_file(tmp_path / "run", data={"path": str(path), "validation_split": 0.0,
                                                                        "max_samples": 0},
                                                training={"eval_strategy": "no"}))
        train, _, report, = prepare_datasets(config, load_tokenizer(config))
        assert report.format == "alpaca"  # detected, not told
        return train["input_ids"], train["labels"]

    expected = None
    for suffix in (".json", ".jsonl", ".parquet", ".csv"):
        path = tmp_path / f"chats{suffix}"
        _write(path, ALPACA)
        got = examples(path)
        assert expected is None or got == expected, suffix
        expected = got
    folder = tmp_path / "shards"
    folder.mkdir()
    _write(folder / "a.jsonl", ALPACA[:4])
    _write(folder / "b.jsonl", ALPACA[4:])
    assert examples(folder) == expected


def test_messages_and_sharegpt_records_train_the_same_replies(tmp_path):
    turns = [("Hi!", "Hello."), ("What is 2 + 2?", "4.")]
    messages = {"messages": [m for q, a in turns for m in ({"role": "user", "content": q},
                                                             {"role": "assistant", "content": a})]}
    sharegpt = {"conversations": [m for q, a in turns for m in ({"from": "human", "value": q},
                                                                  {"from": "gpt", "value": a})]}
    first, _, report_a, _ = prepared(tmp_path / "a", [messages] * 3)
    second, _, report_b, _ = prepared(tmp_path / "b", [sharegpt] * 3)
    assert (report_a.format, report_b.format) == ("messages", "sharegpt")
    assert first["labels"] == second["labels"] and first["input_ids"] == second["input_ids"]


def test_mixed_folder_and_empty_file_are_clear_errors(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _write(folder / "a.jsonl", ALPACA)
    _write(folder / "b.csv", ALPACA)
    with pytest.raises(UserError, match="mixes file types"):
        prepared_path(tmp_path, folder)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="data"):
        prepared_path(tmp_path, empty)


def prepared_path(tmp_path, path):
    config = config_from_dict(tiny_run_file(tmp_path / "run", data={"path": str(path), "validation_split": 0.0},
                                            training={"eval_strategy": "no"}))
    return prepare_datasets(config, load_tokenizer(config))


def test_a_save_to_disk_folder_is_read_as_written(tmp_path):
    import datasets

    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "saved"))
    from_folder = prepared_path(tmp_path, tmp_path / "saved")
    _write(tmp_path / "same.jsonl", ALPACA)
    from_file = prepared_path(tmp_path, tmp_path / "same.jsonl")
    assert from_folder[0]["input_ids"] == from_file[0]["input_ids"]
    assert from_folder[2].records == len(ALPACA)
