"""The fast encoding path does the same work as the slow ones: same tokens, same labels.

bench/data_prep.py times tui-lora's data preparation against the hand-written baseline in
bench/baseline_data.py (each turn templated and tokenised on its own). These tests pin down that
the speed never comes from doing less: on the shipped sample both give the same tokens and the same
trained tokens, and the shortcuts inside the encoder (reply ranges found by binary search, the
direct Rust tokenizer call, one template call per batch) agree with the token-by-token code.
No timing here.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import random

import pytest
from conftest import REPO, tiny_run_file
from test_label_masks import CHATML_TEMPLATE, CORPUS, EXCHANGES, conversation, tokenizer_for

from tui_lora.assets import BUILTINS
from tui_lora.config import config_from_dict
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tui_lora.data.encode import (
    ConversationEncoder,
    FastPaths,
    _ranges_by_lookup,
    _reply_token_ends,
    _reply_token_ranges,
    _span_owner_of_each_token,
)
from tui_lora.data.formats import to_messages
from tui_lora.data.prepare import prepare_datasets
from tui_lora.models import load_tokenizer

PAD = -100


def _baseline_module():
    spec = importlib.util.spec_from_file_location("baseline_data", REPO / "bench" / "baseline_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample():
    """The shipped sample through prepare_datasets, in file order, with the tokenizer."""
    config = config_from_dict(tiny_run_file(REPO / "unused", data={"format": "belle", "max_samples": 0,
                                                                    "validation_split": 0.0},
                                            tokenizer={"max_length": 1024}, training={"eval_strategy": "no"}))
    tokenizer = load_tokenizer(config)
    train, _, report = prepare_datasets(config, tokenizer)
    records = [json.loads(line) for line in BUILTINS["belle-sample"].read_text(encoding="utf-8").splitlines()]
    assert report.skipped == 0 and report.truncated == 0 and len(train) == len(records)
    return records, train[:], tokenizer


@pytest.mark.parametrize("prompt", ["text", "ids"])
def test_sample_labels_equal_the_hand_written_baseline(sample, prompt):
    baseline = _baseline_module()
    records, ours, tokenizer = sample
    newline = tokenizer.encode("\n", add_special_tokens=False)
    for index, record in enumerate(records):
        base = baseline.build_example(baseline.parse_belle(record), tokenizer, 1024, prompt)
        ids, labels = ours["input_ids"][index], ours["labels"][index]
        # the baseline stops at the last <|im_end|>; the chat template's rendering (ours) ends with a newline
        assert ids == base["input_ids"] + newline, index
        assert labels == base["labels"] + [PAD], index


def test_sample_trains_exactly_the_replies(sample):
    """Where the baseline is right: the trained tokens are each assistant reply and its <|im_end|>."""
    records, ours, tokenizer = sample
    for index, record in enumerate(records):
        replies = [m["content"] for m in to_messages(record, "belle") if m["role"] == "assistant"]
        runs, current = [], []
        for token, label in zip(ours["input_ids"][index], ours["labels"][index] + [PAD]):
            if label == PAD and current:
                runs.append(tokenizer.decode(current))
                current = []
            elif label != PAD:
                assert label == token
                current.append(token)
        assert runs == [reply + "<|im_end|>" for reply in replies], index


def _owners_from_ranges(ranges, count):
    owners = [-1] * count
    for span, (start, end) in enumerate(ranges):
        for index in range(start, end):
            owners[index] = span
    return owners


def _random_case(rng):
    """Token offsets over a text of some length, and sorted disjoint reply spans."""
    length = rng.randint(0, 60)
    cuts = sorted(rng.sample(range(1, length), rng.randint(0, max(0, length - 1) // 2))) if length > 1 else []
    bounds = [0, *cuts, length] if length else [0]
    offsets = []
    for start, end in zip(bounds, bounds[1:]):
        for _ in range(rng.choice([1, 1, 1, 2, 3])):  # several tokens may share one character (byte-level)
            offsets.append((start, end))
        if rng.random() < 0.1:
            offsets.append((end, end))  # a zero-width token
    if rng.random() < 0.1:
        offsets.insert(0, (0, 0))  # a BOS added by a post-processor
    if offsets and rng.random() < 0.05:
        rng.shuffle(offsets)  # out of order: the fast path must step aside
    points = sorted(rng.sample(range(length + 1), min(length + 1, 2 * rng.randint(0, 4))))
    spans = [(a, b) for a, b in zip(points[::2], points[1::2]) if a < b]
    return offsets, spans


def test_reply_ranges_give_the_same_owners_as_the_token_walk():
    rng = random.Random(7)
    fast = 0
    for _ in range(20000):
        offsets, spans = _random_case(rng)
        reference = _span_owner_of_each_token(offsets, spans)
        ranges = _reply_token_ranges(offsets, spans)
        if ranges is None:
            continue
        fast += 1
        assert _owners_from_ranges(ranges, len(offsets)) == reference, (offsets, spans)
        assert [end if start < end else 0 for start, end in ranges] == _reply_token_ends(reference, len(spans))
    assert fast > 15000  # the cases that matter went through the fast path


@pytest.mark.parametrize("name", ["chatml", "llama3", "qwen3", "llama2", "none"])
@pytest.mark.parametrize("train_on", ["assistant", "last", "all"])
def test_fast_and_token_by_token_paths_build_the_same_examples(name, train_on, monkeypatch):
    tokenizer = tokenizer_for(name)
    conversations = [conversation(True), conversation(False), conversation(False, EXCHANGES[1:3])]
    full = ConversationEncoder(tokenizer, 4096).encode(conversations[0])
    lengths = [4096] + [len(full["input_ids"]) - k for k in (1, 9, 17, 30)]
    fast = {n: ConversationEncoder(tokenizer, n, train_on=train_on).encode_rows(conversations) for n in lengths}
    monkeypatch.setattr("tui_lora.data.encode._reply_token_ranges", lambda offsets, spans: None)
    monkeypatch.setattr("tui_lora.data.encode._ranges_by_lookup", lambda encoding, spans, length: None)
    slow = {n: ConversationEncoder(tokenizer, n, train_on=train_on).encode_rows(conversations) for n in lengths}
    assert fast == slow


def test_direct_tokenizer_call_equals_transformers_and_steps_aside_when_configured(sample):
    records, _, tokenizer = sample
    encoder = ConversationEncoder(tokenizer, 1024)
    texts = [encoder.render(to_messages(record, "belle")) for record in records[:50]]
    through = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert encoder._plain_backend() is not None
    ids, offsets = encoder._tokenize(texts)
    assert ids == through["input_ids"]
    assert offsets == [[tuple(pair) for pair in row] for row in through["offset_mapping"]]

    changed = copy.deepcopy(tokenizer)
    other = ConversationEncoder(changed, 1024)
    changed.backend_tokenizer.enable_truncation(max_length=16)  # left behind by some other caller
    assert other._plain_backend() is None
    assert other.encode_rows([to_messages(records[0], "belle")]) == encoder.encode_rows([to_messages(records[0], "belle")])


def test_one_template_call_per_batch_keeps_each_rows_result():
    # llama2's template refuses non-alternating roles: that row alone is bad, the others unchanged
    encoder = ConversationEncoder(tokenizer_for("llama2"), 4096)
    refused = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    batch = [conversation(True), refused, None, conversation(False)]
    examples, errors = encoder.encode_rows(batch)
    assert examples[0] == encoder.encode(batch[0]) and examples[3] == encoder.encode(batch[3])
    assert examples[1] is None and "alternate" in errors[1]
    assert examples[2] is None and errors[2] == "not a conversation"
    assert encoder._render_many([batch[0], batch[3]]) == [encoder.render(batch[0]), encoder.render(batch[3])]


def test_messages_that_are_not_plain_strings_take_the_template_call():
    """The compiled template is called directly only for plain {"role", "content"} string dicts."""

    class Text(str):
        pass

    encoder = ConversationEncoder(tokenizer_for("chatml"), 4096)
    plain = conversation(True)
    unusual = [dict(plain[0], name="rules"), *plain[1:-1], {"role": "assistant", "content": Text(plain[-1]["content"])}]
    assert encoder._render_many([plain, unusual]) == [encoder.render(plain), encoder.render(unusual)]
    assert encoder._render_many([plain]) == [encoder.render(plain)]


def _odd_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """ChatML tokenizers unlike the byte-level ones: SentencePiece-style spaces, a normaliser that drops letters."""
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind.startswith("metaspace"):
        raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        raw.decoder = decoders.Metaspace()
    else:
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if kind.endswith("dropping"):
        raw.normalizer = normalizers.Sequence([normalizers.Replace("o", ""), normalizers.Replace("!", "")])
    alphabet = [] if kind.startswith("metaspace") else pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False,
                                  special_tokens=["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    raw.train_from_iterator(CORPUS * 3 + [_PIECES * 2], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<unk>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


_PIECES = "ok, only o! 你好世界，再见。 👍🏽 é ﬁ  \n\n tabs\t end. "


def _random_conversation(rng: random.Random) -> list[dict]:
    def text():
        words = [rng.choice(_PIECES.split(" ") + [" ", "\n", "o", "!", "你", "👍"]) for _ in range(rng.randint(1, 12))]
        content = rng.choice(["", " ", "\n"]).join(words)
        return content if content.strip() else "o" + content

    messages = [{"role": "system", "content": text()}] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 4)):
        messages += [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
    return messages


@pytest.mark.parametrize("name", ["chatml", "llama3", "qwen3", "llama2", "metaspace", "metaspace-dropping",
                                  "bytelevel-dropping", "tiny-chat"])
def test_ranges_asked_of_the_encoding_equal_those_read_from_offsets(name, sample):
    """The lookup path (_ranges_by_lookup) against the offsets, on conversations made to be awkward.

    Characters split over byte-level tokens, spaces and newlines at reply edges, a normaliser that drops
    the first or last character of a reply (the lookup then steps aside for that example), and cuts
    at several lengths.
    """
    if name == "tiny-chat":
        tokenizer = sample[2]
    elif name in ("metaspace", "metaspace-dropping", "bytelevel-dropping"):
        tokenizer = _odd_tokenizer(name)
    else:
        tokenizer = tokenizer_for(name)
    rng = random.Random(name)
    conversations = [_random_conversation(rng) for _ in range(300)]
    if name == "llama2":  # its template wants strictly alternating user/assistant turns, system first
        conversations = [[m for m in c if m["role"] != "system"] for c in conversations]
    looked_up = stepped_aside = 0
    for max_length in (4096, 40, 12):
        lookup = ConversationEncoder(tokenizer, max_length)
        assert lookup.fast_paths.lookup
        offsets = ConversationEncoder(tokenizer, max_length)
        offsets.fast_paths = dataclasses.replace(offsets.fast_paths, lookup=False)
        assert lookup.encode_rows(conversations) == offsets.encode_rows(conversations)
        for messages in conversations[:60]:
            try:
                text = lookup.render(messages)
                spans, _ = lookup._reply_spans(text, messages)
            except Exception:
                continue
            encoding = lookup._encodings([text])[0]
            found = _ranges_by_lookup(encoding, spans, len(encoding.ids))
            if found is None:
                stepped_aside += 1
            else:
                looked_up += 1
                assert found == _reply_token_ranges(encoding.offsets, spans), messages
    if name.endswith("dropping"):  # replies starting or ending with a dropped letter take the offsets
        assert stepped_aside > 10 and looked_up > 50
    else:
        assert stepped_aside == 0 and looked_up > 150


_SPECIAL_TEXTS = ["<|im_end|>", "<|im_start|>", "<|im_start|>assistant\n", "<|endoftext|>", "</s>", "<s>", "[INST]",
                  "<|eot_id|>", "<|start_header_id|>", "\t"]


@pytest.mark.parametrize("name", ["chatml", "llama3", "qwen3", "llama2", "none", "metaspace", "tiny-chat"])
def test_text_that_reads_as_special_tokens_gets_the_slow_paths_tokens_and_labels(name, sample):
    """Contents holding special tokens' text (encoded as those tokens): every fast path on against every one off."""
    if name == "tiny-chat":
        tokenizer = sample[2]
    elif name == "metaspace":
        tokenizer = _odd_tokenizer(name)
    else:
        tokenizer = tokenizer_for(name)
    rng = random.Random(f"special-{name}")
    conversations = []
    for _ in range(200):
        messages = _random_conversation(rng)
        if name == "llama2":  # strictly alternating user/assistant turns
            messages = [m for m in messages if m["role"] != "system"]
        for message in messages:
            if rng.random() < 0.6:
                words = message["content"].split(" ")
                words.insert(rng.randint(0, len(words)), rng.choice(_SPECIAL_TEXTS))
                message["content"] = rng.choice(["", " "]).join(words)
        conversations.append(messages)
    for max_length in (4096, 120, 40):  # 40: mostly too short, the rows say so alike
        fast = ConversationEncoder(tokenizer, max_length)
        assert fast.fast_paths.direct_render is not None and fast.fast_paths.direct_backend and fast.fast_paths.lookup
        slow = ConversationEncoder(tokenizer, max_length)
        slow.fast_paths = FastPaths(direct_render=None, direct_backend=False, lookup=False)
        examples, errors = fast.encode_rows(conversations)
        assert (examples, errors) == slow.encode_rows(conversations)
        if max_length == 4096:
            # a reply holding its own end marker's text may be unreadable (a bad record on both paths alike)
            good = [(messages, example) for messages, example in zip(conversations, examples) if example]
            assert len(good) > 150, errors
            # the special texts in the contents are those tokens: more of them than the template prints
            specials = set(tokenizer.all_special_ids)
            count = lambda ids: sum(token in specials for token in ids)  # noqa: E731
            assert sum(count(example["input_ids"]) > count(fast.encode(_without(messages, _SPECIAL_TEXTS))["input_ids"])
                       for messages, example in good) > 50


def _without(messages: list[dict], texts: list[str]) -> list[dict]:
    cleaned = []
    for message in messages:
        content = message["content"]
        for text in texts:
            content = content.replace(text, "x")
        cleaned.append({"role": message["role"], "content": content})
    return cleaned
