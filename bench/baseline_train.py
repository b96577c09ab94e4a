"""The hand-written training pipeline of the seed notes, in our own words: the baseline of issue 7.

What a user writes by hand (reference/seed-notes-zh.md): AutoModelForCausalLM + LoraConfig +
get_peft_model, a datasets.Dataset of tokenised examples, DataCollatorForSeq2Seq padding every batch
to its longest example, Trainer with TrainingArguments and a fixed per-device batch size. No packing;
the model's own loss, which turns every position of every padded row into full-vocabulary logits.

The examples are tui-lora's own encoded ones (input_ids, attention_mask, labels), handed over as
JSON, so that only training differs between the two sides: data preparation has its own benchmark
(bench/data_prep.py against bench/baseline_data.py).

Used by bench/cpu_training.py and bench/gpu_training.py, each run in a fresh process:

    python bench/baseline_train.py SETTINGS.json RESULT.json

SETTINGS.json holds the model folder, the examples file and the training settings (see `train`).
RESULT.json gets the Trainer's train_runtime, the real (non-padding) tokens trained, the padding
share, peak GPU memory, and the evaluation loss measured by `evaluation_loss`, the one evaluator both
sides are judged by.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]


def evaluation_loss(model, examples: list[dict], pad_token_id: int, batch_size: int = 16) -> float:
    """Mean cross-entropy per trained token over `examples`, in padded batches (the plain way), so
    both sides' adapters are measured by the same code whatever path trained them."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            longest = max(len(e["input_ids"]) for e in batch)
            ids = torch.tensor([e["input_ids"] + [pad_token_id] * (longest - len(e["input_ids"])) for e in batch])
            mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (longest - len(e["input_ids"])) for e in batch])
            labels = torch.tensor([e["labels"] + [-100] * (longest - len(e["labels"])) for e in batch])
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            targets = labels[:, 1:].to(device)
            trained = targets != -100
            total += F.cross_entropy(logits[:, :-1][trained].float(), targets[trained], reduction="sum").item()
            count += int(trained.sum())
    return total / count


class StepClock(TrainerCallback):
    """Notes (seconds since training began, tokens seen) after every step, so steady-state speed can
    be read past the first (warm-up) steps."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []
        self.started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()
        self.marks.append((time.perf_counter() - self.started, state.num_input_tokens_seen))


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train(settings: dict) -> dict:
    """One baseline run. settings: model (folder), examples (JSON file with "train" and "eval" lists),
    output_dir, epochs or max_steps, batch_size, eval_batch_size, learning_rate, lr_scheduler_type,
    warmup_ratio, lora {r, lora_alpha, lora_dropout, target_modules}, dtype, bf16, seed."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments, set_seed)

    examples = json.loads(Path(settings["examples"]).read_text())
    train_set = Dataset.from_list(examples["train"])
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.get("dtype", "float32")]
    model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=dtype, attn_implementation="sdpa",
                                                 device_map="cuda" if torch.cuda.is_available() else "cpu")
    model.config.use_cache = False
    lora = settings["lora"]
    set_seed(settings.get("seed", 42))  # the seed notes leave this out; here both sides start from the same adapter
    model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"],
                                             lora_dropout=lora["lora_dropout"],
                                             target_modules=lora["target_modules"], bias="none",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=settings["output_dir"],
        learning_rate=settings["learning_rate"],
        num_train_epochs=settings.get("epochs", 1),
        max_steps=settings.get("max_steps", -1),
        lr_scheduler_type=settings.get("lr_scheduler_type", "linear"),
        warmup_steps=settings.get("warmup_ratio", 0.0),
        per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=settings["eval_batch_size"],
        eval_strategy="no",
        save_strategy="no",
        logging_steps=settings.get("logging_steps", 10),
        report_to="none",
        bf16=settings.get("bf16", False),
        seed=settings.get("seed", 42),
        data_seed=settings.get("seed", 42),  # the same example order as tui-lora's run
        dataloader_num_workers=0,  # the seed notes use 4 workers; on 2 cores that only slows the baseline
        dataloader_pin_memory=torch.cuda.is_available(),
        include_num_input_tokens_seen="non_padding",  # counts real tokens; changes nothing in training
        disable_tqdm=True,
    )
    collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model, padding=True, pad_to_multiple_of=8,
                                      label_pad_token_id=-100, return_tensors="pt")
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator,
                      processing_class=tokenizer, callbacks=[clock])
    output = trainer.train()
    padded_tokens = _padded_tokens(trainer, trainer.state.global_step * args.gradient_accumulation_steps)
    result = {
        "train_runtime": output.metrics["train_runtime"],
        "train_loss": output.training_loss,
        "steps": trainer.state.global_step,
        "real_tokens": trainer.state.num_input_tokens_seen,
        "padded_tokens": padded_tokens,
        "marks": clock.marks,
        # over the whole process, as tui-lora's train events report it: weights, activations, optimizer
        "peak_gpu_memory": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
    }
    result["eval_loss"] = evaluation_loss(trainer.model, examples["eval"], tokenizer.pad_token_id)
    return result


def _padded_tokens(trainer, batches: int) -> int:
    """Tokens (real + padding) in the first `batches` padded batches the Trainer makes."""
    total = 0
    for _, batch in zip(range(batches), trainer.get_train_dataloader()):
        total += batch["input_ids"].numel()
    return total


def main() -> None:
    settings = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(train(settings)))


if __name__ == "__main__":
    main()
