"""Encode a conversation into ``input_ids`` / ``labels`` with exact label masks.

The conversation is rendered once with the tokenizer's own chat template and
that text is tokenized once (offsets on), so ``input_ids`` are exactly what
``tokenizer.apply_chat_template(messages, tokenize=True)`` gives.  Labels are
then taken from character spans of that single rendering; turns are never
templated one at a time (Qwen-style templates would insert their default
system prompt before every turn).

How the template is read (once per encoder, from a probe conversation
``user, assistant, user, assistant`` with sentinel contents):

* **reply header** -- the text printed between a user turn's content and the
  reply's content, e.g. ``<|im_end|>\\n<|im_start|>assistant\\n``.  When the
  template prints the last reply differently (Qwen3 adds an empty
  ``<think></think>`` block) the common prefix of both is used.
* **end of a reply** -- what the model must write to end a reply, read from
  what follows each probe reply.  After the *last* reply it is leading
  whitespace plus the run of special tokens right after it (``<|im_end|>``,
  ``<|eot_id|>``, `` </s>``, gpt-oss's ``<|return|>``); if no special token
  follows (markers that are not special tokens in this vocabulary) it is the
  rest of that line (``<|im_end|>`` as plain text).  A newline after the marker
  is not part of it.  After an *earlier* reply the template prints the end of
  that reply and then the next turn's opener; the opener belongs to the next
  turn and is never trained.  The end is the last reply's marker when the text
  starts with it (nearly every family); else the marker the template prints to
  end a user message, where the earlier reply's text starts with that
  (gpt-oss: ``<|end|>``, while ``<|start|>user<|message|>`` opens the next
  turn); else nothing (GLM-4, ChatGLM3, MiniCPM: the next turn's opener
  follows the reply directly).  A user message's end is found as the text
  between its content and the generation prompt (what
  ``add_generation_prompt=True`` adds).
* **the stop token** -- a template that prints nothing after the last reply
  would teach a model that never stops.  Then the example gets one token
  appended, trained, right after the last reply it keeps: the tokenizer's eos
  token when the model's generation config lists it among its stop ids (or
  lists none), else the first id it lists.  So ``input_ids`` are then
  ``apply_chat_template(tokenize=True)``'s up to the end of that reply, plus
  that token.

Where a reply is in the rendered text: search forward from a cursor (the end of
the previous reply) for the next reply header, then for the reply content after
it, starting before the following header.  The content is tried as given, then
stripped, then -- for contents holding ``</think>`` -- the answer after it,
because Qwen3-style templates drop the reasoning from earlier turns; if the
template did print a ``<think>`` block for that turn, the trained span starts
at that block; an empty ``<think>`` block the template adds on its own to a
reply without reasoning is prompt scaffolding and stays untrained.  A reply
that cannot be found raises :class:`BadRecord` naming
its message index (0-based, in the list given to ``encode``).

Trained span of a reply = its content + its end marker (or the appended stop token).
Everything else -- system prompt (including a template's default one), user
turns, role headers, the newline after the marker -- gets ``label_pad_token_id``.
``train_on="last"`` keeps only the final reply's span; ``train_on="all"``
labels every token (examples are unpadded, so nothing is masked).

BOS: ``add_special_tokens`` for the single tokenizer call is chosen at
construction by comparing against ``apply_chat_template(tokenize=True)`` on
the probe (transformers does not add special tokens there: a template that
wants a BOS writes it), so a tokenizer whose post-processor adds a BOS gets
neither a double BOS nor one the template did not ask for.

Boundary rule: a token is trained when ANY of its characters lies inside a
trained span.  Such a straddling token (e.g. ``"▁Hello"`` after ``[/INST]``,
whose space belongs to the template) carries reply text the model must
produce; leaving it out would drop the start of the reply.  Zero-width tokens
(a BOS added by a post-processor) are never trained.  Byte-level tokens that
hold part of one character all carry that character's offsets, so a character
is never half trained.

Truncation (when the rendering has more than ``max_length`` tokens):

* ``truncation=False``: :class:`BadRecord` ("N tokens > max_length M").
* otherwise the example is cut right after the end-of-turn marker of the last
  reply that fits, i.e. trailing exchanges are dropped whole and no reply is
  left without its end.  ``train_on="last"`` then means the last kept reply.
* if not even the first reply fits, the conversation is a :class:`BadRecord`:
  an example that ends inside its only reply would teach a reply without an
  end (the model never learns to stop), so it is skipped and counted instead.
* ``"truncated"`` is True when exchanges were dropped; the caller counts it and
  drops that column before collating.

An example with no trained token is a :class:`BadRecord` (never train on
nothing).  Nothing here imports torch; the tokenizer is passed in.

Fast paths (:class:`FastPaths`): the compiled template called directly, the
Rust tokenizer called directly, reply token ranges found by lookup.  When the
encoder is built, :func:`check_fast_paths` tries each against the path it
replaces on probe conversations (including contents that read as special
tokens) and turns off any that differs; one that is off gives the same
examples, only slower.
"""

from __future__ import annotations

import bisect
import functools
import operator
import os
import re
from dataclasses import dataclass

from tui_lora.config.schema import TRAIN_ON
from tui_lora.data.formats import ASSISTANT, SYSTEM, USER, BadRecord

