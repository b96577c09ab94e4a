"""Several data sets in one run ([[data.sources]]): each read in its own layout, mixed as data.mix says.

Real files, the tiny model's real tokenizer and template, the real datasets mix (concatenate_datasets,
interleave_datasets), and labels checked token by token for every source.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import run_cli, tiny_run_file, trained_pieces, write_run_file

from tui_lora.config import ConfigError, config_from_dict
from tui_lora.data.prepare import encode_records, prepare_datasets, split_examples
from tui_lora.models import load_tokenizer

PROMPT = "You are Qwyx, a terse tutor."


def dialog_records(count: int) -> list[dict]:
    """An export in a layout of its own: `talk` turns keyed who/say, speakers A and B."""
    return [{"talk": [{"who": "A", "say": f"Question {i}: 你好 {i}?"}, {"who": "B", "say": f"Answer {i} 好的"}],
             "persona": "Be kind." if i % 3 == 0 else ""} for i in range(count)]


DIALOG_MAPPING = dict(messages_column="talk", role_key="who", content_key="say", user_roles=["A"],
                      assistant_roles=["B"], system_column="persona")


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return str(path)


def two_sources(tmp_path, mix: str = "concat", belle: dict | None = None, own: dict | None = None, **data) -> dict:
    own_path = tmp_path / "own.jsonl"  # written once: a rewritten file is another cache entry (its mtime)
    if not own_path.exists():
        write_jsonl(own_path, dialog_records(20))
    raw = tiny_run_file(tmp_path / "run")
    if not data.get("validation_split"):
        raw["training"]["eval_strategy"] = "no"
    raw["data"] = {"mix": mix, "validation_split": 0.0, **data, "sources": [
        {"path": "builtin:belle-sample", "max_samples": 30, **(belle or {})},
        {"path": str(own_path), **DIALOG_MAPPING, **(own or {})}]}
    return raw


def prepared(raw: dict):
    config = config_from_dict(raw)
    tokenizer = load_tokenizer(config)
    train, evaluation, report = prepare_datasets(config, tokenizer)
    return tokenizer, train, evaluation, report


def digest(*parts) -> str:
    """The examples' token ids, labels and masks in order, as one hash."""
    h = hashlib.sha256()
    for part in parts:
        for row in part:
            h.update(json.dumps([row["input_ids"], row["labels"], row["attention_mask"]]).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


# Digests of prepare_datasets' train and eval sets for two one-source run files, computed with the code
# before [[data.sources]] existed (commit 3e7b783) on the pinned libraries (constraints.txt).
BEFORE_SOURCES = {"belle": ("6bdf05a991e8292c", 342, 18), "mapped": ("785a3b008253a58d", 20, 5)}


def test_a_one_source_run_file_gives_byte_identical_examples_to_before(tmp_path):
    dialog = write_jsonl(tmp_path / "dialog.jsonl", dialog_records(30))
    base = {"model": {"name_or_path": "builtin:tiny-chat"}, "training": {"output_dir": str(tmp_path / "r")}}
    runs = {"belle": {**base, "data": {"path": "builtin:belle-sample"}},
            "mapped": {**base, "data": {"path": dialog, "messages_column": "talk", "role_key": "who",
                                        "content_key": "say", "user_roles": ["A"], "assistant_roles": ["B"],
                                        "system_column": "persona", "system_prompt": "You are Belle.",
                                        "validation_split": 0.2, "max_samples": 25}}}
    for name, raw in runs.items():
        _, train, evaluation, report = prepared(raw)
        assert (digest(train, evaluation), len(train), len(evaluation)) == BEFORE_SOURCES[name], name
        assert report.mix == "" and len(report.sources) == 1


def test_two_layouts_concatenated_train_exactly_their_replies_with_the_prompt_never_trained(tmp_path):
    tokenizer, train, evaluation, report = prepared(two_sources(tmp_path, system_prompt=PROMPT))
    assert evaluation is None and report.format == "belle + messages"
    assert [(s.records, s.train_examples, s.skipped) for s in report.sources] == [(30, 30, 0), (20, 20, 0)]
    assert len(train) == 50
    for index, row in enumerate(train):
        text = tokenizer.decode(row["input_ids"])
        pieces = trained_pieces(tokenizer, row["input_ids"], row["labels"])
        assert pieces and all(PROMPT not in piece and "Be kind." not in piece for piece in pieces)
        if index >= 30:  # concat keeps the order: the mapped file's conversations come last
            number = index - 30
            assert pieces == [f"Answer {number} 好的<|im_end|>"]
            # a record's own system message (persona) stays; the others get the run's prompt
            assert ("Be kind." in text) == (number % 3 == 0) and (PROMPT in text) == (number % 3 != 0)
        else:
            assert PROMPT in text and text.count(PROMPT) == 1
    shares = [s.trained_tokens for s in report.sources]
    assert sum(shares) == report.trained_tokens


def test_interleaving_by_weight_follows_the_weights_and_the_seed(tmp_path):
    raw = two_sources(tmp_path, mix="interleave_over", belle={"weight": 1.0}, own={"weight": 3.0})
    _, train, _, report = prepared(raw)
    first = [s.train_examples for s in report.sources]
    # oversampling until both are used whole: the mapped file (20, weight 3) repeats, Belle (30) is read once
    assert first[0] >= 30 and first[1] > first[0]
    assert "interleaved by weight (25%, 75%) until every source is used whole" in report.mix
    _, again, _, _ = prepared(raw)
    assert digest(again) == digest(train)  # the same seed, the same mix
    raw["training"]["seed"] = 7
    _, other, _, _ = prepared(raw)
    assert digest(other) != digest(train)
    raw["data"]["mix"] = "interleave_under"
    _, under, _, report = prepared(raw)
    counts = [s.train_examples for s in report.sources]
    assert counts[1] == 20 and counts[0] < 20  # stopped when the first source ran out: the weighted one


def test_validation_per_source_holds_out_a_share_of_each(tmp_path):
    raw = two_sources(tmp_path, mix="interleave_under", validation_split=0.25, validation_per_source=True,
                      own={"weight": 2.0})
    _, train, evaluation, report = prepared(raw)
    assert [s.eval_examples for s in report.sources] == [8, 5]  # a quarter of 30 and of 20, rounded up
    assert len(evaluation) == 13 == report.eval_examples
    raw["data"]["validation_per_source"] = False
    _, _, together, report = prepared(raw)
    assert len(together) == 13 and sum(s.eval_examples for s in report.sources) == 13


def test_an_unchanged_mix_reuses_the_cache_and_a_changed_source_does_not(tmp_path):
    config = config_from_dict(two_sources(tmp_path))
    tokenizer = load_tokenizer(config)
    first, _ = encode_records(config, tokenizer)
    again, _ = encode_records(config, tokenizer)
    assert first._fingerprint == again._fingerprint
    for change in ({"own": {"system_prompt": PROMPT}}, {"own": {"role_key": "who", "system_column": ""}},
                   {"belle": {"max_samples": 29}}):
        changed, _ = encode_records(config_from_dict(two_sources(tmp_path, **change)), tokenizer)
        assert changed._fingerprint != first._fingerprint, change
    weighted = config_from_dict(two_sources(tmp_path, mix="interleave_under", own={"weight": 2.0}))
    heavier = config_from_dict(two_sources(tmp_path, mix="interleave_under", own={"weight": 4.0}))
    mixes = []
    for settings in (weighted, heavier):
        examples, report = encode_records(settings, tokenizer)
        assert examples._fingerprint == first._fingerprint  # the weights act after encoding: same cache entry
        mixes.append(split_examples(examples, settings, report)[0]._fingerprint)
    assert mixes[0] != mixes[1]


def test_streaming_interleaves_both_sources(tmp_path):
    raw = two_sources(tmp_path, mix="interleave_under", streaming=True, own={"weight": 1.0})
    raw["training"]["max_steps"] = 2
    config = config_from_dict(raw)
    examples, report = encode_records(config, load_tokenizer(config))
    rows = list(examples.take(12))
    assert {row["source"] for row in rows} == {0, 1}
    assert report.mix.startswith("2 sources, interleaved")


@pytest.mark.parametrize("data, says", [
    ({"path": "builtin:belle-sample", "sources": [{"path": "builtin:belle-sample"}]},
     "data.path: is set, but the run lists [[data.sources]]"),
    ({"messages_column": "talk", "sources": [{"path": "builtin:belle-sample"}]},
     "data.messages_column: is set, but the run lists [[data.sources]]"),
    ({"sources": [{"path": "builtin:belle-sample", "weight": 2.0}]}, "data.sources[1].weight: only matters"),
    ({"mix": "interleave_under", "sources": [{"path": "builtin:belle-sample", "weight": 0.0}]},
     "data.sources[1].weight: 0.0 is not a share of the mix"),
    ({"sources": [{"path": ""}]}, "data.sources[1].path: is required"),
    ({"sources": [{"path": "builtin:belle-sample", "prompt_column": "q"}]},
     "data.sources[1].reply_column: is needed with data.sources[1].prompt_column"),
    ({"sources": [{"path": "builtin:belle-sample", "weigth": 2}]}, "data.sources[1].weigth: unknown key; did you "
                                                                    "mean weight?"),
    ({"sources": "builtin:belle-sample"}, "data.sources: must be a list of tables"),
])
def test_a_mix_that_cannot_work_is_named_before_anything_loads(tmp_path, data, says):
    raw = tiny_run_file(tmp_path / "run")
    raw["data"] = dict(data)
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    assert says in str(caught.value)


def test_mix_without_sources_is_refused(tmp_path):
    raw = tiny_run_file(tmp_path / "run", data={"mix": "interleave_over"})
    with pytest.raises(ConfigError, match=r"data.mix: is 'interleave_over', which mixes several data sets"):
        config_from_dict(raw)


def test_a_mapping_naming_a_missing_column_is_one_line_naming_the_source(tmp_path):
    raw = two_sources(tmp_path, own={"messages_column": "dialog"})
    run_file = write_run_file(tmp_path / "mix.toml", raw)
    done = run_cli("data", str(run_file))
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr and "tokenising" not in done.stderr
    assert errors[0].startswith("error: data.sources[2].messages_column: the data has no column 'dialog'; its "
                                "columns are talk, persona (data.sources[2].path ")


def test_a_two_source_run_trains_and_reports_each_source(tmp_path, train_in_process):
    raw = two_sources(tmp_path, mix="interleave_under", validation_split=0.2, system_prompt=PROMPT,
                      own={"weight": 2.0})
    raw["training"].update(max_steps=2, eval_steps=2, save_steps=2)
    folder, result, events = train_in_process(raw)
    data = next(event for event in events if event["type"] == "data")
    assert [source["path"].rsplit("/", 1)[-1] for source in data["sources"]] == ["builtin:belle-sample", "own.jsonl"]
    assert all(source["train_examples"] > 0 and source["eval_examples"] > 0 for source in data["sources"])
    assert data["train_examples"] == sum(source["train_examples"] for source in data["sources"])
    assert result["step"] == 2


def test_the_wizards_preview_reads_every_source_and_shows_an_example_of_each(tmp_path):
    from tui_lora.probe import probe_data
    from tui_lora.tui.screens.data import describe_data

    answer = probe_data(config_from_dict(two_sources(tmp_path, own={"max_samples": 5})))
    assert [(source["format"], source["records"]) for source in answer["sources"]] == [("belle", 30), ("messages", 5)]
    assert [example["source"] for example in answer["examples"][:2]] == [0, 1]  # the sources in turn
    assert answer["records"] == 35 and answer["sampled"] is False
    shown = describe_data(answer)
    assert "source 1: builtin:belle-sample (belle) · 30 records" in shown and "source 2: " in shown
