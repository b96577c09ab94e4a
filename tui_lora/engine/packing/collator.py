"""A packed batch: the examples of a step laid end to end in one row, and the model inputs read off it."""

from __future__ import annotations

import torch

from tui_lora.config.schema import IGNORED_LABEL


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
