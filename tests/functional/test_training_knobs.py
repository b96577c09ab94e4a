"""The training knobs users bring from LLaMA-Factory, Axolotl and TRL, each proven at its library call and by
what it does: NEFTune, the LoRA initialisations peft offers, LoRA+, the schedules that need arguments and
length-grouped batches. Real tiny model, real peft and transformers objects, nothing mocked.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_run_file

from tui_lora.config import config_from_dict
from tui_lora.config.schema import SCHEDULER_KWARGS, SCHEDULERS
from tui_lora.data.mix import example_lengths
from tui_lora.data.prepare import prepare_datasets
from tui_lora.engine.model import (apply_lora, check_hardware, convert_for_original_base, initialize_eva, load_model,
                                   lora_config, save_initial_adapter)
from tui_lora.engine.train import data_collator, training_arguments
from tui_lora.engine.trainer import RunTrainer
from tui_lora.errors import UserError
from tui_lora.models import load_tokenizer
from tui_lora.runs.folder import RunFolder, resolve_paths


def make_config(tmp_path: Path, **sections):
    """A short run on the tiny model that trains on all of its data and evaluates nothing (a Trainer is built on
    the train set alone)."""
    sections = {**sections, "training": {"eval_strategy": "no", **sections.get("training", {})},
                "data": {"validation_split": 0.0, **sections.get("data", {})}}
    return resolve_paths(config_from_dict(tiny_run_file(tmp_path / "run", **sections)))


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(config_from_dict(tiny_run_file(Path("unused"))))


@pytest.fixture(scope="module")
def train_set(tokenizer):
    raw = tiny_run_file(Path("unused"), data={"validation_split": 0.0}, training={"eval_strategy": "no"})
    train, _, _ = prepare_datasets(config_from_dict(raw), tokenizer)
    return train


def trainer_for(config, model, tokenizer, train_set, **options) -> RunTrainer:
    args = training_arguments(config, RunFolder(config.training.output_dir))
    return RunTrainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer,
                      data_collator=data_collator(config, tokenizer, model), **options)


# ================================================================ NEFTune


def test_neftune_noises_the_embeddings_while_training_only(tmp_path, tokenizer, train_set):
    from transformers import TrainerCallback

    config = make_config(tmp_path, training={"neftune_noise_alpha": 5.0, "max_steps": 1, "save_strategy": "no"})
    model = apply_lora(load_model(config), config)
    ids = torch.tensor([[5, 6, 7, 8]])
    seen = {}

    class Look(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            embeddings = model.get_input_embeddings()
            with torch.no_grad():
                embeddings.train()
                seen["training"] = not torch.equal(embeddings(ids), embeddings(ids))
                embeddings.eval()
                seen["evaluating"] = torch.equal(embeddings(ids), embeddings(ids))
                embeddings.train()

    trainer = trainer_for(config, model, tokenizer, train_set)
    assert trainer.args.neftune_noise_alpha == 5.0
    trainer.add_callback(Look())
    trainer.train()
    assert seen == {"training": True, "evaluating": True}
    # after training the noise is gone (chat, eval and merge see the embeddings as they are)
    embeddings = model.get_input_embeddings()
    embeddings.train()
    with torch.no_grad():
        assert torch.equal(embeddings(ids), embeddings(ids))
    assert make_config(tmp_path / "off").training.neftune_noise_alpha == 0.0
    assert training_arguments(make_config(tmp_path / "off"), RunFolder(tmp_path / "off")).neftune_noise_alpha is None


# ================================================================ LoRA initialisations


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if "lora_" in name}


def test_each_initialisation_reaches_lora_config(tmp_path):
    for init, expected in (("default", True), ("gaussian", "gaussian"), ("orthogonal", "orthogonal"),
                           ("pissa", "pissa"), ("pissa_niter_4", "pissa_niter_4"), ("olora", "olora"),
                           ("eva", "eva"), ("loftq", True)):
        quantization = {"load_in_4bit": True} if init == "loftq" else {}
        built = lora_config(make_config(tmp_path / init, lora={"init_lora_weights": init}, quantization=quantization))
        assert built.init_lora_weights == expected, init
        assert (built.eva_config is not None) == (init == "eva")
    assert lora_config(make_config(tmp_path / "eva", lora={"init_lora_weights": "eva"})).eva_config.rho == 1.0


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_train_on_a_changed_base_and_save_an_adapter_for_the_original(tmp_path, init):
    """They move the adapter's share out of the base weights; the saved adapter, converted by peft, gives the
    trained model's outputs on the original base (which chat, eval and merge load)."""
    from peft import PeftModel

    config = make_config(tmp_path, lora={"init_lora_weights": init})
    original = load_model(config)
    before = {name: param.detach().clone() for name, param in original.named_parameters()}
    model = apply_lora(load_model(config), config)
    initial = tmp_path / "initial-adapter"
    save_initial_adapter(model, config, initial)
    changed = {name.replace("base_model.model.", "").replace(".base_layer", ""): param
               for name, param in model.named_parameters() if "base_layer.weight" in name}
    assert any(not torch.equal(param, before[name]) for name, param in changed.items())  # the base did change
    with torch.no_grad():  # stands for training: every adapter weight moves
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.02)
    ids = torch.tensor([[3, 17, 42, 99, 7, 250]])
    model.eval()
    with torch.no_grad():
        trained = model(ids).logits
    convert_for_original_base(model, config, tmp_path / "adapter", initial)
    loaded = PeftModel.from_pretrained(original, str(tmp_path / "adapter")).eval()
    assert loaded.peft_config["default"].r == 2 * config.lora.r  # peft's conversion: rank 2·r, plain LoRA
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, trained, atol=1e-4)


