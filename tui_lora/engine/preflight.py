"""Checks that need the model's configuration or the loaded adapter, made before the first step.

Run-file mistakes are found by config/rules.py before anything loads, and the machine's abilities
(CUDA, bf16) by engine/model.check_hardware. What is left needs a little more of the run: the model's
context length (its config), whether bitsandbytes is there for quantisation, and how big a checkpoint
will be (the trainable parameters, so after LoRA is applied). Each would otherwise show up as a
stack trace at step 0, or as a full disk hours in.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError

# Where model configs keep their longest sequence, in the order transformers' own models use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def model_context(model_config) -> tuple[str, int] | None:
    """(attribute, tokens): the longest sequence the model's positions cover, when its config says."""
    for config in (model_config, getattr(model_config, "text_config", None)):
        # by the name the config file uses (GPT-2's n_positions is also readable as max_position_embeddings)
        stored = config.to_dict() if hasattr(config, "to_dict") else {}
        for key in CONTEXT_KEYS:
            value = stored.get(key)
            if isinstance(value, int) and value > 0:
                return key, value
    return None


def check_context(config: RunConfig, model_config) -> None:
    found = model_context(model_config)
    if found and config.tokenizer.max_length > found[1]:
        key, context = found
        raise UserError(f"tokenizer.max_length: {config.tokenizer.max_length} is longer than the model's context "
                        f"({key} = {context} in its config); use at most {context}")


def embedding_rows(model_config) -> int | None:
    """The rows of the model's input embedding, as its config says (vocab_size; the text model's for a
    multimodal config). Resizing the embeddings updates it, so it is what the loaded weights hold."""
    for candidate in (model_config, getattr(model_config, "text_config", None)):
        rows = getattr(candidate, "vocab_size", None)
        if isinstance(rows, int) and rows > 0:
            return rows
    return None


def check_vocabulary(config: RunConfig, model_config, tokenizer) -> None:
    """Every id the tokenizer can give must have an embedding row, or the first step dies with an IndexError.

    More rows than tokens is normal (Qwen pads its embedding to a multiple of 128); fewer is a tokenizer of
    another model, or one with tokens added and no embeddings resized for them.
    """
    rows = embedding_rows(model_config)
    ids = tokenizer.get_vocab().values()
    largest = max(ids, default=-1)
    if rows is None or largest < rows:
        return
    key = "tokenizer.name_or_path" if config.tokenizer.name_or_path else "model.name_or_path"
    raise UserError(f"{key}: the tokenizer gives ids up to {largest} but the model has {rows} embedding rows "
                    f"(vocab_size in its config), so training would stop at the first such token; use the model's "
                    "own tokenizer, or, for tokens added on purpose, a model whose embeddings were resized to "
                    f"{largest + 1} rows, trained with lora.modules_to_save = [\"embed_tokens\", \"lm_head\"]")


def check_quantization_backend(config: RunConfig) -> None:
    q = config.quantization
    if (q.load_in_4bit or q.load_in_8bit) and importlib.util.find_spec("bitsandbytes") is None:
        key = "quantization.load_in_4bit" if q.load_in_4bit else "quantization.load_in_8bit"
        raise UserError(f"{key}: quantisation needs bitsandbytes, which is not installed here; "
                        "pip install bitsandbytes, or turn quantisation off")


def checkpoint_bytes(model, tokenizer_files: list[Path]) -> int:
    """About what one checkpoint takes on disk: the trainable weights, two AdamW moments per weight in
    float32, the tokenizer files saved beside them, and a little for scheduler, RNG and trainer state."""
    weights = moments = 0
    for parameter in model.parameters():
        if parameter.requires_grad:
            weights += parameter.numel() * parameter.element_size()
            moments += parameter.numel() * 4 * 2
    tokenizer = sum(path.stat().st_size for path in tokenizer_files if path.is_file())
    return weights + moments + tokenizer + 64 * 1024


def planned_saves(config: RunConfig, train_examples: int, world_size: int = 1) -> int:
    """How many checkpoints this run will keep at once: save_total_limit, or every save it makes."""
    t = config.training
    if t.save_strategy == "no":
        return 0
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * max(world_size, 1)
    steps = t.max_steps if t.max_steps > 0 else math.ceil(train_examples / per_step) * math.ceil(t.num_train_epochs)
    saves = max(1, steps // t.save_steps) if t.save_strategy == "steps" else max(1, math.ceil(t.num_train_epochs))
    return min(saves, t.save_total_limit) if t.save_total_limit > 0 else saves


def check_disk_space(folder: Path, one_checkpoint: int, kept: int, warn) -> None:
    """Refuse a run whose first checkpoint cannot fit; warn when the ones it keeps will not.

    While a checkpoint is written the previous ones still exist (engine/checkpoints.py stages it), so
    the run needs room for kept + 1 checkpoints and the final adapter.
    """
    free = shutil.disk_usage(folder).free
    if kept and free < one_checkpoint:
        raise UserError(f"training.output_dir: {folder} has {_mib(free)} free, less than one checkpoint of this run "
                        f"(about {_mib(one_checkpoint)}); free some space or choose another folder")
    needed = (kept + 1) * one_checkpoint + one_checkpoint // 3
    if free < needed:
        warn(f"{folder} has {_mib(free)} free; this run's checkpoints need about {_mib(needed)} ({kept} kept at "
             f"{_mib(one_checkpoint)} each, plus the one being written and the adapter): the disk may fill up "
             "before the end (lower training.save_total_limit, or free some space)")


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"
