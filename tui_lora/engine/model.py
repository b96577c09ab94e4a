"""Model side of a run: tokenizer, quantisation, base model, LoRA adapter.

Each function maps one part of the run file onto the library call it configures
(AutoTokenizer, BitsAndBytesConfig, AutoModelForCausalLM, LoraConfig), so the
path from a TOML key to the keyword that receives it is one line to read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tui_lora.config.schema import RunConfig, mixed_precision
from tui_lora.errors import UserError
from tui_lora.models import loading, model_source

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_hardware(config: RunConfig) -> None:
    """Settings this machine cannot run, found before anything loads (not as a stack trace at step 0)."""
    cuda = torch.cuda.is_available()
    m, precision = config.model, mixed_precision(config)
    precision_key = "launch.mixed_precision" if config.launch.mixed_precision != "auto" else f"training.{precision}"
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # set by accelerate launch (torchrun)
    if cuda and per_machine > torch.cuda.device_count():
        raise UserError(f"launch.num_processes: {per_machine} processes on this machine, but it has "
                        f"{torch.cuda.device_count()} GPU(s); start one process per GPU")
    problem = device_map_problem(m.device_map)
    if problem:
        install = "" if cuda else ", or install a CUDA build of torch"
        raise UserError(f"model.device_map: {m.device_map!r} but {problem}; use \"cpu\" or \"auto\"{install}")
    if precision == "bf16" and not (cuda and torch.cuda.is_bf16_supported()):
        raise UserError(f"{precision_key}: this machine has no GPU with bfloat16 support; turn bf16 off "
                        "(or use fp16 on an older GPU)")
    if precision == "fp16" and not cuda:
        raise UserError(f"{precision_key}: float16 mixed precision needs a CUDA GPU; none is visible, turn fp16 off")
    if config.lora.init_lora_weights == "loftq" and not (cuda or _xpu()):
        # peft's LoftQ for a 4-bit model (replace_lora_weights_loftq) computes on "cuda" or "xpu", never the CPU
        raise UserError("lora.init_lora_weights: \"loftq\" is computed on a GPU (peft's LoftQ for 4-bit models), "
                        "and none is visible; use another initialisation here, or run on a CUDA machine")


def _xpu() -> bool:
    return bool(getattr(torch, "xpu", None) and torch.xpu.is_available())


def device_map_problem(device_map: str) -> str | None:
    """Why this machine cannot place a model where device_map says (training, or loading a trained one), or None."""
    if device_map.startswith("cuda") and not torch.cuda.is_available():
        return f"no CUDA GPU is visible to torch (torch {torch.__version__})"
    if device_map.startswith("cuda:") and int(device_map[5:]) >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} GPU(s), numbered from cuda:0"
    return None


def quantization_config(config: RunConfig):
    """BitsAndBytesConfig for QLoRA, or None for a plain LoRA run."""
    q = config.quantization
    if not (q.load_in_8bit or q.load_in_4bit):
        return None
    from transformers import BitsAndBytesConfig

    if q.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = q.compute_dtype if q.compute_dtype != "auto" else config.model.dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=TORCH_DTYPES.get(compute, torch.float32),
    )


def module_names(model_config, trust_remote_code: bool) -> tuple[set[str], set[str]]:
    """(names of the layers LoRA can adapt, names of every module), from a weightless copy of the
    model built on the meta device: no memory, no download of weights."""
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D  # GPT-2 style models use it for their projections

    adaptable = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config, trust_remote_code=trust_remote_code)
    modules = dict(skeleton.named_modules())
    return {name for name, module in modules.items() if isinstance(module, adaptable)}, set(modules)


def _matches(target: str, names: set[str]) -> bool:
    return any(name == target or name.endswith("." + target) for name in names)


def check_target_modules(config: RunConfig, adaptable: set[str], every_module: set[str]) -> None:
    """Fail before the weights load when LoRA would target nothing (peft's own error comes much later)."""
    targets = config.lora.target_modules
    short_names = sorted({name.rsplit(".", 1)[-1] for name in adaptable} - {"lm_head"})
    if targets != "all-linear":
        missing = [t for t in targets if not _matches(t, adaptable)]
        if missing:
            raise UserError(f"lora.target_modules: {', '.join(repr(m) for m in missing)} match no layer LoRA can "
                            f"adapt in this model; its layers are {', '.join(short_names)} (or use \"all-linear\")")
    unknown = [m for m in config.lora.modules_to_save if not _matches(m, every_module)]
    if unknown:
        raise UserError(f"lora.modules_to_save: {', '.join(repr(m) for m in unknown)} name no module of this "
                        "model (for example lm_head or embed_tokens)")


def base_model_kwargs(config: RunConfig) -> dict:
    """from_pretrained's keywords for the base model as the run file sets it (training and tui_lora.after)."""
    m = config.model
    kwargs = dict(revision=m.revision, trust_remote_code=m.trust_remote_code,
                  dtype=TORCH_DTYPES.get(m.dtype, "auto"))
    quant = quantization_config(config)
    if quant is not None:
        kwargs["quantization_config"] = quant
    placement = device_map(config)
    if placement is not None:
        kwargs["device_map"] = placement
    if m.attn_implementation != "auto":
        kwargs["attn_implementation"] = m.attn_implementation
    return kwargs


def device_map(config: RunConfig) -> str | dict | None:
    """What from_pretrained gets as device_map; None leaves the weights where they load (the CPU)."""
    chosen = config.model.device_map
    if chosen == "auto" and not torch.cuda.is_available():
        return None  # without a GPU "auto" means the CPU, which is where the model lands anyway
    if chosen == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # One of several processes (accelerate launch): each trains a whole copy on its own GPU. "auto" would
        # spread every copy over all the GPUs, and quantised weights cannot be moved after loading, so each
        # process loads straight onto the GPU of its local rank.
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return chosen


def load_model(config: RunConfig):
    from transformers import AutoModelForCausalLM

    m = config.model
    quant = quantization_config(config)
    with loading("model.name_or_path", m.name_or_path):
        model = AutoModelForCausalLM.from_pretrained(model_source(m.name_or_path), **base_model_kwargs(config))
    model.config.use_cache = False  # the KV cache only costs memory while training
    if quant is not None and config.quantization.load_in_4bit:
        keep_cpu_4bit_weights_trainable(model)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif config.training.gradient_checkpointing:
        # Frozen embeddings give no grad to checkpointed blocks' inputs; LoRA needs it to flow.
        model.enable_input_require_grads()
    return model


def keep_cpu_4bit_weights_trainable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference during evaluation.

    bitsandbytes 0.50 repacks a Linear4bit's weight into an inference-only layout the first
    time it runs in eval mode on a CPU with AVX512-BF16, and never packs it back, so the next
    training step fails inside its matmul. Training and evaluating alternate here, so the
    repacking is turned off; it only ever affects CPU runs.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def lora_config(config: RunConfig):
    from peft import EvaConfig, LoraConfig, TaskType

    lora = config.lora
    init = lora.init_lora_weights
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        modules_to_save=lora.modules_to_save or None,
        # loftq starts as default and is replaced once the 4-bit model is there (apply_lora)
        init_lora_weights=True if init in ("default", "loftq") else init,
        # rho 1: every layer keeps rank r, so a resumed run's checkpoint fits the adapter it builds again
        eva_config=EvaConfig(rho=1.0) if init == "eva" else None,
    )


