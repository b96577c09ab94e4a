"""The run file's schema: one dataclass per TOML section, one field per key.

This is the only place the shape of a run file is written down. The TOML loader,
`tui-lora validate`, the engine and the wizard all read these classes and their
field metadata (help text, allowed values, ranges), so a rule never exists twice.

Every field has a concrete default that TOML can hold (no None): optional
settings use an explicit "off" value such as 0, -1, "" or "auto". That keeps
`tui-lora show` complete and makes a written file read back identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

# The choice lists live here, at the bottom of the package, and data/ reads them: data/formats.py has a
# parser for each format and data/encode.py a mask for each train_on.
FORMATS = ("belle", "messages", "sharegpt", "alpaca")
TRAIN_ON = ("assistant", "last", "all")
SYSTEM_PROMPT_MODES = ("missing", "replace")

DTYPES = ("auto", "float32", "bfloat16", "float16")

SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau",
    "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
)

# What training.lr_scheduler_kwargs may hold for each schedule: the keyword arguments of transformers' schedule
# functions (transformers/optimization.py) other than the ones the Trainer passes itself (the optimizer, the
# warmup and total step counts), and for reduce_lr_on_plateau those of torch's ReduceLROnPlateau.
# tests/functional/test_settings_reach_library.py checks these against the installed libraries' signatures.
SCHEDULER_KWARGS = {
    "linear": (), "constant": (), "constant_with_warmup": (),
    "cosine": ("num_cycles",), "cosine_with_restarts": ("num_cycles",),
    "polynomial": ("lr_end", "power"),
    "inverse_sqrt": ("timescale",),
    "reduce_lr_on_plateau": ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr",
                             "eps"),
    "cosine_with_min_lr": ("num_cycles", "min_lr", "min_lr_rate"),
    "cosine_warmup_with_min_lr": ("num_cycles", "min_lr", "min_lr_rate", "warmup_lr_rate"),
    "warmup_stable_decay": ("num_decay_steps", "num_stable_steps", "warmup_type", "decay_type", "min_lr_ratio",
                            "num_cycles"),
}

# lora.init_lora_weights: peft's initialisations of the adapter ("default" is peft's True: A random, B zero, so
# training starts from the base model exactly). pissa_niter_<n> (fast SVD with n subspace iterations) is allowed too.
LORA_INITS = ("default", "gaussian", "orthogonal", "pissa", "olora", "eva", "loftq")

OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adamw_8bit",
    "paged_adamw_8bit", "paged_adamw_32bit", "lion_8bit", "paged_lion_8bit",
)

REPORTERS = ("tensorboard", "wandb", "mlflow", "trackio", "none")

# The engine passes no compute_metrics, so evaluation measures the loss and nothing else.
BEST_MODEL_METRICS = ("eval_loss", "loss")

# The model's loss ignores exactly this label id (transformers' ignore_index).
IGNORED_LABEL = -100


def setting(default: Any, help: str, *, choices: tuple | None = None,
            min: float | None = None, max: float | None = None,
            max_exclusive: bool = False, item_choices: tuple | None = None, why: str = "") -> Any:
    """A schema field: its default plus what the validator and the wizard need to know.

    `why` explains a restriction; the loader adds it to the message when a value breaks it.
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max,
            "max_exclusive": max_exclusive, "item_choices": item_choices, "why": why}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSettings:
    name_or_path: str = setting(
        "", "Model to fine-tune: a hub id (Qwen/Qwen2.5-0.5B-Instruct), a local folder, or builtin:tiny-chat.")
    revision: str = setting("main", "Branch, tag or commit of the model on the hub.")
    dtype: str = setting(
        "auto", "Weight dtype when loading: auto keeps the checkpoint's own; bfloat16 on recent GPUs.",
        choices=DTYPES)
    device_map: str = setting(
        "auto", "Where weights go: auto (all visible devices; with several launch processes, each process's own "
                "GPU), cpu, cuda, cuda:N, balanced, sequential.")
    trust_remote_code: bool = setting(
        False, "Run Python code shipped with the model. Only for models you trust; off by default.")
    attn_implementation: str = setting(
        "auto", "Attention kernel: auto lets transformers choose; sdpa, eager or flash_attention_2.",
        choices=("auto", "sdpa", "eager", "flash_attention_2"))


