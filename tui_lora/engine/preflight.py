"""Checks made before the first step that need more of the run than the run file.

Run-file mistakes are found by config/rules.py before anything loads, the machine's abilities
(CUDA, bf16) by engine/model.check_hardware, and what the model's config allows (context length,
embedding rows) by models.py. What is left: whether bitsandbytes is there for quantisation, and how
big a checkpoint will be (the trainable parameters, so after LoRA is applied) against the free disk.
Each would otherwise show up as a stack trace at step 0, or as a full disk hours in.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError

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