# Used for tokenizers that ship no chat template: plain ChatML, no default
# system prompt.  If "<|im_start|>"/"<|im_end|>" are not tokens of the
# vocabulary they are encoded as ordinary text (and the end-of-turn marker is
# learnt as that text); callers that can resize embeddings may add them as
# special tokens before building the encoder.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Probe contents: plain ASCII words that no template rewrites.
_PROBE_QUESTIONS = ("ProbeQuestionOne", "ProbeQuestionTwo")
_PROBE_REPLIES = ("ProbeReplyOne", "ProbeReplyTwo")

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_WHITESPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class TemplateLayout:
    """What the chat template prints around assistant replies."""

    reply_header: str
    final_end: str  # what ends the last reply ("" when the template prints nothing after it)
    earlier_end: str  # what ends an earlier reply, before the next turn's opener ("" when nothing)

    @property
    def end_of_turn(self) -> tuple[str, ...]:
        """The distinct markers that end a reply, last-reply form first."""
        return tuple(dict.fromkeys(m for m in (self.final_end, self.earlier_end) if m.strip()))


@dataclass(frozen=True)
class DirectRenderer:
    """messages -> text through transformers' compiled chat template, called directly.

    apply_chat_template copies and converts every message before rendering (objects to dicts, None
    values dropped, str subclasses to str, reasoning fields aliased) and then calls the compiled
    template with the tokenizer's special tokens as keywords. For plain string dicts the conversions
    change nothing, so calling the same compiled template with the same keywords gives the same text
    at a fraction of the cost. Used only where check_fast_paths found that it gives
    apply_chat_template's text on the probes, and only for plain {"role", "content"} string messages.
    It holds the template's text, not the compiled template, so the encoder stays picklable (datasets
    sends it to worker processes); the compiled one comes from transformers' own cache.
    """

    template: str
    keywords: tuple[tuple[str, object], ...]  # the tokenizer's special tokens, as apply_chat_template passes them

    @classmethod
    def of(cls, tokenizer, template: str | None) -> DirectRenderer:
        """The renderer of ``template`` (None: the tokenizer's own) with the tokenizer's special tokens."""
        return cls(tokenizer.get_chat_template(template), tuple(tokenizer.special_tokens_map.items()))

    def render_all(self, conversations: list[list[dict]]) -> list[str]:
        compiled = _compiled_chat_template(self.template)
        if compiled is None:
            raise RuntimeError("transformers' compiled chat templates are not available")
        render = functools.partial(compiled.render, tools=None, documents=None, add_generation_prompt=False,
                                   **dict(self.keywords))
        return [render(messages=messages) for messages in conversations]


@dataclass(frozen=True)
class FastPaths:
    """The encoder's shortcuts, each found by check_fast_paths to give exactly what the path it replaces
    gives (on the probe conversations, when the encoder is built). One that is off costs time, never
    a different token or label."""

    direct_render: DirectRenderer | None  # None: every conversation goes through apply_chat_template
    direct_backend: bool  # tokenise with the Rust tokenizer's encode_batch instead of tokenizer(...)
    lookup: bool  # reply token ranges by asking the Rust encodings (_ranges_by_lookup), not from all offsets