@dataclass
class TokenizerSettings:
    name_or_path: str = setting("", "Tokenizer to use; empty means the model's own.")
    max_length: int = setting(1024, "Longest example in tokens; longer conversations are cut at a turn boundary.",
                              min=8)
    truncation: bool = setting(
        True, "Cut conversations longer than max_length (true) or skip them (false).")


@dataclass
class QuantizationSettings:
    load_in_8bit: bool = setting(False, "Load the base model in 8-bit (bitsandbytes LLM.int8): QLoRA 8-bit.")
    load_in_4bit: bool = setting(False, "Load the base model in 4-bit (bitsandbytes): QLoRA 4-bit.")
    quant_type: str = setting("nf4", "4-bit number format: nf4 (normal float, the QLoRA default) or fp4.",
                              choices=("nf4", "fp4"))
    double_quant: bool = setting(True, "Quantise the 4-bit scales too: saves about 0.4 bits per weight.")
    compute_dtype: str = setting(
        "auto", "Dtype of the 4-bit matmuls: auto follows model.dtype (float32 when that is auto).",
        choices=DTYPES)

    @property
    def mode(self) -> str:
        """The one word every display uses: "4-bit", "8-bit" or "none" (the wizard's choice, the model event,
        `validate`); 4-bit first, as the rules refuse both at once."""
        return "4-bit" if self.load_in_4bit else "8-bit" if self.load_in_8bit else "none"


@dataclass
class LoraSettings:
    r: int = setting(8, "Rank of the low-rank update: more rank, more trainable parameters (8-64 typical).",
                     min=1)
    lora_alpha: int = setting(16, "Scale of the update, usually r or 2*r.", min=1)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA input, in [0, 1).", min=0.0, max=1.0,
                                  max_exclusive=True)
    target_modules: list[str] | str = setting(
        "all-linear", 'Modules that get adapters: a list of names such as ["q_proj", "v_proj"], or "all-linear".')
    bias: str = setting("none", "Which biases train: none, all, or lora_only.",
                        choices=("none", "all", "lora_only"))
    use_rslora: bool = setting(False, "Rank-stabilised LoRA: scale by alpha/sqrt(r) instead of alpha/r.")
    use_dora: bool = setting(False, "Weight-decomposed LoRA (DoRA): often better, slower per step.")
    modules_to_save: list[str] = setting(
        [], 'Modules trained in full and saved with the adapter, e.g. ["lm_head"] for new tokens.')
    init_lora_weights: str = setting(
        "default", "How the adapter starts. default: B at zero, so step 0 is the base model. gaussian, orthogonal: "
                   "other random starts. pissa: A and B from the weights' principal singular vectors (faster "
                   "convergence; pissa_niter_16 is a fast SVD, for large models); olora: from a QR decomposition; "
                   "both change the base weights while training, and the saved adapter is converted to apply to the "
                   "original base. eva: from the training data's activations (a pass over some batches before step "
                   "1). loftq: with 4-bit quantisation, A and B make up for the quantisation error.")
    loraplus_lr_ratio: float = setting(
        0.0, "LoRA+: the B matrices learn this many times faster than the A matrices (16 is the paper's choice; "
             "peft's create_loraplus_optimizer). 0 turns it off.", min=0.0)


# The keys that say where one source's records come from and how to read them. A run with one source sets them in
# [data]; each [[data.sources]] table sets them for its own records. Written once here, used by both.

def _path_setting() -> Any:
    return setting("", "Training data: a .json/.jsonl/.parquet/.csv file or folder, a hub data set id, or "
                       "builtin:belle-sample.")


def _format_setting() -> Any:
    return setting("auto", "Record format; auto detects it from the first records.", choices=("auto",) + FORMATS)


def _split_setting() -> Any:
    return setting("train", 'Split to read, with optional slicing such as "train[:5%]".')


def _max_samples_setting() -> Any:
    return setting(0, "Use at most this many conversations (the first ones); 0 means all.", min=0)


def _system_prompt_setting() -> Any:
    return setting("", "A system prompt (a persona, house rules) given to every conversation that has none, rendered "
                       "by the model's own chat template; trained only with train_on = \"all\". Empty adds none.")


