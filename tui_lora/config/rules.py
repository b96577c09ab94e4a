"""Rules that involve more than one field, or the file system.

Each rule is a small function that yields ConfigIssues; `check_rules` runs them
all. They run before anything heavy is imported, so a mistake costs a second,
not the minutes it takes to load a model.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tui_lora.assets import BUILTINS, builtin_path, is_builtin
from tui_lora.config.load import ConfigIssue
from tui_lora.config.paths import folder_problem, path_problem, quoted, readable_path_exists
from tui_lora.config.schema import LORA_INITS, PER_SOURCE_KEYS, SCHEDULER_KWARGS, DataSettings, RunConfig

DEVICE_MAP = re.compile(r"^(auto|balanced|balanced_low_0|sequential|cpu|mps|(cuda|xpu|npu)(:\d+)?)$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_NAME_MAX = 96  # huggingface_hub.utils.validate_repo_id: the namespace and the name each
# The one list of data file suffixes the loader reads (tui_lora.data.sources maps them to builders).
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")
# What a local model folder must hold besides config.json (sharded checkpoints have an index json).
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json")
# report_to integration -> modules that provide it (transformers accepts tensorboardX for tensorboard);
# the first is the package to install.
REPORTER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                    "trackio": ("trackio",)}


def looks_local(ref: str) -> bool:
    """A path the user means as a local file or folder (rather than a hub id). Never raises: a value too long
    or with a NUL byte in it is for path_problem to explain, not a traceback."""
    return ref.startswith(("/", "./", "../", "~")) or ref.endswith(DATA_SUFFIXES) or readable_path_exists(ref)


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
    if d.system_prompt_mode == "replace" and not d.system_prompt.strip():
        yield ConfigIssue("data.system_prompt_mode",
                          "is \"replace\" but data.system_prompt is empty; give the prompt, or use \"missing\"")
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
    if t.lr_scheduler_type == "reduce_lr_on_plateau" and not evaluating:
        yield ConfigIssue("training.lr_scheduler_type",
                          "\"reduce_lr_on_plateau\" lowers the rate when the evaluation loss stops improving, so it "
                          "needs evaluation; set eval_strategy to \"steps\" or \"epoch\", or choose another schedule")
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
    yield from _lora_init(cfg)
    ratio = cfg.lora.loraplus_lr_ratio
    if 0 < ratio < 1:
        yield ConfigIssue("lora.loraplus_lr_ratio", f"{ratio!r} would have B learn slower than A; LoRA+ takes a ratio "
                                                   "of 1 or more (16 is typical), or 0 to turn it off")


def _lora_init(cfg: RunConfig) -> Iterator[ConfigIssue]:
    """What peft can start an adapter from, given the base model as the run loads it."""
    init, quantized = cfg.lora.init_lora_weights, cfg.quantization.mode
    key = "lora.init_lora_weights"
    if init not in LORA_INITS and not re.fullmatch(r"pissa_niter_\d+", init):
        names = ", ".join(repr(name) for name in LORA_INITS)
        yield ConfigIssue(key, f"{init!r} is not allowed; choose one of {names}, or pissa_niter_N (PiSSA with a fast "
                               "SVD of N iterations, such as pissa_niter_16)")
    elif init == "loftq" and quantized != "4-bit":
        loaded = "in 8-bit" if quantized == "8-bit" else "unquantised"
        yield ConfigIssue(key, f"\"loftq\" makes up for what 4-bit quantisation loses, and this run loads the model "
                               f"{loaded}; set quantization.load_in_4bit = true, or choose another initialisation")
    elif (init.startswith("pissa") or init == "orthogonal") and quantized != "none":
        yield ConfigIssue(key, f"{init!r} needs the base weights in 16 or 32 bits (peft cannot start it from "
                               f"{quantized} weights); turn quantisation off, or use \"olora\" (it works on "
                               "quantised weights) or \"loftq\" (4-bit)")


def _model(cfg: RunConfig) -> Iterator[ConfigIssue]:
    if not DEVICE_MAP.match(cfg.model.device_map):
        yield ConfigIssue("model.device_map", f"{cfg.model.device_map!r} is not a placement; use auto, cpu, cuda, "
                                              "cuda:N, balanced, balanced_low_0 or sequential")
    ref = cfg.model.name_or_path
    if not ref:
        yield ConfigIssue("model.name_or_path", "is required: a hub id, a local folder or builtin:tiny-chat")
        return
    tok = cfg.tokenizer.name_or_path
    yield from _model_source("model.name_or_path", ref, needs_tokenizer=not tok)
    if tok:
        yield from _tokenizer_source("tokenizer.name_or_path", tok)


def _data(cfg: RunConfig) -> Iterator[ConfigIssue]:
    d = cfg.data
    if d.sources:
        yield from _sources(d)
        return
    if d.mix != "concat":
        yield ConfigIssue("data.mix", f"is {d.mix!r}, which mixes several data sets; list them as [[data.sources]] "
                                      "tables, or leave mix = \"concat\"")
    if not d.path:
        yield ConfigIssue("data.path", "is required: a data file or folder, a hub data set id, or builtin:belle-sample "
                                       "(or several [[data.sources]])")
        return
    yield from _data_source("data.path", d.path)
    yield from _column_mapping(d, "data")


def _sources(d) -> Iterator[ConfigIssue]:
    """[[data.sources]]: each source complete on its own, and [data] free of the keys each source sets."""
    default = DataSettings()
    for key in PER_SOURCE_KEYS:
        if getattr(d, key) != getattr(default, key):
            yield ConfigIssue(f"data.{key}", "is set, but the run lists [[data.sources]]; set it in each source "
                                             "instead (or remove the sources and keep one data.path)")
    for where, source in d.tables():
        if not source.path:
            yield ConfigIssue(f"{where}.path", "is required: a data file or folder, a hub data set id, or "
                                               "builtin:belle-sample")
        else:
            yield from _data_source(f"{where}.path", source.path)
        if source.weight <= 0:
            yield ConfigIssue(f"{where}.weight", f"{source.weight!r} is not a share of the mix; it must be above 0 "
                                                 "(leave a source out to use none of it)")
        elif source.weight != 1 and d.mix == "concat":
            yield ConfigIssue(f"{where}.weight", "only matters when sources are interleaved, and data.mix is "
                                                 "\"concat\" (every record once); set data.mix = "
                                                 "\"interleave_under\" or \"interleave_over\"")
        yield from _column_mapping(source, where)


def _column_mapping(d, where: str) -> Iterator[ConfigIssue]:
    """A mapping is one layout or the other, complete, with each speaker value meaning one role; `where` is
    data (a one-source run) or data.sources[N]."""
    if d.messages_column and (d.prompt_column or d.reply_column):
        yield ConfigIssue(f"{where}.messages_column", f"and {where}.prompt_column / reply_column describe two "
                                                      "layouts; give the one the records have")
        return
    if bool(d.prompt_column) != bool(d.reply_column):
        given, lacking = (("prompt_column", "reply_column") if d.prompt_column else ("reply_column", "prompt_column"))
        yield ConfigIssue(f"{where}.{lacking}", f"is needed with {where}.{given}: instruction records need a prompt "
                                                "and a reply column")
    if d.input_column and not d.prompt_column:
        yield ConfigIssue(f"{where}.input_column", f"only applies with {where}.prompt_column and "
                                                   f"{where}.reply_column")
    mapped = bool(d.messages_column or d.prompt_column)
    if d.system_column and not mapped:
        yield ConfigIssue(f"{where}.system_column", f"only applies with {where}.messages_column or "
                                                    f"{where}.prompt_column")
    if mapped and d.format != "auto":
        yield ConfigIssue(f"{where}.format", f"is {d.format!r} but the column mapping gives the layout; "
                                             "leave format = \"auto\"")
    if d.messages_column:
        for key in ("user_roles", "assistant_roles"):
            if not getattr(d, key):
                yield ConfigIssue(f"{where}.{key}", "is empty; name the speaker values, such as [\"A\"]")
        seen: dict[str, str] = {}
        for key in ("user_roles", "assistant_roles", "system_roles"):
            for value in getattr(d, key):
                if value in seen and seen[value] != key:
                    yield ConfigIssue(f"{where}.{key}", f"{value!r} is also in {where}.{seen[value]}; "
                                                        "each speaker value means one role")
                seen.setdefault(value, key)


# ---------------------------------------------------------------- where models and data come from


def _locate(key: str, ref: str) -> tuple[Path | None, ConfigIssue | None]:
    """(local path, None) for a builtin or an existing local path; (None, None) for a hub id;
    (None, issue) when ref is neither."""
    if is_builtin(ref):
        try:
            return builtin_path(ref), None
        except KeyError:
            return None, ConfigIssue(key, f"{ref!r} is not a builtin; known: "
                                          + ", ".join(f"builtin:{name}" for name in BUILTINS))
    problem = path_problem(ref)
    if looks_local(ref) or (problem and not HUB_ID.match(ref)):
        if problem:
            return None, ConfigIssue(key, problem)
        path = Path(ref).expanduser()
        if not path.exists():
            return None, ConfigIssue(key, f"{ref!r} does not exist")
        return path, None
    if not HUB_ID.match(ref):
        return None, ConfigIssue(key, f"{quoted(ref)} is neither an existing path nor a hub id like org/name")
    # huggingface_hub's own rule (utils.validate_repo_id), which would otherwise fail the run with a traceback
    # only when the download starts: a name of at most 96 characters, no "--" or "..", no ".git" at the end
    if any(len(part) > HUB_NAME_MAX for part in ref.split("/")):
        return None, ConfigIssue(key, f"{quoted(ref)} is not a hub id: a hub name has at most {HUB_NAME_MAX} "
                                      "characters (and it is no local path either)")
    if "--" in ref or ".." in ref or ref.endswith(".git"):
        return None, ConfigIssue(key, f"{ref!r} is not a hub id: it cannot hold \"--\" or \"..\" or end in .git")
    return None, None  # a hub id: checked when it is downloaded


def _local_folder(key: str, ref: str, holding: str) -> tuple[Path | None, ConfigIssue | None]:
    """_locate for a value that must be a folder: a local file is the problem, named with what to give."""
    path, problem = _locate(key, ref)
    if path is not None and not path.is_dir():
        return None, ConfigIssue(key, f"{ref!r} is a file; give {holding}")
    return path, problem


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _model_source(key: str, ref: str, needs_tokenizer: bool) -> Iterator[ConfigIssue]:
    """A local model folder must hold a transformers config, weights and (unless another tokenizer
    is named) tokenizer files; a hub id is checked when it is downloaded."""
    path, problem = _local_folder(key, ref, "the model folder (the one holding config.json)")
    if problem:
        yield problem
    if path is None:
        return
    config = path / "config.json"
    if not config.is_file():
        yield ConfigIssue(key, f"{ref!r} has no config.json; is it a transformers model folder?")
        return
    yield from _model_config(key, config)
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        yield ConfigIssue(key, f"{ref!r} holds no weight files ({', '.join(WEIGHT_FILES)}); "
                               "copy the model's weights into it or finish the download")
    if needs_tokenizer and not _has_tokenizer(path):
        yield ConfigIssue(key, f"{ref!r} holds no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
                               "copy them into it or set tokenizer.name_or_path")


def _model_config(key: str, path: Path) -> Iterator[ConfigIssue]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield ConfigIssue(key, f"{path} cannot be read as JSON ({exc})")
        return
    if not isinstance(body, dict) or "model_type" not in body:
        what = "has no \"model_type\" key" if isinstance(body, dict) else "is not a JSON object"
        yield ConfigIssue(key, f"{path} is not a transformers model config (it {what}); "
                               "give a folder saved by transformers (save_pretrained) or a hub id")


def _tokenizer_source(key: str, ref: str) -> Iterator[ConfigIssue]:
    path, problem = _local_folder(key, ref, "the folder holding the tokenizer files")
    if problem:
        yield problem
    if path is not None and not _has_tokenizer(path):
        yield ConfigIssue(key, f"{ref!r} holds no tokenizer files ({', '.join(TOKENIZER_FILES)})")


def _data_source(key: str, ref: str) -> Iterator[ConfigIssue]:
    """A local data file must have a suffix the loader reads; a folder is searched when the run starts."""
    path, problem = _locate(key, ref)
    if problem:
        yield problem
    if path is not None and path.is_file() and path.suffix not in DATA_SUFFIXES:
        yield ConfigIssue(key, f"{ref!r} is not a data file; a data file's name must end in "
                               f"{', '.join(DATA_SUFFIXES)} (or give a folder of such files)")


# ---------------------------------------------------------------- training


def _training(cfg: RunConfig) -> Iterator[ConfigIssue]:
    if not cfg.training.output_dir.strip():
        yield ConfigIssue("training.output_dir", "is required: give the run folder, for example runs/my-run")
    # folders the run makes: a name the file system refuses is found here, not as an OSError mid-run
    for key, ref in (("training.output_dir", cfg.training.output_dir), ("training.logging_dir", cfg.training.logging_dir),
                     ("hub.cache_dir", cfg.hub.cache_dir)):
        problem = folder_problem(ref) if ref.strip() else None
        if problem:
            yield ConfigIssue(key, problem)


# lr_scheduler_kwargs values that are words, and the words each takes; every other argument is a number
SCHEDULER_WORDS = {"mode": ("min", "max"), "threshold_mode": ("rel", "abs"),
                   "warmup_type": ("linear", "cosine", "1-sqrt"), "decay_type": ("linear", "cosine", "1-sqrt")}


def _schedule(cfg: RunConfig) -> Iterator[ConfigIssue]:
    """training.lr_scheduler_kwargs against what the chosen schedule takes (schema.SCHEDULER_KWARGS)."""
    t, key = cfg.training, "training.lr_scheduler_kwargs"
    schedule, given = t.lr_scheduler_type, t.lr_scheduler_kwargs
    allowed = SCHEDULER_KWARGS.get(schedule, ())
    takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
    for name, value in given.items():
        if name not in allowed:
            yield ConfigIssue(key, f"{name!r} is not an argument of {schedule!r}; {takes}")
        elif name in SCHEDULER_WORDS and value not in SCHEDULER_WORDS[name]:
            yield ConfigIssue(key, f"{name} = {value!r} is not allowed; choose one of "
                                   f"{', '.join(repr(word) for word in SCHEDULER_WORDS[name])}")
        elif name not in SCHEDULER_WORDS and isinstance(value, (bool, str)):
            yield ConfigIssue(key, f"{name} = {value!r} must be a number")
    floors = ("min_lr" in given) + ("min_lr_rate" in given)
    if schedule in ("cosine_with_min_lr", "cosine_warmup_with_min_lr") and floors != 1:
        yield ConfigIssue(key, f"{schedule!r} ends at a floor: give one of min_lr (a learning rate) or min_lr_rate (a "
                               "share of learning_rate), such as {min_lr_rate = 0.1}")
    if schedule == "warmup_stable_decay" and "num_decay_steps" not in given:
        yield ConfigIssue(key, "\"warmup_stable_decay\" needs num_decay_steps, the steps of the final decay (the steps "
                               "between warmup and decay stay at the peak), such as {num_decay_steps = 100}")


def _batches(cfg: RunConfig) -> Iterator[ConfigIssue]:
    key, packing = "collator.group_by_length", cfg.collator.packing
    if not cfg.collator.group_by_length:
        return
    if packing != "off":
        yield ConfigIssue(key, f"only applies to padded batches, and collator.packing is {packing!r} (packed batches "
                               "have no padding to save); set packing = \"off\", or turn this off")
    elif cfg.data.streaming:
        yield ConfigIssue(key, "needs every example's length up front, which a stream does not have; turn "
                               "data.streaming off, or this")


def _installed(module: str) -> bool:
    """Whether a package can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return module in sys.modules


