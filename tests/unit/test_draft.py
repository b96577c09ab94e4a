"""The wizard's draft: text in fields -> run-file values, checked by the one validator, saved without loss."""

from __future__ import annotations

import tomllib

import pytest

from tui_lora.presets import bundled_presets
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


def test_a_run_file_without_a_folder_gets_a_new_one_and_one_that_names_it_keeps_it(tmp_path, monkeypatch):
    import datetime

    from tui_lora.runs.folder import fresh_run_folder

    monkeypatch.chdir(tmp_path)
    day = datetime.date.today().isoformat()
    draft = Draft({"model": {"name_or_path": "builtin:tiny-chat"}})
    assert draft.get("training.output_dir") == f"runs/tiny-chat-{day}-1" == draft.check.config.training.output_dir
    assert not draft.names("training.output_dir")
    (tmp_path / "runs" / f"tiny-chat-{day}-1").mkdir(parents=True)  # another run took it
    draft.set("model.name_or_path", "Qwen/Qwen2.5-0.5B-Instruct")
    assert draft.get("training.output_dir") == f"runs/Qwen2.5-0.5B-Instruct-{day}-1"
    draft.set("model.name_or_path", "builtin:tiny-chat")
    assert draft.get("training.output_dir") == f"runs/tiny-chat-{day}-2"
    assert Draft({"training": {"output_dir": "runs/mine"}}).get("training.output_dir") == "runs/mine"
    assert draft.pin_output_dir() and draft.raw["training"]["output_dir"] == f"runs/tiny-chat-{day}-2"
    assert draft.names("training.output_dir") and not draft.pin_output_dir()  # Start writes it into the file
    # a taken folder the user chose is counted on; the schema's placeholder gets a real name instead
    (tmp_path / "runs" / "demo").mkdir()
    assert fresh_run_folder("builtin:tiny-chat", taken="runs/demo") == "runs/demo-2"
    (tmp_path / "runs" / "demo-2").mkdir()
    assert fresh_run_folder("builtin:tiny-chat", taken="runs/demo-2") == "runs/demo-3"
    placeholder = Draft({"model": {"name_or_path": "builtin:tiny-chat"}, "training": {"output_dir": "runs/run"}})
    assert placeholder.free_folder() == f"runs/tiny-chat-{day}-2"


def test_saving_a_file_that_was_read_changes_only_the_lines_whose_values_changed(tmp_path):
    text = ("# top comment\ndescription = \"mine\"\n\n[model]\nname_or_path = \"builtin:tiny-chat\"  # model\n\n"
            "[data]\npath = \"builtin:belle-sample\"\n\n"
            "[training]\nlearning_rate = 3e-4   # lr, my way\nmax_steps = 5\n\n[hub]\ntoken = \"hf_secret\"\n"
            "offline = true\n")
    path = tmp_path / "mine.toml"
    path.write_text(text, encoding="utf-8")
    draft = Draft.from_file(path)
    assert draft.file_text() == text.replace('token = "hf_secret"\n', "")  # the secret goes, nothing else
    draft.set("training.max_steps", 9)
    draft.set("lora.r", 16)
    saved = draft.file_text()
    assert saved.startswith("# top comment\n") and "learning_rate = 3e-4   # lr, my way\n" in saved
    assert "max_steps = 9\n" in saved and tomllib.loads(saved)["lora"] == {"r": 16}
    assert load_run_file_text(tmp_path, saved).training.max_steps == 9


def load_run_file_text(folder, text):
    path = folder / "check.toml"
    path.write_text(text, encoding="utf-8")
    return load_run_file(path)


def test_a_second_data_set_moves_the_first_into_the_list_and_removing_it_gives_back_the_one_source_form():
    draft = Draft({"data": {"path": "builtin:belle-sample", "format": "belle", "messages_column": "",
                            "validation_split": 0.1, "system_prompt": "Be kind."}})
    assert draft.add_source() == 2
    # the data set [data] described, with every key it set for itself; [data] keeps what all share
    assert draft.raw["data"] == {"validation_split": 0.1, "system_prompt": "Be kind.", "sources": [
        {"path": "builtin:belle-sample", "format": "belle", "messages_column": ""}, {"path": ""}]}
    assert [str(issue) for issue in draft.check.issues if issue.key.startswith("data")] == [
        "data.sources[2].path: is required: a data file or folder, a hub data set id, or builtin:belle-sample"]
    draft.set("data.sources[2].path", "builtin:belle-sample")
    draft.set("data.sources[2].weight", parse_text("data.sources[2].weight", "2"))
    draft.set("data.sources[2].user_roles", parse_text("data.sources[2].user_roles", "A, human"))
    draft.set("data.sources[2].system_prompt", "Be brief.")
    draft.set("data.mix", "interleave_under")
    assert draft.get("data.sources[2].user_roles") == ["A", "human"] and draft.get("data.sources[1].weight") == 1.0
    assert draft.names("data.sources[2].weight") and not draft.names("data.sources[1].weight")
    sources = draft.check.config.data.sources
    assert [(source.weight, source.system_prompt) for source in sources] == [(1.0, ""), (2.0, "Be brief.")]
    assert draft.add_source() == 3 and len(draft.sources()) == 3
    draft.remove_source(3)
    draft.remove_source(1)
    # one left: its keys are [data]'s again (its own prompt in place of the run's), and mixing keys go
    assert draft.raw["data"] == {"validation_split": 0.1, "system_prompt": "Be brief.", "path": "builtin:belle-sample",
                                 "user_roles": ["A", "human"]}
    assert draft.check.field_issues == []


def test_a_data_sets_bad_value_is_kept_as_typed_in_its_own_table(tmp_path):
    draft = Draft({"data": {"sources": [{"path": "builtin:belle-sample"}, {"path": "builtin:belle-sample"}]}})
    draft.set("data.sources[2].weight", "lots")
    assert [str(issue) for issue in draft.check.field_issues] == [
        "data.sources[2].weight: 'lots' has the wrong type; it must be a number"]
    saved = tomllib.loads(draft.to_toml())["data"]["sources"]
    assert saved[1]["weight"] == "lots" and saved[0]["weight"] == 1.0


def test_the_machine_probes_lines_become_issues_of_the_keys_they_name():
    from tui_lora.tui.draft import machine_issues

    issues = machine_issues({"ok": True, "problems": ["training.bf16: this machine has no GPU with bfloat16",
                                                      "something without a key"]})
    assert [(issue.key, issue.message) for issue in issues] == [
        ("training.bf16", "this machine has no GPU with bfloat16"), ("", "something without a key")]
    assert machine_issues(None) == [] == machine_issues({"ok": False, "error": "the probe timed out"})
