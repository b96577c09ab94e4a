"""Answering a conversation with the trained adapter (or without it, for comparison).

Each answer renders the whole conversation with the chat template saved beside the adapter
(the one training used), generates until the end-of-turn marker, and streams the text as it
comes. Where a turn ends is read from the template the same way the training labels read it
(data/encode.py's TemplateLayout): the marker after a reply is what the model was trained to
produce, so it is what generation stops at, together with the tokenizer's and the model's eos.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

OnText = Callable[[str], object]


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy: the most likely token every time
    top_p: float = 0.9
    seed: int | None = None   # set before every answer, so an answer can be reproduced


@dataclass
class Reply:
    text: str
    new_tokens: int
    stopped_by: str  # "end_of_turn", "max_new_tokens" or "stopped" (asked to stop)
    seconds: float
    prompt_tokens: int  # the conversation as the model saw it (oldest exchanges dropped to fit its context)

    def as_dict(self) -> dict:
        return {"text": self.text, "new_tokens": self.new_tokens, "stopped_by": self.stopped_by,
                "seconds": round(self.seconds, 3), "prompt_tokens": self.prompt_tokens}


@dataclass(frozen=True)
class TurnEnd:
    """How a reply ends: tokens that stop generation, and end markers that are plain text, not tokens."""

    token_ids: frozenset[int]
    texts: tuple[str, ...]


def turn_end(tokenizer, generation_config=None) -> TurnEnd:
    """The end-of-turn marker the chat template prints after a reply, plus every eos the model knows."""
    from tui_lora.data.encode import ConversationEncoder
    from tui_lora.data.formats import BadRecord

    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        ids.update([source] if isinstance(source, int) else source or [])
    texts: list[str] = []
    try:
        markers = ConversationEncoder(tokenizer, max_length=1 << 20).layout.end_of_turn
    except (BadRecord, ValueError):  # a slow tokenizer, or a template without a readable layout: eos only
        markers = ()
    for marker in (m.strip() for m in markers):
        if not marker:
            continue
        tokens = tokenizer.encode(marker, add_special_tokens=False)
        if len(tokens) == 1:
            ids.add(tokens[0])
        else:
            texts.append(marker)  # learnt as ordinary text: stopped on as a string
    return TurnEnd(frozenset(ids), tuple(texts))


class HeldBack:
    """Streamed text, minus any tail that may be the start of a plain-text end marker.

    A marker such as "<|im_end|>" spelt in ordinary tokens arrives in pieces; a piece that could
    begin it waits until the next piece shows whether it does, so the marker is never printed.
    """

    def __init__(self, markers: tuple[str, ...], on_text: OnText | None):
        self.markers, self.on_text = markers, on_text
        self.text = ""
        self.shown = 0
        self.marker_seen = False

    def add(self, piece: str) -> None:
        self.text += piece
        cut = _first_marker(self.text, self.markers)
        end = cut if cut is not None else len(self.text) - _open_tail(self.text, self.markers)
        self._show(end)

    def finish(self) -> str:
        """The whole reply, without its end marker (and what was held back is shown now)."""
        cut = _first_marker(self.text, self.markers)
        self.marker_seen = cut is not None
        self.text = self.text[:cut] if cut is not None else self.text
        self._show(len(self.text))
        return self.text

    def _show(self, end: int) -> None:
        if end > self.shown:
            if self.on_text is not None:
                self.on_text(self.text[self.shown:end])
            self.shown = end


def _first_marker(text: str, markers: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(m) for m in markers) if i >= 0]
    return min(found) if found else None


def _open_tail(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning of a marker."""
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if marker.startswith(text[-size:]):
                longest = size
                break
    return longest


def trim_history(messages: list[dict], too_long: Callable[[list[dict]], bool]) -> list[dict]:
    """Drop the oldest exchanges (never a system prompt, never the newest question) until it fits."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while too_long(system + turns) and len(turns) > 1:
        # one exchange is a user turn and what follows it up to the next user turn
        following = next((i for i, m in enumerate(turns[1:], 1) if m["role"] == "user"), len(turns) - 1)
        turns = turns[following:]
    return system + turns


class ChatModel:
    """A base model with its adapter on it, answering conversations in the run's chat template."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.end = turn_end(tokenizer, getattr(model, "generation_config", None))
        config = model.config
        self.context = getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length

    @classmethod
    def load(cls, trained) -> ChatModel:
        from tui_lora.after.loading import load_adapter_model

        return cls(*load_adapter_model(trained))

    def answer(self, messages: list[dict], settings: GenerationSettings, on_text: OnText | None = None,
               use_adapter: bool = True, stop: threading.Event | None = None) -> Reply:
        """The assistant's next turn after `messages`, streamed to `on_text` piece by piece."""
        import contextlib

        import torch
        from transformers import set_seed

        room = max(1, self.context - settings.max_new_tokens)
        messages = trim_history(messages, lambda m: len(self._prompt_ids(m)) > room)
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt").to(self.model.device)
        held = HeldBack(self.end.texts, on_text)
        stop = stop or threading.Event()
        if settings.seed is not None:
            set_seed(settings.seed)
        started = time.perf_counter()
        adapter_off = contextlib.nullcontext() if use_adapter else self.model.disable_adapter()
        with adapter_off, torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self._generation_config(settings),
                                         streamer=text_streamer(self.tokenizer, held.add),
                                         stopping_criteria=_stop_criteria(stop),
                                         **({"tokenizer": self.tokenizer} if self.end.texts else {}))
        new = output[0, inputs["input_ids"].shape[1]:].tolist()
        text = held.finish()
        if new and new[-1] in self.end.token_ids or held.marker_seen or self._ends_with_marker(new):
            stopped_by = "end_of_turn"
        elif stop.is_set():
            stopped_by = "stopped"
        else:
            stopped_by = "max_new_tokens"
        return Reply(text.strip(), len(new), stopped_by, time.perf_counter() - started,
                     inputs["input_ids"].shape[1])

    def _ends_with_marker(self, new: list[int]) -> bool:
        if not self.end.texts:
            return False
        raw = self.tokenizer.decode(new, skip_special_tokens=False)
        return any(raw.rstrip().endswith(marker) for marker in self.end.texts)

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]

    def _generation_config(self, settings: GenerationSettings):
        import copy

        config = copy.deepcopy(self.model.generation_config)
        sampling = settings.temperature > 0
        config.update(max_new_tokens=settings.max_new_tokens, do_sample=sampling,
                      eos_token_id=sorted(self.end.token_ids) or None, pad_token_id=self.tokenizer.pad_token_id,
                      stop_strings=list(self.end.texts) or None, max_length=None)
        if sampling:
            config.update(temperature=settings.temperature, top_p=settings.top_p)
        else:  # the model's own sampling defaults would only earn a warning under greedy decoding
            config.update(temperature=None, top_p=None, top_k=None, min_p=None, typical_p=None)
        return config


def _stop_criteria(stop: threading.Event):
    """A StoppingCriteria list that ends generation once `stop` is set (the TUI's Esc, leaving the screen)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopWhenAsked()])


def text_streamer(tokenizer, on_text: OnText):
    """transformers' TextStreamer (it decodes whole words and characters, never half a byte sequence),
    sending the text to `on_text` instead of printing it."""
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
