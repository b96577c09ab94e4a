"""Data preparation speed, side by side: the hand-written baseline against tui-lora (issue 7).

Run from the repository root with the project installed:

    python bench/data_prep.py [--conversations 20000] [--repeats 3]

Both sides start from the same raw Belle jsonl file (the shipped 360 conversations repeated and
shuffled to --conversations) and the same tokenizer (builtin:tiny-chat) and end with tokenised,
labelled examples in a datasets.Dataset:

* baseline (bench/baseline_data.py): load_dataset("json") + Dataset.map one conversation per call,
  each turn templated and tokenised on its own; both prompt styles, ``text`` (the least work) and
  ``ids`` (apply_chat_template's default tokenize=True, the whole history each turn);
* tui-lora: tui_lora.data.prepare.encode_records with a RunConfig from config_from_dict
  (data.format = "belle"), with data.num_proc = 1 and 2 (this machine has 2 cores).

Every timed run is a fresh Python process with its own empty HF_DATASETS_CACHE, so no side reuses
a cache file or a warm tokenizer cache of another; imports and tokenizer loading are not timed. With
--repeats N each configuration runs N times, interleaved, and the best run counts (the least
disturbed by other work on the machine); CPU seconds (this process and its worker processes) are
printed too. Before timing, the labels of both sides are compared on --check conversations.
Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_data import (IGNORE, PROMPT_STYLES, REPO, build_example, load_tokenizer,  # noqa: E402
                           parse_belle, prepare_baseline, write_belle_records)
from machine import cpu_model  # noqa: E402


def tui_lora_config(path: Path, num_proc: int, max_length: int, output_dir: Path):
    from tui_lora.config import config_from_dict

    return config_from_dict({
        "model": {"name_or_path": "builtin:tiny-chat"},
        "tokenizer": {"max_length": max_length},
        "data": {"path": str(path), "format": "belle", "num_proc": num_proc, "validation_split": 0.0},
        "training": {"output_dir": str(output_dir), "eval_strategy": "no"},
    })


# --------------------------------------------------------------------------- one timed run


def timed_run(side: str, path: Path, max_length: int) -> dict:
    """In a fresh process (see main): prepare the file once and say how long it took."""
    import datasets  # noqa: F401  imported before the clock starts, as on the other side

    tokenizer = load_tokenizer()
    cpu = _cpu_seconds()
    started = time.perf_counter()
    if side.startswith("baseline-"):
        examples = prepare_baseline(path, tokenizer, max_length, side.removeprefix("baseline-"))
    else:
        from tui_lora.data.prepare import encode_records

        num_proc = int(side.removeprefix("tui-lora-np"))
        config = tui_lora_config(path, num_proc, max_length, Path(os.environ["HF_DATASETS_CACHE"]) / "run")
        examples, _ = encode_records(config, tokenizer)
    seconds = time.perf_counter() - started
    return {"side": side, "examples": len(examples), "seconds": seconds, "cpu": _cpu_seconds() - cpu}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # datasets' worker processes, once reaped
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_in_fresh_process(side: str, path: Path, max_length: int, tmp: Path) -> dict:
    cache = Path(tempfile.mkdtemp(prefix=f"cache-{side}-", dir=tmp))
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run([sys.executable, __file__, "--one", side, "--file", str(path), "--max-length",
                          str(max_length)], env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- label check


def compare_labels(path: Path, max_length: int, tmp: Path) -> dict:
    """Both sides on the same records; how many examples agree, and how the others differ.

    tui-lora tokenises the whole rendering, whose last token is the newline after the final
    <|im_end|> (untrained); the baseline's last piece ends at <|im_end|>. So "agree" means: the
    baseline's input_ids and labels are tui-lora's without an untrained tail.
    """
    os.environ["HF_DATASETS_CACHE"] = str(tmp / "check-cache")
    from tui_lora.data.prepare import encode_records

    tokenizer = load_tokenizer()
    ours, _ = encode_records(tui_lora_config(path, 1, max_length, tmp / "check-run"), tokenizer)
    ours = ours.select_columns(["input_ids", "labels"])[:]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    result = {"conversations": len(records)}
    tails = set()
    for style in PROMPT_STYLES:
        agree = differ = trained_differ = 0
        for index, record in enumerate(records):
            base = build_example(parse_belle(record), tokenizer, max_length, style)
            ids, labels = ours["input_ids"][index], ours["labels"][index]
            n = len(base["input_ids"])
            tail = labels[n:]
            if ids[:n] == base["input_ids"] and labels[:n] == base["labels"] and all(x == IGNORE for x in tail):
                agree += 1
                tails.add(tokenizer.decode(ids[n:]))
            else:
                differ += 1
                if _trained(ids, labels) != _trained(base["input_ids"], base["labels"]):
                    trained_differ += 1
        result[style] = {"agree": agree, "differ": differ, "trained_tokens_differ": trained_differ}
    result["untrained_tails"] = sorted(tails)
    return result


def _trained(ids: list[int], labels: list[int]) -> list[tuple[int, int]]:
    return [(position, token) for position, (token, label) in enumerate(zip(ids, labels)) if label != IGNORE]


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--check", type=int, default=2000, help="conversations whose labels are compared")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one timed run in this process
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(timed_run(args.one, Path(args.file), args.max_length)))
        return

    sides = [f"baseline-{style}" for style in PROMPT_STYLES] + ["tui-lora-np1", "tui-lora-np2"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.check:
            check = compare_labels(write_belle_records(tmp / "check.jsonl", args.check, seed=1),
                                   args.max_length, tmp)
        path = write_belle_records(tmp / "belle.jsonl", args.conversations)
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side in sides:
                runs[side].append(run_in_fresh_process(side, path, args.max_length, tmp))
                print(f"  {side}: {runs[side][-1]['seconds']:.2f} s", file=sys.stderr)

    best = {side: min(found, key=lambda run: run["seconds"]) for side, found in runs.items()}
    for side, run in best.items():
        assert run["examples"] == args.conversations, (side, run)
    rate = {side: args.conversations / run["seconds"] for side, run in best.items()}
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu_model()}), python {platform.python_version()}; "
          f"{args.conversations:,} Belle conversations, max_length {args.max_length}, best of {args.repeats}")
    print()
    print("| side | seconds | CPU seconds | conversations/s | × baseline (text) | × baseline (ids) |")
    print("|---|---|---|---|---|---|")
    names = {"baseline-text": "baseline, text prompts", "baseline-ids": "baseline, ids prompts",
             "tui-lora-np1": "tui-lora, num_proc 1", "tui-lora-np2": "tui-lora, num_proc 2"}
    for side in sides:
        print(f"| {names[side]} | {best[side]['seconds']:.2f} | {best[side]['cpu']:.1f} | {rate[side]:,.0f} | "
              f"{rate[side] / rate['baseline-text']:.2f} | {rate[side] / rate['baseline-ids']:.2f} |")
    if args.check:
        print()
        print(f"Labels on {check['conversations']:,} conversations: " + "; ".join(
            f"{style} baseline agrees on {check[style]['agree']:,}, differs on {check[style]['differ']:,} "
            f"(trained tokens differ on {check[style]['trained_tokens_differ']:,})" for style in PROMPT_STYLES)
            + f"; tui-lora's extra untrained tail: {check['untrained_tails']!r}")


if __name__ == "__main__":
    main()