class ConversationEncoder:
    """Tokenize conversations with the model's chat template and exact labels."""

    def __init__(
        self,
        tokenizer,
        max_length: int,
        truncation: bool = True,
        train_on: str = "assistant",
        label_pad_token_id: int = -100,
        model_stop_ids=None,
    ):
        """model_stop_ids: the eos ids of the model's generation config (an int, a list or None), used to
        choose the stop token when the template prints nothing after the last reply."""
        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
        if not isinstance(max_length, int) or max_length <= 0:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast tokenizer is needed (label masks use its character offsets)")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.train_on = train_on
        self.label_pad_token_id = label_pad_token_id
        self.used_default_template = not getattr(tokenizer, "chat_template", None)
        # None lets apply_chat_template pick the tokenizer's own template.
        self._template_override = DEFAULT_CHAT_TEMPLATE if self.used_default_template else None
        probe = _probe_conversation()
        probe_text = self.render(probe)
        self.layout = _read_layout(probe_text, _special_token_strings(tokenizer),
                                   self._generation_prompt(probe[:3]))
        self.stop_token_id = _stop_token_id(tokenizer, model_stop_ids)
        if not self.layout.final_end.strip() and self.stop_token_id is None:
            raise ValueError("the chat template prints nothing after the last reply and the tokenizer has no eos "
                             "token, so a trained model would never stop; use a tokenizer with an eos token")
        self._add_special_tokens = self._special_tokens_flag(probe, probe_text)
        self.fast_paths = check_fast_paths(tokenizer, self._template_override, self._add_special_tokens,
                                           self.layout, _fast_path_probes(tokenizer))

    # ---------------------------------------------------------------- public

    @property
    def chat_template(self) -> str | None:
        """The template in use when it is the default (save it with the adapter)."""
        return self._template_override if self.used_default_template else self.tokenizer.chat_template

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The conversation as the chat template prints it (no generation prompt unless asked)."""
        return _apply_template(self.tokenizer, self._template_override, messages, add_generation_prompt)

    def reply_end_rule(self) -> str:
        """In words: what each reply is trained to end with (shown by `tui-lora data`)."""
        final, earlier = self.layout.final_end, self.layout.earlier_end
        if final.strip():
            last = f"{final.strip()!r}, as the template prints it"
        else:
            token = self.tokenizer.convert_ids_to_tokens(self.stop_token_id)
            kind = "eos token" if self.stop_token_id == self.tokenizer.eos_token_id else "first stop id"
            last = f"{token!r} (the tokenizer's {kind}), added: the template prints nothing after it"
        if final.strip() and earlier.strip() == final.strip():
            return f"every reply: {last}"
        before = (f"{earlier.strip()!r}, as the template prints it" if earlier.strip()
                  else "nothing (the next turn's opener follows, untrained)")
        return f"earlier replies: {before}; the last: {last}"

    def _generation_prompt(self, messages: list[dict]) -> str:
        """What add_generation_prompt=True adds after the messages ("" when it adds nothing or fails)."""
        try:
            plain, prompted = self.render(messages), self.render(messages, add_generation_prompt=True)
        except BadRecord:
            return ""
        return prompted[len(plain):] if prompted.startswith(plain) else ""

    def encode(self, messages: list[dict]) -> dict:
        """One conversation -> input_ids, attention_mask, labels, truncated."""
        _check_conversation(messages)
        example = self._build_examples([(messages, self.render(messages))])[0]
        if isinstance(example, BadRecord):
            raise example
        return example

    def encode_batch(self, conversations: list[list[dict]], skip_bad: bool = False) -> dict:
        """Many conversations -> dict of lists (for ``datasets.map(batched=True)``).

        With ``skip_bad`` a conversation raising BadRecord is left out of the
        output (so the output may be shorter than the input); otherwise the
        first BadRecord propagates.
        """
        examples, errors = self.encode_rows(conversations)
        columns = {"input_ids": [], "attention_mask": [], "labels": [], "truncated": []}
        for example, error in zip(examples, errors):
            if example is None:
                if not skip_bad:
                    raise BadRecord(error)
                continue
            for key in columns:
                columns[key].append(example[key])
        return columns

    def encode_rows(self, conversations: list[list[dict] | None]) -> tuple[list[dict | None], list[str]]:
        """Row by row: (example or None, reason or "") for each conversation, with one tokenizer call.

        A None conversation (a record that failed before it became one) stays None, so the
        caller keeps every row's position and can name bad records by number.
        """
        examples: list[dict | None] = [None] * len(conversations)
        errors = [""] * len(conversations)
        checked: list[tuple[int, list[dict]]] = []
        for row, messages in enumerate(conversations):
            if messages is None:
                errors[row] = "not a conversation"
                continue
            try:
                _check_conversation(messages)
                checked.append((row, messages))
            except BadRecord as exc:
                errors[row] = str(exc)
        if not checked:
            return examples, errors
        rendered: list[tuple[int, list[dict], str]] = []
        for (row, messages), text in zip(checked, self._render_many([messages for _, messages in checked])):
            if isinstance(text, BadRecord):
                errors[row] = str(text)
            else:
                rendered.append((row, messages, text))
        if not rendered:
            return examples, errors
        built = self._build_examples([(messages, text) for _, messages, text in rendered])
        for (row, _, _), example in zip(rendered, built):
            if isinstance(example, BadRecord):
                errors[row] = str(example)
            else:
                examples[row] = example
        return examples, errors

    def _build_examples(self, rendered: list[tuple[list[dict], str]]) -> list:
        """Each (messages, text) as an example, or the BadRecord that building it raised.

        One batched tokenizer call for all texts. When the Rust encodings are at hand the reply
        ranges are found by asking each encoding where a few characters are (see _ranges_by_lookup)
        instead of converting every token's offsets to Python, which costs more than the rest of
        the work on a conversation together.
        """
        texts = [text for _, text in rendered]
        encodings = self._encodings(texts)
        if encodings is None:
            ids, offsets = self._tokenize(texts)
            sources = [(ids[i], offsets[i], None) for i in range(len(texts))]
        else:
            sources = [(encoding.ids, None, encoding) for encoding in encodings]
        results: list = []
        for (messages, text), (input_ids, token_offsets, encoding) in zip(rendered, sources):
            try:
                results.append(self._build_example(messages, text, input_ids, token_offsets, encoding))
            except BadRecord as exc:
                results.append(exc)
        return results

    # --------------------------------------------------------------- helpers

    def _render_many(self, conversations: list[list[dict]]) -> list:
        """Each conversation's rendering, or the BadRecord that rendering it raised.

        The texts are render()'s. Fastest first: the compiled template called directly when every
        message is a plain {"role", "content"} dict of strings (fast_paths.direct_render, see
        DirectRenderer); else one apply_chat_template call for the whole batch, so its fixed cost is
        paid once; if any conversation fails, the batch is rendered again one by one so each gets
        its own result.
        """
        direct = self.fast_paths.direct_render
        if direct is not None and all(map(_plain_messages, conversations)):
            try:
                return direct.render_all(conversations)
            except Exception:
                pass  # the slower paths below say which conversation failed, and why
        try:
            texts = self.tokenizer.apply_chat_template(
                conversations, chat_template=self._template_override, tokenize=False
            )
        except Exception:
            texts = None
        if isinstance(texts, list) and len(texts) == len(conversations):
            return texts
        results: list = []
        for messages in conversations:
            try:
                results.append(self.render(messages))
            except BadRecord as exc:
                results.append(exc)
        return results

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """(input_ids, character offsets) of each text."""
        encodings = self._encodings(texts)
        if encodings is not None:
            return [e.ids for e in encodings], [e.offsets for e in encodings]
        tokens = self.tokenizer(texts, add_special_tokens=self._add_special_tokens, return_offsets_mapping=True)
        return tokens["input_ids"], tokens["offset_mapping"]

    def _encodings(self, texts: list[str]):
        """The Rust tokenizer's encodings of the texts, or None when it cannot be called directly.

        It is called directly when it is set up the way transformers' __call__ would set it for
        this call (no truncation, no padding, special tokens matched as specials): that is exactly
        the call transformers makes, without turning every encoding into a BatchEncoding.
        """
        backend = self._plain_backend()
        if backend is None:
            return None
        return backend.encode_batch(texts, add_special_tokens=self._add_special_tokens)

    def _plain_backend(self):
        """The Rust tokenizer when calling it directly was checked (fast_paths.direct_backend) and is, as it is
        set up now, what transformers would do; else None."""
        return _plain_backend(self.tokenizer) if self.fast_paths.direct_backend else None

    def _special_tokens_flag(self, probe: list[dict], probe_text: str) -> bool:
        """Pick add_special_tokens so our ids equal apply_chat_template(tokenize=True).

        transformers renders then tokenizes without special tokens (the template
        writes its own BOS); checking instead of assuming keeps us right if that
        ever changes, and catches a tokenizer whose post-processor disagrees.
        """
        reference = self.tokenizer.apply_chat_template(
            probe, chat_template=self._template_override, tokenize=True
        )
        reference_ids = list(reference["input_ids"] if hasattr(reference, "keys") else reference)
        for flag in (False, True):
            if self.tokenizer(probe_text, add_special_tokens=flag)["input_ids"] == reference_ids:
                return flag
        raise ValueError("cannot reproduce apply_chat_template(tokenize=True) by tokenizing its text")

    def _build_example(self, messages, text, input_ids, offsets, encoding=None) -> dict:
        """offsets, or the Rust encoding to read them from (only when the lookup cannot answer)."""
        spans, ended = _reply_spans(self.layout, text, messages)
        lookup = encoding is not None and self.fast_paths.lookup
        ranges = _ranges_by_lookup(encoding, spans, len(input_ids)) if lookup else None
        if ranges is None:
            offsets = offsets if offsets is not None else encoding.offsets
            ranges = _reply_token_ranges(offsets, spans)
        # 1 where the example, if it ended after that reply, would need the stop token appended
        appended = [0 if marked or self.stop_token_id is None else 1 for marked in ended]
        if ranges is None:  # offsets out of order or zero-width tokens inside a reply: token by token
            owners = _span_owner_of_each_token(offsets, spans)
            cut, truncated, stop = self._cut_point(lambda: _reply_token_ends(owners, len(spans)), len(input_ids),
                                                   appended)
            input_ids = list(input_ids[:cut])
            labels = self._labels(input_ids, owners[:cut])
        else:
            cut, truncated, stop = self._cut_point(lambda: [end if start < end else 0 for start, end in ranges],
                                                   len(input_ids), appended)
            input_ids = list(input_ids[:cut])
            labels = self._labels_from_ranges(input_ids, ranges)
        if stop:  # the last kept reply has no end marker: it is trained to end with the stop token
            input_ids.append(self.stop_token_id)
            labels.append(self.stop_token_id)
        if labels.count(self.label_pad_token_id) == len(labels):
            raise BadRecord("no token is trained in this example (all labels masked)")
        return {
            "input_ids": input_ids,
            "attention_mask": [1] * len(input_ids),
            "labels": labels,
            "truncated": truncated,
        }

    def _labels(self, input_ids: list[int], owners: list[int]) -> list[int]:
        if self.train_on == "all":
            return list(input_ids)
        wanted = _trained_owner_filter(self.train_on, owners)
        pad = self.label_pad_token_id
        return [tid if wanted(owner) else pad for tid, owner in zip(input_ids, owners)]

    def _labels_from_ranges(self, input_ids: list[int], ranges: list[tuple[int, int]]) -> list[int]:
        """The same labels as _labels, copied a reply at a time instead of a token at a time."""
        if self.train_on == "all":
            return list(input_ids)
        cut = len(input_ids)
        kept = [(start, min(end, cut)) for start, end in ranges if start < min(end, cut)]
        if self.train_on == "last":
            kept = kept[-1:]
        labels = [self.label_pad_token_id] * cut
        for start, end in kept:
            labels[start:end] = input_ids[start:end]
        return labels

    def _cut_point(self, reply_ends, length: int, appended: list[int]) -> tuple[int, bool, bool]:
        """Where to cut the token sequence, whether trailing exchanges were dropped, and whether the stop
        token follows the cut.

        reply_ends is called only when needed: the exclusive token index where each reply ends (0 for a
        reply with no token). appended[i] is 1 when an example ending after reply i needs the stop token.
        """
        if not appended[-1] and length <= self.max_length:
            return length, False, False
        ends = reply_ends()
        if appended[-1] and ends[-1] + 1 <= self.max_length:
            # the last reply has no end marker: cut right after it (only template text follows) for the stop token
            return ends[-1], False, True
        needed = ends[-1] + appended[-1] if appended[-1] else length
        if not self.truncation:
            raise BadRecord(f"{needed} tokens > max_length {self.max_length}")
        fitting = [index for index, end in enumerate(ends) if 0 < end and end + appended[index] <= self.max_length]
        if not fitting:
            first = min((end + extra for end, extra in zip(ends, appended) if end), default=length)
            raise BadRecord(f"the first reply ends at token {first}, past max_length {self.max_length}")
        kept = max(fitting, key=lambda index: ends[index])
        return ends[kept], True, bool(appended[kept])

    def _reply_spans(self, text: str, messages: list[dict]) -> tuple[list[tuple[int, int]], list[bool]]:
        """_reply_spans with this encoder's layout."""
        return _reply_spans(self.layout, text, messages)