def test_fast_pissa_and_gaussian_start_differently_from_the_default(tmp_path):
    weights = {}
    for init in ("default", "gaussian", "pissa_niter_2"):
        config = make_config(tmp_path / init, lora={"init_lora_weights": init})
        torch.manual_seed(0)
        weights[init] = lora_weights(apply_lora(load_model(config), config))
    a_matrices = [name for name in weights["default"] if "lora_A" in name]
    assert all(not value.any() for name, value in weights["default"].items() if "lora_B" in name)  # B at zero
    assert all(not torch.equal(weights["gaussian"][name], weights["default"][name]) for name in a_matrices)
    assert all(weights["pissa_niter_2"][name].any() for name in weights["default"] if "lora_B" in name)


def test_eva_starts_each_adapter_from_the_datas_activations(tmp_path, tokenizer, train_set):
    config = make_config(tmp_path, lora={"init_lora_weights": "eva"})
    model = apply_lora(load_model(config), config)
    before = lora_weights(model)
    initialize_eva(model, train_set, data_collator(config, tokenizer, model), config)
    after = lora_weights(model)
    a_matrices = [name for name in after if "lora_A" in name]
    assert a_matrices and all(not torch.equal(after[name], before[name]) for name in a_matrices)
    for name in a_matrices:  # EVA's A: the top right-singular vectors of the layer's inputs, orthonormal rows
        rows = after[name]
        assert rows.shape[0] == config.lora.r  # rho 1: every layer keeps rank r
        assert torch.allclose(rows @ rows.T, torch.eye(rows.shape[0]), atol=1e-3), name


def test_loftq_is_refused_before_loading_where_peft_cannot_compute_it(tmp_path):
    config = make_config(tmp_path, lora={"init_lora_weights": "loftq"}, quantization={"load_in_4bit": True})
    if torch.cuda.is_available():
        check_hardware(config)  # a GPU: it runs (peft's replace_lora_weights_loftq on the 4-bit model)
        return
    with pytest.raises(UserError, match=r"lora.init_lora_weights: \"loftq\" is computed on a GPU"):
        check_hardware(config)


# ================================================================ LoRA+


def test_loraplus_gives_the_b_matrices_the_ratios_learning_rate(tmp_path, tokenizer, train_set):
    config = make_config(tmp_path, lora={"loraplus_lr_ratio": 16.0}, training={"learning_rate": 1e-3,
                                                                               "weight_decay": 0.01})
    model = apply_lora(load_model(config), config)
    trainer = trainer_for(config, model, tokenizer, train_set, loraplus_lr_ratio=config.lora.loraplus_lr_ratio)
    optimizer = trainer.create_optimizer()
    names = {id(param): name for name, param in model.named_parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            rates[names[id(param)]] = group["lr"]
    assert rates and set(rates) == {name for name, param in model.named_parameters() if param.requires_grad}
    assert {rate for name, rate in rates.items() if "lora_A" in name} == {1e-3}
    assert [rate for name, rate in rates.items() if "lora_B" in name] == pytest.approx(
        [16e-3] * sum(1 for name in rates if "lora_B" in name))
    assert type(optimizer).__name__ == "AdamW"  # the optimizer the run file chose (adamw_torch), with LoRA+ groups
    plain = trainer_for(config, apply_lora(load_model(config), config), tokenizer, train_set).create_optimizer()
    assert {group["lr"] for group in plain.param_groups} == {1e-3}


# ================================================================ schedules with arguments


def _schedule_function_arguments(name: str) -> set[str]:
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.trainer_utils import SchedulerType

    if name == "reduce_lr_on_plateau":
        return set(inspect.signature(torch.optim.lr_scheduler.ReduceLROnPlateau).parameters) - {"optimizer", "verbose"}
    function = TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]
    return set(inspect.signature(function).parameters) - {"optimizer", "num_warmup_steps", "num_training_steps",
                                                          "last_epoch"}


