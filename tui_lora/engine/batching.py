"""How a step's examples reach the model: packed without padding where that is exact, padded elsewhere.

Packed ("padding-free"): the examples of a batch are laid end to end in one row. Position ids
restart at 0 for every example and the attention runs inside each example only, from the example
boundaries (cu_seq_lens), so no token attends across a boundary and no compute goes to padding.
The loss reads the model's output only at positions whose next token is trained and turns it into
logits a chunk at a time, so full-vocabulary logits are never made for every position. Per-example
losses equal the padded path's (tests/functional/test_packing.py checks it on the tiny model); the
loss is normalised the same way: summed over the trained tokens of the whole optimizer step and
divided by their number (the Trainer's num_items_in_batch).

Which attention keeps examples apart depends on the machine and the model:
  flash-attention varlen   the model was loaded with flash_attention_2/3 (transformers' own path)
  torch varlen             sdpa on a CUDA GPU in float16/bfloat16 (torch.nn.attention.varlen)
  sdpa per example         sdpa anywhere else (the CPU): one causal SDPA call per example
Each candidate is checked on three made-up examples against the padded path before it is used; when
none agrees, or packing cannot be exact for this model (eager attention, sliding windows shorter
than max_length, logit soft-capping, several GPUs in one process), batches are padded as before and
the run log says why.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Trainer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tui_lora.config.schema import IGNORED_LABEL, RunConfig
from tui_lora.engine.checkpoints import WholeCheckpoints
from tui_lora.errors import first_line

SDPA_PER_EXAMPLE = "tui_lora_sdpa_per_example"
TORCH_VARLEN = "tui_lora_torch_varlen"
FLASH = ("flash_attention_2", "flash_attention_3")

# Logits held at once by the chunked loss: 2**26 float32 values (256 MiB), whatever the vocabulary.
CHUNK_LOGITS = 2**26


# ---------------------------------------------------------------- the collator


class PackedCollator:
    """Examples -> one row: input_ids, labels and position_ids restarting at 0 for every example.

    Labels are the encoded ones (what `tui-lora data` shows) except each example's first token, which
    gets -100: it would otherwise be the target of the previous example's last token. The padded path
    never trains a first token either (nothing precedes it), so both count the same trained tokens.
    Everything else the model needs is worked out from these three rows (packed_model_inputs), so the
    batch holds only tensors with a batch dimension, which accelerate may slice safely.
    """

    def __call__(self, features: list[dict]) -> dict:
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for feature in features:
            ids = list(feature["input_ids"])
            if ids:
                input_ids += ids
                labels += [IGNORED_LABEL] + list(feature["labels"])[1:]
                positions += range(len(ids))
        return {"input_ids": torch.tensor([input_ids], dtype=torch.long),
                "labels": torch.tensor([labels], dtype=torch.long),
                "position_ids": torch.tensor([positions], dtype=torch.long)}


def packed_model_inputs(batch: dict) -> dict:
    """The model's keyword arguments for a packed batch: the example boundaries for the attention
    (cu_seq_lens_*, max_length_*, read off where position ids restart) and, when labels are given,
    logits_to_keep: the positions whose next token is trained, the only places the loss reads."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().squeeze(1)
    cu_seq_lens = torch.cat([starts, starts.new_tensor([positions.numel()])]).to(torch.int32)
    longest = int(cu_seq_lens.diff().max())
    inputs.update(cu_seq_lens_q=cu_seq_lens, cu_seq_lens_k=cu_seq_lens, max_length_q=longest, max_length_k=longest)
    if "labels" in batch:
        inputs["logits_to_keep"] = (batch["labels"][0, 1:] != IGNORED_LABEL).nonzero().squeeze(1)
    return inputs


# ---------------------------------------------------------------- attention that stays inside each example


def _unpacked(function):
    """Calls without example boundaries (an ordinary padded forward) take transformers' own SDPA path."""

    def attention(module, query, key, value, attention_mask, *args, cu_seq_lens_q=None, **kwargs):
        if cu_seq_lens_q is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
        if query.shape[0] != 1 or kwargs.get("softcap") is not None:
            raise ValueError("packed attention takes one row of examples and no soft-capping")
        return function(module, query, key, value, cu_seq_lens_q, **kwargs)

    return attention


def _check_window(sliding_window, longest: int) -> None:
    if sliding_window is not None and longest > sliding_window:
        raise ValueError(f"an example of {longest} tokens is longer than the sliding window ({sliding_window})")


