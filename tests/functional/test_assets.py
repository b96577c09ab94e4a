"""Checks on the demo assets shipped in tui_lora/assets/.

The assets are produced by scripts/build_assets.py; these tests make sure the
shipped copies load through the ordinary transformers entry points, that the
sample data follows the Belle multi-turn format, and that the build script
still reproduces the shipped files byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS = REPO_ROOT / "tui_lora" / "assets"
MODEL_DIR = ASSETS / "tiny-chat"
DATA_FILE = ASSETS / "data" / "belle_sample.jsonl"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_assets.py"

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
MARKER = re.compile(r"(?:^|\n)(Human|Assistant):")
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL_DIR))


@pytest.fixture(scope="module")
def records() -> list[dict]:
    with open(DATA_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_turns(record: dict) -> list[tuple[str, str]]:
    """Split a Belle record into (role, text) turns, the output included."""
    parts = MARKER.split(record["instruction"])
    assert parts[0] == "", "instruction must start with a Human: marker"
    turns = list(zip(parts[1::2], parts[2::2]))
    role, last = turns[-1]
    assert role == "Assistant" and last == "", "prompt must end with \\nAssistant:"
    return turns[:-1] + [("Assistant", record["output"])]


def sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


# -- model and tokenizer -------------------------------------------------------


def test_model_loads_without_missing_weights(tokenizer):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]
    assert type(model).__name__ == "Qwen2ForCausalLM"

    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert PROJECTIONS <= leaf_names

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == im_end and model.config.pad_token_id == pad
    assert model.generation_config.eos_token_id == im_end
    assert model.generation_config.pad_token_id == pad


def test_tokenizer_special_tokens_and_round_trip(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") != tokenizer.unk_token_id

    # No BOS is prepended: plain text encodes to plain text tokens only.
    ids = tokenizer.encode("hello")
    assert not set(ids) & set(tokenizer.all_special_ids)

    for text in ["What is 17 + 25?", "把5公里换算成米。", "LoRA的r = 8, lora_alpha = 16.",
                 "Mixed 中英文 text\nwith  two spaces and a new line."]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text

    # Each special token stays a single token inside text.
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_chat_template_adds_default_system_prompt(tokenizer):
    messages = [{"role": "user", "content": "Hi!"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == DEFAULT_SYSTEM + "<|im_start|>user\nHi!<|im_end|>\n"

    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == text + "<|im_start|>assistant\n"


def test_chat_template_explicit_system_replaces_default(tokenizer):
    messages = [
        {"role": "system", "content": "Answer in Chinese."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "你好!"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert "You are a helpful assistant." not in text
    assert text == ("<|im_start|>system\nAnswer in Chinese.<|im_end|>\n"
                    "<|im_start|>user\nHi!<|im_end|>\n"
                    "<|im_start|>assistant\n你好!<|im_end|>\n")


def test_model_folder_is_small():
    total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert total < 5 * 1024 * 1024, f"tiny-chat is {total} bytes"


# -- sample data ----------------------------------------------------------------


def test_dataset_format(records):
    assert len(records) >= 300
    for rec in records:
        assert set(rec) == {"instruction", "input", "output"}
        assert rec["input"] == ""
        assert rec["output"].strip()
        assert "Human:" not in rec["output"] and "Assistant:" not in rec["output"]

        turns = parse_turns(rec)
        roles = [role for role, _ in turns]
        assert roles == ["Human", "Assistant"] * (len(turns) // 2), roles
        assert all(text.strip() for _, text in turns)


def test_dataset_covers_turn_counts_and_languages(records):
    counts = {len(parse_turns(rec)) // 2 for rec in records}
    assert counts == {1, 2, 3, 4, 5, 6}

    texts = [rec["instruction"] + rec["output"] for rec in records]
    chinese = sum(1 for t in texts if CJK.search(t))
    english_only = len(texts) - chinese
    # Roughly balanced: neither language is a small minority.
    assert chinese >= len(texts) // 4 and english_only >= len(texts) // 4


# -- reproducibility -------------------------------------------------------------


def test_rebuild_is_byte_identical(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for sub in ("data", "tiny-chat"):
        assert sha256_tree(tmp_path / sub) == sha256_tree(ASSETS / sub), f"{sub}/ differs"