# ---------------------------------------------------------------------------
# Where the replies are in the rendered text
# ---------------------------------------------------------------------------


def _reply_spans(layout: TemplateLayout, text: str, messages: list[dict]) -> tuple[list[tuple[int, int]], list[bool]]:
    """Character span (content + end marker) of every assistant reply, in order, and for each whether
    the template printed an end marker after it (False: it needs the stop token where an example ends)."""
    spans, ended = [], []
    cursor = 0
    last = len(messages) - 1
    for turn, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        start, content_end = _locate_reply(layout, text, message["content"], cursor, turn)
        end = _end_of_reply(layout, text, content_end, turn, turn == last)
        spans.append((start, end))
        ended.append(end > content_end)
        cursor = end
    return spans, ended


def _locate_reply(layout: TemplateLayout, text: str, content: str, cursor: int, turn: int) -> tuple[int, int]:
    header = layout.reply_header
    search_from, limit = cursor, len(text)
    if header:
        header_at = text.find(header, cursor)
        if header_at < 0:
            raise BadRecord(f"message {turn} (assistant): reply header {header!r} not found in the rendering")
        search_from = header_at + len(header)
        next_header = text.find(header, search_from)
        if next_header >= 0:
            limit = next_header
    found = text.find(content, search_from, limit)
    if found >= 0:  # the content printed as given: nearly always, and no candidates to try
        return found, found + len(content)
    for candidate, is_answer_part in _reply_candidates(content):
        found = text.find(candidate, search_from)
        if found < 0 or found >= limit:
            continue
        start = found
        if is_answer_part:
            # The template printed its own form of the reasoning for this
            # turn: the reasoning is part of what the model must write.
            think_at = text.rfind(_THINK_OPEN, search_from, found)
            if think_at >= 0:
                start = think_at
        return start, found + len(candidate)
    raise BadRecord(f"message {turn} (assistant): reply text not found in the rendered conversation")


