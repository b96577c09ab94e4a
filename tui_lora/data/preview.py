"""`tui-lora data`: the examples as the model sees them, trained tokens marked, and a summary.

The same segments (text, trained) feed the terminal view here and the wizard's data screen,
so a user sees exactly the labels the Trainer gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tui_lora.config.schema import RunConfig
from tui_lora.data.encode import label_mask_segments
from tui_lora.data.mix import arrow_columns, column_sum, first_of_each
from tui_lora.data.prepare import MODEL_COLUMNS, DataReport, encode_records, split_examples

TRAINED_STYLE = "bold black on green"
CONTEXT_STYLE = "dim"


PLAIN_MARKERS = ("[[", "]]")


def example_text(segments: Iterable[tuple[str, bool]], plain: bool = False) -> Text:
    """Rendered conversation: trained tokens highlighted, the rest dimmed; with ``plain`` (no colour: a file,
    a pipe, NO_COLOR) trained tokens are between [[ and ]] instead, since a style there shows nothing."""
    text = Text()
    opening, closing = PLAIN_MARKERS
    for piece, trained in segments:
        if plain:
            text.append(f"{opening}{piece}{closing}" if trained else piece)
        else:
            text.append(piece, style=TRAINED_STYLE if trained else CONTEXT_STYLE)
    return text


def length_histogram(lengths, max_length: int, bins: int = 8) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets of equal width from 0 to max_length; lengths a list or a numpy array."""
    import numpy as np

    width = max(1, -(-max_length // bins))
    lengths = np.asarray(lengths, dtype=np.int64)
    buckets = np.minimum(bins - 1, np.maximum(lengths - 1, 0) // width)
    counts = np.bincount(buckets, minlength=bins)[:bins]
    return [(i * width + 1, min(max_length, (i + 1) * width), int(count)) for i, count in enumerate(counts)]


def source_lines(report: DataReport) -> list[str]:
    """Each source's records, skips, shortened ones and its part of the training mix as built, one line each."""
    mixed = sum(source.trained_tokens for source in report.sources) or 1
    return [f"{source.path} ({source.format}): {source.records:,} records, {source.skipped:,} skipped, "
            f"{source.truncated:,} shortened; {source.train_examples:,} train / {source.eval_examples:,} eval; "
            f"{source.trained_tokens / mixed:.0%} of the trained tokens" for source in report.sources]


def summary_table(report: DataReport, lengths: list[int], max_length: int) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("format", report.format)
    table.add_row("records", f"{report.records:,}")
    table.add_row("examples", f"{report.train_examples:,} train, {report.eval_examples:,} eval")
    numbers = ", ".join(str(number) for number, _ in report.bad_records)
    more = ", …" if report.skipped > len(report.bad_records) else ""
    table.add_row("skipped", f"{report.skipped:,} (record{'s' if report.skipped > 1 else ''} {numbers}{more})"
                  if report.bad_records else f"{report.skipped:,}")
    for reason, count in sorted(report.skip_reasons.items(), key=lambda item: -item[1]):
        table.add_row("", f"{count:,} × {reason}")
    table.add_row("shortened", f"{report.truncated:,} (trailing exchanges dropped to fit max_length {max_length})")
    share = report.trained_tokens / report.train_tokens if report.train_tokens else 0.0
    table.add_row("trained tokens", f"{report.trained_tokens:,} of {report.train_tokens:,} ({share:.1%}, all examples)")
    if report.reply_end:
        table.add_row("replies end", report.reply_end)
    if report.system_prompt:
        table.add_row("system prompt", report.system_prompt)
    if len(report.sources) > 1:
        table.add_row("mix", report.mix)
        for number, line in enumerate(source_lines(report), 1):
            table.add_row(f"source {number}", line)
    if report.used_default_template:
        table.add_row("template", "the tokenizer has none: tui-lora's default ChatML is used")
    histogram = length_histogram(lengths, max_length)
    peak = max((count for _, _, count in histogram), default=0) or 1
    for low, high, count in histogram:
        table.add_row("length" if low == 1 else "", f"{low:>6}-{high:<6} {'█' * round(30 * count / peak):30} {count:,}")
    return table


def whole_set_counts(examples, report: DataReport):
    """Token sums of the whole set into the report (the summary counts every example, not the train split's);
    returns each example's length, as a numpy array (column-wise: no Python int per example)."""
    counts = arrow_columns(examples, "n_tokens", "n_trained")
    report.train_tokens, report.trained_tokens = column_sum(counts, "n_tokens"), column_sum(counts, "n_trained")
    return counts.column("n_tokens").to_numpy()


def show_examples(console: Console, tokenizer, examples, report: DataReport, lengths: list[int],
                  max_length: int, label_pad_token_id: int) -> None:
    plain = console.no_color or console.color_system is None
    shown_as = "between [[ ]]" if plain else "highlighted"
    for number, example in enumerate(examples, 1):
        segments = label_mask_segments(tokenizer, example["input_ids"], example["labels"], label_pad_token_id)
        trained = sum(1 for label in example["labels"] if label != label_pad_token_id)
        title = f"example {number}: {len(example['input_ids'])} tokens, {trained} trained ({shown_as})"
        console.print(Panel(example_text(segments, plain), title=title, title_align="left"))
    console.print(Panel(Group(summary_table(report, lengths, max_length)), title="whole data set",
                        title_align="left"))


def example_json(tokenizer, example, label_pad_token_id: int) -> str:
    segments = label_mask_segments(tokenizer, example["input_ids"], example["labels"], label_pad_token_id)
    return json.dumps({"input_ids": example["input_ids"], "labels": example["labels"],
                       "text": "".join(piece for piece, _ in segments),
                       "trained_text": [piece for piece, trained in segments if trained]}, ensure_ascii=False)


def quiet_datasets() -> None:
    """No second, longer copy of an error: datasets logs a file it cannot parse (at ERROR) just before raising,
    and the one line the CLI then prints says the same, with the line number. (Its progress bars stay.)"""
    import logging

    import datasets  # first: importing it sets its logger's level

    logging.getLogger(datasets.__name__).setLevel(logging.CRITICAL)


def show_data(config: RunConfig, count: int | None = None, as_jsonl: bool = False, console: Console | None = None):
    """The `tui-lora data` view: the first examples in file order, then the whole data set's summary."""
    from tui_lora.models import load_model_config, load_tokenizer
    from tui_lora.models import check_vocabulary
    from tui_lora.hub import resolve_sources

    quiet_datasets()
    config = resolve_sources(config)
    tokenizer = load_tokenizer(config)
    check_vocabulary(config, load_model_config(config), tokenizer)  # what `run` would refuse before training
    pad = config.collator.label_pad_token_id
    examples, report = encode_records(config, tokenizer)
    if config.data.streaming:  # no length: show what the first examples look like, count nothing
        shown = examples if as_jsonl and count is None else list(examples.take(count or 3))
        lengths = [len(example["input_ids"]) for example in shown]
    else:
        split_examples(examples, config, report)  # train/eval counts as the run will see them
        lengths = whole_set_counts(examples, report)
        wanted = len(examples) if as_jsonl and count is None else min(count or 3, len(examples))
        rows = range(wanted) if len(report.sources) == 1 or wanted == len(examples) else first_of_each(examples, wanted)
        shown = examples.select(rows).select_columns(MODEL_COLUMNS)
    if as_jsonl:
        for example in shown:
            print(example_json(tokenizer, example, pad))
        return
    show_examples(console or Console(), tokenizer, shown, report, lengths, config.tokenizer.max_length, pad)
