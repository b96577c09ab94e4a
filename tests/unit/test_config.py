"""The run file: loading, overrides, rules, writing; every bad file gets its one clear line."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tui_lora.assets import BUILTINS
from tui_lora.cli import main
from tui_lora.config import ConfigError, config_from_dict, load_run_file, save_run_file, to_toml
from tui_lora.config import rules
from tui_lora.config.load import parse_override
from tui_lora.config.schema import FORMATS, TRAIN_ON
from tui_lora.config.schema import SECTIONS, RunConfig, section_fields
from tui_lora.config.write import write_atomic
from tui_lora.errors import UserError

BAD_FILES = sorted((Path(__file__).parent / "bad_run_files").glob("*.toml"))
REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "presets").glob("*.toml"))


def expected_message(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8-sig")  # byte_order_mark.toml starts with one
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
    # a plain string key keeps the text, whatever TOML would make of it
    ("training.output_dir=2024", ("training", "output_dir", "2024")),
    ("model.revision=1234567", ("model", "revision", "1234567")),
    ("model.revision=1e3", ("model", "revision", "1e3")),
    ("data.split=true", ("data", "split", "true")),
    ('training.output_dir="runs/quoted"', ("training", "output_dir", "runs/quoted")),
    # other keys still read TOML
    ("tokenizer.max_length=2024", ("tokenizer", "max_length", 2024)),
    ("nosuch.key=7", ("nosuch", "key", 7)),
])
def test_override_values_are_read_as_toml_or_text(text, expected):
    assert parse_override(text) == expected


def test_overrides_apply_and_are_validated():
    raw = {"model": {"name_or_path": "builtin:tiny-chat"}, "data": {"path": "builtin:belle-sample"}}
    config = config_from_dict(raw, ["lora.r=32", "training.max_steps=5"])
    assert (config.lora.r, config.training.max_steps) == (32, 5)
    with pytest.raises(ConfigError, match="lora.r=0: 0 is too small"):
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


# ---------------------------------------------------------------- --set


TINY = {"model": {"name_or_path": "builtin:tiny-chat"}, "data": {"path": "builtin:belle-sample"}}


def test_string_keys_set_to_numbers_stay_strings():
    config = config_from_dict(TINY, ["training.output_dir=2024", "model.revision=1234567"])
    assert (config.training.output_dir, config.model.revision) == ("2024", "1234567")


def run_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "base.toml"
    path.write_text('[model]\nname_or_path = "builtin:tiny-chat"\n[data]\npath = "builtin:belle-sample"\n' + text,
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("override,expected", [
    ("lora.r=0", "--set lora.r=0: 0 is too small; it must be at least 1"),
    ("lora.rr=3", "--set lora.rr=3: unknown key; did you mean r?"),
    ("trainig.max_steps=3", "--set trainig.max_steps=3: unknown section or top-level key; did you mean training?"),
    ("lora.target_modules=q_proj", "--set lora.target_modules=q_proj: 'q_proj' is not allowed as a string"),
    ("training.learning_rate=nan", "--set training.learning_rate=nan: nan is not allowed; it must be a finite number"),
])
def test_problems_from_set_are_blamed_on_set_not_on_the_file(tmp_path, override, expected):
    path = run_file(tmp_path, "")
    with pytest.raises(ConfigError) as caught:
        load_run_file(path, [override])
    message = str(caught.value)
    assert message.startswith(expected), message
    assert str(path) not in message and len(message.splitlines()) == 1


def test_file_and_set_problems_each_name_their_origin(tmp_path):
    path = run_file(tmp_path, "[training]\nlearning_rate = -1.0\n")
    with pytest.raises(ConfigError) as caught:
        load_run_file(path, ["lora.r=0", "lora.r=0"])  # repeated: still one problem
    assert str(caught.value).splitlines() == [
        "--set lora.r=0: 0 is too small; it must be at least 1",
        f"{path}: training.learning_rate: -1.0 is too small; it must be at least 0.0",
    ]
    # a --set that replaces the file's bad value is blamed, the file is not
    path = run_file(tmp_path, "[lora]\nr = 4\n")
    with pytest.raises(ConfigError, match=r"^--set lora.r=-2: -2 is too small"):
        load_run_file(path, ["lora.r=-2"])


def test_set_problem_through_the_cli_is_one_line_exit_2(tmp_path):
    path = run_file(tmp_path, "")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path), "--set", "lora.r=0"])
    assert code == 2
    assert err.getvalue() == "error: --set lora.r=0: 0 is too small; it must be at least 1\n"


# ---------------------------------------------------------------- single values


def test_label_pad_token_id_allows_only_minus_100_and_says_why():
    assert config_from_dict(TINY).collator.label_pad_token_id == -100
    for bad in (-77, 0):
        with pytest.raises(ConfigError, match=rf"collator.label_pad_token_id: {bad} is not allowed; choose -100 "
                                              r"\(the model's loss ignores only -100"):
            config_from_dict({**TINY, "collator": {"label_pad_token_id": bad}})
    assert "-100" in section_fields("collator")["label_pad_token_id"].metadata["help"]


@pytest.mark.parametrize("section,key", [(section, key) for section in SECTIONS
                                         for key, spec in section_fields(section).items() if spec.type == "float"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_float_key_refuses_nan_and_inf(section, key, value):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**TINY, section: {key: value}})
    assert str(caught.value) == f"{section}.{key}: {value!r} is not allowed; it must be a finite number"


def test_seed_range_and_best_metric_choices():
    assert config_from_dict({**TINY, "training": {"seed": 0}}).training.seed == 0
    assert config_from_dict({**TINY, "training": {"seed": 2**32 - 1}}).training.seed == 2**32 - 1
    for metric in ("eval_loss", "loss"):
        assert config_from_dict({**TINY, "training": {"metric_for_best_model": metric}})
    with pytest.raises(ConfigError, match=r"choose one of 'eval_loss', 'loss' \(evaluation computes no metrics besides the loss\); did you mean eval_loss\?$"):
        config_from_dict({**TINY, "training": {"metric_for_best_model": "eval_los"}})


@pytest.mark.parametrize("output_dir", ["", "   "])
def test_output_dir_is_required(output_dir):
    with pytest.raises(ConfigError, match=r"^training.output_dir: is required: give the run folder"):
        config_from_dict({**TINY, "training": {"output_dir": output_dir}})


def test_reduce_lr_on_plateau_needs_evaluation():
    plateau = {"lr_scheduler_type": "reduce_lr_on_plateau"}
    assert config_from_dict({**TINY, "training": {**plateau, "eval_strategy": "epoch"}})
    with pytest.raises(ConfigError, match="training.lr_scheduler_type: .* needs evaluation; set eval_strategy"):
        config_from_dict({**TINY, "training": {**plateau, "eval_strategy": "no"}})


def test_schema_choices_come_from_the_data_modules():
    assert section_fields("data")["format"].metadata["choices"] == ("auto",) + FORMATS
    assert section_fields("data")["train_on"].metadata["choices"] == TRAIN_ON


def test_config_package_imports_no_ml_library():
    heavy = ("torch", "transformers", "datasets", "peft", "huggingface_hub")
    code = (f"import sys, tui_lora.config, tui_lora.config.reference; "
            f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------- report_to


def pretend_missing(monkeypatch, *missing: str):
    real = rules.importlib.util.find_spec
    monkeypatch.setattr(rules.importlib.util, "find_spec",
                        lambda name, *a: None if name in missing else real(name, *a))


@pytest.mark.parametrize("reporter", ["wandb", "mlflow", "trackio"])
def test_report_to_an_integration_that_is_not_installed(monkeypatch, reporter):
    pretend_missing(monkeypatch, reporter)
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**TINY, "training": {"report_to": ["tensorboard", reporter]}})
    assert str(caught.value) == (f"training.report_to: {reporter!r} needs the {reporter} package, which is not "
                                 f"installed; run pip install {reporter}, or remove {reporter!r} from the list")


def test_report_to_tensorboard_needs_tensorboard_or_tensorboardx(monkeypatch):
    pretend_missing(monkeypatch, "tensorboardX")
    assert config_from_dict(TINY).training.report_to == ["tensorboard"]  # tensorboard is a dependency
    pretend_missing(monkeypatch, "tensorboard", "tensorboardX")
    with pytest.raises(ConfigError, match="'tensorboard' needs the tensorboard package.*pip install tensorboard"):
        config_from_dict(TINY)
    assert config_from_dict({**TINY, "training": {"report_to": ["none"]}})


def test_report_to_check_imports_nothing():
    code = ("import sys; from tui_lora.config import config_from_dict; "
            "config_from_dict({'model': {'name_or_path': 'builtin:tiny-chat'}, "
            "'data': {'path': 'builtin:belle-sample'}}); "
            "assert 'tensorboard' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------- local model folders and data files


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "my-model"
    shutil.copytree(BUILTINS["tiny-chat"], folder)
    return folder


def model_problem(folder: Path, **tokenizer) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"model": {"name_or_path": str(folder)}, "data": {"path": "builtin:belle-sample"},
                          "tokenizer": tokenizer})
    return str(caught.value)


def test_a_complete_local_model_folder_passes(model_folder):
    config = config_from_dict({"model": {"name_or_path": str(model_folder)}, "data": {"path": "builtin:belle-sample"}})
    assert config.model.name_or_path == str(model_folder)


@pytest.mark.parametrize("body,what", [
    ([1, 2], "it is not a JSON object"),
    ({"architectures": ["Qwen2ForCausalLM"]}, 'it has no "model_type" key'),
])
def test_model_config_without_model_type_is_not_a_model_config(model_folder, body, what):
    (model_folder / "config.json").write_text(json.dumps(body))
    assert model_problem(model_folder) == (f"model.name_or_path: {model_folder / 'config.json'} is not a transformers "
                                           f"model config ({what}); give a folder saved by transformers "
                                           "(save_pretrained) or a hub id")


def test_model_folder_without_weights(model_folder):
    (model_folder / "model.safetensors").unlink()
    assert model_problem(model_folder) == (f"model.name_or_path: {str(model_folder)!r} holds no weight files "
                                           "(*.safetensors, *.bin, *.index.json); copy the model's weights into it "
                                           "or finish the download")
    (model_folder / "model.safetensors.index.json").write_text("{}")  # a sharded checkpoint's index is enough
    config_from_dict({"model": {"name_or_path": str(model_folder)}, "data": {"path": "builtin:belle-sample"}})


def test_model_folder_without_tokenizer_files(model_folder, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_folder / name).unlink()
    assert model_problem(model_folder) == (
        f"model.name_or_path: {str(model_folder)!r} holds no tokenizer files (tokenizer.json, tokenizer.model, "
        "vocab.json, vocab.txt, tokenizer_config.json); copy them into it or set tokenizer.name_or_path")
    # another tokenizer named: the model folder needs none of its own
    config_from_dict({"model": {"name_or_path": str(model_folder)}, "data": {"path": "builtin:belle-sample"},
                      "tokenizer": {"name_or_path": "builtin:tiny-chat"}})
    # and a tokenizer folder with no tokenizer files is refused
    empty = tmp_path / "empty"
    empty.mkdir()
    assert model_problem(model_folder, name_or_path=str(empty)) == (
        f"tokenizer.name_or_path: {str(empty)!r} holds no tokenizer files (tokenizer.json, tokenizer.model, "
        "vocab.json, vocab.txt, tokenizer_config.json)")


def test_data_file_must_have_a_data_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chats.txt").write_text('{"messages": []}\n')
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**TINY, "data": {"path": "chats.txt"}})
    assert str(caught.value) == ("data.path: 'chats.txt' is not a data file; a data file's name must end in "
                                 ".json, .jsonl, .parquet, .csv (or give a folder of such files)")
    (tmp_path / "chats.jsonl").write_text('{"messages": []}\n')
    (tmp_path / "folder").mkdir()
    for ok in ("chats.jsonl", "./chats.jsonl", str(tmp_path / "chats.jsonl"), "folder", "./folder"):
        assert config_from_dict({**TINY, "data": {"path": ok}}).data.path == ok


def test_builtin_tiny_chat_passes_every_model_check():
    assert config_from_dict(TINY).model.name_or_path == "builtin:tiny-chat"


# ---------------------------------------------------------------- writing


def test_write_atomic_into_a_path_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "blocker").write_text("")
    target = tmp_path / "blocker" / "sub" / "run.toml"
    with pytest.raises(UserError) as caught:
        write_atomic(target, "x = 1\n")
    message = str(caught.value)
    assert message.startswith(f"{target}: cannot write the file: ") and len(message.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "blocker"]


def test_write_atomic_onto_a_folder_is_a_user_error(tmp_path):
    (tmp_path / "run.toml").mkdir()
    with pytest.raises(UserError, match=r"run.toml: cannot write the file: Is a directory"):
        write_atomic(tmp_path / "run.toml", "x = 1\n", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["run.toml"]  # no temp file left behind


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_write_atomic_into_a_read_only_folder_is_a_user_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(UserError, match=r"cannot write the file: Permission denied"):
            write_atomic(locked / "run.toml", "x = 1\n")
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_written_files_get_the_normal_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.toml", "x = 1\n")
        assert stat.S_IMODE((tmp_path / "new.toml").stat().st_mode) == 0o644
        os.umask(0o027)
        write_atomic(tmp_path / "other.toml", "x = 1\n")
        assert stat.S_IMODE((tmp_path / "other.toml").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    (tmp_path / "new.toml").chmod(0o600)  # an overwritten file keeps the mode its owner gave it
    write_atomic(tmp_path / "new.toml", "x = 2\n", overwrite=True)
    assert stat.S_IMODE((tmp_path / "new.toml").stat().st_mode) == 0o600
    assert (tmp_path / "new.toml").read_text() == "x = 2\n"
