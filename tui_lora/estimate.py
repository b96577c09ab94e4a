"""Numbers the wizard shows before anything loads: trainable parameters and a memory estimate.

Pure Python on the model probe's answer (tui_lora.probe, kind "model"), so the wizard can
recompute them on every keystroke without torch. The trainable count follows peft's rules
exactly (tests compare it with peft on a real model); the memory figures are estimates.
"""

from __future__ import annotations

import math
import re
from tui_lora.config.schema import LoraSettings, RunConfig

ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MODES = ("none", "8-bit", "4-bit")

# bitsandbytes 4-bit: 64 weights share one absmax; with double quantisation the absmaxes are stored
# as 1-byte codes, themselves grouped by 256 under one float32 scale.
BLOCK_4BIT = 64
BLOCK_DOUBLE_QUANT = 256

# Bytes of optimizer state per trainable parameter (AdamW keeps two moments; Lion one; SGD without
# momentum none; Adafactor factors its second moment into a row and a column per matrix: next to nothing).
OPTIMIZER_STATE_BYTES = {
    "adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,
    "adamw_8bit": 2, "paged_adamw_8bit": 2, "lion_8bit": 1, "paged_lion_8bit": 1,
    "adafactor": 0, "sgd": 0,
}
# Values a transformer layer keeps per token for the backward pass, in multiples of hidden_size
# (Korthikanti et al. 2022, "Reducing Activation Recomputation": 34·h bytes in 16-bit, without the
# attention-score matrix that sdpa and flash attention never store).
ACTIVATIONS_PER_LAYER = 17
# The loss holds float32 logits and their log-softmax (or gradient) at once: two copies.
LOGIT_COPIES = 2


# ---------------------------------------------------------------- trainable parameters


def trainable_parameters(info: dict, lora: LoraSettings) -> int:
    """What peft's get_peft_model reports as trainable for engine.model.lora_config(lora).

    LoRA adds r·(in + out) per adapted layer (A is r×in, B is out×r), DoRA a magnitude vector
    of `out`; bias="all" trains every parameter named *bias*, "lora_only" the biases of the adapted
    layers; each module in modules_to_save is trained as a full copy (for a tied lm_head that copy
    is untied: the whole vocab×hidden matrix trains). use_rslora only changes the scale.
    Nested modules_to_save entries (a module and one inside it) are counted twice; peft refuses most.
    """
    saved = list(lora.modules_to_save)
    count = 0
    for layer in info["linear"]:
        if _is_target(layer, lora.target_modules, info) and not _inside_saved(layer, saved):
            per_layer = lora.r * (layer["in"] + layer["out"])
            per_layer += layer["out"] if lora.use_dora else 0
            per_layer += layer["out"] if lora.bias == "lora_only" and layer["bias"] else 0
            count += layer["count"] * per_layer
    if lora.target_modules != "all-linear":  # peft adapts embeddings only when named
        for table in info["embedding"]:
            if _named(table, lora.target_modules) and not _inside_saved(table, saved):
                dim = table["embedding_dim"]
                count += table["count"] * (lora.r * (table["num_embeddings"] + dim) + (dim if lora.use_dora else 0))
    if lora.bias == "all":
        count += info["bias_parameters"]
    count += sum(module["parameters"] for module in info.get("modules", []) if _saved(module, saved))
    return count


def total_parameters(info: dict, lora: LoraSettings) -> int:
    """Every parameter of the model once peft has wrapped it: what the run's model line divides the
    trainable count by, as peft's print_trainable_parameters does. The base model's own plus what the
    adapter adds (LoRA's A and B, DoRA's magnitudes, a full copy of each modules_to_save module);
    biases trained with bias="all" or "lora_only" are the base's own, so they add nothing.

    trainable_parameters / total_parameters is the run's trainable share; trainable / info["parameters"]
    (the base alone) is a little higher (8.90% against 8.17% for the demo).
    """
    return info["parameters"] + trainable_parameters(info, lora) - _trained_base_biases(info, lora)


def trainable_share(info: dict, lora: LoraSettings) -> float:
    """The share of the wrapped model's parameters that train, as the run reports it (a fraction, not %)."""
    total = total_parameters(info, lora)
    return trainable_parameters(info, lora) / total if total else 0.0


def _trained_base_biases(info: dict, lora: LoraSettings) -> int:
    """The base model's biases that trainable_parameters counts (they train, but peft adds no parameter)."""
    if lora.bias == "all":
        return info["bias_parameters"]
    if lora.bias != "lora_only":
        return 0
    saved = list(lora.modules_to_save)
    return sum(layer["count"] * layer["out"] for layer in info["linear"]
               if layer["bias"] and _is_target(layer, lora.target_modules, info) and not _inside_saved(layer, saved))


def _is_output_layer(layer: dict, info: dict) -> bool:
    return layer.get("path", layer["name"]) == info.get("output_layer")


def _is_target(layer: dict, targets: list[str] | str, info: dict) -> bool:
    if targets == "all-linear":  # peft: every linear layer except the output layer
        return not _is_output_layer(layer, info)
    return _named(layer, targets)


def _named(group: dict, targets: list[str] | str) -> bool:
    """peft's list match: the full name equals a target or ends with "." + target."""
    if isinstance(targets, str):
        return False
    path = group.get("path", group["name"])
    return any(path == target or path.endswith("." + target) for target in targets)


def _inside_saved(group: dict, saved: list[str]) -> bool:
    """peft never puts an adapter on a module that is, or sits inside, a modules_to_save module."""
    path = group.get("path", group["name"])
    return any(re.match(rf"(^|.*\.){name}($|\..*)", path) for name in saved)