def _mapping_settings() -> dict[str, Any]:
    """The column and role mapping, by key, in file order (a dataclass body takes them with **)."""
    return dict(
        messages_column=setting(
            "", "For a layout auto-detection does not know: the column holding each conversation's list of turns "
                "(such as \"conversation\" or \"dialog\"); role_key, content_key and the *_roles lists say how "
                "to read each turn. Empty: detect the format."),
        role_key=setting("role", "With messages_column: the key of each turn that names its speaker."),
        content_key=setting("content", "With messages_column: the key of each turn that holds its text."),
        user_roles=setting(["user", "human"], "With messages_column: the speaker values that mean the user, such "
                                              "as [\"A\"]."),
        assistant_roles=setting(["assistant", "gpt"], "With messages_column: the speaker values that mean the "
                                                      "model's replies (trained), such as [\"B\"]."),
        system_roles=setting(["system"], "With messages_column: the speaker values of a system message."),
        prompt_column=setting(
            "", "For instruction records in a layout of their own: the column holding the prompt (with "
                "reply_column; input_column optional). Empty: detect the format."),
        input_column=setting("", "With prompt_column: a column appended to the prompt when it is not empty."),
        reply_column=setting("", "With prompt_column: the column holding the reply (trained)."),
        system_column=setting("", "With messages_column or prompt_column: a column holding each record's own "
                                  "system message."),
    )


# How several [[data.sources]] combine (data.mix); data/mix.py says what each does.
MIXES = ("concat", "interleave_under", "interleave_over")


@dataclass
class DataSource:
    """One of several data sets in a run ([[data.sources]]): where its records are, how to read them, its share."""

    path: str = _path_setting()
    format: str = _format_setting()
    split: str = _split_setting()
    weight: float = setting(
        1.0, "This source's share of the mix with data.mix = interleave_*: sources are drawn from in proportion "
             "to their weights (2 beside 1: two examples of this one for each of the other's).", min=0.0)
    max_samples: int = _max_samples_setting()
    system_prompt: str = setting(
        "", "This source's own system prompt, in place of data.system_prompt (data.system_prompt_mode says where "
            "it goes). Empty: data.system_prompt.")
    messages_column: str = _mapping_settings()["messages_column"]
    role_key: str = _mapping_settings()["role_key"]
    content_key: str = _mapping_settings()["content_key"]
    user_roles: list[str] = _mapping_settings()["user_roles"]
    assistant_roles: list[str] = _mapping_settings()["assistant_roles"]
    system_roles: list[str] = _mapping_settings()["system_roles"]
    prompt_column: str = _mapping_settings()["prompt_column"]
    input_column: str = _mapping_settings()["input_column"]
    reply_column: str = _mapping_settings()["reply_column"]
    system_column: str = _mapping_settings()["system_column"]


# The [data] keys a one-source run sets there and a run with [[data.sources]] sets in each source instead.
MAPPING_KEYS = tuple(_mapping_settings())
PER_SOURCE_KEYS = ("path", "format", "split", "max_samples", *MAPPING_KEYS)