@_unpacked
def sdpa_per_example(module, query, key, value, cu_seq_lens, dropout=0.0, scaling=None, sliding_window=None,
                     **kwargs):
    """One causal SDPA call per example: the CPU path, and the fallback on GPUs without varlen."""
    bounds = cu_seq_lens.tolist()
    _check_window(sliding_window, max(b - a for a, b in itertools.pairwise(bounds)))
    gqa = query.shape[1] != key.shape[1]
    outputs = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True,
                                              dropout_p=dropout, scale=scaling, enable_gqa=gqa)
               for a, b in itertools.pairwise(bounds)]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


@functools.cache
def _torch_varlen():
    """(torch's varlen_attn or None, the names of its parameters): they differ between torch versions."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, set()
    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


@_unpacked
def torch_varlen(module, query, key, value, cu_seq_lens, dropout=0.0, scaling=None, sliding_window=None,
                 max_length_q=None, **kwargs):
    """torch's flash-attention varlen kernel (CUDA, float16/bfloat16): every example in one call."""
    varlen_attn, params = _torch_varlen()
    if varlen_attn is None:
        raise RuntimeError(f"torch {torch.__version__} has no torch.nn.attention.varlen")
    longest = int(max_length_q) if max_length_q is not None else int(cu_seq_lens.diff().max())
    _check_window(sliding_window, longest)
    if dropout:
        raise ValueError("torch varlen attention has no dropout")
    # (1, heads, tokens, dim) -> (tokens, heads, dim)
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))
    options = {}
    # torch 2.9-2.11 take is_causal; later versions a window, where (-1, 0) means causal
    options.update({"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)})
    if "scale" in params:
        options["scale"] = scaling
    elif scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-9:
        raise ValueError("this torch's varlen attention has no scale argument")
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            options["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    cu = cu_seq_lens.to(device=q.device, dtype=torch.int32)
    out = varlen_attn(q, k, v, cu, cu, longest, longest, **options)
    return out.unsqueeze(0), None


def _no_mask_when_packed(*args, attention_mask=None, **kwargs):
    """Packed rows need no mask (the attention reads the boundaries); padded calls get SDPA's usual one."""
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


for _name, _function in ((SDPA_PER_EXAMPLE, sdpa_per_example), (TORCH_VARLEN, torch_varlen)):
    AttentionInterface.register(_name, _function)
    AttentionMaskInterface.register(_name, _no_mask_when_packed)


# ---------------------------------------------------------------- the loss on trained positions only


class _LinearCrossEntropy(torch.autograd.Function):
    """sum of cross-entropy(hidden @ weight.T, targets), a chunk of positions at a time.

    The gradient for `hidden` is worked out chunk by chunk during the forward pass (softmax minus
    one-hot, times the weight), so neither pass ever holds more than one chunk of logits. The
    weight is frozen (a LoRA run does not train the output layer), so it gets no gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        needs_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(hidden) if needs_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            stop = min(start + chunk, hidden.shape[0])
            logits = (hidden[start:stop] @ weight.T).float()
            target = targets[start:stop]
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, target[:, None]).squeeze(1)).sum()
            if needs_grad:
                probs = torch.exp(logits.sub_(log_norm[:, None]))
                probs[torch.arange(stop - start, device=probs.device), target] -= 1
                grad[start:stop] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None


def _identity(hidden):
    return hidden


@contextmanager
def hidden_states_from(head):
    """Let the model return its last hidden states where it would return logits (the chunked loss
    applies the output layer itself)."""
    head.forward = _identity  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        del head.forward


def fusable_head(model):
    """The output layer when the chunked loss can stand in for it: a plain frozen Linear without
    bias, hooks or a replaced forward (an adapter, modules_to_save or accelerate's hooks rule it out)."""
    base = _base(model)
    head = base.get_output_embeddings()
    if (type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad
            or "forward" in vars(head) or head._forward_hooks or head._forward_pre_hooks):
        return None
    return head


def labelled_token_loss(model, inputs: dict, num_items_in_batch=None, head=None):
    """(loss, outputs) of a packed batch (PackedCollator's): cross-entropy over trained tokens only.

    The model projects only the positions whose next token is trained (logits_to_keep); with `head`
    the projection happens here instead, chunked. The sum is divided by
    num_items_in_batch (trained tokens in the whole optimizer step, as the model's own loss does),
    or by this batch's trained tokens when the Trainer does not count them.
    """
    shifted = inputs["labels"][..., 1:]
    targets = shifted[shifted != IGNORED_LABEL]
    with hidden_states_from(head) if head is not None else nullcontext():
        outputs = model(**packed_model_inputs(inputs))
    kept = outputs.logits.reshape(-1, outputs.logits.shape[-1])
    if head is not None:
        total = _LinearCrossEntropy.apply(kept, head.weight, targets, max(1, CHUNK_LOGITS // head.out_features))
    else:
        total = F.cross_entropy(kept.float(), targets, reduction="sum")
    if targets.numel() == 0:
        total = kept.sum() * 0.0  # keeps the graph, so backward still works on a batch with nothing to train
    count = num_items_in_batch if num_items_in_batch is not None else max(targets.numel(), 1)
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count, outputs


class PackedTrainer(WholeCheckpoints, Trainer):
    """The Trainer with labelled_token_loss as its loss; everything else (schedules, gradient
    accumulation, the num_items_in_batch count, evaluation, checkpoints) is the library's."""

    def __init__(self, *args, fused_head=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_head = fused_head

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = labelled_token_loss(model, inputs, num_items_in_batch, self.fused_head)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every process's tokens, and both DDP's gradients and the evaluation loop's
            # gathered losses are averaged over processes: scaled back, each is the mean over all tokens
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


# ---------------------------------------------------------------- choosing the path


@dataclass
class BatchingPlan:
    packed: bool
    attention: str  # the implementation the model runs with ("sdpa", TORCH_VARLEN, ...)
    description: str  # the line the run log shows
    fused_head: object = None  # the output layer, when the chunked loss applies it

    def apply(self, model) -> None:
        base = _base(model)
        if base.config._attn_implementation != self.attention:
            base.set_attn_implementation(self.attention)


ATTENTION_NAMES = {
    "flash_attention_2": "flash-attention varlen",
    "flash_attention_3": "flash-attention 3 varlen",
    TORCH_VARLEN: "torch varlen flash kernel",
    SDPA_PER_EXAMPLE: "sdpa per example",
}


def padded(reason: str, attention: str) -> BatchingPlan:
    return BatchingPlan(False, attention, f"batching: padded to the longest example of each batch "
                                          f"(DataCollatorForSeq2Seq, attention {attention}); not packed: {reason}")


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def loaded_attention(model) -> str:
    """The attention implementation the model was loaded with (ours are sdpa underneath)."""
    attention = _base(model).config._attn_implementation
    return "sdpa" if attention in (SDPA_PER_EXAMPLE, TORCH_VARLEN) else attention


def why_not_packed(config: RunConfig, model, n_gpu: int = 1) -> str:
    """Why packing cannot be exact (or was turned off) for this run; empty when it can."""
    base = _base(model)
    model_config = base.config
    attention = loaded_attention(model)
    if config.collator.packing == "off":
        return "collator.packing is off"
    if config.collator.padding == "max_length":
        return "collator.padding is max_length (fixed-length batches asked for)"
    if n_gpu > 1:
        return f"{n_gpu} GPUs in one process (DataParallel splits batches by row; use accelerate or torchrun)"
    if attention not in ("sdpa", *FLASH):
        return f"attention {attention!r} cannot keep packed examples apart without a full mask (use sdpa)"
    if not getattr(base, "_supports_attention_backend", False):
        return f"{type(base).__name__} does not use transformers' attention interface"
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__}.forward takes no logits_to_keep"
    if getattr(model_config, "attn_logit_softcapping", None):
        return "the model soft-caps attention logits"
    windows = [getattr(model_config, "sliding_window", None)] if _uses_sliding_window(model_config) else []
    if windows and windows[0] and windows[0] < config.tokenizer.max_length:
        return (f"the model's sliding window ({windows[0]}) is shorter than tokenizer.max_length "
                f"({config.tokenizer.max_length})")
    return ""


def _uses_sliding_window(model_config) -> bool:
    layer_types = getattr(model_config, "layer_types", None) or []
    return "sliding_attention" in layer_types or bool(getattr(model_config, "use_sliding_window", False))


def candidates(model) -> list[str]:
    base = _base(model)
    attention = loaded_attention(model)
    if attention in FLASH:
        return [attention]
    device = base.get_input_embeddings().weight.device
    dtype = base.get_input_embeddings().weight.dtype
    found = []
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and _torch_varlen()[0] is not None \
            and not getattr(base.config, "attention_dropout", 0.0):
        found.append(TORCH_VARLEN)
    found.append(SDPA_PER_EXAMPLE)
    return found


def choose_batching(config: RunConfig, model, n_gpu: int = 1, log=lambda message: None,
                    attentions: list[str] | None = None) -> BatchingPlan:
    """The plan for this run; the model's attention implementation is set to match (plan.apply).

    `attentions`: the packed attentions to try, in order (default: `candidates(model)`); `log` hears
    why each one that failed its check was passed over."""
    original = loaded_attention(model)
    reason = why_not_packed(config, model, n_gpu)
    if reason:
        plan = padded(reason, original)
        plan.apply(model)
        return plan
    failures = []
    for attention in attentions or candidates(model):
        plan = BatchingPlan(True, attention, "")
        plan.apply(model)
        head = fusable_head(model)
        try:
            problem = disagreement(model, head)
            if problem == "head":  # the model does more than project its hidden states: use its own logits
                head, problem = None, disagreement(model, None)
        except Exception as exc:  # a kernel this machine or model cannot run: try the next one
            problem = f"{type(exc).__name__}: {first_line(exc)}"
        if not problem:
            chunk = (f"vocabulary projected {max(1, CHUNK_LOGITS // head.out_features):,} positions at a time"
                     if head is not None else "the model's own output layer")
            plan.fused_head = head
            plan.description = (f"batching: padding-free packing ({ATTENTION_NAMES[attention]}, positions restart "
                                f"per example); loss on trained tokens only ({chunk})")
            for name, why in failures:
                log(f"packing: {ATTENTION_NAMES[name]} not used: {why}")
            return plan
        failures.append((attention, problem))
    plan = padded("; ".join(f"{ATTENTION_NAMES[name]}: {why}" for name, why in failures), original)
    plan.apply(model)
    return plan


def _probe_batch(vocab_size: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    examples = []
    for length in (11, 6, 9):
        ids = torch.randint(3, vocab_size, (length,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORED_LABEL] * 2 + ids[2:]})
    return examples


def disagreement(model, head) -> str:
    """Empty when a packed forward of three made-up examples gives the padded forward's logits at
    every trained position and its backward pass runs; "head" when, with `head`, the chunked loss's
    own projection would not give the model's logits; otherwise what differs."""
    base = _base(model)
    device = base.get_input_embeddings().weight.device
    examples = _probe_batch(base.config.vocab_size)
    pad_id = base.config.pad_token_id if isinstance(base.config.pad_token_id, int) else 0
    packed_batch = packed_model_inputs({k: v.to(device) for k, v in PackedCollator()(examples).items()})
    was_training = model.training
    model.eval()  # no dropout: both forwards must see the same weights
    try:
        with torch.no_grad():
            reference = model(**{k: v.to(device) for k, v in _pad(examples, pad_id).items()}).logits
            # the trained targets are tokens 2.. of each example, predicted at positions 1..length-2
            expected = torch.cat([reference[row, 1:len(e["input_ids"]) - 1] for row, e in enumerate(examples)])
            logits = model(**packed_batch).logits.reshape(-1, expected.shape[-1])
            if head is not None:
                with hidden_states_from(head):
                    hidden = model(**packed_batch).logits
                projected = head(hidden.reshape(-1, hidden.shape[-1]))
                if projected.shape != logits.shape or not torch.allclose(projected.float(), logits.float(),
                                                                         **_tolerance(logits.dtype)):
                    return "head"
        _backward_runs(model, packed_batch)
    finally:
        model.train(was_training)
    if logits.shape != expected.shape:
        return f"packed forward gave {tuple(logits.shape)} logits where {tuple(expected.shape)} were expected"
    if not torch.allclose(logits.float(), expected.float(), **_tolerance(logits.dtype)):
        worst = (logits.float() - expected.float()).abs().max().item()
        return f"packed logits differ from padded ones by up to {worst:.3g}"
    return ""


def _backward_runs(model, packed_batch: dict) -> None:
    """A kernel may have a forward and no backward: run one, and leave no gradient behind."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        return
    before = [p.grad for p in trainable]
    with torch.enable_grad():
        model(**packed_batch).logits.float().square().mean().backward()
    for param, grad in zip(trainable, before):
        param.grad = grad


def _pad(examples: list[dict], pad_id: int) -> dict:
    longest = max(len(e["input_ids"]) for e in examples)
    ids = [e["input_ids"] + [pad_id] * (longest - len(e["input_ids"])) for e in examples]
    mask = [[1] * len(e["input_ids"]) + [0] * (longest - len(e["input_ids"])) for e in examples]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def _tolerance(dtype) -> dict:
    if dtype in (torch.float16, torch.bfloat16):
        return {"rtol": 5e-2, "atol": 5e-2}
    return {"rtol": 1e-4, "atol": 1e-4}
