"""Raw records -> tokenised, labelled training and evaluation sets.

One pass with datasets.map turns each record into a conversation (formats.py) and
then into input_ids and labels (encode.py). A record that cannot be used is kept
as an empty row with its reason, so it can be counted and named by record number
before training starts, then dropped.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_lora.assets import builtin_path, is_builtin
from tui_lora.config.schema import RunConfig
from tui_lora.data.encode import ConversationEncoder
from tui_lora.data.formats import ASSISTANT, USER, BadRecord, detect_format, to_messages, with_system_prompt
from tui_lora.data.mapping import ColumnMapping
from tui_lora.data.mix import arrow_columns, by_source, column_sum, concatenate, mix, per_source, split_and_mix
from tui_lora.data.sources import UNREADABLE, load_records
from tui_lora.errors import UserError

MODEL_COLUMNS = ["input_ids", "attention_mask", "labels"]
SHOWN_BAD_RECORDS = 5


@dataclass
class SourceReport:
    """One source's counts: what was read, what was skipped or shortened, and its part of the mix as built."""

    path: str
    format: str
    weight: float = 1.0
    records: int = 0
    skipped: int = 0
    truncated: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    trained_tokens: int = 0  # in the training set as mixed (an oversampled source counts its repeats)
    bad_records: list[tuple[int, str]] = field(default_factory=list)
    skip_reasons: dict[str, int] = field(default_factory=dict)


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
    skip_reasons: dict[str, int] = field(default_factory=dict)  # reason with numbers blanked -> count
    used_default_template: bool = False
    reply_end: str = ""  # what each reply is trained to end with, in words (ConversationEncoder.reply_end_rule)
    system_prompt: str = ""  # data.system_prompt and where it goes, in words; "" when there is none
    mix: str = ""  # how several sources were combined, in words; "" for one source
    sources: list[SourceReport] = field(default_factory=list)  # each source's counts (one entry for one source)


def _arrow_schema():
    """The column types datasets gives these columns when the map function returns Python lists.

    (It stores input_ids as int32 and attention_mask as int8, by column name.) Returning a table of
    exactly these types skips datasets' per-value type inference, which costs more than the tokenizer's
    own Python side, and leaves the data set as it was.
    """
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8())),
                      ("labels", pa.list_(pa.int64())), ("error", pa.string()), ("record", pa.int64()),
                      ("truncated", pa.bool_()), ("n_tokens", pa.int64()), ("n_trained", pa.int64()),
                      ("source", pa.int32())])


class _RecordEncoder:
    """The map function: picklable, so datasets can fingerprint it and send it to worker processes.

    With ``arrow`` it returns a pyarrow Table (Dataset.map writes it as it is) instead of a dict of lists.
    """

    def __init__(self, encoder: ConversationEncoder, fmt: str, label_pad_token_id: int, arrow: bool = False,
                 system_prompt: str = "", system_prompt_mode: str = "missing", mapping: ColumnMapping | None = None,
                 source: int = 0):
        self.encoder = encoder
        self.source = source  # the source's number in the run (mix.py reads it back per example)
        self.mapping = mapping  # fingerprinted too: another mapping is another cache entry
        self.fmt = fmt
        self.label_pad_token_id = label_pad_token_id
        self.arrow = arrow
        # part of the map function's fingerprint, so another prompt is another cache entry
        self.system_prompt = system_prompt
        self.system_prompt_mode = system_prompt_mode

    def __call__(self, batch: dict[str, list], indices: list[int]):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        conversations, format_errors = [], []
        for row in rows:
            unreadable = row.pop(UNREADABLE, None)
            if unreadable:  # a line of the file that was not a record (sources.readable_json_lines)
                conversations.append(None)
                format_errors.append(unreadable)
                continue
            try:
                record = self.mapping.apply(row) if self.mapping else row
                conversations.append(with_system_prompt(to_messages(record, self.fmt), self.system_prompt,
                                                        self.system_prompt_mode))
                format_errors.append("")
            except BadRecord as exc:
                conversations.append(None)
                format_errors.append(str(exc) or "unusable record")
        examples, errors = self.encoder.encode_rows(conversations)
        empty = {name: [] for name in MODEL_COLUMNS}
        out: dict[str, list] = {name: [(example or empty)[name] for example in examples] for name in MODEL_COLUMNS}
        out["error"] = [first or second for first, second in zip(format_errors, errors)]
        out["record"] = [index + 1 for index in indices]
        out["truncated"] = [bool(example and example["truncated"]) for example in examples]
        # counted here, in the workers, so the report never pulls whole token columns into Python
        out["n_tokens"] = [len(ids) for ids in out["input_ids"]]
        pad = self.label_pad_token_id
        out["n_trained"] = [len(labels) - labels.count(pad) for labels in out["labels"]]
        out["source"] = [self.source] * len(rows)
        if self.arrow:
            import pyarrow as pa

            return pa.Table.from_pydict(out, schema=_arrow_schema())
        return out


