"""`tui-lora data`'s summary of a whole data set: how long it takes once the examples are tokenised (issue 15).

Run from the repository root with the project installed:

    python bench/data_summary.py [--conversations 50000] [--repeats 3]

The shipped Belle sample repeated to --conversations is tokenised once with the run's own code
(encode_records, builtin:tiny-chat, not timed); then the summary is timed as `tui-lora data` computes it:
the report's counts (prepare._count), the train/eval split with its token sums (split_examples), the
whole set's token sums and lengths, and the summary table with its length histogram. Best of --repeats.
Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

from tui_lora.assets import builtin_path  # noqa: E402
from tui_lora.config import config_from_dict  # noqa: E402
from tui_lora.data import prepare, preview  # noqa: E402
from tui_lora.engine.model import load_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sample = (builtin_path("builtin:belle-sample")).read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chats.jsonl"
        data.write_text("\n".join(sample[i % len(sample)] for i in range(args.conversations)) + "\n", encoding="utf-8")
        config = config_from_dict({"model": {"name_or_path": "builtin:tiny-chat"},
                                   "data": {"path": str(data), "format": "belle", "validation_split": 0.05},
                                   "tokenizer": {"max_length": 512}})
        tokenizer = load_tokenizer(config)
        examples, report = prepare.encode_records(config, tokenizer)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            prepare._count(examples, report, config.data.max_bad_share)
            prepare.split_examples(examples, config, report)
            lengths = preview.whole_set_counts(examples, report)
            preview.summary_table(report, lengths, config.tokenizer.max_length)
            times.append(time.perf_counter() - started)
    print(f"| {args.conversations:,} conversations | {min(times):.2f} s | {cpu_model()} |")
    print(json.dumps({"best_s": min(times), "all_s": times}))


if __name__ == "__main__":
    main()