@dataclass
class DataSettings:
    path: str = _path_setting()
    format: str = _format_setting()
    split: str = _split_setting()
    streaming: bool = setting(False, "Read the data lazily (for sets larger than memory); needs training.max_steps.")
    validation_split: float = setting(
        0.05, "Share of conversations held out for evaluation, in [0, 1).", min=0.0, max=1.0,
        max_exclusive=True)
    max_samples: int = _max_samples_setting()
    map_batch_size: int = setting(1000, "Conversations per batch when tokenising (datasets.map batch_size).",
                                  min=1)
    num_proc: int = setting(1, "Processes used for tokenising (datasets.map num_proc).", min=1)
    train_on: str = setting(
        "assistant", "Which tokens are trained: every assistant reply, only the last one, or all tokens.",
        choices=TRAIN_ON)
    max_bad_share: float = setting(
        0.1, "Stop before training when more than this share of records cannot be read (of each source).",
        min=0.0, max=1.0)
    messages_column: str = _mapping_settings()["messages_column"]
    role_key: str = _mapping_settings()["role_key"]
    content_key: str = _mapping_settings()["content_key"]
    user_roles: list[str] = _mapping_settings()["user_roles"]
    assistant_roles: list[str] = _mapping_settings()["assistant_roles"]
    system_roles: list[str] = _mapping_settings()["system_roles"]
    prompt_column: str = _mapping_settings()["prompt_column"]
    input_column: str = _mapping_settings()["input_column"]
    reply_column: str = _mapping_settings()["reply_column"]
    system_column: str = _mapping_settings()["system_column"]
    system_prompt: str = _system_prompt_setting()
    system_prompt_mode: str = setting(
        "missing", "missing: add system_prompt only where a conversation has no system message of its own; "
                   "replace: use it in every conversation, in place of the one it has.",
        choices=SYSTEM_PROMPT_MODES)
    sources: list[DataSource] = setting(
        [], "Several data sets in one run: one [[data.sources]] table each, with its own path, format, split, "
            "max_samples, weight, system_prompt and column mapping (data.path and those keys stay unset in "
            "[data]). See data.mix.")
    mix: str = setting(
        "concat", "How [[data.sources]] are combined: concat, every usable record of each once, in order; "
                  "interleave_under, drawn by weight (seeded) until the first source runs out; interleave_over, "
                  "drawn by weight until every source has been used whole (smaller ones repeat).",
        choices=MIXES)
    validation_per_source: bool = setting(
        False, "With [[data.sources]]: hold out validation_split of each source (each one in the evaluation set) "
               "instead of that share of all of them together. Either way evaluation is never weighted.")

    def source_list(self) -> list[DataSource]:
        """The run's sources: its [[data.sources]], or the one [data] describes (with weight 1)."""
        if self.sources:
            return list(self.sources)
        own = {name: getattr(self, name) for name in PER_SOURCE_KEYS}
        return [DataSource(**own, system_prompt=self.system_prompt)]

    def tables(self) -> list[tuple[str, DataSource]]:
        """(the table each source is written in: data, or data.sources[N] counting from 1; the source), in order:
        what messages about a source name."""
        if not self.sources:
            return [("data", self.source_list()[0])]
        return [(f"data.sources[{number}]", source) for number, source in enumerate(self.sources, 1)]

    def keyed_paths(self) -> list[tuple[str, str]]:
        """(run-file key, path) of each source: data.path, or data.sources[N].path."""
        return [(f"{where}.path", source.path) for where, source in self.tables()]

    def with_each(self, key: str, values: list) -> "DataSettings":
        """The same settings with one per-source key replaced in each source, in tables' order (the paths of hub
        ids by their folders, a preview's caps); a one-source run has it in [data]."""
        if not self.sources:
            return replace(self, **{key: values[0]})
        return replace(self, sources=[replace(source, **{key: value}) for source, value in zip(self.sources, values)])

    def shares(self) -> list[float]:
        """Each source's share of an interleaved mix, summing to 1."""
        total = sum(source.weight for source in self.sources) or 1.0
        return [source.weight / total for source in self.sources]

    def mix_rule(self) -> str:
        """How the sources combine, in words (the data report, the wizard's review); empty for one source."""
        if len(self.sources) < 2:
            return ""
        if self.mix == "concat":
            return f"{len(self.sources)} sources, concatenated (each record once)"
        shares = ", ".join(f"{share:.0%}" for share in self.shares())
        until = "the first runs out" if self.mix == "interleave_under" else "every source is used whole"
        return f"{len(self.sources)} sources, interleaved by weight ({shares}) until {until}"

    def described(self) -> str:
        """The data in a few words, for summary lines: the path, or the sources and how they mix."""
        if not self.sources:
            return self.path
        weighted = self.mix != "concat"
        names = [source.path + (f" ×{source.weight:g}" if weighted else "") for source in self.sources]
        return f"{', '.join(names)} ({self.mix})"


@dataclass
class CollatorSettings:
    padding: str = setting("longest", "Pad each batch to its longest example, or always to max_length.",
                           choices=("longest", "max_length"))
    pad_to_multiple_of: int = setting(8, "Round padded lengths up to a multiple of this; 0 turns it off.", min=0)
    label_pad_token_id: int = setting(
        IGNORED_LABEL, "Label id given to padding and to untrained tokens. Only -100 is allowed: the model's loss "
                       "ignores exactly -100, so any other id would train on prompts and padding (0) or crash (-77).",
        choices=(IGNORED_LABEL,),
        why="the model's loss ignores only -100; any other id trains on prompt tokens or crashes")
    packing: str = setting(
        "auto", "Lay each batch's examples end to end in one row, without padding, with attention kept inside each "
                "example and the loss read only where a token is trained. auto: packed wherever that is exact (sdpa "
                "or flash_attention_2 attention; checked against the padded result when the run starts), padded "
                "otherwise (also when padding is max_length); off: always padded. The same examples make each step "
                "either way; the run log says which path ran.",
        choices=("auto", "off"))
    group_by_length: bool = setting(
        False, "Padded batches only (packing = \"off\"): put examples of similar length in the same batch, so "
               "little of each batch is padding (transformers' length-grouped sampler; the order is still "
               "shuffled by the seed). Packed batches have no padding to save.")


