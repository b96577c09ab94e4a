"""Rules that involve more than one field, or the file system.

Each rule is a small function that yields ConfigIssues; `check_rules` runs them
all. They run before anything heavy is imported, so a mistake costs a second,
not the minutes it takes to load a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from tui_lora.assets import BUILTINS, builtin_path, is_builtin
from tui_lora.config.load import ConfigIssue
from tui_lora.config.schema import RunConfig

DEVICE_MAP = re.compile(r"^(auto|balanced|balanced_low_0|sequential|cpu|mps|(cuda|xpu|npu)(:\d+)?)$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def looks_local(ref: str) -> bool:
    """A path the user means as a local file or folder (rather than a hub id)."""
    return (ref.startswith(("/", "./", "../", "~")) or ref.endswith(DATA_SUFFIXES)
            or Path(ref).expanduser().exists())


def _quantization(cfg: RunConfig) -> Iterator[ConfigIssue]:
    q = cfg.quantization
    if q.load_in_8bit and q.load_in_4bit:
        yield ConfigIssue("quantization.load_in_4bit",
                          "load_in_8bit and load_in_4bit are both true; choose one (4-bit saves more memory)")


def _precision(cfg: RunConfig) -> Iterator[ConfigIssue]:
    t = cfg.training
    if t.fp16 and t.bf16:
        yield ConfigIssue("training.bf16", "fp16 and bf16 are both true; choose one (bf16 on Ampere or newer GPUs)")


def _length(cfg: RunConfig) -> Iterator[ConfigIssue]:
    t = cfg.training
    if t.max_steps == 0:
        yield ConfigIssue("training.max_steps", "0 would train nothing; use -1 to train for num_train_epochs")
    if t.max_steps < 0 and t.num_train_epochs <= 0:
        yield ConfigIssue("training.num_train_epochs", "must be above 0 when max_steps is -1")
    if t.warmup_ratio > 0 and t.warmup_steps > 0:
        yield ConfigIssue("training.warmup_steps", "warmup_ratio and warmup_steps are both set; keep one")
    if cfg.data.streaming and t.max_steps < 1:
        yield ConfigIssue("training.max_steps",
                          "streamed data has no known length; set max_steps (for example 1000) with data.streaming")


def _evaluation(cfg: RunConfig) -> Iterator[ConfigIssue]:
    t, d = cfg.training, cfg.data
    evaluating = t.eval_strategy != "no"
    if evaluating and d.validation_split == 0:
        yield ConfigIssue("data.validation_split",
                          f"is 0 but training.eval_strategy is {t.eval_strategy!r}; hold out a share "
                          "(for example 0.05) or set eval_strategy = \"no\"")
    if d.streaming and d.validation_split > 0:
        yield ConfigIssue("data.validation_split",
                          "streamed data cannot be split by share; set it to 0 and eval_strategy = \"no\"")
    if t.load_best_model_at_end:
        if not evaluating:
            yield ConfigIssue("training.load_best_model_at_end",
                              "needs evaluation; set eval_strategy to \"steps\" or \"epoch\"")
        elif t.save_strategy not in (t.eval_strategy, "best"):
            yield ConfigIssue("training.save_strategy",
                              f"must match eval_strategy ({t.eval_strategy!r}) when load_best_model_at_end is true")
        elif t.eval_strategy == "steps" and t.save_strategy == "steps" and t.save_steps % t.eval_steps:
            yield ConfigIssue("training.save_steps",
                              f"{t.save_steps} is not a multiple of eval_steps ({t.eval_steps}); with "
                              "load_best_model_at_end every checkpoint must follow an evaluation")
    if t.save_strategy == "best" and not evaluating:
        yield ConfigIssue("training.save_strategy", "\"best\" needs evaluation; set eval_strategy")
    if cfg.early_stopping.enabled and not evaluating:
        yield ConfigIssue("early_stopping.enabled",
                          "early stopping needs evaluation; set training.eval_strategy to \"steps\" or \"epoch\"")


def _lora(cfg: RunConfig) -> Iterator[ConfigIssue]:
    targets = cfg.lora.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        yield ConfigIssue("lora.target_modules",
                          f"{targets!r} is not allowed as a string; give a list of module names or \"all-linear\"")
    if isinstance(targets, list) and not targets:
        yield ConfigIssue("lora.target_modules", "is empty; name at least one module, or use \"all-linear\"")


def _model(cfg: RunConfig) -> Iterator[ConfigIssue]:
    if not DEVICE_MAP.match(cfg.model.device_map):
        yield ConfigIssue("model.device_map", f"{cfg.model.device_map!r} is not a placement; use auto, cpu, cuda, "
                                              "cuda:N, balanced, balanced_low_0 or sequential")
    ref = cfg.model.name_or_path
    if not ref:
        yield ConfigIssue("model.name_or_path", "is required: a hub id, a local folder or builtin:tiny-chat")
        return
    yield from _source("model.name_or_path", ref, want_folder=True)
    tok = cfg.tokenizer.name_or_path
    if tok:
        yield from _source("tokenizer.name_or_path", tok, want_folder=True)


def _data(cfg: RunConfig) -> Iterator[ConfigIssue]:
    ref = cfg.data.path
    if not ref:
        yield ConfigIssue("data.path", "is required: a data file or folder, a hub data set id, or builtin:belle-sample")
        return
    yield from _source("data.path", ref, want_folder=False)


def _source(key: str, ref: str, want_folder: bool) -> Iterator[ConfigIssue]:
    if is_builtin(ref):
        try:
            builtin_path(ref)
        except KeyError:
            yield ConfigIssue(key, f"{ref!r} is not a builtin; known: "
                                   + ", ".join(f"builtin:{name}" for name in BUILTINS))
        return
    if looks_local(ref):
        path = Path(ref).expanduser()
        if not path.exists():
            yield ConfigIssue(key, f"{ref!r} does not exist")
        elif want_folder and path.is_file():
            yield ConfigIssue(key, f"{ref!r} is a file; give the model folder (the one holding config.json)")
        elif want_folder and not (path / "config.json").exists() and key.startswith("model"):
            yield ConfigIssue(key, f"{ref!r} has no config.json; is it a transformers model folder?")
        elif want_folder and key.startswith("model"):
            yield from _model_config(key, path / "config.json")
        return
    if not HUB_ID.match(ref):
        yield ConfigIssue(key, f"{ref!r} is neither an existing path nor a hub id like org/name")


def _model_config(key: str, path: Path) -> Iterator[ConfigIssue]:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield ConfigIssue(key, f"{path} cannot be read as JSON ({exc})")


def _hub(cfg: RunConfig) -> Iterator[ConfigIssue]:
    endpoint = cfg.hub.endpoint
    if endpoint and not re.match(r"^https?://[^/\s]+", endpoint):
        yield ConfigIssue("hub.endpoint", f"{endpoint!r} is not an http(s) URL; for example https://hf-mirror.com")


RULES = (_hub, _quantization, _precision, _length, _evaluation, _lora, _model, _data)


def check_rules(cfg: RunConfig) -> list[ConfigIssue]:
    return [issue for rule in RULES for issue in rule(cfg)]
