"""`tui-lora eval`: loss and perplexity of the adapter and of its base model on the same examples.

The examples come from the project's own data pipeline (data/prepare.py) with the run's settings
and the tokenizer saved beside the adapter, so they carry exactly the labels training used: the
loss is read on the trained tokens (assistant replies and their end-of-turn marker by default).
Without --data that is the run's validation split, held out with the run's seed; with --data a
file is read whole, its format detected.

The loss is the mean over every trained token of every example (not a mean of batch means, which
would weigh a short batch like a long one); perplexity is exp(loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from tui_lora.errors import UserError


@dataclass
class Score:
    model: str  # "base" or "adapter"
    loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf


@dataclass
class EvalReport:
    data: str       # what was evaluated, in words
    examples: int
    scores: list[Score]

    def as_dict(self) -> dict:
        return {"data": self.data, "examples": self.examples,
                "scores": [{"model": s.model, "loss": s.loss, "perplexity": s.perplexity, "tokens": s.tokens}
                           for s in self.scores]}


def data_config(config, data_file: str | None):
    """The run's data settings, or the given file read whole (every record, format detected)."""
    if data_file is None:
        if config.data.streaming:
            raise UserError("the run streamed its data, so it held out no validation split; "
                            "give a file to evaluate on with --data FILE")
        if config.data.validation_split <= 0:
            raise UserError("the run held out no validation split (data.validation_split = 0); "
                            "give a file to evaluate on with --data FILE")
        return config
    path = Path(data_file).expanduser()
    if not path.exists():
        raise UserError(f"--data {data_file}: no such file or folder")
    # the file alone, in place of the run's data (its [[data.sources]] too)
    data = replace(config.data, path=str(path.absolute()), format="auto", split="train", streaming=False,
                   validation_split=0.0, max_samples=0, sources=[], mix="concat")
    return replace(config, data=data)


def evaluation_examples(config, tokenizer, data_file: str | None):
    """Encoded examples (input_ids, labels) and a description of where they came from."""
    from tui_lora.data.prepare import prepare_datasets

    try:
        train, held_out, report = prepare_datasets(config, tokenizer)
    except UserError as exc:
        if data_file is None:
            raise
        # the pipeline names the run-file key data.path; here the path came from --data
        raise UserError(f"--data {data_file}: {str(exc).removeprefix('data.path: ')}") from None
    if data_file is None:
        return held_out, f"the run's validation split ({report.eval_examples} conversations)"
    return train, f"{data_file} ({report.train_examples} conversations)"


def losses(model, examples: list[dict], batch_size: int, pad_id: int, use_adapter: bool) -> tuple[float, int]:
    """(summed loss over trained tokens, trained tokens) of the model on the examples (input_ids, labels)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    # longest first: batches of similar length waste little on padding, and memory runs out at once if at all
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    adapter_off = contextlib.nullcontext() if use_adapter else model.disable_adapter()
    with adapter_off, torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = [examples[i] for i in order[start:start + batch_size]]
            input_ids, attention, labels = _pad(rows, pad_id, model.device)
            logits = model(input_ids=input_ids, attention_mask=attention).logits
            targets = labels[:, 1:]
            total += F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                                     ignore_index=-100, reduction="sum").item()
            count += int((targets != -100).sum())
    return total, count


def _pad(rows: list[dict], pad_id: int, device):
    import torch

    width = max(len(row["input_ids"]) for row in rows)

    def padded(key: str, fill: int):
        return torch.tensor([row[key] + [fill] * (width - len(row[key])) for row in rows], device=device)

    ids = padded("input_ids", pad_id)
    attention = torch.tensor([[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in rows],
                             device=device)
    return ids, attention, padded("labels", -100)


def evaluate(where: str, overrides: list[str], data_file: str | None = None, limit: int | None = None,
             batch_size: int | None = None, progress=None) -> EvalReport:
    """Score the base model and the adapter on the same examples."""
    from tui_lora.after.loading import attach_adapter, find_adapter, load_base_model, load_tokenizer, prepare_sources

    trained = find_adapter(where, overrides)
    if data_file is None and trained.run_folder is None:
        raise UserError(f"{where} is an adapter folder without its run, so there is no validation split to use; "
                        "give a file to evaluate on with --data FILE")
    config = data_config(trained.config, data_file)
    config = prepare_sources(config, with_data=True)
    tokenizer = load_tokenizer(trained, config)
    examples, described = evaluation_examples(config, tokenizer, data_file)
    if limit:
        examples = examples.select(range(min(limit, len(examples))))
    if len(examples) == 0:
        raise UserError(f"nothing to evaluate: {described} holds no usable example")
    columns = examples.select_columns(["input_ids", "labels"])[:]  # one conversion, not one per row
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in zip(columns["input_ids"], columns["labels"])]
    if progress:
        progress(f"evaluating {len(examples)} examples of {described} …")
    model = attach_adapter(load_base_model(config), trained)
    size = batch_size or config.training.per_device_eval_batch_size
    scores = []
    for name, use_adapter in (("base", False), ("adapter", True)):
        total, count = losses(model, rows, size, tokenizer.pad_token_id, use_adapter)
        if count == 0:
            raise UserError(f"nothing to evaluate: {described} has no trained tokens")
        scores.append(Score(name, total / count, count))
    return EvalReport(described, len(rows), scores)


def report_lines(report: EvalReport) -> list[str]:
    """The table as plain aligned text (the CLI draws it with rich on a terminal)."""
    rows = [("model", "loss", "perplexity", "tokens")]
    rows += [(s.model, f"{s.loss:.4f}", f"{s.perplexity:,.2f}", f"{s.tokens:,}") for s in report.scores]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{report.examples} examples from {report.data}"]
    lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              for row in rows]
    return lines
