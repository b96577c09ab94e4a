"""Label masks on real (tiny, locally trained) tokenizers with real chat templates.

Every tokenizer here is a byte-level BPE trained in a few milliseconds on the
sentences below, wrapped in PreTrainedTokenizerFast, with a chat template
written for these tests in the style of a model family.  Nothing is downloaded.
"""

from __future__ import annotations

import copy
import functools
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tui_lora.data.encode import (
    DEFAULT_CHAT_TEMPLATE,
    ConversationEncoder,
    label_mask_segments,
    render_label_mask,
)
from tui_lora.data.formats import BadRecord

PAD = -100

CORPUS = [
    "Hello there, how are you today?",
    "What is the capital of France? Paris is the capital. Say Paris.",
    "The capital is Paris and Paris is large.",
    "Repeat my first question. Who are you? You are a helpful assistant.",
    "You answer briefly. I am fine, thank you.",
    "你好，今天天气怎么样？今天天气很好。",
    "The quick brown fox jumps over the lazy dog.",
]

DEFAULT_SYSTEM = "You are a helpful assistant."
SYSTEM = "You answer briefly."

# Traps: a reply equal to a user turn's text, a user turn that contains the
# reply, Chinese, and a reply equal to the template's default system prompt.
EXCHANGES = [
    ("What is the capital of France?", "Paris is the capital."),
    ("Say Paris", "Paris"),
    ("你好，今天天气怎么样？", "今天天气很好。"),
    ("Repeat my first question.", "What is the capital of France?"),
    ("Who are you?", DEFAULT_SYSTEM),
]

# ChatML with a default system prompt when none is given (Qwen2.5 style).
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Llama-3 style headers; the template writes the BOS itself.
LLAMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)

# Qwen3 style: replies after the last user turn get a <think> block (empty if
# there is no reasoning); earlier replies lose their reasoning.
QWEN3_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- set answer = message['content'] -%}"
    "{%- set reasoning = '' -%}"
    "{%- if '</think>' in answer -%}"
    "{%- set reasoning = answer.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}"
    "{%- set answer = answer.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_user -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + answer + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>assistant\\n' + answer + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# Llama-2 / Mistral style; system folded into the first user turn; no BOS in
# the template although the tokenizer's post-processor adds one by default.
LLAMA2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('roles must alternate user/assistant') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '[INST] ' + (system if loop.first else '') + message['content'] | trim + ' [/INST]' -}}"
    "{%- else -%}"
    "{{- ' ' + message['content'] | trim + ' ' + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# What each template trains after a reply's content.
END_OF_TURN = {
    "chatml": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "qwen3": "<|im_end|>",
    "llama2": " </s>",
    "none": "<|im_end|>",
}


def _train_bpe(special_tokens: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=special_tokens,
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 3, trainer)
    return tokenizer