@pytest.mark.parametrize("schedule", SCHEDULERS)
def test_the_arguments_each_schedule_takes_are_the_libraries_own(schedule):
    assert set(SCHEDULER_KWARGS[schedule]) == _schedule_function_arguments(schedule)


def test_cosine_with_a_floor_ends_at_its_share_of_the_peak(tmp_path, train_in_process):
    raw = tiny_run_file(tmp_path / "run", training={
        "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1}, "max_steps": 4,
        "learning_rate": 2e-3, "eval_strategy": "no", "save_strategy": "no"}, data={"validation_split": 0.0})
    _, result, events = train_in_process(raw)
    rates = [event["learning_rate"] for event in events if event.get("type") == "train" and "learning_rate" in event]
    assert result["step"] == 4, events[-3:]
    # each step's rate: the cosine from the peak down to min_lr_rate × learning_rate (2e-4), not to 0
    floor, peak = 2e-4, 2e-3
    assert rates == [pytest.approx(floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * step / 4)))
                     for step in range(4)]


def test_warmup_stable_decay_holds_the_peak_then_decays(tmp_path, tokenizer, train_set):
    config = make_config(tmp_path, training={"lr_scheduler_type": "warmup_stable_decay", "warmup_steps": 2,
                                             "lr_scheduler_kwargs": {"num_decay_steps": 4, "min_lr_ratio": 0.0},
                                             "learning_rate": 1e-3})
    model = apply_lora(load_model(config), config)
    trainer = trainer_for(config, model, tokenizer, train_set)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    rates = []
    for _ in range(10):  # the rate each step trains at
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert rates[:2] == [0.0, pytest.approx(5e-4)]  # warmup
    # stable for the 10 steps less warmup and decay (4), then the cosine decay from the peak over 4 steps
    assert rates[2:7] == [pytest.approx(1e-3)] * 5
    assert rates[7:] == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * step / 4)) for step in (1, 2, 3)])


# ================================================================ length-grouped batches


def test_group_by_length_puts_examples_of_a_length_together(tmp_path, tokenizer, train_set):
    config = make_config(tmp_path, collator={"group_by_length": True, "packing": "off"},
                         training={"per_device_train_batch_size": 4})
    model = apply_lora(load_model(config), config)
    lengths = example_lengths(train_set)
    assert lengths == [len(ids) for ids in train_set["input_ids"]]
    trainer = trainer_for(config, model, tokenizer, train_set, lengths=lengths)
    assert trainer.args.train_sampling_strategy == "group_by_length"
    order = list(trainer._get_train_sampler())
    assert sorted(order) == list(range(len(train_set)))
    assert lengths[order[0]] == max(lengths)  # transformers' sampler: the longest batch first (memory shows at once)
    batches = [[lengths[index] for index in order[start:start + 4]] for start in range(0, len(order) - 3, 4)]
    padding = sum(max(batch) * len(batch) - sum(batch) for batch in batches)
    shuffled = torch.randperm(len(order), generator=torch.Generator().manual_seed(0)).tolist()
    random = [[lengths[index] for index in shuffled[start:start + 4]] for start in range(0, len(order) - 3, 4)]
    assert padding < sum(max(batch) * len(batch) - sum(batch) for batch in random) / 2


# ================================================================ all of them in one real run


def test_a_real_run_with_pissa_loraplus_neftune_a_floor_and_grouped_batches(tmp_path, train_in_process):
    """The engine's own wiring: the adapter it saves is PiSSA's, converted (rank 2·r) for the original base."""
    import json

    raw = tiny_run_file(tmp_path / "run", lora={"init_lora_weights": "pissa_niter_2", "loraplus_lr_ratio": 4.0},
                        training={"neftune_noise_alpha": 5.0, "lr_scheduler_type": "cosine_with_min_lr",
                                  "lr_scheduler_kwargs": {"min_lr_rate": 0.5}, "max_steps": 3, "eval_strategy": "no",
                                  "save_strategy": "no"},
                        collator={"packing": "off", "group_by_length": True}, data={"validation_split": 0.0})
    folder, result, events = train_in_process(raw)
    assert result["step"] == 3
    saved = json.loads((folder.adapter / "adapter_config.json").read_text(encoding="utf-8"))
    assert (saved["r"], saved["init_lora_weights"]) == (2 * raw["lora"]["r"], True)
    assert json.loads((folder.initial_adapter / "adapter_config.json").read_text())["r"] == raw["lora"]["r"]
    rates = [event["learning_rate"] for event in events if event.get("type") == "train" and "learning_rate" in event]
    assert min(rates) >= 0.5 * raw["training"]["learning_rate"] - 1e-12
