"""`tui-lora data`: the examples as the model sees them, and the tokenised cache a second run reuses."""

from __future__ import annotations

import json
import os

from conftest import run_cli, tiny_run_file, write_run_file


def test_jsonl_gives_every_example_with_exact_labels(tmp_path):
    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(tmp_path / "run", data={"max_samples": 0}))
    done = run_cli("data", str(run_file), "--jsonl")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 360  # every sample conversation fits max_length 256 at least up to its first reply
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) <= 256
        assert all(label in (-100, token) for token, label in zip(row["input_ids"], row["labels"]))
        assert row["trained_text"] and all(piece.endswith("<|im_end|>") for piece in row["trained_text"])
        assert row["text"].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")


def test_terminal_view_shows_examples_and_a_summary(tmp_path):
    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(tmp_path / "run"))
    done = run_cli("data", str(run_file), "--count", "2", env={**os.environ, "COLUMNS": "120"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "example 1:" in out and "example 2:" in out and "example 3:" not in out
    assert "whole data set" in out and "trained tokens" in out and "36 train, 12 eval" in out
    # a pipe shows no highlighting: the trained text is marked in the text itself, and the title says how
    assert "trained (between [[ ]])" in out and "<|im_end|>]]" in out and "(highlighted)" not in out


def test_every_row_malformed_is_one_clear_line(tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text('{"instruction": "Human:hi\\nAssistant:"}\n' * 5)  # belle records without an output
    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(tmp_path / "run", data={
        "path": str(data), "format": "belle"}))
    done = run_cli("data", str(run_file))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: data: none of the 5 records could be used as 'belle' (record 1: missing 'output'); "
                      "check data.format"]
    assert "Traceback" not in done.stderr


def test_second_run_reuses_the_tokenised_cache_and_settings_change_it(tmp_path):
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    run_file = write_run_file(tmp_path / "run.toml", tiny_run_file(tmp_path / "run"))

    def cache_files():
        return sorted(p.name for p in (tmp_path / "cache").rglob("cache-*.arrow"))

    first = run_cli("data", str(run_file), "--jsonl", "--count", "1", env=env)
    assert first.returncode == 0 and "tokenising" in first.stderr
    made = cache_files()
    assert made
    second = run_cli("data", str(run_file), "--jsonl", "--count", "1", env=env)
    assert second.returncode == 0 and "tokenising" not in second.stderr  # nothing tokenised again
    assert cache_files() == made and second.stdout == first.stdout
    # anything that changes the tokens makes a new cache entry instead of reusing a stale one
    third = run_cli("data", str(run_file), "--jsonl", "--count", "1", "--set", "data.train_on=last", env=env)
    assert third.returncode == 0 and "tokenising" in third.stderr
    assert len(cache_files()) > len(made)


def test_summary_counted_column_wise_equals_counting_row_by_row(tmp_path):
    """The summary's figures come from pyarrow / numpy on whole columns; counted in Python they are the same."""
    from tui_lora.config import config_from_dict
    from tui_lora.data import prepare, preview
    from tui_lora.models import load_tokenizer

    config = config_from_dict(tiny_run_file(tmp_path / "run", data={"path": "tests/functional/bad_data/"
                                                                            "a_few_bad_rows.jsonl", "max_samples": 0}))
    examples, report = prepare.encode_records(config, load_tokenizer(config))
    rows = examples.to_list()
    assert (report.records, report.skipped, len(rows)) == (26, 2, 24)  # the 2 skipped are out of `examples`
    lengths = preview.whole_set_counts(examples, report)
    assert list(lengths) == [row["n_tokens"] for row in rows]
    assert report.trained_tokens == sum(row["n_trained"] for row in rows)
    width = -(-256 // 8)
    by_hand = [0] * 8
    for row in rows:
        by_hand[min(7, (row["n_tokens"] - 1) // width)] += 1
    assert [count for _, _, count in preview.length_histogram(lengths, 256)] == by_hand
    assert preview.length_histogram([], 256) == [(i * width + 1, (i + 1) * width, 0) for i in range(8)]