def _prepend_bos(tokenizer: Tokenizer, bos: str) -> None:
    """Make the tokenizer add a BOS by default, like Llama tokenizers do."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )


@functools.lru_cache(maxsize=None)
def _build(name: str) -> PreTrainedTokenizerFast:
    if name in ("chatml", "qwen3", "chatml_untemplated"):
        raw = _train_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        if name == "qwen3":
            tok.add_tokens(["<think>", "</think>"])  # added, not special, as in Qwen3
        tok.chat_template = {"chatml": CHATML_TEMPLATE, "qwen3": QWEN3_TEMPLATE}.get(name)
    elif name == "llama3":
        specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        raw = _train_bpe(specials)
        _prepend_bos(raw, "<|begin_of_text|>")
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
        tok.chat_template = LLAMA3_TEMPLATE
    elif name == "llama2":
        raw = _train_bpe(["<s>", "</s>"])
        _prepend_bos(raw, "<s>")
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
        tok.chat_template = LLAMA2_TEMPLATE
    elif name == "none":
        raw = _train_bpe(["<|endoftext|>"])
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    else:
        raise KeyError(name)
    return tok


def tokenizer_for(name: str) -> PreTrainedTokenizerFast:
    return _build(name)


def conversation(with_system: bool, exchanges=EXCHANGES) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}] if with_system else []
    for question, reply in exchanges:
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": reply})
    return messages


def reference_ids(tokenizer, messages, chat_template=None) -> list[int]:
    """input_ids from transformers itself (a BatchEncoding in v5, a list before)."""
    out = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def labelled_runs(example) -> list[tuple[int, int]]:
    """[start, end) token ranges of consecutive trained tokens."""
    runs, start = [], None
    for index, label in enumerate(example["labels"] + [PAD]):
        if label != PAD and start is None:
            start = index
        elif label == PAD and start is not None:
            runs.append((start, index))
            start = None
    return runs


def decoded_runs(tokenizer, example) -> list[str]:
    return [
        tokenizer.decode(example["input_ids"][a:b], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        for a, b in labelled_runs(example)
    ]


def assert_labels_copy_ids(example) -> None:
    assert len(example["labels"]) == len(example["input_ids"]) == len(example["attention_mask"])
    for token_id, label in zip(example["input_ids"], example["labels"]):
        assert label in (token_id, PAD)


def expected_runs(name: str, replies: list[str]) -> list[str]:
    return [reply + END_OF_TURN[name] for reply in replies]


# ---------------------------------------------------------------------------
# Exact masks, one template family at a time
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_system", [True, False], ids=["system", "no-system"])
@pytest.mark.parametrize("name", ["chatml", "llama3", "qwen3", "llama2", "none"])
def test_labels_are_exactly_replies_and_end_of_turn(name, with_system):
    tokenizer = tokenizer_for(name)
    encoder = ConversationEncoder(tokenizer, max_length=4096)
    messages = conversation(with_system)
    example = encoder.encode(messages)

    template = DEFAULT_CHAT_TEMPLATE if name == "none" else None
    assert example["input_ids"] == reference_ids(tokenizer, messages, template)
    assert_labels_copy_ids(example)
    assert example["truncated"] is False

    replies = [reply for _, reply in EXCHANGES]
    got = decoded_runs(tokenizer, example)
    if name == "llama2":
        # The template's space before the reply shares a token with the
        # reply's first word (boundary rule: any overlap trains the token).
        got = [run.removeprefix(" ") for run in got]
    assert got == expected_runs(name, replies)

    masked_text = tokenizer.decode(
        [t for t, lab in zip(example["input_ids"], example["labels"]) if lab == PAD],
        skip_special_tokens=False,
    )
    for question, _ in EXCHANGES:
        assert question.strip() in masked_text
    if with_system:
        assert SYSTEM in masked_text
    elif name == "chatml":
        assert DEFAULT_SYSTEM in masked_text  # default prompt present, untrained


def test_detected_layouts():
    assert tokenizer_for("chatml").chat_template == CHATML_TEMPLATE
    expectations = {
        "chatml": ("<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
        "llama3": ("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
        # the Qwen3 last-turn <think> block is not part of the common header
        "qwen3": ("<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
        "llama2": (" [/INST] ", " </s>"),
        "none": ("<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
    }
    for name, (header, end_of_turn) in expectations.items():
        encoder = ConversationEncoder(tokenizer_for(name), max_length=64)
        assert encoder.layout.reply_header == header, name
        assert encoder.layout.end_of_turn[0] == end_of_turn, name
        assert encoder.used_default_template is (name == "none"), name


def test_default_template_only_when_tokenizer_has_none():
    plain = ConversationEncoder(tokenizer_for("none"), max_length=256)
    assert plain.used_default_template and plain.chat_template == DEFAULT_CHAT_TEMPLATE
    # ChatML markers that are special tokens here: end of turn is the token.
    untemplated = tokenizer_for("chatml_untemplated")
    encoder = ConversationEncoder(untemplated, max_length=256)
    messages = conversation(with_system=True)
    example = encoder.encode(messages)
    assert encoder.used_default_template
    assert example["input_ids"] == reference_ids(untemplated, messages, DEFAULT_CHAT_TEMPLATE)
    assert decoded_runs(untemplated, example) == expected_runs("chatml", [r for _, r in EXCHANGES])
    assert tokenizer_for("none").chat_template is None  # the caller's tokenizer is untouched


def test_bos_matches_apply_chat_template():
    # Llama-3: template writes BOS and the tokenizer would add one too -> one BOS.
    llama3 = tokenizer_for("llama3")
    ids = ConversationEncoder(llama3, max_length=4096).encode(conversation(True))["input_ids"]
    assert ids[0] == llama3.bos_token_id and ids.count(llama3.bos_token_id) == 1
    # Llama-2-like: tokenizer adds BOS by default, template does not -> none,
    # exactly like apply_chat_template(tokenize=True).
    llama2 = tokenizer_for("llama2")
    assert llama2("x")["input_ids"][0] == llama2.bos_token_id
    messages = conversation(True)
    ids = ConversationEncoder(llama2, max_length=4096).encode(messages)["input_ids"]
    assert llama2.bos_token_id not in ids
    assert ids == reference_ids(llama2, messages)


def test_token_straddling_header_and_reply_is_trained():
    tokenizer = tokenizer_for("llama2")
    messages = [{"role": "user", "content": "Say Paris"}, {"role": "assistant", "content": "Paris"}]
    encoder = ConversationEncoder(tokenizer, max_length=256)
    example = encoder.encode(messages)
    text = encoder.render(messages)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    header_space = text.index(" [/INST] ") + len(" [/INST]")
    straddling = [i for i, (a, b) in enumerate(offsets) if a == header_space and b > a + 1]
    assert straddling, "corpus should make ' Paris' a single token"
    index = straddling[0]
    assert tokenizer.decode([example["input_ids"][index]]) == " Paris"
    assert example["labels"][index] == example["input_ids"][index]
    assert example["labels"][index - 1] == PAD  # "]" of [/INST]


def test_qwen3_reasoning_is_trained_only_where_printed():
    tokenizer = tokenizer_for("qwen3")
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "<think>\nthe capital\n</think>\n\nParis"},
        {"role": "user", "content": "Say Paris"},
        {"role": "assistant", "content": "<think>\nrepeat it\n</think>\n\nParis"},
    ]
    encoder = ConversationEncoder(tokenizer, max_length=512)
    example = encoder.encode(messages)
    assert example["input_ids"] == reference_ids(tokenizer, messages)
    assert decoded_runs(tokenizer, example) == [
        "Paris<|im_end|>",  # earlier turn: template dropped the reasoning
        "<think>\nrepeat it\n</think>\n\nParis<|im_end|>",
    ]
    # Last reply without reasoning: the template's empty <think> block is
    # prompt-side scaffolding and is not trained.
    plain = conversation(False, EXCHANGES[:3])
    example = encoder.encode(plain)
    assert decoded_runs(tokenizer, example) == expected_runs("qwen3", [r for _, r in EXCHANGES[:3]])
    assert "<think>" in encoder.render(plain)


# ---------------------------------------------------------------------------
# train_on
# ---------------------------------------------------------------------------


def test_train_on_last_and_all():
    tokenizer = tokenizer_for("chatml")
    messages = conversation(True)
    last = ConversationEncoder(tokenizer, 4096, train_on="last").encode(messages)
    assert decoded_runs(tokenizer, last) == [EXCHANGES[-1][1] + "<|im_end|>"]
    everything = ConversationEncoder(tokenizer, 4096, train_on="all").encode(messages)
    assert everything["labels"] == everything["input_ids"]
    assert everything["input_ids"] == last["input_ids"]


def test_train_on_is_validated():
    with pytest.raises(ValueError, match="train_on"):
        ConversationEncoder(tokenizer_for("chatml"), 64, train_on="user")
    with pytest.raises(ValueError, match="max_length"):
        ConversationEncoder(tokenizer_for("chatml"), 0)


# ---------------------------------------------------------------------------
# Truncation
# ---------------------------------------------------------------------------


def _full_and_runs(name="chatml", train_on="assistant"):
    tokenizer = tokenizer_for(name)
    full = ConversationEncoder(tokenizer, 4096, train_on=train_on).encode(conversation(True))
    return tokenizer, full, labelled_runs(full)


def test_truncation_drops_whole_trailing_exchanges():
    tokenizer, full, runs = _full_and_runs()
    second_reply_end = runs[1][1]
    # room for a bit more than two exchanges, not for the third reply
    max_length = second_reply_end + 3
    assert runs[2][1] > max_length
    example = ConversationEncoder(tokenizer, max_length).encode(conversation(True))
    assert example["truncated"] is True
    assert example["input_ids"] == full["input_ids"][:second_reply_end]
    assert example["labels"] == full["labels"][:second_reply_end]
    assert decoded_runs(tokenizer, example) == expected_runs("chatml", [r for _, r in EXCHANGES[:2]])


def test_truncation_with_train_on_last_trains_last_kept_reply():
    tokenizer, _, runs = _full_and_runs()
    example = ConversationEncoder(tokenizer, runs[1][1] + 3, train_on="last").encode(conversation(True))
    assert decoded_runs(tokenizer, example) == [EXCHANGES[1][1] + "<|im_end|>"]


def test_first_reply_too_long_is_skipped():
    # An example cut inside its only reply would teach a reply with no end: skip it, say why.
    tokenizer, full, runs = _full_and_runs()
    first_start, first_end = runs[0]
    for max_length in (first_start, first_start + 2, first_end - 1):
        with pytest.raises(BadRecord, match=f"the first reply ends at token {first_end}, past max_length"):
            ConversationEncoder(tokenizer, max_length).encode(conversation(True))
    example = ConversationEncoder(tokenizer, first_end).encode(conversation(True))
    assert example["truncated"] is True
    assert example["input_ids"] == full["input_ids"][:first_end]


def test_too_long_without_truncation_is_bad_record():
    tokenizer, full, _ = _full_and_runs()
    n = len(full["input_ids"])
    encoder = ConversationEncoder(tokenizer, n - 1, truncation=False)
    with pytest.raises(BadRecord, match=f"{n} tokens > max_length {n - 1}"):
        encoder.encode(conversation(True))
    assert ConversationEncoder(tokenizer, n, truncation=False).encode(conversation(True)) == full


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_reply_the_template_rewrites_is_reported_by_turn():
    tokenizer = copy.deepcopy(tokenizer_for("chatml"))
    tokenizer.chat_template = CHATML_TEMPLATE.replace("message['content']", "message['content'] | replace('secret', '***')")
    encoder = ConversationEncoder(tokenizer, 512)
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "the secret is Paris"}]
    with pytest.raises(BadRecord, match="message 1"):
        encoder.encode(messages)


def test_template_exception_becomes_bad_record():
    encoder = ConversationEncoder(tokenizer_for("llama2"), 512)
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"}]
    with pytest.raises(BadRecord, match="alternate"):
        encoder.encode(messages)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}],
        [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}],
    ],
    ids=["empty", "no-reply", "blank-reply", "bad-role"],
)
def test_unusable_conversations_are_bad_records(messages):
    with pytest.raises(BadRecord):
        ConversationEncoder(tokenizer_for("chatml"), 512).encode(messages)


# ---------------------------------------------------------------------------
# Batch, pickling, datasets, mask display
# ---------------------------------------------------------------------------


def test_encode_batch_equals_encode_and_skips_bad():
    tokenizer = tokenizer_for("llama3")
    encoder = ConversationEncoder(tokenizer, 4096)
    conversations = [conversation(True), conversation(False), conversation(False, EXCHANGES[2:3])]
    batch = encoder.encode_batch(conversations)
    singles = [encoder.encode(c) for c in conversations]
    for key in ("input_ids", "attention_mask", "labels", "truncated"):
        assert batch[key] == [single[key] for single in singles]

    bad = [{"role": "user", "content": "no reply"}]
    with pytest.raises(BadRecord):
        encoder.encode_batch([conversations[0], bad])
    skipped = encoder.encode_batch([bad, conversations[0], bad], skip_bad=True)
    assert skipped["input_ids"] == [singles[0]["input_ids"]]


def test_encoder_pickle_round_trip():
    encoder = ConversationEncoder(tokenizer_for("qwen3"), 4096, train_on="last")
    clone = pickle.loads(pickle.dumps(encoder))
    assert clone.encode(conversation(True)) == encoder.encode(conversation(True))
    assert clone.layout == encoder.layout and clone.train_on == "last"


def test_datasets_map_in_worker_processes():
    datasets = pytest.importorskip("datasets")
    encoder = ConversationEncoder(tokenizer_for("chatml"), 4096)
    rows = [{"messages": conversation(i % 2 == 0)} for i in range(8)] + [
        {"messages": [{"role": "user", "content": "no reply"}]}
    ]
    dataset = datasets.Dataset.from_list(rows)
    encoded = dataset.map(
        lambda batch: encoder.encode_batch(batch["messages"], skip_bad=True),
        batched=True,
        batch_size=3,
        num_proc=2,
        remove_columns=dataset.column_names,
    )
    assert len(encoded) == 8
    assert encoded[0]["labels"] == encoder.encode(conversation(True))["labels"]


def test_label_mask_segments_and_rendering():
    tokenizer = tokenizer_for("chatml")
    messages = conversation(False, EXCHANGES[:2])
    example = ConversationEncoder(tokenizer, 4096).encode(messages)
    segments = label_mask_segments(tokenizer, example["input_ids"], example["labels"])
    assert "".join(text for text, _ in segments) == tokenizer.decode(example["input_ids"])
    assert [text for text, trained in segments if trained] == expected_runs(
        "chatml", [r for _, r in EXCHANGES[:2]]
    )
    shown = render_label_mask(tokenizer, example["input_ids"], example["labels"])
    assert "[[Paris<|im_end|>]]" in shown
    assert shown.startswith("<|im_start|>system\n" + DEFAULT_SYSTEM)


def test_encode_module_imports_neither_torch_nor_transformers():
    code = (
        "import sys, tui_lora.data.encode; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
