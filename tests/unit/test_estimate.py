"""Trainable-parameter counts and memory estimates on a hand-written model probe answer.

The answer below is Qwen2.5-0.5B's shape (24 layers, hidden 896, 2 key/value heads of 64,
MLP 4864, vocab 151,936, tied embeddings), so the counts can be checked against the numbers
peft prints for that model. tests/functional/test_probe.py checks the same functions against
peft and bitsandbytes on a real (tiny) model.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tui_lora.config.schema import LoraSettings, RunConfig
from tui_lora.estimate import (ACTIVATIONS_PER_LAYER, format_bytes, format_count, memory_estimate,
                               trainable_parameters)

H, LAYERS, VOCAB, KV, MLP = 896, 24, 151_936, 128, 4864


def linear(name: str, size_in: int, size_out: int, bias: bool = False, count: int = LAYERS, parent: str = "") -> dict:
    path = f"model.layers.0.{parent}.{name}" if parent else name
    return {"name": name, "in": size_in, "out": size_out, "count": count, "bias": bias, "path": path}


QWEN_05B = {
    "ok": True, "architecture": "Qwen2ForCausalLM", "model_type": "qwen2", "parameters": 494_032_768,
    "context_length": 32768, "vocab_size": VOCAB, "hidden_size": H, "num_layers": LAYERS,
    "config_dtype": "bfloat16", "tied_embeddings": True, "output_layer": "lm_head",
    "linear": [linear("q_proj", H, H, True, parent="self_attn"), linear("k_proj", H, KV, True, parent="self_attn"),
               linear("v_proj", H, KV, True, parent="self_attn"), linear("o_proj", H, H, parent="self_attn"),
               linear("gate_proj", H, MLP, parent="mlp"), linear("up_proj", H, MLP, parent="mlp"),
               linear("down_proj", MLP, H, parent="mlp"), linear("lm_head", H, VOCAB, count=1)],
    "embedding": [{"name": "embed_tokens", "count": 1, "parameters": VOCAB * H, "path": "model.embed_tokens",
                   "num_embeddings": VOCAB, "embedding_dim": H}],
    "modules": [{"name": "lm_head", "count": 1, "parameters": VOCAB * H, "path": "lm_head"},
                {"name": "embed_tokens", "count": 1, "parameters": VOCAB * H, "path": "model.embed_tokens"},
                {"name": "input_layernorm", "count": LAYERS, "parameters": LAYERS * H,
                 "path": "model.layers.0.input_layernorm"},
                {"name": "norm", "count": 1, "parameters": H, "path": "model.norm"}],
    "bias_parameters": LAYERS * (H + KV + KV),
    "cuda": [],
}
ALL_LINEAR_R8 = 4_399_104  # peft's print_trainable_parameters for Qwen2.5-0.5B, r=8, all-linear
QV_R8 = 540_672  # the same with target_modules ["q_proj", "v_proj"]


def lora(**settings) -> LoraSettings:
    return LoraSettings(**{"r": 8, **settings})


def test_the_hand_written_answer_adds_up_to_the_models_parameters():
    layers = sum(g["count"] * (g["in"] * g["out"] + (g["out"] if g["bias"] else 0))
                 for g in QWEN_05B["linear"] if g["name"] != "lm_head")
    norms = LAYERS * 2 * H + H
    assert layers + norms + VOCAB * H == QWEN_05B["parameters"]  # lm_head shares embed_tokens' weight


@pytest.mark.parametrize("settings, expected", [
    ({}, ALL_LINEAR_R8),
    ({"target_modules": ["q_proj", "v_proj"]}, QV_R8),
    ({"target_modules": ["q_proj", "v_proj"], "use_rslora": True}, QV_R8),  # only the scale changes
    ({"target_modules": ["q_proj", "v_proj"], "r": 16}, 2 * QV_R8),
    ({"target_modules": ["q_proj", "v_proj"], "use_dora": True}, QV_R8 + LAYERS * (H + KV)),
    ({"target_modules": ["q_proj", "v_proj"], "bias": "lora_only"}, QV_R8 + LAYERS * (H + KV)),
    ({"target_modules": ["q_proj", "v_proj"], "bias": "all"}, QV_R8 + LAYERS * (H + KV + KV)),
    ({"target_modules": ["self_attn.q_proj", "mlp.v_proj"]}, LAYERS * 8 * (H + H)),  # v_proj is not under mlp
    ({"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]}, QV_R8 + VOCAB * H),
    ({"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["norm"]}, QV_R8 + LAYERS * H + H),
    ({"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["self_attn"]}, 0),  # nothing left to adapt
    ({"target_modules": ["lm_head"]}, 8 * (H + VOCAB)),  # named, the output layer is adapted
    ({"target_modules": ["embed_tokens"]}, 8 * (VOCAB + H)),
])
def test_trainable_parameters_follow_peft(settings, expected):
    assert trainable_parameters(QWEN_05B, lora(**settings)) == expected


def test_all_linear_leaves_the_output_layer_out():
    with_head = trainable_parameters(QWEN_05B, lora(target_modules=[g["name"] for g in QWEN_05B["linear"]]))
    assert with_head - trainable_parameters(QWEN_05B, lora()) == 8 * (H + VOCAB)


def test_a_minimal_answer_without_paths_or_modules_is_enough():
    info = {"parameters": 100, "output_layer": "out", "bias_parameters": 0, "embedding": [],
            "linear": [{"name": "proj", "in": 4, "out": 6, "count": 2, "bias": False},
                       {"name": "out", "in": 6, "out": 10, "count": 1, "bias": False}]}
    assert trainable_parameters(info, lora(r=2)) == 2 * 2 * (4 + 6)
    assert trainable_parameters(info, lora(r=2, target_modules=["out"])) == 2 * (6 + 10)


# ---------------------------------------------------------------- memory


def config(**sections) -> RunConfig:
    base = RunConfig()
    return replace(base, **{name: replace(getattr(base, name), **values) for name, values in sections.items()})


def test_estimate_has_every_mode_and_adds_up():
    estimate = memory_estimate(QWEN_05B, config())
    assert list(estimate) == ["none", "8-bit", "4-bit"]
    for part in estimate.values():
        assert part["total"] == part["weights"] + part["adapter_and_optimizer"] + part["activations"]
    assert estimate["4-bit"]["weights"] < estimate["8-bit"]["weights"] < estimate["none"]["weights"]


def test_unquantised_weights_follow_the_load_dtype():
    n = QWEN_05B["parameters"]
    assert memory_estimate(QWEN_05B, config())["none"]["weights"] == 2 * n  # auto: the checkpoint's bfloat16
    assert memory_estimate(QWEN_05B, config(model={"dtype": "float32"}))["none"]["weights"] == 4 * n
    float32_checkpoint = {**QWEN_05B, "config_dtype": "float32"}
    assert memory_estimate(float32_checkpoint, config())["none"]["weights"] == 4 * n


def test_quantised_weights_pack_the_linear_layers_and_keep_the_rest_in_float32():
    quantised = sum(g["count"] * g["in"] * g["out"] for g in QWEN_05B["linear"] if g["name"] != "lm_head")
    rest = (QWEN_05B["parameters"] - quantised) * 4
    rows = sum(g["count"] * g["out"] for g in QWEN_05B["linear"] if g["name"] != "lm_head")
    assert memory_estimate(QWEN_05B, config())["8-bit"]["weights"] == quantised + 4 * rows + rest
    single = memory_estimate(QWEN_05B, config(quantization={"double_quant": False}))["4-bit"]["weights"]
    double = memory_estimate(QWEN_05B, config(quantization={"double_quant": True}))["4-bit"]["weights"]
    assert single == quantised // 2 + quantised // 64 * 4 + rest  # every layer here is a whole number of blocks
    assert rest + quantised // 2 < double < single
    # nf4 with double quantisation costs about 4.13 bits per packed weight
    assert (double - rest) * 8 / quantised == pytest.approx(4.127, abs=0.01)


def test_adapter_and_optimizer_memory_depends_on_the_optimizer():
    assert memory_estimate(QWEN_05B, config())["none"]["adapter_and_optimizer"] == ALL_LINEAR_R8 * 16
    paged = config(training={"optim": "paged_adamw_8bit"})
    assert memory_estimate(QWEN_05B, paged)["4-bit"]["adapter_and_optimizer"] == ALL_LINEAR_R8 * 10


def test_activation_formula():
    batch, length = 2, 512
    tokens = batch * length
    settings = config(training={"per_device_train_batch_size": batch}, tokenizer={"max_length": length})
    logits = 2 * tokens * VOCAB * 4
    plain = memory_estimate(QWEN_05B, settings)
    assert plain["none"]["activations"] == tokens * H * ACTIVATIONS_PER_LAYER * 2 * LAYERS + logits
    assert plain["4-bit"]["activations"] == tokens * H * ACTIVATIONS_PER_LAYER * 4 * LAYERS + logits  # float32
    checkpointed = memory_estimate(QWEN_05B, replace(settings, training=replace(
        settings.training, gradient_checkpointing=True)))
    assert checkpointed["none"]["activations"] == tokens * H * 2 * (LAYERS + ACTIVATIONS_PER_LAYER) + logits
    mixed = memory_estimate(QWEN_05B, replace(settings, training=replace(settings.training, bf16=True)))
    assert mixed["4-bit"]["activations"] == plain["none"]["activations"]


def test_qwen_half_billion_in_4bit_fits_a_small_gpu():
    """The magnitude for typical QLoRA settings: a 0.5 B model, one 512-token sequence, bf16,
    gradient checkpointing. The float32 copy of the tied 151,936×896 embedding (545 MB) and the
    logits (622 MB) outweigh the packed layers (180 MB)."""
    settings = config(quantization={"load_in_4bit": True}, tokenizer={"max_length": 512},
                      training={"per_device_train_batch_size": 1, "bf16": True, "gradient_checkpointing": True})
    total = memory_estimate(QWEN_05B, settings)["4-bit"]["total"]
    assert 1 * 2**30 < total < 2 * 2**30


# ---------------------------------------------------------------- formatting


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1_288_490_188, "1.2 GiB"),
                                     (1024**2 * 1023.99, "1.0 GiB"), (80 * 2**30, "80.0 GiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize("n, text", [(999, "999"), (1000, "1.0 K"), (1_100_000, "1.1 M"), (494_032_768, "494 M"),
                                     (7_615_616_512, "7.6 B"), (9_960, "10 K"), (999_600, "1.0 M")])
def test_format_count(n, text):
    assert format_count(n) == text
