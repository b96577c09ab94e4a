"""`tui-lora data` on a big data set: the whole command, and its summary alone (issue 15).

Run from the root of the tree to measure, with the project installed:

    python bench/data_summary.py [--conversations 50000] [--repeats 3]

Data: --conversations short multi-turn conversations in `messages` format (2 to 4 exchanges of a few
words each, seeded), written to a jsonl file; model builtin:tiny-chat; validation_split 0.05.

* `tui-lora data RUN --count 1` in a fresh process (`python -m tui_lora.cli` from this tree), first with
  an empty datasets cache (the tokenising included), then again with the tokenised cache warm, where
  what is left is start-up, reading the cache, the split and the summary;
* the summary alone, in this process, on examples tokenised once (not timed): the report's counts
  (prepare._count), the train/eval split with its token sums (split_examples), the whole set's token
  sums and lengths, and the summary table with its length histogram, as show_data computes them.

Best of --repeats for each. The tree measured is the one this file sits in (a checkout of an older
commit measures the code before; its summary is then timed as that code computed it). Prints
Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TREE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TREE))  # this tree's tui_lora, before an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

WORDS = ("the model a reply short long turn data set token train loss step what why how when where "
         "please explain again more less thanks good fine yes no maybe later now first last").split()


def write_conversations(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 24)))

    with open(path, "w", encoding="utf-8") as out:
        for _ in range(count):
            messages = []
            for _ in range(rng.randint(2, 4)):
                messages += [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
            out.write(json.dumps({"messages": messages}) + "\n")


def run_file(folder: Path, data: Path) -> tuple[Path, dict]:
    raw = {"model": {"name_or_path": "builtin:tiny-chat"},
           "data": {"path": str(data), "format": "messages", "validation_split": 0.05},
           "tokenizer": {"max_length": 512},
           "training": {"output_dir": str(folder / "run")}}
    import tomli_w

    path = folder / "run.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path, raw


def time_command(path: Path, cache: Path) -> float:
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tui_lora.cli", "data", str(path), "--count", "1"], cwd=TREE,
                          env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tui-lora data failed: {done.stderr.strip()[-400:]}")
    return took


def time_summary(raw: dict, repeats: int) -> list[float]:
    from tui_lora.config import config_from_dict
    from tui_lora.data import prepare, preview
    from tui_lora.models import load_tokenizer

    config = config_from_dict(raw)
    examples, report = prepare.encode_records(config, load_tokenizer(config))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        # encode_records counts before it filters out bad rows; here they are counted on what is left (none are bad)
        prepare._count(examples, report, config.data.max_bad_share)
        prepare.split_examples(examples, config, report)
        if hasattr(preview, "whole_set_counts"):
            lengths = preview.whole_set_counts(examples, report)
        else:  # the code before issue 15: show_data's own lines
            report.train_tokens, report.trained_tokens = sum(examples["n_tokens"]), sum(examples["n_trained"])
            lengths = examples["n_tokens"]
        preview.summary_table(report, lengths, config.tokenizer.max_length)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "chats.jsonl"
        write_conversations(data, args.conversations)
        path, raw = run_file(folder, data)
        cold, warm = [], []
        for attempt in range(args.repeats):
            cache = folder / f"cache-{attempt}"
            cold.append(time_command(path, cache))
            warm.append(time_command(path, cache))
            shutil.rmtree(cache)
        os.environ["HF_DATASETS_CACHE"] = str(folder / "cache-summary")
        summary = time_summary(raw, args.repeats)
    import tui_lora

    print(f"tree: {Path(tui_lora.__file__).parent.parent}; {args.conversations:,} conversations; {cpu_model()}, "
          f"{os.cpu_count()} cores")
    print("| what | best s | all |")
    print("|---|---|---|")
    for name, times in (("`tui-lora data RUN --count 1`, empty cache", cold),
                        ("`tui-lora data RUN --count 1`, tokenised cache warm", warm),
                        ("the summary alone (counts, split, sums, histogram)", summary)):
        print(f"| {name} | {min(times):.2f} | {' '.join(f'{t:.2f}' for t in times)} |")
    print(json.dumps({"cold_s": cold, "warm_s": warm, "summary_s": summary}))


if __name__ == "__main__":
    main()
