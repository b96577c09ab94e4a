"""CPU training speed, side by side: the hand-written baseline against tui-lora (issue 7).

Run from the repository root with the project installed:

    python bench/cpu_training.py [--repeats 3] [--max-length 512] [--batch-size 8] [--epochs 1] [--lora all-linear]

The same conversations (the shipped 360 Belle conversations, 10 % held out, seed 42), the same tiny
model (builtin:tiny-chat, float32, CPU), the same LoRA settings as the demo preset, the same examples
per optimizer step, learning rate, schedule and example order on every side:

* baseline       bench/baseline_train.py: Trainer + DataCollatorForSeq2Seq, padded batches, the
                 model's own loss over full-vocabulary logits of every position;
* tui-lora       the engine as `tui-lora run` drives it (collator.packing = "auto");
* tui-lora, padded  the engine with collator.packing = "off", to show what the engine itself costs.

Every run is a fresh Python process; the sides take turns, --repeats times, and each side's best run
counts (the least disturbed by other work on the machine; the median is printed too). The epoch's
wall time is the Trainer's train_runtime on every side (loading and data preparation are not timed).
The final evaluation loss of each side is measured by one function (baseline_train.evaluation_loss:
mean cross-entropy per trained token on the held-out conversations, padded batches), so a path
cannot flatter itself. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
REPO = Path(__file__).resolve().parents[1]

# the demo preset's adapter (presets/demo.toml)
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]}


def run_file(settings: dict, packing: str) -> dict:
    return {
        "model": {"name_or_path": "builtin:tiny-chat", "dtype": "float32", "device_map": "cpu"},
        "tokenizer": {"max_length": settings["max_length"]},
        "lora": settings["lora"],
        "data": {"path": "builtin:belle-sample", "format": "belle", "validation_split": 0.1},
        "collator": {"packing": packing},
        "training": {"output_dir": settings["output_dir"], "num_train_epochs": settings["epochs"],
                     "learning_rate": settings["learning_rate"], "lr_scheduler_type": settings["lr_scheduler_type"],
                     "warmup_ratio": settings["warmup_ratio"], "per_device_train_batch_size": settings["batch_size"],
                     "per_device_eval_batch_size": settings["eval_batch_size"], "eval_strategy": "no",
                     "save_strategy": "no", "logging_steps": 10, "report_to": ["none"], "seed": settings["seed"]},
    }


def prepare_examples(settings: dict, path: Path) -> dict:
    """tui-lora's encoded train and held-out examples, written for the baseline to read."""
    from tui_lora.config import config_from_dict
    from tui_lora.data.prepare import prepare_datasets
    from tui_lora.models import load_tokenizer

    config = config_from_dict(run_file(dict(settings, output_dir=str(path.parent / "prepare")), "auto"))
    tokenizer = load_tokenizer(config)
    train, evaluation, report = prepare_datasets(config, tokenizer)
    columns = ("input_ids", "attention_mask", "labels")
    examples = {"train": [{c: row[c] for c in columns} for row in train],
                "eval": [{c: row[c] for c in columns} for row in evaluation]}
    path.write_text(json.dumps(examples))
    return {"train_examples": report.train_examples, "eval_examples": report.eval_examples,
            "train_tokens": report.train_tokens, "trained_tokens": report.trained_tokens}


