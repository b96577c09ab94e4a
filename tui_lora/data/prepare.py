"""Raw records -> tokenised, labelled training and evaluation sets.

One pass with datasets.map turns each record into a conversation (formats.py) and
then into input_ids and labels (encode.py). A record that cannot be used is kept
as an empty row with its reason, so it can be counted and named by record number
before training starts, then dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui_lora.config.schema import RunConfig
from tui_lora.data.encode import ConversationEncoder
from tui_lora.data.formats import BadRecord, detect_format, to_messages
from tui_lora.data.sources import load_records
from tui_lora.errors import UserError

MODEL_COLUMNS = ["input_ids", "attention_mask", "labels"]
SHOWN_BAD_RECORDS = 5


@dataclass
class DataReport:
    format: str
    records: int = 0
    skipped: int = 0
    truncated: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    train_tokens: int = 0
    trained_tokens: int = 0
    bad_records: list[tuple[int, str]] = field(default_factory=list)  # (record number, reason), first few
    used_default_template: bool = False


class _RecordEncoder:
    """The map function: picklable, so datasets can fingerprint it and send it to worker processes."""

    def __init__(self, encoder: ConversationEncoder, fmt: str):
        self.encoder = encoder
        self.fmt = fmt

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in (*MODEL_COLUMNS, "error", "record", "truncated")}
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        for index, row in zip(indices, rows):
            try:
                example = self.encoder.encode(to_messages(row, self.fmt))
                error = ""
            except BadRecord as exc:
                example, error = {name: [] for name in MODEL_COLUMNS}, str(exc) or "unusable record"
            for name in MODEL_COLUMNS:
                out[name].append(example[name])
            out["error"].append(error)
            out["record"].append(index + 1)
            out["truncated"].append(bool(example.get("truncated", False)))
        return out


def choose_format(records, requested: str) -> str:
    if requested != "auto":
        return requested
    head = [record for _, record in zip(range(20), records)]
    if not head:
        raise UserError("data.path: the data set is empty")
    try:
        return detect_format(head)
    except BadRecord as exc:
        raise UserError(f"data.format: could not detect the format: {exc}") from None


def prepare_datasets(config: RunConfig, tokenizer) -> tuple[Any, Any | None, DataReport]:
    """(train set, eval set or None, report). Raises UserError when too much of the data is unusable."""
    settings = config.data
    records = load_records(settings)
    fmt = choose_format(records, settings.format)
    if settings.max_samples:
        records = (records.take(settings.max_samples) if settings.streaming
                   else records.select(range(min(settings.max_samples, len(records)))))
    encoder = ConversationEncoder(tokenizer, max_length=config.tokenizer.max_length,
                                  truncation=config.tokenizer.truncation, train_on=settings.train_on,
                                  label_pad_token_id=config.collator.label_pad_token_id)
    report = DataReport(format=fmt, used_default_template=encoder.used_default_template)
    encode = _RecordEncoder(encoder, fmt)
    map_args: dict[str, Any] = dict(batched=True, batch_size=settings.map_batch_size, with_indices=True,
                                    remove_columns=list(records.column_names or []))
    if settings.streaming:
        examples = records.map(encode, **map_args).filter(lambda row: not row["error"])
        return examples.select_columns(MODEL_COLUMNS), None, report
    examples = records.map(encode, num_proc=settings.num_proc if settings.num_proc > 1 else None,
                           desc="tokenising", **map_args)
    _count(examples, report, settings.max_bad_share)
    examples = examples.filter(lambda error: not error, input_columns="error").select_columns(MODEL_COLUMNS)
    if settings.validation_split > 0:
        if len(examples) < 2:
            raise UserError(f"data: only {len(examples)} usable conversation(s); too few to hold out a "
                            "validation share (set data.validation_split = 0)")
        parts = examples.train_test_split(test_size=settings.validation_split, seed=config.training.seed)
        train, evaluation = parts["train"], parts["test"]
    else:
        train, evaluation = examples, None
    report.train_examples = len(train)
    report.eval_examples = len(evaluation) if evaluation is not None else 0
    lengths = train["input_ids"]
    report.train_tokens = sum(len(ids) for ids in lengths)
    report.trained_tokens = sum(sum(1 for tok in labels if tok != config.collator.label_pad_token_id)
                                for labels in train["labels"])
    return train, evaluation, report


def _count(examples, report: DataReport, max_bad_share: float) -> None:
    errors = examples["error"]
    report.records = len(errors)
    report.truncated = sum(examples["truncated"])
    bad = [(number, error) for number, error in zip(examples["record"], errors) if error]
    report.skipped = len(bad)
    report.bad_records = bad[:SHOWN_BAD_RECORDS]
    if report.records == 0:
        raise UserError("data.path: the data set is empty")
    if report.skipped == report.records:
        number, reason = bad[0]
        raise UserError(f"data: none of the {report.records} records could be used as {report.format!r} "
                        f"(record {number}: {reason}); check data.format")
    share = report.skipped / report.records
    if share > max_bad_share:
        number, reason = bad[0]
        raise UserError(f"data: {report.skipped} of {report.records} records ({share:.0%}) could not be used, "
                        f"more than data.max_bad_share ({max_bad_share:.0%}); first: record {number}: {reason}")