def changes_base_weights(config: RunConfig) -> bool:
    """PiSSA and OLoRA start by moving the adapter's part out of the base weights: the adapter they train applies to
    that changed base, so the saved one is converted to apply to the original (convert_for_original_base)."""
    return config.lora.init_lora_weights.startswith(("pissa", "olora"))


def apply_lora(model, config: RunConfig):
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(config))
    if config.lora.init_lora_weights == "loftq":
        _loftq(model, config)
    if mixed_precision(config) == "fp16":
        # fp16 mixed precision unscales gradients, which only works on float32 parameters. peft keeps
        # LoRA weights in float32 already; full copies from modules_to_save inherit a float16 base.
        for param in model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
    return model


def _loftq(model, config: RunConfig) -> None:
    """LoftQ on a 4-bit model: each adapter starts as the low-rank part of what quantisation lost, read against the
    checkpoint's own full-precision weights (peft's replace_lora_weights_loftq reads its safetensors files)."""
    from peft import replace_lora_weights_loftq

    folder = Path(model_source(config.model.name_or_path))
    if not list(folder.glob("*.safetensors")):
        raise UserError(f"lora.init_lora_weights: loftq reads the model's full-precision weights from safetensors "
                        f"files, and {folder} has none; use another init_lora_weights")
    replace_lora_weights_loftq(model, model_path=str(folder))


def initialize_eva(model, examples, collator, config: RunConfig) -> None:
    """EVA: each adapter's A from the directions its layer's inputs vary most in, over batches of the training set
    (padded, whatever the run's batching, as peft reads the attention mask), until they settle."""
    from peft import initialize_lora_eva_weights
    from torch.utils.data import DataLoader

    # peft takes a plain dict per batch; the collator gives a BatchEncoding
    loader = DataLoader(examples, batch_size=config.training.per_device_train_batch_size,
                        collate_fn=lambda rows: dict(collator(rows)))
    initialize_lora_eva_weights(model, loader, show_progress_bar=False)


def convert_for_original_base(model, config: RunConfig, where: Path, initial: Path) -> None:
    """With PiSSA or OLoRA, the adapter saved in `where` replaced by peft's conversion of it (against the adapter
    as it started, saved at `initial`): a plain LoRA adapter of rank 2·r for the original base, which chat, eval
    and merge load. Other initialisations leave it as saved."""
    if changes_base_weights(config):
        model.save_pretrained(str(where), path_initial_model_for_weight_conversion=str(initial))


def save_initial_adapter(model, config: RunConfig, initial: Path) -> None:
    """The adapter before step 1, for convert_for_original_base; saved as a default-initialised one, as peft asks,
    so that loading it back does not run the initialisation again on the changed base."""
    if not changes_base_weights(config):
        return
    adapter_config = model.peft_config["default"]
    init = adapter_config.init_lora_weights
    adapter_config.init_lora_weights = True
    try:
        model.save_pretrained(str(initial))
    finally:
        adapter_config.init_lora_weights = init


def base_model(model):
    """The transformers model under a LoRA adapter (peft's wrapper), or `model` itself when it has none."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total); 4-bit weights are packed two to a byte, so count them as bnb reports them."""
    trainable = total = 0
    for param in model.parameters():
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":
            count *= 2
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total