@dataclass
class TrainingSettings:
    output_dir: str = setting("runs/run", "The run folder: checkpoints, adapter, logs and events go here (required).")
    num_train_epochs: float = setting(3.0, "Passes over the training data.", min=0.0)
    max_steps: int = setting(-1, "Stop after this many optimizer steps; -1 means use num_train_epochs.",
                             min=-1)
    learning_rate: float = setting(2e-4, "Peak learning rate (1e-4 to 3e-4 is typical for LoRA).", min=0.0)
    weight_decay: float = setting(0.0, "L2 weight decay on the trainable parameters.", min=0.0)
    lr_scheduler_type: str = setting(
        "cosine", "Learning-rate schedule after warmup; reduce_lr_on_plateau needs evaluation (eval_strategy); "
                  "cosine_with_min_lr needs min_lr or min_lr_rate, warmup_stable_decay needs num_decay_steps, in "
                  "lr_scheduler_kwargs.",
        choices=SCHEDULERS)
    lr_scheduler_kwargs: dict = setting(
        {}, "The schedule's own arguments, as a table: {min_lr_rate = 0.1} (cosine_with_min_lr: end at a tenth of "
            "the peak), {num_decay_steps = 200} (warmup_stable_decay), {num_cycles = 2} (cosine_with_restarts).")
    warmup_ratio: float = setting(0.0, "Share of steps spent warming up the learning rate, in [0, 1).",
                                  min=0.0, max=1.0, max_exclusive=True)
    warmup_steps: int = setting(0, "Warmup length in steps (instead of warmup_ratio).", min=0)
    optim: str = setting("adamw_torch", "Optimizer; paged_adamw_8bit saves GPU memory with QLoRA.",
                         choices=OPTIMIZERS)
    per_device_train_batch_size: int = setting(4, "Training examples per device per step (uses GPU memory).",
                                               min=1)
    per_device_eval_batch_size: int = setting(4, "Evaluation examples per device per step.", min=1)
    gradient_accumulation_steps: int = setting(
        1, "Steps whose gradients add up before each optimizer step: a larger batch for the same memory.", min=1)
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass: less memory, about 30% slower.")
    max_grad_norm: float = setting(1.0, "Clip the gradient norm to this; 0 turns clipping off.", min=0.0)
    fp16: bool = setting(False, "Mixed precision in float16 (older GPUs).")
    bf16: bool = setting(False, "Mixed precision in bfloat16 (Ampere and newer GPUs).")
    neftune_noise_alpha: float = setting(
        0.0, "NEFTune: random noise on the input embeddings while training (not when evaluating or chatting), "
             "scaled by alpha / sqrt(length × hidden size); 5 to 15 often helps instruction tuning. 0 turns it off.",
        min=0.0)
    eval_strategy: str = setting("steps", "When to evaluate: every eval_steps, every epoch, or never.",
                                 choices=("no", "steps", "epoch"))
    eval_on_start: bool = setting(
        False, "Evaluate once before the first step, so the loss curve starts from the base model.")
    eval_steps: int = setting(50, "Optimizer steps between evaluations.", min=1)
    save_strategy: str = setting("steps", "When to save a checkpoint.", choices=("no", "steps", "epoch", "best"))
    save_steps: int = setting(50, "Optimizer steps between checkpoints.", min=1)
    save_total_limit: int = setting(0, "Keep at most this many checkpoints; 0 keeps all.", min=0)
    logging_steps: int = setting(10, "Optimizer steps between loss reports.", min=1)
    logging_dir: str = setting("", "TensorBoard folder; empty means <output_dir>/tensorboard.")
    report_to: list[str] = setting(["tensorboard"], "Where metrics go besides the event log; each needs its "
                                   "package installed (tensorboard, wandb, mlflow, trackio); none for nothing.",
                                   item_choices=REPORTERS)
    load_best_model_at_end: bool = setting(
        False, "Keep the checkpoint with the best metric_for_best_model as the final adapter.")
    metric_for_best_model: str = setting(
        "eval_loss", "Metric that decides the best checkpoint (lower is better). Evaluation measures only the loss "
                     "(there is no compute_metrics), so eval_loss, or loss which means the same.",
        choices=BEST_MODEL_METRICS,
        why="evaluation computes no metrics besides the loss")
    seed: int = setting(42, "Random seed for initialisation, shuffling and the validation split.",
                        min=0, max=2**32 - 1)
    dataloader_num_workers: int = setting(0, "Worker processes feeding batches; 0 loads in the main process.",
                                          min=0)