def _report_to(cfg: RunConfig) -> Iterator[ConfigIssue]:
    for name in cfg.training.report_to:
        modules = REPORTER_MODULES.get(name, ())
        if modules and not any(_installed(module) for module in modules):
            yield ConfigIssue("training.report_to",
                              f"{name!r} needs the {modules[0]} package, which is not installed; "
                              f"run pip install {modules[0]}, or remove {name!r} from the list")


def _hub(cfg: RunConfig) -> Iterator[ConfigIssue]:
    endpoint = cfg.hub.endpoint
    if endpoint and not re.match(r"^https?://[^/\s]+", endpoint):
        yield ConfigIssue("hub.endpoint", f"{endpoint!r} is not an http(s) URL; for example https://hf-mirror.com")
    elif endpoint:
        try:
            urlsplit(endpoint).port
        except ValueError as exc:
            yield ConfigIssue("hub.endpoint", f"{endpoint!r} is not a valid URL ({exc})")
    if endpoint and cfg.hub.source != "huggingface":
        yield ConfigIssue("hub.endpoint", f"is a Hugging Face mirror, but hub.source is {cfg.hub.source!r}; "
                                          "leave endpoint empty or set source = \"huggingface\"")
    if cfg.hub.source == "local":
        for key, ref in (("model.name_or_path", cfg.model.name_or_path), *cfg.data.keyed_paths(),
                         ("tokenizer.name_or_path", cfg.tokenizer.name_or_path)):
            if ref and not is_builtin(ref) and not looks_local(ref):
                yield ConfigIssue(key, f"{ref!r} looks like a hub id, but hub.source is \"local\"; give a local "
                                       "path, or set hub.source to \"huggingface\" or \"modelscope\"")


