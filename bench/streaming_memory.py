"""Peak memory of preparing a large data set in streaming mode (issue 7: under 2 GiB for 200,000).

Run from the repository root with the project installed:

    python bench/streaming_memory.py [--conversations 200000]

Writes a Belle jsonl file of --conversations records (the shipped 360 repeated and shuffled) to a
temporary folder, then prepares it the way a run does with data.streaming = true:
tui_lora.data.prepare.prepare_datasets on a RunConfig from config_from_dict, and iterates the
streamed examples to the end, as training would. Prints the peak resident set size of the process
(VmHWM in /proc/self/status; ru_maxrss where that is missing), the resident size before preparing
(Python, torch, transformers, the tokenizer), the file size and conversations/s. The fixed part of the
peak (imports, tokenizer) is there whatever the data size; the streamed part must not grow with it,
which --conversations 20000 against 200000 shows.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_data import load_tokenizer, write_belle_records  # noqa: E402

GIB = 1024 ** 3


def resident_bytes(field: str) -> int:
    """VmHWM (peak) or VmRSS (now) of this process, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=200_000)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["HF_DATASETS_CACHE"] = str(tmp / "cache")  # before datasets is imported
        path = write_belle_records(tmp / "belle.jsonl", args.conversations)

        import datasets  # noqa: F401

        from tui_lora.config import config_from_dict
        from tui_lora.data.prepare import prepare_datasets

        config = config_from_dict({
            "model": {"name_or_path": "builtin:tiny-chat"},
            "tokenizer": {"max_length": args.max_length},
            "data": {"path": str(path), "format": "belle", "streaming": True, "validation_split": 0.0},
            "training": {"output_dir": str(tmp / "run"), "max_steps": 1000, "eval_strategy": "no"},
        })
        tokenizer = load_tokenizer()
        before = resident_bytes("VmRSS")
        started = time.perf_counter()
        train, _, _ = prepare_datasets(config, tokenizer)
        examples = tokens = 0
        for example in train:
            examples += 1
            tokens += len(example["input_ids"])
        seconds = time.perf_counter() - started
        peak = resident_bytes("VmHWM")
        size = path.stat().st_size
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, python {platform.python_version()}: "
          f"{args.conversations:,} Belle conversations ({size / 1024 ** 2:,.0f} MiB of jsonl), streaming")
    print(f"examples: {examples:,} ({tokens:,} tokens) in {seconds:.1f} s = {examples / seconds:,.0f} conversations/s")
    print(f"resident before preparing: {before / GIB:.2f} GiB; peak resident: {peak / GIB:.2f} GiB "
          f"({'under' if peak < 2 * GIB else 'OVER'} the 2 GiB target)")
    assert examples == args.conversations, examples


if __name__ == "__main__":
    main()