def _saved(module: dict, saved: list[str]) -> bool:
    """peft wraps every module whose full name ends with an entry (plain string suffix, no dot needed)."""
    path = module.get("path", module["name"])
    return any(path.endswith(name) for name in saved)


# ---------------------------------------------------------------- memory


def memory_estimate(info: dict, config: RunConfig) -> dict[str, dict[str, int]]:
    """Training memory on one device, in bytes, for no quantisation, 8-bit and 4-bit.

    An estimate, for choosing settings, not a promise:
      * weights: the base model as loaded. Unquantised, every weight in model.dtype (the checkpoint's
        own dtype when "auto"). Quantised, bitsandbytes packs the linear layers except the output
        layer (1 byte per weight + a float32 scale per row for 8-bit; half a byte + the block absmaxes
        for 4-bit) and everything else (embeddings, norms, biases, the output layer) is float32,
        because peft's prepare_model_for_kbit_training, which the engine calls, upcasts it.
      * adapter_and_optimizer: trainable parameters × (4 bytes weight + 4 gradient + the optimizer's state).
      * activations: per_device_train_batch_size × tokenizer.max_length tokens (the longest batch)
        × (17·hidden_size values per layer without gradient checkpointing; with it, one value per
        layer plus one layer recomputed at a time) in the activation dtype, plus two float32 copies
        of the logits (batch × length × vocab).
    Left out: the CUDA context and kernels' workspace (often 0.3–1 GiB), allocator fragmentation,
    the evaluation pass, attention implementations that store the score matrix (eager), the
    dequantised copy of one layer during 4-bit/8-bit matmuls, and 8-bit optimizers' block statistics.
    """
    trainable = trainable_parameters(info, config.lora)
    adapter = trainable * (4 + 4 + OPTIMIZER_STATE_BYTES.get(config.training.optim, 8))
    estimate = {}
    for mode in MODES:
        weights = weight_bytes(info, config, mode)
        activations = activation_bytes(info, config, mode)
        estimate[mode] = {"weights": weights, "adapter_and_optimizer": adapter, "activations": activations,
                          "total": weights + adapter + activations}
    return estimate


def load_dtype_bytes(info: dict, config: RunConfig) -> int:
    """Bytes per weight as the unquantised model loads: model.dtype, or the checkpoint's for "auto"."""
    dtype = config.model.dtype if config.model.dtype != "auto" else info.get("config_dtype")
    return ELEMENT_BYTES.get(dtype or "", 4)  # no dtype recorded: transformers' default, float32


def quantised_layers(info: dict) -> list[dict]:
    """The layers bitsandbytes replaces: every linear layer except the output layer."""
    return [layer for layer in info["linear"] if not _is_output_layer(layer, info)]


def weight_bytes(info: dict, config: RunConfig, mode: str) -> int:
    if mode == "none":
        return info["parameters"] * load_dtype_bytes(info, config)
    layers = quantised_layers(info)
    quantised = sum(layer["count"] * layer["in"] * layer["out"] for layer in layers)
    rest = (info["parameters"] - quantised) * 4  # float32 after prepare_model_for_kbit_training
    if mode == "8-bit":
        row_scales = sum(layer["count"] * layer["out"] for layer in layers) * 4
        return quantised + row_scales + rest
    if mode == "4-bit":
        packed = scales = 0
        for layer in layers:
            size = layer["in"] * layer["out"]
            blocks = math.ceil(size / BLOCK_4BIT)
            packed += layer["count"] * math.ceil(size / 2)
            scales += layer["count"] * _absmax_bytes(blocks, config.quantization.double_quant)
        return packed + scales + rest
    raise ValueError(f"unknown quantisation mode {mode!r}; one of {', '.join(MODES)}")


def _absmax_bytes(blocks: int, double_quant: bool) -> int:
    if not double_quant:
        return blocks * 4
    return blocks + math.ceil(blocks / BLOCK_DOUBLE_QUANT) * 4


def activation_bytes(info: dict, config: RunConfig, mode: str) -> int:
    t = config.training
    tokens = t.per_device_train_batch_size * config.tokenizer.max_length
    if t.bf16 or t.fp16:
        element = 2
    elif mode == "none":
        element = load_dtype_bytes(info, config)
    else:
        element = 4  # the upcast embeddings and norms keep the hidden states in float32
    hidden, layers = info["hidden_size"], info["num_layers"] or 0
    one_layer = tokens * hidden * ACTIVATIONS_PER_LAYER * element
    if t.gradient_checkpointing:
        kept = tokens * hidden * element * layers + one_layer  # each layer's input, and one layer recomputed
    else:
        kept = one_layer * layers
    logits = LOGIT_COPIES * tokens * info["vocab_size"] * 4
    return kept + logits


# ---------------------------------------------------------------- formatting


def format_bytes(n: int | float) -> str:
    """1288490188 -> "1.2 GiB"; under 1 KiB in whole bytes."""
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_count(n: int | float) -> str:
    """Parameter counts as people say them: 1_100_000 -> "1.1 M", 494_032_768 -> "494 M", 7.6e9 -> "7.6 B"."""
    if n < 1000:
        return str(int(n))
    value = float(n)
    for unit in ("K", "M", "B", "T"):
        value /= 1000
        shown = f"{value:.1f}" if value < 9.95 else f"{value:.0f}"
        if float(shown) < 1000 or unit == "T":
            return f"{shown} {unit}"
    raise AssertionError("unreachable")

