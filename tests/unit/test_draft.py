"""The wizard's draft: text in fields -> run-file values, checked by the one validator, saved without loss."""

from __future__ import annotations

import tomllib

import pytest

from tui_lora.cli import bundled_presets
from tui_lora.config import config_from_dict, load_run_file
from tui_lora.config.load import build_config
from tui_lora.tui.draft import Draft, parse_text, value_text


@pytest.mark.parametrize("key, text, value", [
    ("lora.r", "16", 16),
    ("lora.r", " 1_024 ", 1024),
    ("lora.r", "sixteen", "sixteen"),  # kept as typed, so the loader names the problem
    ("training.learning_rate", "2e-4", 2e-4),
    ("training.num_train_epochs", "3", 3.0),
    ("training.report_to", "tensorboard, wandb", ["tensorboard", "wandb"]),
    ("training.report_to", "", []),
    ("lora.target_modules", "all-linear", "all-linear"),
    ("lora.target_modules", "q_proj, v_proj", ["q_proj", "v_proj"]),
    ("lora.target_modules", "q_proj", ["q_proj"]),
    ("lora.target_modules", "", []),
    ("model.name_or_path", "  Qwen/Qwen2.5-0.5B  ", "Qwen/Qwen2.5-0.5B"),
])
def test_text_becomes_the_value_the_run_file_holds(key, text, value):
    assert parse_text(key, text) == value


@pytest.mark.parametrize("key, value", [
    ("lora.r", 8), ("training.learning_rate", 2e-4), ("training.learning_rate", 1.5e-5),
    ("training.num_train_epochs", 3.0), ("lora.target_modules", ["q_proj", "v_proj"]),
    ("lora.target_modules", "all-linear"), ("training.report_to", ["tensorboard"]),
])
def test_value_text_reads_back_as_the_same_value(key, value):
    assert parse_text(key, value_text(value)) == value


def test_a_wrong_type_gets_the_validators_own_message():
    draft = Draft()
    draft.set("lora.r", parse_text("lora.r", "abc"))
    _, loader_issues = build_config({"lora": {"r": "abc"}})
    assert [str(issue) for issue in draft.check.for_key("lora.r")] == [str(issue) for issue in loader_issues]
    assert draft.check.blocking(["lora.r"])


def test_rules_across_fields_show_but_do_not_block_a_step():
    draft = Draft({"training": {"fp16": True, "bf16": True}})
    issues = draft.check.for_key("training.bf16")
    assert issues and "choose one" in issues[0].message
    assert not draft.check.blocking(["training.bf16", "training.fp16"])


def test_an_echo_of_the_drafts_own_value_is_not_a_change():
    draft = Draft({"lora": {"r": 8}})
    assert not draft.set("lora.r", 8)
    assert not draft.set("training.num_train_epochs", 3.0)  # the default, not in the file: nothing to store
    assert "training" not in draft.raw
    assert draft.set("lora.r", 16) and draft.raw["lora"]["r"] == 16
    assert draft.set("training.bf16", True) and not draft.set("training.bf16", True)


@pytest.mark.parametrize("name", sorted(bundled_presets()))
def test_every_bundled_preset_reads_back_without_losing_a_field(name, tmp_path):
    path = bundled_presets()[name]
    saved = tmp_path / f"{name}.toml"
    saved.write_text(Draft.from_file(path).to_toml(), encoding="utf-8")
    assert load_run_file(saved) == load_run_file(path)


def test_a_hand_written_file_keeps_what_the_schema_refuses(tmp_path):
    text = (
        "# my run\n"
        "[model]\nname_or_path = 'builtin:tiny-chat'\ndtype = 'fp16'\n"
        "[lora]\nr = 16\nrank_typo = 4\n"
        "[extras]\nnote = 'kept'\n"
    )
    path = tmp_path / "hand.toml"
    path.write_text(text, encoding="utf-8")
    draft = Draft.from_file(path)
    body = tomllib.loads(draft.to_toml())
    assert body["model"]["dtype"] == "fp16"          # not replaced by the default
    assert body["lora"]["rank_typo"] == 4            # unknown key kept (and still reported)
    assert body["extras"] == {"note": "kept"}        # unknown section kept
    assert body["lora"]["r"] == 16
    assert {issue.key for issue in draft.check.field_issues} == {"model.dtype", "lora.rank_typo", "extras"}


def test_a_valid_draft_saves_the_full_resolved_run_file():
    draft = Draft({"model": {"name_or_path": "builtin:tiny-chat"}, "data": {"path": "builtin:belle-sample"}})
    assert not draft.check.issues
    body = tomllib.loads(draft.to_toml())
    assert config_from_dict(body) == draft.check.config
    assert body["training"]["learning_rate"] == 2e-4  # defaults are written out, as `tui-lora show` does
