"""Packed batches (collator.packing) on the shipped tiny model: exact, logged, and falling back cleanly.

No mocks: the real tiny model with a LoRA adapter, real encoded Belle examples, the engine's own
collators, attention functions and loss.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_run_file

from tui_lora.config import config_from_dict
from tui_lora.data.prepare import prepare_datasets
from tui_lora.engine.model import apply_lora, load_model
from tui_lora.engine.packing.collator import PackedCollator, packed_model_inputs
from tui_lora.engine.packing.kernels import SDPA_PER_EXAMPLE, TORCH_VARLEN
from tui_lora.engine.packing.loss import _LinearCrossEntropy, labelled_token_loss
from tui_lora.engine.packing.plan import BatchingPlan, choose_batching, why_not_packed
from tui_lora.models import load_tokenizer
from tui_lora.engine.train import data_collator
from tui_lora.runs.folder import resolve_paths

IGNORED = -100


def make_config(tmp_path: Path, **sections):
    return resolve_paths(config_from_dict(tiny_run_file(tmp_path / "run", **sections)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config, tokenizer, 8 real encoded examples of different lengths)."""
    config = make_config(tmp_path_factory.mktemp("packing"), tokenizer={"max_length": 512},
                         data={"max_samples": 24, "validation_split": 0.0}, training={"eval_strategy": "no"})
    tokenizer = load_tokenizer(config)
    train, _, _ = prepare_datasets(config, tokenizer)
    features = [{name: train[i][name] for name in ("input_ids", "attention_mask", "labels")} for i in range(8)]
    assert len({len(f["input_ids"]) for f in features}) > 4  # padding would matter
    return config, tokenizer, features


def lora_model(config, seed: int = 0):
    """The tiny model with an adapter that changes its output (LoRA B starts at zero otherwise)."""
    model = apply_lora(load_model(config), config)
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.05
    return model.eval()


def padded_per_example_losses(model, config, tokenizer, features) -> list[torch.Tensor]:
    BatchingPlan(False, "sdpa", "").apply(model)
    batch = data_collator(config, tokenizer, model)([dict(f) for f in features])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    return [F.cross_entropy(logits[row, :-1][targets[row] != IGNORED], targets[row][targets[row] != IGNORED])
            for row in range(len(features))]


def packed_per_example_losses(model, features) -> list[torch.Tensor]:
    batch = PackedCollator()([dict(f) for f in features])
    labels = batch["labels"]
    logits = model(**packed_model_inputs(batch)).logits[0]  # one row, at the trained positions only
    targets = labels[0, 1:][labels[0, 1:] != IGNORED]
    counts = [sum(label != IGNORED for label in f["labels"][1:]) for f in features]
    return [chunk.mean() for chunk in torch.split(F.cross_entropy(logits, targets, reduction="none"), counts)]


def test_packed_per_example_loss_equals_padded(setup):
    config, tokenizer, features = setup
    model = lora_model(config)
    with torch.no_grad():
        padded = padded_per_example_losses(model, config, tokenizer, features)
        plan = choose_batching(config, model)
        assert plan.packed and plan.attention == SDPA_PER_EXAMPLE
        packed = packed_per_example_losses(model, features)
    for one, other in zip(padded, packed):
        assert one.item() == pytest.approx(other.item(), abs=1e-5)

    # The comparison can see a leak: one causal attention over the whole row (examples seeing the
    # examples before them) moves the per-example losses by far more than the tolerance.
    with torch.no_grad(), leaky_attention(model):
        leaked = packed_per_example_losses(model, features)
    assert max(abs(a.item() - b.item()) for a, b in zip(padded, leaked)) > 1e-3


class leaky_attention:
    """Packed rows with one causal attention over everything: what packing without boundaries does."""

    NAME = "test_leaky_packed"

    def __init__(self, model):
        self.model = model
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        def attend(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
            out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=True)
            return out.transpose(1, 2).contiguous(), None

        AttentionInterface.register(self.NAME, attend)
        AttentionMaskInterface.register(self.NAME, lambda *args, **kwargs: None)

    def __enter__(self):
        self.previous = self.model.get_base_model().config._attn_implementation
        BatchingPlan(True, self.NAME, "").apply(self.model)

    def __exit__(self, *exc):
        BatchingPlan(True, self.previous, "").apply(self.model)