def _end_of_reply(layout: TemplateLayout, text: str, end: int, turn: int, last: bool) -> int:
    """Where the reply's trained text ends: after its end marker, or at ``end`` where the template prints
    none at this place (the last message, or an earlier one)."""
    expected, other = (layout.final_end, layout.earlier_end) if last else (layout.earlier_end, layout.final_end)
    markers = [marker for marker in dict.fromkeys((expected, other)) if marker.strip()]
    for marker in markers:
        if text.startswith(marker, end):
            return end + len(marker)
    # The content may have lost trailing whitespace the marker expects, or
    # gained some the template kept: allow whitespace before the marker.
    after_space = _WHITESPACE.match(text, end).end()
    for marker in markers:
        if text.startswith(marker.lstrip(), after_space):
            return after_space + len(marker.lstrip())
    if not expected.strip():  # nothing ends a reply at this place: the stop token will, where an example ends
        return end
    raise BadRecord(f"message {turn} (assistant): end-of-turn marker {expected.strip()!r} not found after the reply")


# ---------------------------------------------------------------------------
# Fast paths, checked against the slow ones
# ---------------------------------------------------------------------------


def check_fast_paths(tokenizer, template: str | None, add_special_tokens: bool, layout: TemplateLayout,
                     probes: list[list[dict]]) -> FastPaths:
    """Which shortcuts give exactly what the slow path gives, for this tokenizer and template.

    Each is tried against the path it replaces on the probe conversations (a probe the template
    refuses is left out, but at least one must be tried) and any difference turns it off:

    * direct_render: DirectRenderer's text equals apply_chat_template's;
    * direct_backend: the Rust tokenizer's encode_batch gives the ids and offsets of tokenizer(...);
    * lookup: see _lookup_agrees; it asks the Rust encodings, so it needs direct_backend.

    Only reads the tokenizer (its call sets the Rust backend up as every call does) and the arguments;
    the checks are independent of each other's order.
    """
    rendered = []
    for messages in probes:
        try:
            rendered.append((messages, _apply_template(tokenizer, template, messages)))
        except BadRecord:  # a template may refuse a probe (Gemma-2 has no system role); the others count
            continue
    direct_backend = _direct_backend_agrees(tokenizer, add_special_tokens, [text for _, text in rendered])
    return FastPaths(
        direct_render=_checked_direct_renderer(tokenizer, template, rendered),
        direct_backend=direct_backend,
        lookup=direct_backend and _lookup_agrees(tokenizer, add_special_tokens, layout, rendered),
    )