def choose_format(records, requested: str, where: str = "data") -> str:
    if requested != "auto":
        return requested
    head = [{key: value for key, value in record.items() if key != UNREADABLE}
            for record in itertools.islice(records, 200) if not record.get(UNREADABLE)][:20]
    if not head:
        unreadable = next((record.get(UNREADABLE) for record in itertools.islice(records, 1)), None)
        if unreadable:  # not one of the first lines is a record
            raise UserError(f"{where}.path: {unreadable}; each line must be one record, a JSON object {{...}}")
        raise UserError(f"{where}.path: the data set is empty")
    try:
        return detect_format(head)
    except BadRecord as exc:
        raise UserError(f"{where}.format: could not detect the format: {exc}") from None


def _column_names(records) -> list[str]:
    """The data's columns, from its schema or (a stream that has none) from its first records."""
    if records.column_names:
        return [name for name in records.column_names if name != UNREADABLE]
    names: dict[str, None] = {}
    for record in itertools.islice(records, 20):
        names.update(dict.fromkeys(key for key in record if key != UNREADABLE))
    return list(names)


def model_stop_ids(config: RunConfig):
    """The eos ids in the model's generation_config.json (an int or a list), or None where it has none.

    Read from the model's folder (hub ids are fetched into one before data is prepared); only the
    stop token of templates that print nothing after the last reply depends on it.
    """
    ref = config.model.name_or_path
    folder = builtin_path(ref) if is_builtin(ref) else Path(ref).expanduser()
    try:
        return json.loads((folder / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, ValueError, AttributeError):  # no such file (a hub id offline, a base model without one)
        return None


def build_encoder(config: RunConfig, tokenizer) -> ConversationEncoder:
    """The run's ConversationEncoder; a tokenizer or template it cannot read is one line naming the key."""
    key = "tokenizer.name_or_path" if config.tokenizer.name_or_path else "model.name_or_path"
    try:
        encoder = ConversationEncoder(tokenizer, max_length=config.tokenizer.max_length,
                                      truncation=config.tokenizer.truncation, train_on=config.data.train_on,
                                      label_pad_token_id=config.collator.label_pad_token_id,
                                      model_stop_ids=model_stop_ids(config))
    except ValueError as exc:
        raise UserError(f"{key}: {exc}") from None
    for where, source in config.data.tables():
        prompt = source_system_prompt(config.data, source)
        if prompt:
            check_system_prompt(encoder, prompt, f"{where}.system_prompt" if source.system_prompt
                                else "data.system_prompt")
    return encoder


def check_system_prompts_here(config: RunConfig) -> bool:
    """`tui-lora validate` and the wizard's review: the model's chat template must take the run's system prompts,
    checked with the tokenizer alone where its files are on this machine (a folder or a builtin). False when
    there was nothing to check here: no system prompt, a hub id (the run checks it once fetched, before any record
    is mapped), or trust_remote_code (a check must not run the model's code)."""
    from tui_lora.hub import is_hub_id
    from tui_lora.models import load_tokenizer

    settings = config.data
    ref = config.tokenizer.name_or_path or config.model.name_or_path
    if not any(source_system_prompt(settings, source) for source in settings.source_list()) or not ref \
            or is_hub_id(ref) or config.model.trust_remote_code:
        return False
    build_encoder(config, load_tokenizer(config))  # raises the one line naming the key
    return True


def source_system_prompt(settings, source) -> str:
    """The system prompt a source's conversations get: its own, else the run's."""
    return source.system_prompt or settings.system_prompt


def check_system_prompt(encoder: ConversationEncoder, prompt: str, key: str = "data.system_prompt") -> None:
    """The model's template must take a system message and print it, or data.system_prompt would fail every
    record (Gemma-2 raises "System role not supported") or vanish without a word (a template that ignores it)."""
    probe = with_system_prompt([{"role": USER, "content": "Hello"}, {"role": ASSISTANT, "content": "Hi"}], prompt)
    try:
        text = encoder.render(probe)
    except BadRecord as exc:
        said = str(exc).split(": ", 1)[-1]  # the template's own words, without the encoder's preamble
        raise UserError(f"{key}: the model's chat template takes no system message ({said}); leave "
                        f"{key} empty, or put the instructions in the first user message of each "
                        "conversation") from None
    if probe[0]["content"].strip() not in text:
        raise UserError(f"{key}: the model's chat template leaves system messages out, so the prompt "
                        f"would never reach the model; leave {key} empty, or use a template that "
                        "prints it (tokenizer.name_or_path)")


def encode_records(config: RunConfig, tokenizer) -> tuple[Any, DataReport]:
    """Every usable record as an example, source after source and in file order, with its token counts and its
    source's number; bad ones counted per source.

    Raises UserError when more than data.max_bad_share of a source's records cannot be used.
    """
    settings = config.data
    encoder = build_encoder(config, tokenizer)
    parts, reports = [], []
    for index, (where, source) in enumerate(settings.tables()):
        part, source_report = _encode_source(config, encoder, source, index, where)
        parts.append(part)
        reports.append(source_report)
    formats = list(dict.fromkeys(source_report.format for source_report in reports))
    report = DataReport(format=" + ".join(formats), used_default_template=encoder.used_default_template,
                        reply_end=encoder.reply_end_rule(), system_prompt=_system_prompt_rule(settings),
                        mix=settings.mix_rule(), sources=reports)
    if settings.streaming:  # no length: nothing can be counted up front
        return mix(parts, settings, config.training.seed), report
    several = len(reports) > 1
    for source_report in reports:
        label = f"[{source_report.path}] " if several else ""  # which file a record number counts in
        report.records += source_report.records
        report.skipped += source_report.skipped
        report.truncated += source_report.truncated
        report.bad_records += [(number, label + reason) for number, reason in source_report.bad_records]
        for reason, count in source_report.skip_reasons.items():
            report.skip_reasons[label + reason] = report.skip_reasons.get(label + reason, 0) + count
    report.bad_records = report.bad_records[:SHOWN_BAD_RECORDS]
    kept = [part.filter(lambda error: not error, input_columns="error") for part in parts]
    return (kept[0] if len(kept) == 1 else concatenate(kept)), report


def _encode_source(config: RunConfig, encoder: ConversationEncoder, source, index: int, where: str):
    """One source's records encoded (bad ones kept as rows with their reason, but for a stream) and its counts."""
    settings = config.data
    records = load_records(source, settings.streaming, where)
    mapping = ColumnMapping.from_settings(source)
    if mapping is not None:
        problem = mapping.missing_column(_column_names(records), where)
        if problem:
            raise UserError(f"{problem} ({where}.path {source.path})")
    fmt = mapping.format if mapping is not None else choose_format(records, source.format, where)
    if source.max_samples:
        records = (records.take(source.max_samples) if settings.streaming
                   else records.select(range(min(source.max_samples, len(records)))))
    report = SourceReport(path=source.path, format=fmt, weight=source.weight)
    pad = config.collator.label_pad_token_id
    system = dict(system_prompt=source_system_prompt(settings, source),
                  system_prompt_mode=settings.system_prompt_mode, mapping=mapping, source=index)
    map_args: dict[str, Any] = dict(batched=True, batch_size=settings.map_batch_size, with_indices=True,
                                    remove_columns=list(records.column_names or []))
    if settings.streaming:
        encode = _RecordEncoder(encoder, fmt, pad, **system)
        return records.map(encode, **map_args).filter(lambda row: not row["error"]), report
    examples = records.map(_RecordEncoder(encoder, fmt, pad, arrow=True, **system),
                           num_proc=settings.num_proc if settings.num_proc > 1 else None, desc="tokenising", **map_args)
    _count(examples, report, settings.max_bad_share, where)
    return examples, report


def _system_prompt_rule(settings) -> str:
    if not settings.system_prompt:
        return ""
    shown = settings.system_prompt if len(settings.system_prompt) <= 60 else settings.system_prompt[:57] + "..."
    where = ("in every conversation, replacing its own" if settings.system_prompt_mode == "replace"
             else "in each conversation that has none")
    trained = "trained, as train_on is \"all\"" if settings.train_on == "all" else "never trained"
    return f"{shown!r} {where} ({trained})"


def split_examples(examples, config: RunConfig, report: DataReport) -> tuple[Any, Any | None]:
    """Hold out data.validation_split (seeded) and mix the sources (mix.py); fills the report's train counts,
    each source's too."""
    count = len(report.sources)
    parts = [examples] if count == 1 else by_source(examples, count)
    train, evaluation = split_and_mix(parts, config.data, config.training.seed)
    report.train_examples = len(train)
    report.eval_examples = len(evaluation) if evaluation is not None else 0
    counts = arrow_columns(train, "n_tokens", "n_trained")
    report.train_tokens, report.trained_tokens = column_sum(counts, "n_tokens"), column_sum(counts, "n_trained")
    if count == 1:
        only = report.sources[0]
        only.train_examples, only.eval_examples = report.train_examples, report.eval_examples
        only.trained_tokens = report.trained_tokens
        return train, evaluation
    held = per_source(evaluation, count) if evaluation is not None else [{"examples": 0}] * count
    for source_report, trained, evaluated in zip(report.sources, per_source(train, count), held):
        source_report.train_examples, source_report.trained_tokens = trained["examples"], trained["trained_tokens"]
        source_report.eval_examples = evaluated["examples"]
    return train, evaluation


def prepare_datasets(config: RunConfig, tokenizer) -> tuple[Any, Any | None, DataReport]:
    """(train set, eval set or None, report), ready for the collator."""
    examples, report = encode_records(config, tokenizer)
    if config.data.streaming:
        return examples.select_columns(MODEL_COLUMNS), None, report
    train, evaluation = split_examples(examples, config, report)
    if evaluation is not None:
        evaluation = evaluation.select_columns(MODEL_COLUMNS)
    return train.select_columns(MODEL_COLUMNS), evaluation, report


def _count(examples, report: SourceReport, max_bad_share: float, where: str) -> None:
    import pyarrow.compute as pc

    columns = arrow_columns(examples, "error", "truncated", "record")
    report.records = columns.num_rows
    report.truncated = int(pc.sum(pc.cast(columns.column("truncated"), "int64")).as_py() or 0)
    rejected = columns.filter(pc.not_equal(columns.column("error"), "")).to_pydict()  # only the bad rows in Python
    bad = list(zip(rejected["record"], rejected["error"]))
    report.skipped = len(bad)
    report.bad_records = bad[:SHOWN_BAD_RECORDS]
    # numbers blanked so that one cause is one line; not those inside names ("not_utf8.jsonl", "UTF-8")
    report.skip_reasons = dict(Counter(re.sub(r"(?<![\w.-])\d+(?![\w.-])", "N", reason) for _, reason in bad))
    if report.records == 0:
        raise UserError(f"{where}.path: the data set is empty")
    if report.skipped == report.records:
        number, reason = bad[0]
        hint = ("raise tokenizer.max_length" if all("max_length" in why for _, why in bad)
                else f"check {where}.format")
        raise UserError(f"{where}: none of the {report.records} records could be used as {report.format!r} "
                        f"(record {number}: {reason}); {hint}")
    share = report.skipped / report.records
    if share > max_bad_share:
        number, reason = bad[0]
        raise UserError(f"{where}: {report.skipped} of {report.records} records ({share:.0%}) could not be used, "
                        f"more than data.max_bad_share ({max_bad_share:.0%}); first: record {number}: {reason}")