def test_engine_loss_and_gradients_equal_the_padded_models_own(setup):
    """The loss the packed Trainer minimises (trained tokens only, chunked output layer, divided by the
    step's trained-token count) and its LoRA gradients equal the padded path's model loss."""
    config, tokenizer, features = setup
    model = lora_model(config)
    count = sum(sum(label != IGNORED for label in f["labels"][1:]) for f in features)

    BatchingPlan(False, "sdpa", "").apply(model)
    padded = data_collator(config, tokenizer, model)([dict(f) for f in features])
    reference = model(**padded, num_items_in_batch=torch.tensor(count)).loss
    reference.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    plan = choose_batching(config, model)
    assert plan.fused_head is not None  # the tiny model's output layer is frozen and plain: chunked loss
    loss, _ = labelled_token_loss(model, PackedCollator()([dict(f) for f in features]), torch.tensor(count),
                                  plan.fused_head)
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_chunked_cross_entropy_matches_the_plain_one():
    """The output layer applied a few positions at a time gives the loss and gradient of the whole."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(300, 16, generator=generator)
    hidden = torch.randn(23, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 300, (23,), generator=generator)
    plain = F.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    (expected,) = torch.autograd.grad(plain, hidden)
    chunked = _LinearCrossEntropy.apply(hidden, weight, targets, 5)  # 5 chunks, the last one short
    (grad,) = torch.autograd.grad(chunked * 2.0, hidden)
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(grad, expected * 2.0)


def test_packed_labels_are_the_encoded_ones(setup):
    """The packed row trains exactly the tokens the encoder labelled (what `tui-lora data` shows), the
    same ones the padded batch trains, with position ids restarting at every example."""
    config, tokenizer, features = setup
    batch = PackedCollator()([dict(f) for f in features])
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # each with a batch dimension (of 1)
    inputs = packed_model_inputs(batch)
    offsets = inputs["cu_seq_lens_q"].tolist()
    assert offsets == [0, *itertools.accumulate(len(f["input_ids"]) for f in features)]
    assert inputs["max_length_q"] == max(len(f["input_ids"]) for f in features)
    for feature, start, stop in zip(features, offsets, offsets[1:]):
        assert batch["input_ids"][0, start:stop].tolist() == feature["input_ids"]
        assert batch["labels"][0, start:stop].tolist() == [IGNORED] + feature["labels"][1:]
        assert batch["position_ids"][0, start:stop].tolist() == list(range(stop - start))
    padded = data_collator(config, tokenizer, None)([dict(f) for f in features])
    assert int((batch["labels"][:, 1:] != IGNORED).sum()) == int((padded["labels"][:, 1:] != IGNORED).sum())
    packed_targets = batch["labels"][0, 1:][batch["labels"][0, 1:] != IGNORED].tolist()
    padded_targets = [t for row in padded["labels"][:, 1:].tolist() for t in row if t != IGNORED]
    assert packed_targets == padded_targets
    # the loss reads logits only where the next token is trained
    assert inputs["logits_to_keep"].tolist() == [i for i, t in enumerate(batch["labels"][0, 1:].tolist())
                                                 if t != IGNORED]


def test_a_kernel_this_machine_lacks_falls_back_to_the_next(setup):
    """torch's varlen flash kernel needs a CUDA GPU: on this CPU it fails its check and the next
    candidate runs; with no candidate left the batches are padded, and the log says why."""
    config, _, _ = setup
    model = lora_model(config)
    lines: list[str] = []
    plan = choose_batching(config, model, log=lines.append, attentions=[TORCH_VARLEN, SDPA_PER_EXAMPLE])
    assert plan.packed and plan.attention == SDPA_PER_EXAMPLE
    assert len(lines) == 1 and lines[0].startswith("packing: torch varlen flash kernel not used: ")

    plan = choose_batching(config, model, attentions=[TORCH_VARLEN])
    assert not plan.packed and plan.attention == "sdpa"
    assert model.get_base_model().config._attn_implementation == "sdpa"  # put back as it was loaded
    assert plan.description.startswith("batching: padded to the longest example of each batch")
    assert "torch varlen flash kernel: " in plan.description


def test_packing_is_refused_where_it_cannot_be_exact(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2Config

    eager = make_config(tmp_path, model={"attn_implementation": "eager"})
    assert "attention 'eager' cannot keep packed examples apart" in why_not_packed(
        eager, load_model(eager))
    sdpa = make_config(tmp_path)
    model = load_model(sdpa)
    assert why_not_packed(sdpa, model) == ""
    assert why_not_packed(make_config(tmp_path, collator={"packing": "off"}), model) == \
        "collator.packing is off"
    assert "padding is max_length" in why_not_packed(
        make_config(tmp_path, collator={"padding": "max_length"}), model)
    assert "2 GPUs in one process" in why_not_packed(sdpa, model, n_gpu=2)
    # a sliding window shorter than the longest example would be cut off at example boundaries wrongly
    windowed = AutoModelForCausalLM.from_config(Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, use_sliding_window=True, sliding_window=128, max_window_layers=0,
        attn_implementation="sdpa"))
    assert "sliding window (128) is shorter than tokenizer.max_length (256)" in why_not_packed(
        sdpa, windowed)
    assert why_not_packed(make_config(tmp_path, tokenizer={"max_length": 120}), windowed) == ""


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def test_a_packed_run_names_its_path_in_the_event_log_and_train_log(tmp_path, train_in_process):
    folder, result, events = train_in_process(tiny_run_file(tmp_path / "run", training={"max_steps": 3}))
    lines = [e["message"] for e in of_type(events, "log") if e["level"] == "info"]
    assert any(line.startswith("batching: padding-free packing (sdpa per example") for line in lines), lines
    assert "batching: padding-free packing (sdpa per example" in folder.log.read_text()
    assert result["step"] == 3 and all(e["loss"] > 0 for e in of_type(events, "train"))
    progress = of_type(events, "progress")
    assert progress[-1]["tokens_seen"] > 0


def test_the_fallback_run_says_why_it_pads(tmp_path, train_in_process):
    folder, result, events = train_in_process(tiny_run_file(
        tmp_path / "run", model={"attn_implementation": "eager"}, training={"max_steps": 2, "eval_strategy": "no"},
        data={"validation_split": 0.0}))
    lines = [e["message"] for e in of_type(events, "log") if e["level"] == "info"]
    assert any(line.startswith("batching: padded to the longest example of each batch") and "'eager'" in line
               for line in lines), lines
    assert "batching: padded" in folder.log.read_text()
    assert result["step"] == 2


def test_packed_and_padded_runs_take_the_same_steps(tmp_path, train_in_process):
    """Same examples per step, same normalisation (trained tokens of the whole optimizer step, with
    gradient accumulation): the packed run's losses and gradient norms are the padded run's."""
    common = dict(training={"max_steps": 3, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 3,
                            "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1},
                  data={"validation_split": 0.0}, lora={"lora_dropout": 0.0})
    _, _, packed = train_in_process(tiny_run_file(tmp_path / "packed", **common))
    _, _, padded = train_in_process(tiny_run_file(tmp_path / "padded", collator={"packing": "off"}, **common))
    assert any("padding-free packing" in e.get("message", "") for e in of_type(packed, "log"))
    assert any("collator.packing is off" in e.get("message", "") for e in of_type(padded, "log"))
    for one, other in zip(of_type(packed, "train"), of_type(padded, "train"), strict=True):
        assert one["loss"] == pytest.approx(other["loss"], rel=1e-4)
        assert one["grad_norm"] == pytest.approx(other["grad_norm"], rel=1e-3)
    # both count real tokens only
    assert of_type(packed, "progress")[-1]["tokens_seen"] == of_type(padded, "progress")[-1]["tokens_seen"]
