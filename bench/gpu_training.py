"""GPU training speed, side by side: the hand-written baseline against tui-lora (issue 7).

On a CUDA machine, from the repository root (bench/gpu_training.sh installs the wheels the GPU
machine lacks from .whl/ first; nothing comes from the network):

    python3 bench/gpu_training.py [--train 2048] [--sides baseline-8,tui-lora-8,tui-lora-32,tui-lora-64]

The shape of issue 7: a Qwen2.5-0.5B-shaped model (24 layers, hidden 896, 14 query / 2 key-value
heads, MLP 4864, vocabulary 151,936, tied embeddings) with random weights built from its config (no
download), LoRA r=8 on q_proj/v_proj, bfloat16 weights with bf16 mixed precision, SDPA, synthetic
Belle-style conversations of about 300 tokens on average (the shipped tiny tokenizer; one to three
exchanges, reply lengths spread like real chat, so padded batches carry a lot of padding), one epoch.

* baseline-B   bench/baseline_train.py: DataCollatorForSeq2Seq padding, a fixed batch of B examples,
               the model's own loss over full-vocabulary logits of every position;
* tui-lora-B   the engine as `tui-lora run` drives it, batches of B examples, collator.packing auto
               (on a GPU: packed rows, torch's varlen flash kernel where it passes its check, else
               SDPA per example; loss on trained positions only, output layer in chunks).

Both sides train on tui-lora's encoded examples (the same tokens), so only training differs. Every
run is a fresh process. Per run: real (non-padding) tokens per second after the first 5 steps (warm-
up and kernel selection excluded), peak GPU memory (torch.cuda.max_memory_allocated over the whole
process: weights, activations, optimizer), and the evaluation loss of the trained adapter on held-out
conversations, all measured by the same code (baseline_train.evaluation_loss). Prints a Markdown
table; writes results.json and results.md to $OUT (or /tmp/gpu-training) too. Sized to end within
about 6 minutes on an H100 or H200; each run is cut off after --run-timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tui_lora" / "assets" / "tiny-chat"
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
WARMUP_STEPS = 5

WORDS = ("the model adapter rank learning rate batch token memory gradient layer attention weight training data "
         "conversation answer question example value loss step epoch kernel padding sequence length because "
         "when which where however therefore small large fast slow good better best first second next last "
         "you we they it this that these those is are was were can could should would will may might must "
         "please explain why how what time day city river mountain music book story friend family school work "
         "water food tea coffee weather today tomorrow yesterday people world country language number system").split()


def qwen_like_model(folder: Path, dry_run: bool = False) -> None:
    """A Qwen2.5-0.5B-shaped model with random weights, saved with the tiny model's tokenizer
    (dry_run: a two-layer model of the same kind on the CPU, to check this script without a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    shape = (dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2) if not dry_run else
             dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2))
    config = Qwen2Config(**shape, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, use_sliding_window=False, pad_token_id=0, eos_token_id=2,
                         bos_token_id=None)
    torch.manual_seed(0)
    with torch.device("cpu" if dry_run else "cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if dry_run else torch.bfloat16)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY / name, folder / name)


def conversations(count: int, words_per_reply: float, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Conversations of one to three (question, reply) exchanges; reply lengths are log-normal, as
    chat replies are, so batches of them carry a lot of padding."""
    rng = random.Random(seed)

    def text(mean: float) -> str:
        n = max(2, int(rng.lognormvariate(math.log(mean), 0.7)))
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    return [[(text(words_per_reply / 4), text(words_per_reply)) for _ in range(rng.choice((1, 1, 2, 3)))]
            for _ in range(count)]


def belle_record(exchanges: list[tuple[str, str]]) -> dict:
    """Belle multi-turn format: earlier exchanges in `instruction` (Human:/Assistant:), the last reply in `output`."""
    history = "".join(f"Human:{q}\nAssistant:{a}\n" for q, a in exchanges[:-1])
    return {"instruction": f"{history}Human:{exchanges[-1][0]}\nAssistant:", "input": "", "output": exchanges[-1][1]}


def write_data(path: Path, count: int, target_tokens: float) -> float:
    """Write `count` Belle records whose rendered length averages about target_tokens; returns that mean
    as measured on a sample (the template's own rendering, tokenised by the model's tokenizer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY)

    def mean_tokens(words: float) -> float:
        lengths = []
        for exchanges in conversations(200, words, seed=1):
            messages = [{"role": role, "content": content} for q, a in exchanges
                        for role, content in (("user", q), ("assistant", a))]
            lengths.append(len(tokenizer(tokenizer.apply_chat_template(messages, tokenize=False))["input_ids"]))
        return sum(lengths) / len(lengths)

    words = 60.0
    for _ in range(3):  # the mean grows about linearly with the words per reply
        words *= target_tokens / mean_tokens(words)
    path.write_text("".join(json.dumps(belle_record(c)) + "\n" for c in conversations(count, words)))
    return mean_tokens(words)


def run_file(model: Path, data: Path, output_dir: Path, batch_size: int, validation_split: float,
             dry_run: bool = False) -> dict:
    return {
        "model": {"name_or_path": str(model), "dtype": "float32" if dry_run else "bfloat16", "device_map": "auto"},
        "tokenizer": {"max_length": 1024},
        "lora": LORA,
        "data": {"path": str(data), "format": "belle", "validation_split": validation_split},
        "training": {"output_dir": str(output_dir), "num_train_epochs": 1, "learning_rate": 2e-4,
                     "lr_scheduler_type": "linear", "per_device_train_batch_size": batch_size,
                     "per_device_eval_batch_size": 16, "bf16": not dry_run, "eval_strategy": "no",
                     "save_strategy": "no", "logging_steps": 10, "report_to": ["none"], "seed": 42},
    }


def prepare_examples(raw: dict, path: Path) -> dict:
    from tui_lora.config import config_from_dict
    from tui_lora.data.prepare import prepare_datasets
    from tui_lora.models import load_tokenizer

    config = config_from_dict(raw)
    train, evaluation, report = prepare_datasets(config, load_tokenizer(config))
    columns = ("input_ids", "attention_mask", "labels")
    path.write_text(json.dumps({"train": [{c: row[c] for c in columns} for row in train],
                                "eval": [{c: row[c] for c in columns} for row in evaluation]}))
    return {"train_examples": report.train_examples, "eval_examples": report.eval_examples,
            "train_tokens": report.train_tokens, "trained_tokens": report.trained_tokens}


def steady_rate(marks: list) -> float | None:
    """Real tokens per second from the end of step WARMUP_STEPS to the last step."""
    if len(marks) <= WARMUP_STEPS + 1:
        return None
    (t0, n0), (t1, n1) = marks[WARMUP_STEPS - 1], marks[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else None


def run_side(name: str, settings: dict, work: Path, timeout: float) -> dict:
    settings_file, result_file = work / f"{name}.json", work / f"{name}-result.json"
    settings_file.write_text(json.dumps(settings))
    script = ["bench/baseline_train.py"] if name.startswith("baseline") else ["bench/cpu_training.py", "--side"]
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, *script, str(settings_file), str(result_file)], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return {"error": f"cut off after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1][:300],
                "log": (done.stdout[-2000:] + done.stderr[-4000:])}
    result = json.loads(result_file.read_text())
    result["wall"] = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=2048, help="training conversations (one epoch)")
    parser.add_argument("--eval", type=int, default=64, help="held-out conversations")
    parser.add_argument("--mean-tokens", type=float, default=300.0)
    parser.add_argument("--sides", default="baseline-8,tui-lora-8,tui-lora-32,tui-lora-64")
    parser.add_argument("--run-timeout", type=float, default=150.0)
    parser.add_argument("--dry-run", action="store_true", help="a small model on the CPU: checks the script only")
    options = parser.parse_args()
    dry = options.dry_run

    import peft
    import torch
    import transformers

    if not torch.cuda.is_available() and not dry:
        raise SystemExit("no CUDA GPU: this benchmark measures GPU training (bench/cpu_training.py is the CPU one)")
    out = Path(os.environ.get("OUT") or "/tmp/gpu-training")
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu-training-work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.monotonic()
    device = torch.cuda.get_device_name(0) if not dry else "dry run on the CPU"
    header = f"{device}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
    print(header, flush=True)

    model = work / "qwen2.5-0.5b-shaped"
    qwen_like_model(model, dry)
    data = work / "belle-synthetic.jsonl"
    total = options.train + options.eval
    mean = write_data(data, total, options.mean_tokens)
    split = options.eval / total
    counts = prepare_examples(run_file(model, data, work / "prepare", 8, split, dry), work / "examples.json")
    average = counts["train_tokens"] / counts["train_examples"]
    print(f"model and data ready in {time.monotonic() - began:.0f} s: {counts['train_examples']} training / "
          f"{counts['eval_examples']} held-out conversations, {average:.0f} tokens each on average (estimate "
          f"{mean:.0f}), {counts['trained_tokens'] / counts['train_tokens']:.0%} trained", flush=True)

    results = {}
    for name in options.sides.split(","):
        batch = int(name.rsplit("-", 1)[1])
        if name.startswith("baseline"):
            settings = {"model": str(model), "examples": str(work / "examples.json"), "output_dir": str(work / name),
                        "epochs": 1, "batch_size": batch, "eval_batch_size": 16, "learning_rate": 2e-4,
                        "lr_scheduler_type": "linear", "warmup_ratio": 0.0, "lora": LORA,
                        "dtype": "float32" if dry else "bfloat16", "bf16": not dry, "seed": 42}
        else:
            settings = {"model": str(model), "examples": str(work / "examples.json"),
                        "dtype": "float32" if dry else "bfloat16",
                        "run_file": run_file(model, data, work / name, batch, split, dry)}
        result = run_side(name, settings, work, options.run_timeout)
        results[name] = result
        if "error" in result:
            print(f"{name}: failed: {result['error']}", flush=True)
            if result.get("log"):
                print(result["log"], flush=True)
            continue
        result["steady_tokens_per_second"] = steady_rate(result["marks"])
        print(f"{name}: {result.get('steady_tokens_per_second') or 0:,.0f} real tokens/s, peak "
              f"{(result.get('peak_gpu_memory') or 0) / 2**30:.1f} GiB, eval loss {result['eval_loss']:.4f}"
              f"{'; ' + result['batching'] if 'batching' in result else ''}", flush=True)
        for line in result.get("other_logs", []):
            print(f"    {line}", flush=True)

    lines = [header, "", f"{counts['train_examples']} synthetic Belle-style conversations of "
             f"{average:.0f} tokens on average, one epoch; "
             f"{counts['eval_examples']} held out. Real tokens/s after the first {WARMUP_STEPS} steps.", "",
             "| run | examples per step | real tokens/s | peak GPU memory | padding | final eval loss "
             "| vs baseline-8 |",
             "|---|---|---|---|---|---|---|"]
    base = results.get("baseline-8", {})
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | {name.rsplit('-', 1)[1]} | failed: {result['error']} | | | | |")
            continue
        rate = result.get("steady_tokens_per_second")
        padding = (f"{1 - result['real_tokens'] / result['padded_tokens']:.0%}" if result.get("padded_tokens")
                   else "none (packed)" if "packing" in result.get("batching", "") else "-")
        ratio = (f"{rate / base['steady_tokens_per_second']:.2f}×"
                 if rate and base.get("steady_tokens_per_second") else "-")
        lines.append(f"| {name} | {name.rsplit('-', 1)[1]} | {rate or 0:,.0f} | "
                     f"{(result.get('peak_gpu_memory') or 0) / 2**30:.1f} GiB | {padding} | "
                     f"{result['eval_loss']:.4f} | {ratio} |")
    for name, result in results.items():
        if "batching" in result:
            lines.append(f"\n{name}: {result['batching']}")
    lines.append(f"\nwhole benchmark: {time.monotonic() - began:.0f} s")
    print("\n".join(lines), flush=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"header": header, "counts": counts, "results": results}, indent=1))


if __name__ == "__main__":
    main()