def _compiled_chat_template(source: str):
    """transformers' compiled Jinja template for ``source`` (from its own cache), or None when this
    transformers has no such function.

    PRIVATE API: ``transformers.utils.chat_template_utils._compile_jinja_template`` is what
    apply_chat_template renders with (the same sandboxed environment, filters and globals), but it
    is not public. If a transformers release renames or removes it, this returns None, the direct
    render is off (check_fast_paths) and every conversation goes through apply_chat_template: the
    same text, only slower. tests/functional/test_encoder_fast_paths.py asserts that the direct
    render is on for real tokenizers, so such a release fails a test instead of slowing every run.
    """
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:
        return None
    return _compile_jinja_template(source)


def _checked_direct_renderer(tokenizer, template: str | None,
                             rendered: list[tuple[list[dict], str]]) -> DirectRenderer | None:
    """The DirectRenderer, when it prints each probe exactly as apply_chat_template did; else None."""
    if not rendered:
        return None
    try:
        direct = DirectRenderer.of(tokenizer, template)
        texts = direct.render_all([messages for messages, _ in rendered])
    except Exception:  # no compiled template (see _compiled_chat_template), or it fails where transformers did not
        return None
    return direct if texts == [text for _, text in rendered] else None


def _direct_backend_agrees(tokenizer, add_special_tokens: bool, texts: list[str]) -> bool:
    """Does the Rust tokenizer, called directly, give the ids and offsets that tokenizer(...) gives?"""
    if not texts:
        return False
    through = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    backend = _plain_backend(tokenizer)  # asked after the call, which sets the backend up for this call
    if backend is None:
        return False
    direct = backend.encode_batch(texts, add_special_tokens=add_special_tokens)
    return ([encoding.ids for encoding in direct] == [list(ids) for ids in through["input_ids"]]
            and [encoding.offsets for encoding in direct]
            == [[tuple(pair) for pair in row] for row in through["offset_mapping"]])


def _lookup_agrees(tokenizer, add_special_tokens: bool, layout: TemplateLayout,
                   rendered: list[tuple[list[dict], str]]) -> bool:
    """May reply ranges be found by lookup (_ranges_by_lookup) for this tokenizer?

    The lookup relies on what byte-level and SentencePiece tokenizers give for text without added
    specials: offsets that never go backwards and no zero-width token. That is checked on the probes
    (special tokens and text that reads as special tokens, CJK, emoji, spaces and newlines), and the
    lookup must give the same ranges as the offsets there; a tokenizer failing either keeps the
    offsets path.
    """
    backend = _plain_backend(tokenizer)
    if backend is None:
        return False
    checked = 0
    for messages, text in rendered:
        try:  # replies the layout cannot find leave that probe out; the others still count
            spans, _ = _reply_spans(layout, text, messages)
        except BadRecord:
            continue
        encoding = backend.encode_batch([text], add_special_tokens=add_special_tokens)[0]
        offsets = encoding.offsets
        starts, ends = [start for start, _ in offsets], [end for _, end in offsets]
        if starts != sorted(starts) or ends != sorted(ends) or any(s == e for s, e in offsets):
            return False
        if _ranges_by_lookup(encoding, spans, len(offsets)) != _reply_token_ranges(offsets, spans):
            return False
        checked += 1
    return checked > 0