# device_map values that spread one model over several devices, or pin it to one named device: with several
# processes each trains a whole copy of its own, on its own GPU, so neither can work there.
SPREADING_MAPS = ("balanced", "balanced_low_0", "sequential")


def _launch(cfg: RunConfig) -> Iterator[ConfigIssue]:
    launch, device_map = cfg.launch, cfg.model.device_map
    if launch.machine_rank >= launch.num_machines:
        yield ConfigIssue("launch.machine_rank", f"{launch.machine_rank} is not a machine of "
                                                 f"{launch.num_machines}; machines are numbered 0 to "
                                                 f"{launch.num_machines - 1}")
    if launch.num_processes % launch.num_machines:
        yield ConfigIssue("launch.num_processes",
                          f"{launch.num_processes} processes cannot be shared evenly by {launch.num_machines} "
                          "machines; give the total over all machines, a multiple of num_machines "
                          f"(for example {launch.num_machines * max(1, launch.num_processes // launch.num_machines)})")
    if launch.num_machines > 1:
        if not launch.main_process_ip.strip():
            yield ConfigIssue("launch.main_process_ip", f"is required with {launch.num_machines} machines: the "
                                                        "address of machine 0 that the others can reach")
        if launch.main_process_port == 0:
            yield ConfigIssue("launch.main_process_port", "0 (any free port) only works on one machine; every "
                                                          "machine must name the same port, for example 29500")
    if launch.config_file and path_problem(launch.config_file):
        yield ConfigIssue("launch.config_file", path_problem(launch.config_file))
    elif launch.config_file:
        path = Path(launch.config_file).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            yield ConfigIssue("launch.config_file", f"{launch.config_file!r} {what}; give an accelerate config "
                                                    "file (accelerate config writes one), or leave it empty")
    if launch.num_processes > 1:
        if device_map in SPREADING_MAPS:
            yield ConfigIssue("model.device_map",
                              f"{device_map!r} spreads one model over several GPUs, but with launch.num_processes = "
                              f"{launch.num_processes} every process trains a copy of its own; use \"auto\" (each "
                              "process on its own GPU), or launch.num_processes = 1 to spread a model too big for "
                              "one GPU (or an accelerate config_file with FSDP to shard it)")
        elif re.match(r"^(cuda|xpu|npu|mps)", device_map):
            yield ConfigIssue("model.device_map",
                              f"{device_map!r} puts every one of the {launch.num_processes} processes on the same "
                              "device; use \"auto\" (each process on its own GPU) or \"cpu\"")
    t, chosen = cfg.training, launch.mixed_precision
    set_by_training = "bf16" if t.bf16 else "fp16" if t.fp16 else None
    if chosen != "auto" and set_by_training and chosen != set_by_training:
        yield ConfigIssue("launch.mixed_precision",
                          f"is {chosen!r} but training.{set_by_training} is true; use one precision: set "
                          f"mixed_precision = \"{set_by_training}\" (or \"auto\"), or training.{set_by_training} "
                          "= false")


RULES = (_hub, _quantization, _precision, _length, _evaluation, _training, _schedule, _report_to, _lora, _batches,
         _model, _data, _launch)


def check_rules(cfg: RunConfig) -> list[ConfigIssue]:
    return [issue for rule in RULES for issue in rule(cfg)]
