"""The hand-written data preparation that tui-lora is measured against (issue 7).

This is the pipeline the seed notes (reference/seed-notes-zh.md) describe and most users write by
hand, in our own words. Records are read with ``datasets.load_dataset("json", ...)`` and turned into
examples by ``Dataset.map`` WITHOUT batching, one conversation per call, in one Python process: the
notes list ``map`` with ``batched`` as an option and show the text handled one turn at a time
(``tokenizer.encode(tokenizer.apply_chat_template(...), add_special_tokens=False)``). For each
conversation:

* the Belle record is split into turns at the line-start ``Human:`` / ``Assistant:`` markers, the
  contents stripped, and ``output`` appended as the last reply;
* for each assistant turn ``i`` the prompt is ``apply_chat_template(messages[:i],
  add_generation_prompt=True)``; the part of it not emitted yet (the system prompt the template
  adds, the user turn and the role headers) becomes prompt tokens, labelled -100; then the reply
  plus ``tokenizer.eos_token`` is tokenised on its own and labelled with its own ids;
* the pieces are concatenated and input_ids / labels cut to ``max_length`` (the notes'
  ``truncation=True, max_length=...``: a plain cut at the end).

Two ways people get the prompt tokens (``--prompt``):

``text`` (the default, the least work): render the prompt with ``tokenize=False`` and tokenise only
    the new text, so every character is tokenised once, as in tui-lora.
``ids``: call ``apply_chat_template`` with its default ``tokenize=True`` (as the notes' second
    snippet does) and keep the ids after those already emitted, so each turn tokenises the whole
    history again: work grows with the square of the number of turns.

Keeping only the new part of each prompt is what keeps the history from being repeated. For ChatML
the concatenation is the whole rendering without its final newline, so each example is tui-lora's
example without that last (untrained) token, unless tokenising the pieces apart merges tokens
differently at a piece boundary (bench/data_prep.py counts how often that happens).

Run alone (times only the baseline):  python bench/baseline_data.py [--conversations 20000] [--prompt ids]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_CHAT = REPO / "tui_lora" / "assets" / "tiny-chat"
BELLE_SAMPLE = REPO / "tui_lora" / "assets" / "data" / "belle_sample.jsonl"
IGNORE = -100
PROMPT_STYLES = ("text", "ids")

_MARKER = re.compile(r"(?:^|\n)(Human|Assistant):")


def parse_belle(record: dict) -> list[dict]:
    """A Belle record as messages, the way people split it by hand."""
    parts = _MARKER.split(record["instruction"])
    messages = [{"role": "user" if role == "Human" else "assistant", "content": content.strip()}
                for role, content in zip(parts[1::2], parts[2::2])]
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()  # the empty "Assistant:" that output fills
    messages.append({"role": "assistant", "content": record["output"].strip()})
    return messages


def build_example(messages: list[dict], tokenizer, max_length: int, prompt: str = "text") -> dict:
    """input_ids / attention_mask / labels for one conversation, turn by turn."""
    input_ids: list[int] = []
    labels: list[int] = []
    emitted = ""  # prompt="text": the text whose tokens are already in input_ids
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if prompt == "text":
            text = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False)
            if not text.startswith(emitted):
                raise ValueError("the chat template renders the history differently from turn to turn")
            prompt_ids = tokenizer.encode(text[len(emitted):], add_special_tokens=False)
        else:
            history = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
            history = list(history["input_ids"] if hasattr(history, "keys") else history)
            if history[:len(input_ids)] != input_ids:
                raise ValueError("the history tokenises differently from turn to turn")
            prompt_ids = history[len(input_ids):]
        reply = message["content"] + tokenizer.eos_token
        reply_ids = tokenizer.encode(reply, add_special_tokens=False)
        input_ids += prompt_ids + reply_ids
        labels += [IGNORE] * len(prompt_ids) + reply_ids
        if prompt == "text":
            emitted = text + reply
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def prepare_baseline(path: str | Path, tokenizer, max_length: int, prompt: str = "text"):
    """Raw Belle jsonl -> datasets.Dataset of examples (what the timing covers)."""
    import datasets

    records = datasets.load_dataset("json", data_files=str(path), split="train")

    def to_example(record):
        return build_example(parse_belle(record), tokenizer, max_length, prompt)

    return records.map(to_example, remove_columns=records.column_names)


def load_tokenizer(path: Path = TINY_CHAT):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def write_belle_records(path: Path, conversations: int, seed: int = 0) -> Path:
    """The shipped 360 Belle conversations, repeated and shuffled to ``conversations`` records."""
    lines = BELLE_SAMPLE.read_text(encoding="utf-8").splitlines()
    chosen = [lines[i % len(lines)] for i in range(conversations)]
    random.Random(seed).shuffle(chosen)
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--prompt", choices=PROMPT_STYLES, default="text")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "cache")  # before datasets is imported
        path = write_belle_records(Path(tmp) / "belle.jsonl", args.conversations)
        tokenizer = load_tokenizer()
        started = time.perf_counter()
        examples = prepare_baseline(path, tokenizer, args.max_length, args.prompt)
        seconds = time.perf_counter() - started
    print(f"baseline ({args.prompt} prompts): {len(examples)} conversations in {seconds:.1f} s "
          f"= {len(examples) / seconds:,.0f} conv/s")


if __name__ == "__main__":
    main()