def _plain_backend(tokenizer):
    """The tokenizer's Rust backend when it is set up the way transformers' __call__ would set it for the
    encoder's call (no truncation, no padding, special tokens matched as specials), else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (
        backend is not None
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
    ):
        return backend
    return None


def _fast_path_probes(tokenizer) -> list[list[dict]]:
    """The conversations check_fast_paths tries each shortcut on."""
    probe = _probe_conversation()
    return [probe, [{"role": SYSTEM, "content": "ProbeSystem"}, *probe], probe[:2], _rich_probe_conversation(),
            _special_text_probe_conversation(tokenizer)]


def _special_text_probe_conversation(tokenizer) -> list[dict]:
    """Contents holding text that reads as special tokens (ChatML's markers and the tokenizer's own eos,
    bos and pad, which the tokenizer encodes as those tokens wherever they stand), and a tab."""
    own = [getattr(tokenizer, name, None) for name in ("eos_token", "bos_token", "pad_token")]
    marked = " ".join(dict.fromkeys(["<|im_start|>", "<|im_end|>", *(t for t in own if isinstance(t, str) and t)]))
    return [{"role": USER, "content": f"Repeat {marked} as\ttext."},
            {"role": ASSISTANT, "content": f"Here: {marked} done."},
            {"role": USER, "content": "Only<|im_end|>this"},
            {"role": ASSISTANT, "content": "Only<|im_end|>this, and </s> that."}]


# ---------------------------------------------------------------------------
# Template reading
# ---------------------------------------------------------------------------


def _apply_template(tokenizer, template: str | None, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """apply_chat_template's text (``template`` None: the tokenizer's own); a refusal is a BadRecord."""
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except TemplateError as error:
        raise BadRecord(f"the chat template refused this conversation: {error}") from error


def _rich_probe_conversation() -> list[dict]:
    """Text that splits characters over byte-level tokens and puts spaces at reply edges."""
    return [{"role": SYSTEM, "content": "Answer briefly."},
            {"role": USER, "content": "你好，世界！ How are you?"},
            {"role": ASSISTANT, "content": " 很好 👍🏽 thanks\n\n  done. "},
            {"role": USER, "content": "再说一次"},
            {"role": ASSISTANT, "content": "好的：ÅÉ ﬁ 1234"}]


def _probe_conversation() -> list[dict]:
    probe = []
    for question, reply in zip(_PROBE_QUESTIONS, _PROBE_REPLIES):
        probe.append({"role": USER, "content": question})
        probe.append({"role": ASSISTANT, "content": reply})
    return probe


def _read_layout(probe_text: str, specials: list[str], generation_prompt: str = "") -> TemplateLayout:
    positions = []
    cursor = 0
    for question, reply in zip(_PROBE_QUESTIONS, _PROBE_REPLIES):
        for sentinel in (question, reply):
            at = probe_text.find(sentinel, cursor)
            if at < 0:
                raise ValueError(
                    f"the chat template does not print message contents verbatim "
                    f"({sentinel!r} missing); cannot build label masks"
                )
            positions.append((at, at + len(sentinel)))
            cursor = at + len(sentinel)
    (_, q1_end), (a1_start, a1_end), (q2_start, q2_end), (a2_start, a2_end) = positions
    header = os.path.commonprefix([probe_text[q1_end:a1_start], probe_text[q2_end:a2_start]])
    final_end = _end_of_turn_text(probe_text[a2_end:], specials)
    user_end = _message_end(probe_text[q2_end:a2_start], generation_prompt, specials)
    earlier_end = _earlier_reply_end(probe_text[a1_end:q2_start], (final_end, user_end))
    return TemplateLayout(reply_header=header, final_end=final_end, earlier_end=earlier_end)


def _message_end(after_user: str, generation_prompt: str, specials: list[str]) -> str:
    """The marker that ends a user message: what comes before the assistant's opener, which starts with the
    generation prompt ("" when there is none, or it is not found)."""
    opener = generation_prompt.strip()
    at = after_user.find(opener) if opener else -1
    return _end_of_turn_text(after_user[:at], specials) if at > 0 else ""


def _earlier_reply_end(between: str, evidence: tuple[str, ...]) -> str:
    """What ends an earlier reply: the first marker of ``evidence`` that the text between that reply and the
    next user message starts with (allowing other whitespace before it), as printed; "" when none does.

    The rest of that text opens the next turn. Taking a marker only where another place of the template
    prints it too keeps the opener out: GLM-4's "<|user|>" after a reply is not an end (nothing ends the
    last reply), and gpt-oss's "<|end|><|start|>user" splits at the "<|end|>" that also ends user messages.
    """
    for marker in evidence:
        if not marker.strip():
            continue
        if between.startswith(marker):
            return marker
        stripped = between.lstrip()
        if stripped.startswith(marker.lstrip()):
            return between[: len(between) - len(stripped)] + marker.lstrip()
    return ""


def _stop_token_id(tokenizer, model_stop_ids) -> int | None:
    """The token a reply is trained to end with where the template prints nothing after it: the tokenizer's
    eos when the model's generation config stops on it (or names no stop ids), else the first one it names."""
    listed = [model_stop_ids] if isinstance(model_stop_ids, int) else list(model_stop_ids or [])
    listed = [token_id for token_id in listed if isinstance(token_id, int)]
    eos = tokenizer.eos_token_id
    if eos is not None and (not listed or eos in listed):
        return eos
    return listed[0] if listed else eos


def _end_of_turn_text(after_reply: str, specials: list[str]) -> str:
    """The marker a template prints right after a reply (see module docstring)."""
    body = after_reply.lstrip()
    leading_space = after_reply[: len(after_reply) - len(body)]
    consumed = 0
    while True:
        special = next((s for s in specials if body.startswith(s, consumed)), None)
        if special is None:
            break
        consumed += len(special)
    if consumed:
        return leading_space + body[:consumed]
    return after_reply.split("\n", 1)[0].rstrip()


def _special_token_strings(tokenizer) -> list[str]:
    strings = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            strings.add(token.content)
    # Longest first so "<|im_end|>" wins over a shorter special that prefixes it.
    return sorted((s for s in strings if s), key=len, reverse=True)


# ---------------------------------------------------------------------------
# Spans -> tokens
# ---------------------------------------------------------------------------


def _reply_candidates(content: str):
    """Texts the template may have printed for a reply, most faithful first.

    Yields (text, is_answer_part); is_answer_part marks the text after
    ``</think>``, used when the template dropped or rewrote the reasoning.
    """
    seen = set()
    options = [(content, False), (content.strip(), False)]
    if _THINK_CLOSE in content:
        answer = content.rsplit(_THINK_CLOSE, 1)[1]
        options += [(answer.lstrip("\n"), True), (answer.strip(), True)]
    for text, is_answer_part in options:
        if text and text not in seen:
            seen.add(text)
            yield text, is_answer_part


