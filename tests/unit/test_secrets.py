"""Secrets in run files are refused by key and by shape, and no message, event or preview repeats one."""

from __future__ import annotations

import json

import pytest
import tomli_w

from tui_lora.cli import main
from tui_lora.config import ConfigError, config_from_dict
from tui_lora.config.schema import SECTIONS, section_fields
from tui_lora.runs.events import EventLog, read_events
from tui_lora.secret_guard import is_secret_key, redact, strip_secrets
from tui_lora.tui.draft import Draft

# Built here, not written out whole: a literal token in the repository is what secret scanners look for.
TOKEN = "hf_" + "TuiLoraTestNotAToken" + "0123456789abcdef"
TINY = {"model": {"name_or_path": "builtin:tiny-chat"}, "data": {"path": "builtin:belle-sample"}}


def refusal_of(raw: dict, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, overrides)
    assert len(caught.value.issues) == 1, caught.value
    return str(caught.value)


def says_where_tokens_come_from(message: str) -> bool:
    return "never go" in message and "HF_TOKEN" in message and "hf auth login" in message


@pytest.mark.parametrize("section, key", [
    ("hub", "token"), ("hub", "hf_token"), ("hub", "use_auth_token"), ("model", "api_key"), ("training", "password"),
    ("hub", "HF_TOKEN"), ("data", "secret"), ("training", "wandb_api-key"), ("hub", "auth")])
def test_a_key_that_names_a_secret_is_refused_by_name_never_by_value(section, key):
    message = refusal_of({**TINY, section: {key: "s3cr3t-value"}})
    assert message.startswith(f"{section}.{key}: is a secret")
    assert says_where_tokens_come_from(message) and "s3cr3t-value" not in message


def test_a_secret_at_the_top_level_or_in_an_unknown_section_is_refused_too():
    message = refusal_of({**TINY, "token": "s3cr3t-value"})
    assert message.startswith("token: is a secret") and "s3cr3t-value" not in message
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**TINY, "wandb": {"project": "x", "api_key": "s3cr3t-value"}})
    assert [issue.key for issue in caught.value.issues] == ["wandb.api_key", "wandb"]  # then: no such section
    assert "s3cr3t-value" not in str(caught.value)


@pytest.mark.parametrize("where", [
    {"model": {"revision": TOKEN}}, {"description": f"my run, token {TOKEN}"}, {"lora": {"r": TOKEN}},
    {"lora": {"target_modules": ["q_proj", TOKEN]}}, {"hub": {"endpoint": f"https://{TOKEN}@hf-mirror.com"}},
    {"model": {"name_or_path": TOKEN}}])
def test_a_hub_token_pasted_into_any_field_is_refused_without_echoing_it(where):
    raw = {**TINY, **{k: {**TINY.get(k, {}), **v} if isinstance(v, dict) else v for k, v in where.items()}}
    message = refusal_of(raw)
    assert "holds what looks like a hub token" in message and says_where_tokens_come_from(message)
    assert TOKEN not in message and TOKEN[3:20] not in message


def test_no_setting_of_the_schema_is_taken_for_a_secret():
    for section in SECTIONS:
        assert not is_secret_key(section)
        for key in section_fields(section):
            assert not is_secret_key(key), f"{section}.{key}"
    assert not is_secret_key("tokenizer") and not is_secret_key("label_pad_token_id")


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps({**TINY, "training": {"output_dir": str(tmp_path / "run")}}))
    return path


@pytest.mark.parametrize("override, shown", [
    ("hub.hf_token=hf_SECRET2", "--set hub.hf_token=***: is a secret"),
    ("hub.token=s3cr3t", "--set hub.token=***: is a secret"),
    (f"model.revision={TOKEN}", "--set model.revision=***: holds what looks like a hub token"),
    ("hf_token=hf_SECRET2", "--set 'hf_token=***': expected section.key=value"),
    (f"{TOKEN}.x=1", "--set ***.x=1: unknown section"),
])
def test_set_never_echoes_a_secret(run_file, capsys, override, shown):
    assert main(["validate", str(run_file), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {shown}") and err.count("\n") == 1, err
    assert "SECRET2" not in err and "s3cr3t" not in err and TOKEN not in err


def test_any_error_line_has_the_environments_tokens_blanked(run_file, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "plain-looking-secret-9")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "another-secret-1234")
    assert main(["validate", str(run_file), "--set", "model.name_or_path=/no/plain-looking-secret-9",
                 "--set", "data.path=/no/another-secret-1234.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "'/no/***' does not exist" in err and "'/no/***.jsonl' does not exist" in err
    assert "secret-9" not in err and "secret-1234" not in err


def test_redact_leaves_short_environment_values_alone(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "1")  # not a token; blanking every "1" would wreck every message
    assert redact("step 1 of 10") == "step 1 of 10"
    assert redact(f"Bearer {TOKEN}.") == "Bearer ***."


def test_the_event_log_blanks_tokens_in_the_file_and_for_its_listeners(tmp_path, monkeypatch):
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "env-token-abcdef")
    seen = []
    log = EventLog(tmp_path / "events.jsonl", [seen.append])
    log.log("warning", f"request failed with Authorization: Bearer {TOKEN}")
    log.emit("download", repo="x", headers={"authorization": ["env-token-abcdef"]})
    log.close()
    written = (tmp_path / "events.jsonl").read_text()
    assert TOKEN not in written and "env-token-abcdef" not in written
    assert TOKEN not in json.dumps(seen) and "env-token-abcdef" not in json.dumps(seen)
    events = list(read_events(tmp_path / "events.jsonl"))
    assert events[0]["message"] == "request failed with Authorization: Bearer ***"
    assert events[1]["headers"] == {"authorization": ["***"]}


def test_the_wizard_drops_secrets_from_a_file_it_opens_and_says_which(tmp_path):
    raw = {**TINY, "description": "keep me", "hub": {"token": "s3cr3t", "offline": True},
           "my_notes": {"author": "me", "api_key": "s3cr3t"}, "password": "s3cr3t"}
    draft = Draft(raw)
    assert draft.removed_secrets == ["hub.token", "my_notes.api_key", "password"]
    text = draft.to_toml()
    assert "s3cr3t" not in text and "api_key" not in text and "password" not in text
    assert "offline = true" in text and 'author = "me"' in text  # everything else is kept, unknown keys too
    assert all("secret" not in issue.message for issue in draft.check.issues)


def test_a_token_typed_into_a_field_is_refused_there_and_never_in_the_preview():
    draft = Draft(TINY)
    draft.set("model.revision", TOKEN)
    draft.set("description", f"run with {TOKEN}")
    assert sorted(issue.key for issue in draft.check.field_issues) == ["description", "model.revision"]
    assert TOKEN not in draft.to_toml() and TOKEN not in "\n".join(map(str, draft.check.issues))
    assert 'revision = "main"' in draft.to_toml()


def test_strip_secrets_reaches_nested_tables():
    kept, removed = strip_secrets({"a": {"b": {"token": 1, "c": [TOKEN], "d": 2}}, "e": 3})
    assert kept == {"a": {"b": {"d": 2}}, "e": 3} and removed == ["a.b.token", "a.b.c"]
