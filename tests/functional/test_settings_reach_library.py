"""Every run-file setting reaches the library call it configures.

Each test sets a NON-default value in a run file (through config_from_dict, so the
validator sees it too) and then looks at the real library object the engine builds:
TrainingArguments, BitsAndBytesConfig and the quantised layers, LoraConfig and the
peft model, the loaded transformers model, the prepared datasets, the
DataCollatorForSeq2Seq output, TensorBoard's event files and huggingface_hub's
constants. Nothing is mocked; nothing reaches the network.

early_stopping.patience / threshold are proven by behaviour in
tests/functional/test_training.py::test_early_stopping_stops_the_run (a run that
stops after `patience` evaluations because no change meets `threshold`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_run_file

from tui_lora.assets import BUILTINS
from tui_lora.config import config_from_dict
from tui_lora.config.schema import OPTIMIZERS, SCHEDULERS, TrainingSettings, section_fields
from tui_lora.data.prepare import prepare_datasets
from tui_lora.engine.model import apply_lora, check_hardware, module_names, load_model, lora_config, quantization_config
from tui_lora.models import load_model_config, load_tokenizer
from tui_lora.engine.train import data_collator, training_arguments
from tui_lora.errors import UserError
from tui_lora.runs.folder import RunFolder, resolve_paths


def make_config(tmp_path: Path, **sections):
    """A validated, path-resolved config for a short run on the tiny model (as the engine gets it)."""
    return resolve_paths(config_from_dict(tiny_run_file(tmp_path / "run", **sections)))


def plain(value):
    """TrainingArguments turns strings into enums; compare their values."""
    return value.value if isinstance(value, Enum) else value


@pytest.fixture(scope="module")
def tokenizer():
    # The tokenizer only depends on model/tokenizer settings, which the data tests leave at the tiny model's.
    return load_tokenizer(config_from_dict(tiny_run_file(Path("unused"))))


# ================================================================ TrainingArguments


def build_args(tmp_path: Path, **training):
    config = make_config(tmp_path, training=training)
    return training_arguments(config, RunFolder(config.training.output_dir))


def _checkpointing_attribute() -> str:
    from transformers import TrainingArguments

    # transformers 5 renamed gradient_checkpointing; the engine passes whichever name this version has.
    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


# run-file [training] values (non-default, and different from tiny_run_file's) -> TrainingArguments attribute
TRAINING_TABLE = [
    ({"num_train_epochs": 2.5}, "num_train_epochs", 2.5),
    ({"max_steps": 7}, "max_steps", 7),
    ({"learning_rate": 3e-5}, "learning_rate", 3e-5),
    ({"weight_decay": 0.01}, "weight_decay", 0.01),
    ({"lr_scheduler_type": "cosine_with_restarts"}, "lr_scheduler_type", "cosine_with_restarts"),
    ({"lr_scheduler_type": "reduce_lr_on_plateau"}, "lr_scheduler_type", "reduce_lr_on_plateau"),
    ({"warmup_ratio": 0.1}, "warmup_steps", 0.1),  # transformers 5: a float below 1 is a ratio
    ({"warmup_steps": 5}, "warmup_steps", 5),
    ({"optim": "adafactor"}, "optim", "adafactor"),
    ({"per_device_train_batch_size": 3}, "per_device_train_batch_size", 3),
    ({"per_device_eval_batch_size": 5}, "per_device_eval_batch_size", 5),
    ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps", 4),
    ({"max_grad_norm": 0.5}, "max_grad_norm", 0.5),
    ({"fp16": True}, "fp16", True),
    ({"eval_strategy": "epoch"}, "eval_strategy", "epoch"),
    ({"eval_strategy": "no"}, "eval_strategy", "no"),
    ({"eval_steps": 7}, "eval_steps", 7),
    ({"eval_on_start": True}, "eval_on_start", True),
    ({"save_strategy": "epoch"}, "save_strategy", "epoch"),
    ({"save_strategy": "best"}, "save_strategy", "best"),
    ({"save_strategy": "no"}, "save_strategy", "no"),
    ({"save_steps": 9}, "save_steps", 9),
    ({"save_total_limit": 3}, "save_total_limit", 3),
    ({"save_total_limit": 0}, "save_total_limit", None),  # 0 ("keep all") is transformers' None
    ({"logging_steps": 3}, "logging_steps", 3),
    ({"report_to": ["tensorboard"]}, "report_to", ["tensorboard"]),
    ({"report_to": ["none"]}, "report_to", []),
    ({"load_best_model_at_end": True}, "load_best_model_at_end", True),
    ({"metric_for_best_model": "loss"}, "metric_for_best_model", "loss"),
    ({"seed": 1234}, "seed", 1234),
    ({"seed": 1234}, "data_seed", 1234),
    ({"dataloader_num_workers": 2}, "dataloader_num_workers", 2),
    ({"neftune_noise_alpha": 5.0}, "neftune_noise_alpha", 5.0),
    ({"lr_scheduler_kwargs": {"num_cycles": 0.25}}, "lr_scheduler_kwargs", {"num_cycles": 0.25}),
]


@pytest.mark.parametrize(("training", "attribute", "expected"), TRAINING_TABLE,
                         ids=[f"{next(iter(t))}={next(iter(t.values()))}->{a}" for t, a, _ in TRAINING_TABLE])
def test_training_setting_reaches_training_arguments(tmp_path, training, attribute, expected):
    args = build_args(tmp_path, **training)
    assert plain(getattr(args, attribute)) == expected


def test_every_training_field_is_covered():
    """The table above (plus the dedicated tests below) names every [training] key: a new key needs a row."""
    covered = {key for training, _, _ in TRAINING_TABLE for key in training}
    covered |= {"output_dir", "gradient_checkpointing", "bf16", "logging_dir"}  # dedicated tests below
    assert covered == set(section_fields("training")), set(section_fields("training")) ^ covered


def test_table_values_are_not_the_defaults(tmp_path):
    """Each row changes its key: from the schema default, or from tiny_run_file's value where that differs."""
    defaults = TrainingSettings()
    baseline = make_config(tmp_path).training
    for training, _, _ in TRAINING_TABLE:
        for key, value in training.items():
            if (key, value) != ("save_total_limit", 0):  # that row checks the 0 -> None translation
                assert value != getattr(defaults, key) or value != getattr(baseline, key), key