def _reply_token_ranges(offsets, spans: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """For each reply span, the [start, end) range of the tokens it owns, or None.

    The same ownership as _span_owner_of_each_token, found with two binary searches per reply
    instead of a Python step per token: when token starts and ends both never decrease (what a
    tokenizer gives for one text), the tokens overlapping [s, e) are exactly those from the first
    whose end > s up to (excluding) the first whose start >= e; a token overlapping two replies
    belongs to the earlier one, so each range starts no earlier than the previous one ends. A range
    may be empty (start >= end). None when the premise does not hold (offsets out of order) or a
    zero-width token falls inside a range (never trained, so a range could not express it): the
    caller then goes token by token.
    """
    if not offsets:
        return [(0, 0)] * len(spans)
    starts, ends = map(list, zip(*offsets))
    if starts != sorted(starts) or ends != sorted(ends):
        return None
    ranges = []
    previous_end = 0
    for span_start, span_end in spans:
        first = max(bisect.bisect_right(ends, span_start), previous_end)
        stop = bisect.bisect_left(starts, span_end)
        ranges.append((first, stop))
        previous_end = max(previous_end, stop)
    if 0 in map(operator.sub, ends, starts):
        zero_width = [index for index, (start, end) in enumerate(offsets) if start == end]
        if any(first <= index < stop for first, stop in ranges for index in zero_width):
            return None
    return ranges


def _ranges_by_lookup(encoding, spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]] | None:
    """_reply_token_ranges' answer from a few questions to the Rust encoding, or None.

    With offsets in order and no zero-width token (checked per tokenizer, _check_lookup), the
    first token overlapping [s, e) is the first token holding character s, and the range ends at
    the first token after the one holding e - 1 that starts at e or later (a character split over
    several byte-level tokens is held by each of them, so a few tokens may follow). None when a
    character is held by no token (a normaliser dropped it): the caller reads the offsets then.
    """
    ranges = []
    previous_end = 0
    for span_start, span_end in spans:
        first = encoding.char_to_token(span_start) if span_start < span_end else None
        last = encoding.char_to_token(span_end - 1) if first is not None else None
        if last is None:
            return None
        stop = last + 1
        while stop < length:
            chars = encoding.token_to_chars(stop)
            if chars is None:
                return None
            if chars[0] >= span_end:
                break
            stop += 1
        ranges.append((max(first, previous_end), stop))
        previous_end = max(previous_end, stop)
    return ranges


def _span_owner_of_each_token(offsets, spans: list[tuple[int, int]]) -> list[int]:
    """For each token, the index of the reply span it overlaps, or -1.

    Any overlap counts (the boundary rule); spans and tokens are both sorted,
    so one pass is enough.
    """
    owners = []
    span_index = 0
    for token_start, token_end in offsets:
        while span_index < len(spans) and spans[span_index][1] <= token_start:
            span_index += 1
        inside = (
            token_end > token_start
            and span_index < len(spans)
            and spans[span_index][0] < token_end
        )
        owners.append(span_index if inside else -1)
    return owners


def _reply_token_ends(owners: list[int], reply_count: int) -> list[int]:
    """Exclusive index of the last token of each reply (0 for a reply with none)."""
    ends = [0] * reply_count
    for index, owner in enumerate(owners):
        if owner >= 0:
            ends[owner] = index + 1
    return ends


def _trained_owner_filter(train_on: str, owners: list[int]):
    if train_on == "last":
        last = max(owners, default=-1)
        return lambda owner: owner >= 0 and owner == last
    return lambda owner: owner >= 0


_PLAIN_KEYS = {"role", "content"}


def _plain_messages(messages: list[dict]) -> bool:
    """Every message is a dict with exactly role and content, both plain strings."""
    return all(
        type(message) is dict and message.keys() == _PLAIN_KEYS
        and type(message["role"]) is str and type(message["content"]) is str
        for message in messages
    )


def _check_conversation(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise BadRecord("a conversation must be a non-empty list of messages")
    has_reply = False
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (SYSTEM, USER, ASSISTANT):
            raise BadRecord(f"turn {turn}: not a message with role system/user/assistant")
        if not isinstance(message.get("content"), str):
            raise BadRecord(f"turn {turn}: content is not a string")
        if message["role"] == ASSISTANT:
            if not message["content"].strip():
                raise BadRecord(f"turn {turn}: empty assistant reply")
            has_reply = True
    if not has_reply:
        raise BadRecord("no assistant reply to train on")


# ---------------------------------------------------------------------------
# Showing masks
# ---------------------------------------------------------------------------


def label_mask_segments(
    tokenizer, input_ids: list[int], labels: list[int], label_pad_token_id: int = -100
) -> list[tuple[str, bool]]:
    """Split an example into (text, trained) runs of consecutive tokens."""
    segments: list[tuple[str, bool]] = []
    run: list[int] = []
    run_trained = None
    for token_id, label in zip(input_ids, labels):
        trained = label != label_pad_token_id
        if run and trained != run_trained:
            segments.append((_decode(tokenizer, run), run_trained))
            run = []
        run.append(token_id)
        run_trained = trained
    if run:
        segments.append((_decode(tokenizer, run), run_trained))
    return segments


def render_label_mask(
    tokenizer,
    input_ids: list[int],
    labels: list[int],
    label_pad_token_id: int = -100,
    markers: tuple[str, str] = ("[[", "]]"),
) -> str:
    """The example's text with trained parts wrapped in ``markers``."""
    opening, closing = markers
    return "".join(
        f"{opening}{text}{closing}" if trained else text
        for text, trained in label_mask_segments(tokenizer, input_ids, labels, label_pad_token_id)
    )


def _decode(tokenizer, token_ids: list[int]) -> str:
    return tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
