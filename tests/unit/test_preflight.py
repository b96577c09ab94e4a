"""Checks made before the first step: context length, the quantisation library, disk space for checkpoints."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO, run_cli, tiny_run_file, write_run_file
from transformers import AutoConfig, GPT2Config

from tui_lora.assets import builtin_path
from tui_lora.config import config_from_dict
from tui_lora import models
from tui_lora.engine import preflight
from tui_lora.errors import UserError


def config_with(tmp_path, **sections):
    return config_from_dict(tiny_run_file(tmp_path / "run", **sections))


def test_max_length_past_the_models_context_is_refused(tmp_path):
    model_config = AutoConfig.from_pretrained(builtin_path("builtin:tiny-chat"))
    models.check_context(config_with(tmp_path, tokenizer={"max_length": 2048}), model_config)
    with pytest.raises(UserError, match=r"tokenizer.max_length: 4096 is longer than the model's context "
                                        r"\(max_position_embeddings = 2048"):
        models.check_context(config_with(tmp_path, tokenizer={"max_length": 4096}), model_config)
    # GPT-2 style configs name it n_positions
    assert models.model_context(GPT2Config(n_positions=512)) == ("n_positions", 512)


def test_max_length_past_the_context_through_the_cli_is_one_line_before_loading(tmp_path):
    raw = tiny_run_file(tmp_path / "run", tokenizer={"max_length": 8192})
    run = run_cli("run", str(write_run_file(tmp_path / "run.toml", raw)), "--plain", cwd=REPO)
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: tokenizer.max_length: 8192 is longer than the model's context "
                      "(max_position_embeddings = 2048 in its config); use at most 2048"], run.stderr
    assert "Traceback" not in run.stderr
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_planned_saves_follow_the_limit_and_the_steps(tmp_path):
    steps = config_with(tmp_path, training={"max_steps": 100, "save_steps": 10, "save_total_limit": 0})
    assert preflight.planned_saves(steps, train_examples=0) == 10
    limited = config_with(tmp_path, training={"max_steps": 100, "save_steps": 10, "save_total_limit": 2})
    assert preflight.planned_saves(limited, train_examples=0) == 2
    epochs = config_with(tmp_path, training={"max_steps": -1, "num_train_epochs": 2, "save_steps": 5,
                                             "per_device_train_batch_size": 4, "save_total_limit": 0})
    assert preflight.planned_saves(epochs, train_examples=40) == 4  # 10 steps an epoch, 2 epochs, every 5
    assert preflight.planned_saves(epochs, train_examples=40, world_size=2) == 2
    never = config_with(tmp_path, training={"save_strategy": "no"})
    assert preflight.planned_saves(never, train_examples=40) == 0


def test_disk_space_refuses_below_one_checkpoint_and_warns_below_all(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    warnings = []
    preflight.check_disk_space(tmp_path, one_checkpoint=1024, kept=3, warn=warnings.append)
    assert warnings == []
    preflight.check_disk_space(tmp_path, one_checkpoint=free // 2, kept=3, warn=warnings.append)
    assert len(warnings) == 1 and "may fill up" in warnings[0]
    with pytest.raises(UserError, match="less than one checkpoint"):
        preflight.check_disk_space(tmp_path, one_checkpoint=free * 2, kept=1, warn=warnings.append)
    preflight.check_disk_space(tmp_path, one_checkpoint=free * 2, kept=0, warn=warnings.append)  # saves nothing


def test_quantisation_without_bitsandbytes_is_refused(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UserError, match="quantization.load_in_4bit: quantisation needs bitsandbytes"):
        preflight.check_quantization_backend(config_with(tmp_path, quantization={"load_in_4bit": True}))
    preflight.check_quantization_backend(config_with(tmp_path))  # no quantisation, no need