def test_warmup_ratio_and_steps_are_read_by_transformers_as_ratio_and_count(tmp_path):
    assert build_args(tmp_path / "a", warmup_ratio=0.1).get_warmup_steps(200) == 20
    assert build_args(tmp_path / "b", warmup_steps=5).get_warmup_steps(200) == 5
    assert build_args(tmp_path / "c").get_warmup_steps(200) == 0


def test_output_dir_is_the_run_folder_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tiny_run_file(Path("somewhere/else"))
    assert raw["training"]["output_dir"] == "somewhere/else"
    config = resolve_paths(config_from_dict(raw))
    args = training_arguments(config, RunFolder(config.training.output_dir))
    assert args.output_dir == str(tmp_path / "somewhere" / "else")


def test_gradient_checkpointing_reaches_training_arguments(tmp_path):
    attribute = _checkpointing_attribute()
    on = build_args(tmp_path / "on", gradient_checkpointing=True)
    assert getattr(on, attribute) is True
    assert getattr(on, f"{attribute}_kwargs") == {"use_reentrant": False}
    assert getattr(build_args(tmp_path / "off"), attribute) is False


def test_bf16_reaches_training_arguments(tmp_path):
    assert build_args(tmp_path / "off").bf16 is False
    try:
        args = build_args(tmp_path / "on", bf16=True)
    except ValueError as exc:
        # Without a bf16-capable GPU, TrainingArguments refuses bf16=True (it would need use_cpu=True).
        # That refusal is itself the proof that bf16 = true reached the call: with false it builds fine.
        assert "bf16" in str(exc)
        assert not (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    else:
        assert args.bf16 is True


@pytest.mark.parametrize("optim", OPTIMIZERS)
def test_every_optimizer_choice_is_accepted_by_training_arguments(tmp_path, optim):
    assert plain(build_args(tmp_path, optim=optim).optim) == optim


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(BUILTINS["tiny-chat"])


# the arguments a schedule cannot go without (the validator asks for them)
NEEDED_SCHEDULER_KWARGS = {"cosine_with_min_lr": {"min_lr_rate": 0.1}, "cosine_warmup_with_min_lr": {"min_lr": 1e-5},
                           "warmup_stable_decay": {"num_decay_steps": 3}}


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_choice_builds_a_scheduler_in_the_trainer(tmp_path, tiny_model, scheduler):
    """A scheduler the validator accepts must also be one the Trainer can build (not fail at step 0)."""
    from transformers import Trainer

    args = build_args(tmp_path, lr_scheduler_type=scheduler, report_to=["none"],
                      lr_scheduler_kwargs=NEEDED_SCHEDULER_KWARGS.get(scheduler, {}))
    example = {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": [1, 2, 3]}
    trainer = Trainer(model=tiny_model, args=args, train_dataset=[example], eval_dataset=[example])
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    assert trainer.lr_scheduler is not None


def test_logging_dir_receives_the_tensorboard_events(tmp_path, train_in_process, monkeypatch):
    """logging_dir goes to transformers through TENSORBOARD_LOGGING_DIR; a real 2-step run writes there."""
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)  # run_training sets it; restored afterwards
    logs = tmp_path / "my-tensorboard"
    raw = tiny_run_file(tmp_path / "run",
                        training={"max_steps": 2, "eval_strategy": "no", "save_strategy": "no",
                                  "per_device_train_batch_size": 2, "report_to": ["tensorboard"],
                                  "logging_dir": str(logs)},
                        data={"validation_split": 0.0, "max_samples": 8})
    folder, result, _ = train_in_process(raw)
    assert result["step"] == 2
    event_files = list(logs.rglob("events.out.tfevents.*"))
    assert event_files, f"no TensorBoard events in {logs}"
    assert not list(folder.tensorboard.rglob("events.out.tfevents.*"))  # not the default place

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_files[0].parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    assert [event.step for event in accumulator.Scalars("train/loss")][-1] == 2


# ================================================================ BitsAndBytesConfig and quantised layers


def test_load_in_8bit_reaches_bits_and_bytes_config(tmp_path):
    quant = quantization_config(make_config(tmp_path, quantization={"load_in_8bit": True}))
    assert quant.load_in_8bit is True and quant.load_in_4bit is False
    assert quantization_config(make_config(tmp_path)) is None


def test_4bit_settings_reach_bits_and_bytes_config(tmp_path):
    quant = quantization_config(make_config(tmp_path, quantization={
        "load_in_4bit": True, "quant_type": "fp4", "double_quant": False, "compute_dtype": "bfloat16"}))
    assert quant.load_in_4bit is True and quant.load_in_8bit is False
    assert quant.bnb_4bit_quant_type == "fp4"
    assert quant.bnb_4bit_use_double_quant is False
    assert quant.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.parametrize(("model_dtype", "expected"), [("bfloat16", torch.bfloat16), ("float16", torch.float16),
                                                        ("auto", torch.float32)])
def test_auto_compute_dtype_follows_the_model_dtype(tmp_path, model_dtype, expected):
    quant = quantization_config(make_config(tmp_path, model={"dtype": model_dtype},
                                            quantization={"load_in_4bit": True}))
    assert quant.bnb_4bit_compute_dtype == expected


def test_4bit_model_has_bitsandbytes_layers_with_the_chosen_format(tmp_path):
    import bitsandbytes as bnb

    config = make_config(tmp_path, quantization={"load_in_4bit": True, "quant_type": "fp4",
                                                 "double_quant": False, "compute_dtype": "bfloat16"})
    model = load_model(config)
    quantised = {name: module for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert {name.rsplit(".", 1)[-1] for name in quantised} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for module in quantised.values():
        assert module.weight.quant_state.quant_type == "fp4"
        assert module.weight.quant_state.nested is False  # double_quant = false
        assert module.compute_dtype == torch.bfloat16


# ================================================================ LoraConfig and the peft model


def test_lora_settings_reach_lora_config(tmp_path):
    lora = lora_config(make_config(tmp_path, lora={
        "r": 6, "lora_alpha": 12, "lora_dropout": 0.2, "target_modules": ["q_proj", "v_proj"],
        "bias": "lora_only", "use_rslora": True, "use_dora": True, "modules_to_save": ["lm_head"]}))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (6, 12, 0.2)
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    assert lora.bias == "lora_only"
    assert lora.use_rslora is True and lora.use_dora is True
    assert lora.modules_to_save == ["lm_head"]
    default = lora_config(make_config(tmp_path))
    assert default.target_modules == "all-linear" and default.modules_to_save is None


def test_lora_model_has_adapters_exactly_where_the_run_file_says(tmp_path):
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    config = make_config(tmp_path, lora={
        "r": 6, "lora_alpha": 12, "lora_dropout": 0.2, "target_modules": ["q_proj", "v_proj"],
        "bias": "lora_only", "use_rslora": True, "use_dora": True, "modules_to_save": ["lm_head"]})
    model = apply_lora(load_model(config), config)
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    assert len(layers) == 2 * 4  # q_proj and v_proj in each of the 4 layers, nothing else
    assert {name.rsplit(".", 1)[-1] for name in layers} == {"q_proj", "v_proj"}
    for module in layers.values():
        assert module.r["default"] == 6
        assert module.lora_A["default"].weight.shape[0] == 6
        assert module.scaling["default"] == pytest.approx(12 / math.sqrt(6))  # rsLoRA: alpha / sqrt(r)
        assert module.lora_dropout["default"].p == 0.2
        assert "default" in module.lora_magnitude_vector  # DoRA
        assert module.base_layer.bias.requires_grad  # bias = "lora_only": the adapted layers' biases train
    # biases of layers without an adapter stay frozen
    assert not [name for name, param in model.named_parameters()
                if name.endswith("k_proj.bias") and param.requires_grad]
    assert isinstance(model.base_model.model.lm_head, ModulesToSaveWrapper)


def test_default_lora_is_all_linear_with_plain_scaling(tmp_path):
    from peft.tuners.lora import LoraLayer

    config = make_config(tmp_path, lora={"r": 4, "lora_alpha": 12})
    model = apply_lora(load_model(config), config)
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    assert {name.rsplit(".", 1)[-1] for name in layers} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # all-linear, no lm_head
    scaling = next(iter(layers.values())).scaling["default"]
    assert scaling == pytest.approx(12 / 4)  # without rsLoRA: alpha / r
    assert not any(module.lora_magnitude_vector for module in layers.values())  # no DoRA


# ================================================================ model loading


def test_dtype_attention_and_device_map_reach_from_pretrained(tmp_path):
    model = load_model(make_config(tmp_path, model={"dtype": "bfloat16", "attn_implementation": "eager",
                                                    "device_map": "cpu"}))
    assert {param.dtype for param in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "eager"
    assert {param.device.type for param in model.parameters()} == {"cpu"}


def test_device_map_is_checked_against_this_machine_before_loading(tmp_path):
    # Without a GPU every valid placement lands on the CPU, so what can be shown here is that the value is
    # read and checked against the hardware before any weight loads.
    if torch.cuda.is_available():
        pytest.skip("this check is about machines without a CUDA GPU")
    with pytest.raises(UserError, match=r"model.device_map: 'cuda:0' but no CUDA GPU is visible"):
        check_hardware(make_config(tmp_path, model={"device_map": "cuda:0"}))
    check_hardware(make_config(tmp_path, model={"device_map": "cpu"}))
    # mixed precision that needs a GPU is refused the same way, before the weights load
    with pytest.raises(UserError, match="training.bf16: this machine has no GPU with bfloat16 support"):
        check_hardware(make_config(tmp_path, training={"bf16": True}))
    with pytest.raises(UserError, match="training.fp16: float16 mixed precision needs a CUDA GPU"):
        check_hardware(make_config(tmp_path, training={"fp16": True}))


REVISION_CHILD = r'''
import json
from tui_lora.config import config_from_dict
from tui_lora.engine.model import load_model
from tui_lora.models import load_model_config, load_tokenizer

raw = {"model": {"name_or_path": "tui-test/tiny", "revision": "experiment", "device_map": "cpu"},
       "data": {"path": "builtin:belle-sample"}}
config = config_from_dict(raw)
model = load_model(config)
main = config_from_dict({**raw, "model": {**raw["model"], "revision": "main"}})
print(json.dumps({"marker": load_model_config(config).tui_marker, "model_marker": model.config.tui_marker,
                  "max_length": load_tokenizer(config).model_max_length,
                  "main_marker": load_model_config(main).tui_marker,
                  "main_max_length": load_tokenizer(main).model_max_length}))
'''


def _snapshot(repo: Path, ref: str, commit: str, marker: str, max_length: int) -> None:
    """One revision of a model in the layout of huggingface_hub's cache (plain files instead of links)."""
    snapshot = repo / "snapshots" / commit
    shutil.copytree(BUILTINS["tiny-chat"], snapshot)
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**config, "tui_marker": marker}))
    tokenizer_config = json.loads((snapshot / "tokenizer_config.json").read_text())
    (snapshot / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": max_length}))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


def test_revision_picks_the_hub_revision_for_model_and_tokenizer(tmp_path):
    """A hub id with two cached revisions, read offline: the run file's revision decides which one loads."""
    repo = tmp_path / "hf" / "hub" / "models--tui-test--tiny"
    _snapshot(repo, "main", "a" * 40, "main", 2048)
    _snapshot(repo, "experiment", "b" * 40, "experiment", 777)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", REVISION_CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"marker": "experiment", "model_marker": "experiment", "max_length": 777,
                    "main_marker": "main", "main_max_length": 2048}