def tui_lora_side(settings: dict) -> dict:
    """One engine run of settings["run_file"] (in this process, as `tui-lora run` runs it), then the
    shared evaluation of its adapter on settings["examples"]' held-out list."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from baseline_train import evaluation_loss
    from tui_lora.config import config_from_dict
    from tui_lora.engine.session import execute
    from tui_lora.runs.folder import open_run_folder, resolve_paths

    config = resolve_paths(config_from_dict(settings["run_file"]))
    folder, _ = open_run_folder(config, None)
    events: list[dict] = []
    try:
        execute(config, folder, None, listeners=[events.append])
    finally:
        folder.release()
    summary = next(e for e in events if e["type"] == "summary")
    progress = [e for e in events if e["type"] == "progress"]
    memory = [e["gpu_memory"] for e in events if e["type"] == "train" and "gpu_memory" in e]
    data = next(e for e in events if e["type"] == "data")
    logs = [e["message"] for e in events if e["type"] == "log" and e["level"] == "info"]
    examples = json.loads(Path(settings["examples"]).read_text())
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.get("dtype", "float32")]
    base = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=dtype,
                                                device_map="cuda" if torch.cuda.is_available() else "cpu")
    model = PeftModel.from_pretrained(base, folder.adapter)
    pad_token_id = base.config.pad_token_id if base.config.pad_token_id is not None else 0
    return {"train_runtime": summary["train_runtime"], "train_loss": summary.get("train_loss"),
            "steps": summary["step"], "real_tokens": progress[-1]["tokens_seen"],
            "marks": [(e["elapsed"], e["tokens_seen"]) for e in progress],
            "peak_gpu_memory": max(memory) if memory else None,
            "data_train_tokens": data["train_tokens"],
            "batching": next(line for line in logs if line.startswith("batching:")),
            "other_logs": [line for line in logs if not line.startswith("batching:")],
            "eval_loss": evaluation_loss(model, examples["eval"], pad_token_id)}


def run_side(side: str, settings: dict, work: Path, index: int) -> dict:
    """A fresh process for one run of one side; returns its result."""
    run_settings = dict(settings, output_dir=str(work / f"{side}-{index}"))
    if side != "baseline":
        run_settings["run_file"] = run_file(run_settings, "auto" if side == "tui-lora" else "off")
    settings_file = work / f"{side}-{index}.json"
    result_file = work / f"{side}-{index}-result.json"
    settings_file.write_text(json.dumps(run_settings))
    script = ["bench/baseline_train.py"] if side == "baseline" else ["bench/cpu_training.py", "--side"]
    done = subprocess.run([sys.executable, *script, str(settings_file), str(result_file)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                               "HF_DATASETS_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return json.loads(result_file.read_text())


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--side":
        settings = json.loads(Path(sys.argv[2]).read_text())
        Path(sys.argv[3]).write_text(json.dumps(tui_lora_side(settings)))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--sides", default="baseline,tui-lora,tui-lora-padded")
    parser.add_argument("--lora", choices=("demo", "all-linear"), default="demo",
                        help="the demo preset's adapter (q/k/v/o, MLP and lm_head), or all-linear (lm_head frozen)")
    options = parser.parse_args()
    sides = options.sides.split(",")

    import torch
    import transformers

    with tempfile.TemporaryDirectory(prefix="cpu-training-") as tmp:
        work = Path(tmp)
        settings = {"model": str(REPO / "tui_lora" / "assets" / "tiny-chat"), "examples": str(work / "examples.json"),
                    "max_length": options.max_length, "epochs": options.epochs, "batch_size": options.batch_size,
                    "eval_batch_size": 16, "learning_rate": 2e-3, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05,
                    "lora": LORA if options.lora == "demo" else dict(LORA, target_modules="all-linear"),
                    "dtype": "float32", "seed": 42}
        counts = prepare_examples(settings, work / "examples.json")
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for index in range(options.repeats):
            for side in sides:
                result = run_side(side, settings, work, index)
                results[side].append(result)
                print(f"run {index + 1}/{options.repeats} {side:16s} {result['train_runtime']:7.2f} s  "
                      f"eval loss {result['eval_loss']:.4f}", file=sys.stderr, flush=True)

    for side in sides:
        if side != "baseline":
            assert all(r["data_train_tokens"] == counts["train_tokens"] for r in results[side]), \
                "the engine prepared other examples than the baseline got"
    real = counts["train_tokens"] * options.epochs
    best = {side: min(results[side], key=lambda r: r["train_runtime"]) for side in sides}
    print(f"{platform.node() or 'machine'}: {os.cpu_count()} cores ({cpu_model()}), python {platform.python_version()}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print(f"{counts['train_examples']} training / {counts['eval_examples']} held-out conversations, "
          f"{counts['train_tokens']:,} tokens per epoch ({counts['trained_tokens']:,} trained), max_length "
          f"{options.max_length}, batch {options.batch_size}, {options.epochs:g} epoch(s), LoRA {options.lora}, "
          f"best of {options.repeats}")
    if "baseline" in best and best["baseline"].get("padded_tokens"):
        share = 1 - best["baseline"]["real_tokens"] / best["baseline"]["padded_tokens"]
        print(f"baseline padding: {share:.0%} of the tokens in its batches")
    print()
    print("| side | epoch wall time, best (median) | real tokens/s | final eval loss | speed-up "
          "| eval loss vs baseline |")
    print("|---|---|---|---|---|---|")
    base_time = best["baseline"]["train_runtime"] if "baseline" in best else None
    base_loss = best["baseline"]["eval_loss"] if "baseline" in best else None
    for side in sides:
        runs, top = results[side], best[side]
        median = statistics.median(r["train_runtime"] for r in runs)
        speed = f"{base_time / top['train_runtime']:.2f}×" if base_time else "-"
        loss = f"{(top['eval_loss'] / base_loss - 1) * 100:+.2f} %" if base_loss else "-"
        print(f"| {side} | {top['train_runtime']:.2f} s ({median:.2f} s) | {real / top['train_runtime']:,.0f} | "
              f"{top['eval_loss']:.4f} | {speed} | {loss} |")
    for side in sides:
        if "batching" in best[side]:
            print(f"\n{side}: {best[side]['batching']}")


if __name__ == "__main__":
    main()