@dataclass
class EarlyStoppingSettings:
    enabled: bool = setting(False, "Stop when the evaluation metric stops improving.")
    patience: int = setting(3, "Evaluations without improvement before stopping.", min=1)
    threshold: float = setting(0.0, "Smallest change that counts as an improvement.", min=0.0)


@dataclass
class HubSettings:
    source: str = setting(
        "huggingface", "Where hub ids are fetched from: huggingface (or a mirror of it), modelscope, or local "
        "(local folders and files only).", choices=("huggingface", "modelscope", "local"))
    endpoint: str = setting(
        "", "Base URL of a Hugging Face mirror, e.g. https://hf-mirror.com (sets HF_ENDPOINT); empty: the official hub.")
    offline: bool = setting(False, "Use only files already in the local cache; never touch the network.")
    timeout: float = setting(60.0, "Seconds to wait for a hub server that has stopped answering before giving up.",
                             min=1.0)
    cache_dir: str = setting("", "Folder for downloaded models and data; empty: the library's default cache "
                                 "(~/.cache/huggingface/hub, or ~/.cache/modelscope).")


PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass
class LaunchSettings:
    num_processes: int = setting(
        1, "Training processes in all machines together, one per GPU (accelerate launch --num_processes); 1 trains "
           "in the tui-lora process itself, more start accelerate launch with the engine as its program.", min=1)
    num_machines: int = setting(1, "Machines taking part (multi-node); each runs tui-lora run with its own "
                                   "machine_rank.", min=1)
    machine_rank: int = setting(0, "This machine's number, from 0 (the main machine, which writes the run folder) "
                                   "to num_machines - 1; set it per machine with --set launch.machine_rank=N.", min=0)
    main_process_ip: str = setting("", "Address of machine 0 that the others connect to (required with several "
                                       "machines); empty: this machine.")
    main_process_port: int = setting(0, "Port on machine 0 for the processes to meet; 0: any free port (one machine "
                                        "only; several machines need a fixed port such as 29500).", min=0, max=65535)
    mixed_precision: str = setting(
        "auto", "Mixed precision of every process (accelerate --mixed_precision): auto follows training.bf16 / "
                "training.fp16; no, fp16 or bf16 set it (and must agree with those keys).", choices=PRECISIONS)
    config_file: str = setting(
        "", "An accelerate config file (accelerate config writes one) with FSDP or DeepSpeed ZeRO settings; the "
            "keys above win over the same keys in it. Empty: plain data parallel (DDP).")


def mixed_precision(config: "RunConfig") -> str:
    """The run's one mixed-precision mode (no, fp16, bf16): launch.mixed_precision, or the training keys under auto.

    The rules refuse a launch.mixed_precision that contradicts training.fp16 / bf16, so either says the same.
    """
    chosen = config.launch.mixed_precision
    if chosen != "auto":
        return chosen
    t = config.training
    return "bf16" if t.bf16 else "fp16" if t.fp16 else "no"


@dataclass
class RunConfig:
    description: str = setting("", "One line saying what this run file is for (shown by `tui-lora presets`).")
    model: ModelSettings = field(default_factory=ModelSettings)
    hub: HubSettings = field(default_factory=HubSettings)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    collator: CollatorSettings = field(default_factory=CollatorSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(RunConfig)  # type: ignore[misc]
                             if f.name != "description"}


def section_fields(section: str) -> dict[str, Any]:
    """Field objects of one section by key, in file order."""
    return {f.name: f for f in fields(SECTIONS[section])}