def test_tokenizer_name_or_path_loads_that_tokenizer(tmp_path):
    folder = tmp_path / "my-tokenizer"
    folder.mkdir()
    for name in ("tokenizer.json", "chat_template.jinja"):
        shutil.copy(BUILTINS["tiny-chat"] / name, folder / name)
    settings = json.loads((BUILTINS["tiny-chat"] / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 555}))
    assert load_tokenizer(make_config(tmp_path, tokenizer={"name_or_path": str(folder)})).model_max_length == 555
    assert load_tokenizer(make_config(tmp_path)).model_max_length == 2048  # the model's own


REMOTE_CODE = '''
from transformers import Qwen2Config, Qwen2ForCausalLM


class RemoteTinyConfig(Qwen2Config):
    model_type = "tui-remote-tiny"


class RemoteTinyForCausalLM(Qwen2ForCausalLM):
    config_class = RemoteTinyConfig
    built_by_remote_code = True
'''


@pytest.fixture
def remote_code_model(tmp_path) -> Path:
    """A local model folder whose classes live in a .py file next to its config (auto_map)."""
    folder = tmp_path / "remote-tiny"
    folder.mkdir()
    source = BUILTINS["tiny-chat"]
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, folder / name)
    config = json.loads((source / "config.json").read_text())
    config.update(model_type="tui-remote-tiny", architectures=["RemoteTinyForCausalLM"],
                  auto_map={"AutoConfig": "remote_tiny.RemoteTinyConfig",
                            "AutoModelForCausalLM": "remote_tiny.RemoteTinyForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "remote_tiny.py").write_text(REMOTE_CODE)
    return folder


def test_trust_remote_code_true_loads_the_models_own_classes(tmp_path, remote_code_model):
    config = make_config(tmp_path, model={"name_or_path": str(remote_code_model), "trust_remote_code": True})
    model_config = load_model_config(config)
    assert type(model_config).__name__ == "RemoteTinyConfig"
    assert "lm_head" in module_names(model_config, True)[0]  # the meta skeleton goes through remote code too
    model = load_model(config)
    assert type(model).__name__ == "RemoteTinyForCausalLM" and model.built_by_remote_code is True
    from safetensors.torch import load_file

    shipped = load_file(BUILTINS["tiny-chat"] / "model.safetensors")
    assert torch.equal(model.model.embed_tokens.weight, shipped["model.embed_tokens.weight"])  # real weights


def test_trust_remote_code_false_refuses_with_a_user_error(tmp_path, remote_code_model):
    config = make_config(tmp_path, model={"name_or_path": str(remote_code_model)})
    assert config.model.trust_remote_code is False
    with pytest.raises(UserError, match="trust_remote_code"):
        load_model_config(config)


# ================================================================ tokenizer and data


def prepare(tmp_path, tok, **sections):
    return prepare_datasets(make_config(tmp_path, **sections), tok)


def test_max_length_caps_every_example(tmp_path, tokenizer):
    train, evaluation, report = prepare(tmp_path, tokenizer, tokenizer={"max_length": 64},
                                        data={"max_bad_share": 1.0})
    lengths = [len(ids) for ids in list(train["input_ids"]) + list(evaluation["input_ids"])]
    assert max(lengths) <= 64
    assert report.truncated > 0  # shortened by whole exchanges
    # conversations whose first reply cannot fit are skipped with their reason, never cut inside a reply
    assert report.skipped > 0 and all("past max_length 64" in reason for _, reason in report.bad_records)
    longer, _, _ = prepare(tmp_path, tokenizer, tokenizer={"max_length": 512})
    assert max(len(ids) for ids in longer["input_ids"]) > 64  # so 64 really cut something


def test_truncation_false_skips_long_conversations_instead_of_cutting(tmp_path, tokenizer):
    common = dict(data={"max_bad_share": 1.0, "validation_split": 0.0}, training={"eval_strategy": "no"})
    train, _, report = prepare(tmp_path, tokenizer, tokenizer={"max_length": 128, "truncation": False}, **common)
    assert report.skipped > 0 and report.truncated == 0
    assert "> max_length 128" in report.bad_records[0][1]
    assert report.train_examples == report.records - report.skipped
    assert max(len(ids) for ids in train["input_ids"]) <= 128
    _, _, cut = prepare(tmp_path, tokenizer, tokenizer={"max_length": 128, "truncation": True}, **common)
    assert cut.truncated > 0 and cut.skipped < report.skipped  # most long ones are shortened instead
    assert cut.train_examples == cut.records - cut.skipped


def test_split_slice_reaches_load_dataset(tmp_path, tokenizer):
    _, _, report = prepare(tmp_path, tokenizer, data={"split": "train[:10%]", "max_samples": 0})
    assert report.records == 36  # 10% of the 360 sample records
    _, _, whole = prepare(tmp_path, tokenizer, data={"max_samples": 0})
    assert whole.records == 360


def test_max_samples_and_validation_split(tmp_path, tokenizer):
    train, evaluation, report = prepare(tmp_path, tokenizer, data={"max_samples": 20, "validation_split": 0.5})
    assert report.records == 20
    assert (len(train), len(evaluation)) == (10, 10)
    assert (report.train_examples, report.eval_examples) == (10, 10)


def test_seed_reaches_the_validation_split(tmp_path, tokenizer):
    data = {"max_samples": 20, "validation_split": 0.5}
    _, eval_a, _ = prepare(tmp_path, tokenizer, data=data, training={"seed": 1})
    _, eval_b, _ = prepare(tmp_path, tokenizer, data=data, training={"seed": 2})
    assert eval_a["input_ids"] != eval_b["input_ids"]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def test_forced_format_overrides_detection(tmp_path, tokenizer):
    # The first records have no "Human:" markers, so auto-detection says alpaca; the later ones are
    # multi-turn belle dialogues, which only the belle parser splits into several trained replies.
    single = [{"instruction": f"Say the number {i}.", "input": "", "output": f"{i}"} for i in range(6)]
    multi = [{"instruction": f"Human:Hello {i}\nAssistant:Hi there, friend {i}!\nHuman:Count to three.\n"
                             "Assistant:", "input": "", "output": "One, two, three."} for i in range(6)]
    data_file = write_jsonl(tmp_path / "mixed.jsonl", single + multi)
    common = dict(training={"eval_strategy": "no"})
    _, _, detected = prepare(tmp_path, tokenizer, data={"path": str(data_file), "validation_split": 0.0}, **common)
    _, _, forced = prepare(tmp_path, tokenizer, data={"path": str(data_file), "validation_split": 0.0,
                                                      "format": "belle"}, **common)
    assert detected.format == "alpaca" and forced.format == "belle"
    assert forced.trained_tokens > detected.trained_tokens  # the earlier "Hi there" replies now train


def test_train_on_chooses_the_trained_tokens(tmp_path, tokenizer):
    by_choice = {choice: prepare(tmp_path, tokenizer, data={"train_on": choice})
                 for choice in ("assistant", "last", "all")}
    assistant, last, everything = (by_choice[c][2] for c in ("assistant", "last", "all"))
    assert assistant.train_examples == last.train_examples == everything.train_examples
    assert last.trained_tokens < assistant.trained_tokens < everything.trained_tokens
    assert everything.trained_tokens == everything.train_tokens


def test_num_proc_and_map_batch_size_give_the_same_examples(tmp_path, tokenizer):
    default_train, default_eval, _ = prepare(tmp_path, tokenizer)
    train, evaluation, _ = prepare(tmp_path, tokenizer, data={"num_proc": 2, "map_batch_size": 7})
    assert train["input_ids"] == default_train["input_ids"]
    assert train["labels"] == default_train["labels"]
    assert evaluation["input_ids"] == default_eval["input_ids"]


def test_num_proc_and_map_batch_size_reach_datasets_map(tmp_path, tokenizer):
    """The map really ran in 2 processes with batches of 7: its cache files say so."""
    data_file = write_jsonl(tmp_path / "few.jsonl", [
        {"instruction": f"Human:Question {i}?\nAssistant:", "input": "", "output": f"Answer {i}."}
        for i in range(20)])
    train, _, _ = prepare(tmp_path, tokenizer, data={"path": str(data_file), "num_proc": 2, "map_batch_size": 7,
                                                     "validation_split": 0.0}, training={"eval_strategy": "no"})
    assert len(train) == 20
    # datasets names a num_proc map's shards "..._0000N_of_0000M.arrow"
    cache_dirs = {Path(entry["filename"]).parent for entry in train.cache_files}
    shards = [p.name for d in cache_dirs for p in d.glob("cache-*_of_00002.arrow")]
    assert len(shards) >= 2, sorted(p.name for d in cache_dirs for p in d.iterdir())


def test_streaming_returns_an_iterable_dataset(tmp_path, tokenizer):
    from datasets import IterableDataset

    train, evaluation, _ = prepare(tmp_path, tokenizer, data={"streaming": True, "validation_split": 0.0},
                                   training={"max_steps": 3, "eval_strategy": "no"})
    assert isinstance(train, IterableDataset) and evaluation is None
    first = next(iter(train))
    assert {"input_ids", "labels"} <= set(first)
    assert len(first["input_ids"]) == len(first["labels"]) > 0


def test_max_bad_share_stops_or_skips(tmp_path, tokenizer):
    good = {"instruction": "Human:What is LoRA?\nAssistant:", "input": "", "output": "A low-rank adapter."}
    broken = {"instruction": "Human:What is QLoRA?\nAssistant:", "input": ""}  # no output: unusable
    records = [good] * 3 + [broken] + [good] * 5 + [broken]  # 2 of 10 bad: 20%
    data_file = write_jsonl(tmp_path / "some-bad.jsonl", records)
    common = dict(training={"eval_strategy": "no"})
    with pytest.raises(UserError, match=r"2 of 10 records \(20%\).*max_bad_share \(10%\)"):
        prepare(tmp_path, tokenizer, data={"path": str(data_file), "validation_split": 0.0,
                                           "max_bad_share": 0.1}, **common)
    train, _, report = prepare(tmp_path, tokenizer, data={"path": str(data_file), "validation_split": 0.0,
                                                          "max_bad_share": 0.25}, **common)
    assert (report.records, report.skipped, len(train)) == (10, 2, 8)
    assert [number for number, _ in report.bad_records] == [4, 10]


# ================================================================ DataCollatorForSeq2Seq


@pytest.fixture(scope="module")
def encoded_examples(tokenizer, tmp_path_factory):
    """Real encoded examples (untrained tokens labelled -100) and their lengths."""
    config = make_config(tmp_path_factory.mktemp("collate"), data={"validation_split": 0.0},
                         training={"eval_strategy": "no"})
    train, _, _ = prepare_datasets(config, tokenizer)
    return [{name: train[i][name] for name in ("input_ids", "attention_mask", "labels")} for i in range(len(train))]


def collate(tmp_path, tok, features, **sections):
    """Batch real features with the DataCollatorForSeq2Seq the engine builds for these run-file sections."""
    collator = data_collator(make_config(tmp_path, **sections), tok, None)
    return collator([dict(feature) for feature in features])


def test_padding_max_length_pads_to_the_tokenizer_max_length(tmp_path, tokenizer, encoded_examples):
    short = [f for f in encoded_examples if len(f["input_ids"]) < 90][:4]
    batch = collate(tmp_path, tokenizer, short, tokenizer={"max_length": 128},
                    collator={"padding": "max_length", "pad_to_multiple_of": 0})
    assert batch["input_ids"].shape == (4, 128) and batch["labels"].shape == (4, 128)
    longest = collate(tmp_path, tokenizer, short, collator={"pad_to_multiple_of": 0})
    assert longest["input_ids"].shape[1] == max(len(f["input_ids"]) for f in short) < 128


def test_pad_to_multiple_of_rounds_the_batch_length(tmp_path, tokenizer, encoded_examples):
    # a longest example whose length rounds to a multiple of 8 that is not one of 16
    longest = next(f for f in encoded_examples if len(f["input_ids"]) % 16 in range(1, 9))
    features = [longest] + [f for f in encoded_examples if len(f["input_ids"]) < len(longest["input_ids"])][:3]
    length = len(longest["input_ids"])
    assert collate(tmp_path, tokenizer, features, collator={"pad_to_multiple_of": 16})["input_ids"].shape[1] == \
        math.ceil(length / 16) * 16
    assert collate(tmp_path, tokenizer, features, collator={"pad_to_multiple_of": 8})["input_ids"].shape[1] == \
        math.ceil(length / 8) * 8 != math.ceil(length / 16) * 16
    assert collate(tmp_path, tokenizer, features, collator={"pad_to_multiple_of": 0})["input_ids"].shape[1] == length


def test_label_pad_token_id_fills_padded_labels(tmp_path, tokenizer, encoded_examples):
    """-100 (the one id the loss ignores) reaches DataCollatorForSeq2Seq; any other id is refused up front."""
    features = encoded_examples[:4]
    assert len({len(f["input_ids"]) for f in features}) > 1  # so something gets padded
    config = make_config(tmp_path, collator={"label_pad_token_id": -100})
    collator = data_collator(config, tokenizer, None)
    assert collator.label_pad_token_id == config.collator.label_pad_token_id == -100
    batch = collator([dict(feature) for feature in features])
    padding = batch["attention_mask"] == 0
    assert padding.any()
    assert (batch["labels"][padding] == -100).all()
    assert (batch["input_ids"][padding] == tokenizer.pad_token_id).all()
    assert set(batch["labels"].unique().tolist()) - set(tokenizer.get_vocab().values()) == {-100}
    with pytest.raises(UserError, match=r"collator.label_pad_token_id: -77 is not allowed; choose -100 "
                                        r"\(the model's loss ignores only -100"):
        make_config(tmp_path, collator={"label_pad_token_id": -77})


# ================================================================ hub environment


def test_packing_chooses_the_batches_and_the_models_attention(tmp_path, tokenizer, encoded_examples):
    """auto (the default): one packed row, and the model runs the per-example attention; off: the
    DataCollatorForSeq2Seq batches and transformers' own sdpa, exactly as loaded."""
    from tui_lora.engine.packing.collator import PackedCollator, packed_model_inputs
    from tui_lora.engine.packing.kernels import SDPA_PER_EXAMPLE
    from tui_lora.engine.packing.plan import choose_batching

    features = encoded_examples[:4]
    auto = make_config(tmp_path)
    assert auto.collator.packing == "auto"
    model = apply_lora(load_model(auto), auto)
    plan = choose_batching(auto, model)
    assert plan.packed and model.config._attn_implementation == SDPA_PER_EXAMPLE
    packed = PackedCollator()([dict(f) for f in features])
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    assert "attention_mask" not in packed
    assert packed_model_inputs(packed)["cu_seq_lens_q"].numel() == 5  # the attention's boundaries

    off = make_config(tmp_path, collator={"packing": "off"})
    plan = choose_batching(off, model)
    assert not plan.packed and model.config._attn_implementation == "sdpa"
    assert "collator.packing is off" in plan.description
    padded = data_collator(off, tokenizer, model)([dict(f) for f in features])
    assert padded["input_ids"].shape[0] == 4 and "attention_mask" in padded


HUB_CHILD = r'''
import json, os, sys
from tui_lora.config import config_from_dict
from tui_lora.hub import apply_hub_environment

config = config_from_dict({"model": {"name_or_path": "org/model"}, "data": {"path": "org/data"},
                           "hub": {"endpoint": "https://hf-mirror.example.org/", "offline": True}})
assert "huggingface_hub" not in sys.modules
early = apply_hub_environment(config.hub)
import huggingface_hub
from huggingface_hub import constants
late = apply_hub_environment(config.hub)
print(json.dumps({"early": early, "late": late, "HF_ENDPOINT": os.environ.get("HF_ENDPOINT"),
                  "endpoint": constants.ENDPOINT, "offline": constants.HF_HUB_OFFLINE,
                  "datasets_offline": os.environ.get("HF_DATASETS_OFFLINE"),
                  "url": huggingface_hub.hf_hub_url("org/model", "config.json")}))
'''


def test_hub_endpoint_and_offline_reach_huggingface_hub():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", HUB_CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["early"] == ""
    assert "after huggingface_hub was imported" in seen["late"]
    assert seen["HF_ENDPOINT"] == "https://hf-mirror.example.org"
    assert seen["endpoint"] == "https://hf-mirror.example.org"
    assert seen["url"].startswith("https://hf-mirror.example.org/org/model/")
    assert seen["offline"] is True
    assert seen["datasets_offline"] == "1"


# ================================================================ accelerate launch


def test_launch_settings_reach_accelerate_launch(tmp_path):
    """The command `tui-lora run` starts, read back by accelerate's own argument parser."""
    from accelerate.commands.launch import launch_command_parser

    from tui_lora.runs.launcher import launch_command

    accelerate_config = tmp_path / "fsdp.yaml"
    accelerate_config.write_text("distributed_type: FSDP\n")
    run_file = tmp_path / "run.toml"
    config = make_config(tmp_path, model={"device_map": "auto"}, launch={
        "num_processes": 16, "num_machines": 2, "machine_rank": 1, "main_process_ip": "10.1.2.3",
        "main_process_port": 29555, "mixed_precision": "fp16", "config_file": str(accelerate_config)})
    command = launch_command(config, run_file, ["lora.r=16"], "/runs/x/checkpoint-8")
    program = 2 if command[1] == "launch" else 3  # accelerate launch …, or python -m accelerate.commands.launch …
    args = launch_command_parser().parse_args(command[program:])
    assert (args.num_processes, args.num_machines, args.machine_rank) == (16, 2, 1)
    assert (args.main_process_ip, args.main_process_port) == ("10.1.2.3", 29555)
    assert args.mixed_precision == "fp16" and args.config_file == str(accelerate_config)
    assert args.multi_gpu is False  # the config file's distributed_type decides (FSDP here)
    assert args.module and args.training_script == "tui_lora.engine.worker"
    assert args.training_script_args == [str(run_file), "--set", "lora.r=16", "--resume", "/runs/x/checkpoint-8"]

    plain = launch_command(make_config(tmp_path, launch={"num_processes": 2}), run_file)
    args = launch_command_parser().parse_args(plain[program:])
    assert args.multi_gpu is True and args.config_file is None and args.main_process_ip is None
    assert (args.num_processes, args.main_process_port, args.mixed_precision) == (2, 0, "no")


@pytest.mark.parametrize(("launch", "training", "fp16", "bf16"), [
    ({"mixed_precision": "fp16"}, {}, True, False),
    ({"mixed_precision": "auto"}, {"fp16": True}, True, False),
    ({"mixed_precision": "no"}, {}, False, False),
])
def test_mixed_precision_reaches_training_arguments(tmp_path, launch, training, fp16, bf16):
    config = make_config(tmp_path, launch=launch, training=training)
    args = training_arguments(config, RunFolder(config.training.output_dir))
    assert (args.fp16, args.bf16) == (fp16, bf16)
    if fp16 and not torch.cuda.is_available():
        key = "launch.mixed_precision" if launch["mixed_precision"] != "auto" else "training.fp16"
        with pytest.raises(UserError, match=f"{key}: float16 mixed precision needs a CUDA GPU"):
            check_hardware(config)


def test_several_processes_place_each_model_on_its_own_device(tmp_path, monkeypatch):
    from tui_lora.engine.model import device_map

    config = make_config(tmp_path, model={"device_map": "auto"}, launch={"num_processes": 2})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    if torch.cuda.is_available():
        assert device_map(config) == {"": 1}  # QLoRA's quantised weights load straight onto GPU 1
    else:
        assert device_map(config) is None  # no GPU: the CPU, where the weights load anyway
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert device_map(config) == ("auto" if torch.cuda.is_available() else None)
    assert device_map(make_config(tmp_path, model={"device_map": "cpu"})) == "cpu"


# ================================================================ every key has its test


COVERAGE = {
    "description": None,  # shown by `tui-lora presets`; no library receives it
    "model.name_or_path": "test_trust_remote_code_true_loads_the_models_own_classes",
    "model.revision": "test_revision_picks_the_hub_revision_for_model_and_tokenizer",
    "model.dtype": "test_dtype_attention_and_device_map_reach_from_pretrained",
    "model.device_map": "test_device_map_is_checked_against_this_machine_before_loading",
    "model.trust_remote_code": "test_trust_remote_code_false_refuses_with_a_user_error",
    "model.attn_implementation": "test_dtype_attention_and_device_map_reach_from_pretrained",
    "hub.endpoint": "test_hub_endpoint_and_offline_reach_huggingface_hub",
    "hub.offline": "test_hub_endpoint_and_offline_reach_huggingface_hub",
    "tokenizer.name_or_path": "test_tokenizer_name_or_path_loads_that_tokenizer",
    "tokenizer.max_length": "test_max_length_caps_every_example",
    "tokenizer.truncation": "test_truncation_false_skips_long_conversations_instead_of_cutting",
    "quantization.load_in_8bit": "test_load_in_8bit_reaches_bits_and_bytes_config",
    "quantization.load_in_4bit": "test_4bit_model_has_bitsandbytes_layers_with_the_chosen_format",
    "quantization.quant_type": "test_4bit_model_has_bitsandbytes_layers_with_the_chosen_format",
    "quantization.double_quant": "test_4bit_model_has_bitsandbytes_layers_with_the_chosen_format",
    "quantization.compute_dtype": "test_auto_compute_dtype_follows_the_model_dtype",
    "lora.r": "test_lora_model_has_adapters_exactly_where_the_run_file_says",
    "lora.lora_alpha": "test_lora_model_has_adapters_exactly_where_the_run_file_says",
    "lora.lora_dropout": "test_lora_model_has_adapters_exactly_where_the_run_file_says",
    "lora.target_modules": "test_default_lora_is_all_linear_with_plain_scaling",
    "lora.bias": "test_lora_model_has_adapters_exactly_where_the_run_file_says",
    "lora.use_rslora": "test_lora_model_has_adapters_exactly_where_the_run_file_says",
    "lora.use_dora": "test_lora_model_has_adapters_exactly_where_the_run_file_says",
    "lora.modules_to_save": "test_lora_model_has_adapters_exactly_where_the_run_file_says",
    "lora.init_lora_weights": "test_training_knobs.py::test_pissa_and_olora_train_on_a_changed_base_and_save_an_adapter_for_the_original",
    "lora.loraplus_lr_ratio": "test_training_knobs.py::test_loraplus_gives_the_b_matrices_the_ratios_learning_rate",
    "collator.group_by_length": "test_training_knobs.py::test_group_by_length_puts_examples_of_a_length_together",
    "data.path": "test_forced_format_overrides_detection",
    "data.format": "test_forced_format_overrides_detection",
    "data.split": "test_split_slice_reaches_load_dataset",
    "data.streaming": "test_streaming_returns_an_iterable_dataset",
    "data.validation_split": "test_max_samples_and_validation_split",
    "data.max_samples": "test_max_samples_and_validation_split",
    "data.map_batch_size": "test_num_proc_and_map_batch_size_give_the_same_examples",
    "data.num_proc": "test_num_proc_and_map_batch_size_reach_datasets_map",
    "data.train_on": "test_train_on_chooses_the_trained_tokens",
    "data.max_bad_share": "test_max_bad_share_stops_or_skips",
    "data.system_prompt": "test_system_prompt.py::test_the_prompt_is_in_every_example_once_and_never_trained",
    "data.system_prompt_mode": "test_system_prompt.py::test_missing_keeps_a_conversations_own_system_message_and_replace_replaces_it",
    "data.sources": "test_data_sources.py::test_two_layouts_concatenated_train_exactly_their_replies_with_the_prompt_never_trained",
    "data.mix": "test_data_sources.py::test_interleaving_by_weight_follows_the_weights_and_the_seed",
    "data.validation_per_source": "test_data_sources.py::test_validation_per_source_holds_out_a_share_of_each",
    "data.messages_column": "test_column_mapping.py::test_a_dialog_with_its_own_speakers_trains_exactly_the_replies",
    "data.role_key": "test_column_mapping.py::test_a_dialog_with_its_own_speakers_trains_exactly_the_replies",
    "data.content_key": "test_column_mapping.py::test_a_dialog_with_its_own_speakers_trains_exactly_the_replies",
    "data.user_roles": "test_column_mapping.py::test_a_dialog_with_its_own_speakers_trains_exactly_the_replies",
    "data.assistant_roles": "test_column_mapping.py::test_a_dialog_with_its_own_speakers_trains_exactly_the_replies",
    "data.system_roles": "test_column_mapping.py::test_a_dialog_with_its_own_speakers_trains_exactly_the_replies",
    "data.system_column": "test_column_mapping.py::test_a_dialog_with_its_own_speakers_trains_exactly_the_replies",
    "data.prompt_column": "test_column_mapping.py::test_instruction_records_under_other_column_names",
    "data.input_column": "test_column_mapping.py::test_instruction_records_under_other_column_names",
    "data.reply_column": "test_column_mapping.py::test_instruction_records_under_other_column_names",
    "collator.padding": "test_padding_max_length_pads_to_the_tokenizer_max_length",
    "collator.pad_to_multiple_of": "test_pad_to_multiple_of_rounds_the_batch_length",
    "collator.label_pad_token_id": "test_label_pad_token_id_fills_padded_labels",
    "collator.packing": "test_packing_chooses_the_batches_and_the_models_attention",
    # [training] keys: test_every_training_field_is_covered checks the TrainingArguments table
    "hub.source": "test_hub.py::test_sources_other_than_huggingface",
    "hub.cache_dir": "test_hub.py::test_a_run_downloads_its_model_and_data_through_a_mirror",
    "hub.timeout": "test_hub.py::test_missing_id_wrong_endpoint_hang_and_drop_are_one_clear_line",
    "early_stopping.enabled": "test_training.py::test_early_stopping_stops_the_run",
    "early_stopping.patience": "test_training.py::test_early_stopping_stops_the_run",
    "early_stopping.threshold": "test_training.py::test_early_stopping_stops_the_run",
    "launch.num_processes": "test_launch_settings_reach_accelerate_launch",
    "launch.num_machines": "test_launch_settings_reach_accelerate_launch",
    "launch.machine_rank": "test_launch_settings_reach_accelerate_launch",
    "launch.main_process_ip": "test_launch_settings_reach_accelerate_launch",
    "launch.main_process_port": "test_launch_settings_reach_accelerate_launch",
    "launch.mixed_precision": "test_mixed_precision_reaches_training_arguments",
    "launch.config_file": "test_launch_settings_reach_accelerate_launch",
}


def test_every_run_file_key_has_a_test():
    from tui_lora.config.schema import SECTIONS

    keys = {"description"} | {f"{section}.{key}" for section in SECTIONS if section != "training"
                              for key in section_fields(section)}
    assert set(COVERAGE) == keys, set(COVERAGE) ^ keys
    for key, test in COVERAGE.items():
        if test is None:
            continue
        if "::" in test:
            file, name = test.split("::")
            assert f"def {name}(" in (Path(__file__).parent / file).read_text(encoding="utf-8"), key
        else:
            assert callable(globals().get(test)), (key, test)
