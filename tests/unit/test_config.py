"""The run file: loading, overrides, rules, writing; every bad file gets its one clear line."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tui_lora.config import ConfigError, config_from_dict, load_run_file, save_run_file, to_toml
from tui_lora.config.load import parse_override
from tui_lora.config.schema import SECTIONS, RunConfig, section_fields
from tui_lora.errors import UserError

BAD_FILES = sorted((Path(__file__).parent / "bad_run_files").glob("*.toml"))
REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "presets").glob("*.toml"))


def expected_message(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first[len("# expect: "):]


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_run_file_is_named_in_one_line(path):
    with pytest.raises(UserError) as caught:
        load_run_file(path)
    message = str(caught.value)
    assert expected_message(path) in message
    assert len(message.splitlines()) == 1, f"expected one problem, got: {message}"


def test_bad_run_files_through_the_cli_exit_2_without_traceback():
    """The whole corpus through the real command line, in one interpreter to keep it quick."""
    script = (
        "import sys, io, contextlib\n"
        "from tui_lora.cli import main\n"
        "for path in sys.argv[1:]:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        code = main(['validate', path])\n"
        "    print(path, code, repr(err.getvalue()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, *map(str, BAD_FILES)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == len(BAD_FILES)
    for line, path in zip(out, BAD_FILES):
        name, code, err = line.split(" ", 2)
        assert code == "2", line
        err = ast.literal_eval(err)  # repr of the captured stderr
        assert err.startswith("error: ") and err.count("\n") == 1, line
        assert "Traceback" not in err
        assert expected_message(path) in err


def test_several_problems_are_all_reported():
    raw = {"model": {"name_or_path": "builtin:tiny-chat"}, "data": {"path": "builtin:belle-sample"},
           "lora": {"r": 0, "lora_dropout": 2.0, "bias": "some"}}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    keys = [issue.key for issue in caught.value.issues]
    assert keys == ["lora.r", "lora.lora_dropout", "lora.bias"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_bundled_presets_validate_and_round_trip(path, tmp_path):
    config = load_run_file(path)
    out = tmp_path / "again.toml"
    save_run_file(config, out)
    again = load_run_file(out)
    assert again == config
    assert out.read_text() == to_toml(again)


def test_show_fills_every_default():
    text = to_toml(config_from_dict({"model": {"name_or_path": "builtin:tiny-chat"},
                                     "data": {"path": "builtin:belle-sample"}}))
    parsed = tomllib.loads(text)
    for section in SECTIONS:
        assert set(parsed[section]) == set(section_fields(section)), section


def test_every_field_has_help_and_a_toml_value():
    for section in SECTIONS:
        for name, spec in section_fields(section).items():
            assert spec.metadata["help"].strip(), f"{section}.{name} has no help"
            assert getattr(getattr(RunConfig(), section), name) is not None


@pytest.mark.parametrize("text,expected", [
    ("lora.r=16", ("lora", "r", 16)),
    ("training.learning_rate=1e-4", ("training", "learning_rate", 1e-4)),
    ("training.output_dir=/tmp/run one", ("training", "output_dir", "/tmp/run one")),
    ('lora.target_modules=["q_proj", "v_proj"]', ("lora", "target_modules", ["q_proj", "v_proj"])),
    ("training.bf16=true", ("training", "bf16", True)),
    ("model.name_or_path=Qwen/Qwen2.5-0.5B", ("model", "name_or_path", "Qwen/Qwen2.5-0.5B")),
])
def test_override_values_are_read_as_toml_or_text(text, expected):
    assert parse_override(text) == expected


def test_overrides_apply_and_are_validated():
    raw = {"model": {"name_or_path": "builtin:tiny-chat"}, "data": {"path": "builtin:belle-sample"}}
    config = config_from_dict(raw, ["lora.r=32", "training.max_steps=5"])
    assert (config.lora.r, config.training.max_steps) == (32, 5)
    with pytest.raises(ConfigError, match="lora.r: 0 is too small"):
        config_from_dict(raw, ["lora.r=0"])
    with pytest.raises(UserError, match="expected section.key=value"):
        config_from_dict(raw, ["r=3"])


def test_save_never_overwrites_unless_told(tmp_path):
    config = RunConfig()
    path = tmp_path / "mine.toml"
    path.write_text("# my notes\n")
    with pytest.raises(UserError, match="already exists"):
        save_run_file(config, path)
    assert path.read_text() == "# my notes\n"
    save_run_file(config, path, overwrite=True)
    assert tomllib.loads(path.read_text())["lora"]["r"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["mine.toml"]  # no temp file left behind
