"""Turn dataset records into conversations.

A message is ``{"role": "system" | "user" | "assistant", "content": str}`` and a
conversation is a list of messages.  Four record layouts are understood:

``messages``
    ``{"messages": [{"role": ..., "content": ...}, ...]}`` -- strict: only the
    roles system/user/assistant, a system message only in first place, contents
    must be strings, the conversation must start with a user turn (after the
    optional system message) and end with an assistant reply.
``sharegpt``
    ``{"conversations": [{"from": ..., "value": ...}, ...]}`` -- lenient:
    ``from`` may be human/user, gpt/assistant or system (``role``/``content``
    keys are accepted too); a leading assistant turn (a greeting with no
    question) and trailing user turns are dropped instead of rejected.
``alpaca``
    ``{"instruction", "input"?, "output", "history"?, "system"?}`` with
    ``history`` a list of ``[question, answer]`` pairs that come before the
    instruction; a non-empty ``input`` is appended to the instruction after a
    newline.
``belle``
    BelleGroup multiturn_chat: the whole dialogue is in ``instruction`` as
    ``"Human:q1\\nAssistant:a1\\nHuman:q2\\nAssistant:"`` and the final reply is
    ``output``.

Rules for the traps in belle text:

* Line endings: ``\\r\\n`` and lone ``\\r`` become ``\\n`` before parsing.
* Markers: ``Human:`` / ``Assistant:`` (a full-width colon is accepted too) only
  count at the start of the text (leading whitespace of the whole text is
  ignored) or right after a newline with no indentation; anywhere else --
  mid-line or indented -- they are ordinary text of the turn they appear in.
* Text before the first marker is treated as user text (a record with no
  marker at all is a single-turn instruction).
* The final reply goes where the trailing empty ``Assistant:`` is; if the text
  ends on a Human turn instead, the output answers that turn.  If the text
  already ends with a non-empty assistant turn the record is ambiguous and is
  rejected.
* A non-empty ``input`` is appended to the last user turn after a newline.
* A missing/None/non-string ``output`` is a BadRecord; an empty or blank
  ``output`` drops the final exchange (shared rule 3 below), so the record
  survives only if an earlier exchange is complete.

Rules shared by every format (applied after parsing, in this order):

1. Every content is stripped of surrounding whitespace.
2. Consecutive turns with the same role are merged into one, joined by a
   blank line (empty parts are skipped), so the result always alternates.
3. An exchange (user turn + the reply to it) in which either side is empty is
   dropped whole: training on an empty reply teaches the model to say nothing,
   and a reply to an empty question has no context.  An empty system prompt is
   dropped.
4. A trailing user turn with no reply: BadRecord in ``messages`` (strict),
   dropped in the other formats.  A leading assistant turn: BadRecord in
   ``messages``, dropped in the others.
5. What remains must hold at least one assistant reply, else BadRecord.

So every conversation returned is ``[system?] user assistant (user assistant)*``
with non-empty contents.  Only the standard library (and the schema's list of formats) is used here.
"""

from __future__ import annotations

import itertools
import re

from tui_lora.config.schema import FORMATS

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"

# How many leading records detect_format looks at.
_DETECT_SAMPLE = 5

# Belle markers count only at the start of the text or of a line (re.M makes ^
# match after every newline); ASCII or full-width colon.
_BELLE_MARKER = re.compile(r"^(Human|Assistant)[:：]", re.MULTILINE)
_BELLE_ROLES = {"Human": USER, "Assistant": ASSISTANT}

_SHAREGPT_ROLES = {
    "human": USER,
    "user": USER,
    "gpt": ASSISTANT,
    "assistant": ASSISTANT,
    "system": SYSTEM,
}


class BadRecord(ValueError):
    """A record that cannot be turned into a usable training conversation."""


# --------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------


def detect_format(records: list[dict]) -> str:
    """Name the format of a dataset from the keys of its first few records."""
    # islice, not slicing: a datasets.Dataset slice is a dict of columns.
    sample = [r for r in itertools.islice(records, _DETECT_SAMPLE) if isinstance(r, dict)]
    found = {fmt for fmt in map(_format_of_record, sample) if fmt is not None}
    # A belle dump can hold a few single-turn rows without "Human:" markers;
    # the belle parser handles those, so a belle/alpaca mix counts as belle.
    if found == {"belle", "alpaca"}:
        return "belle"
    if len(found) == 1:
        return found.pop()
    keys_seen = sorted({key for record in sample for key in record})
    if len(found) > 1:
        raise BadRecord(
            f"records mix formats {sorted(found)} (keys seen: {keys_seen})"
        )
    raise BadRecord(
        f"unknown record format: keys seen {keys_seen}; expected one of "
        f"{', '.join(FORMATS)} (keys 'messages', 'conversations', or "
        f"'instruction' + 'output')"
    )


def _format_of_record(record: dict) -> str | None:
    if isinstance(record.get("messages"), list):
        return "messages"
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if "instruction" in record and "output" in record:
        instruction = record["instruction"]
        if isinstance(instruction, str) and _has_belle_marker(instruction):
            return "belle"
        return "alpaca"
    return None


def _has_belle_marker(text: str) -> bool:
    text = _unix_newlines(text).lstrip()  # same view of the text as _parse_belle
    return any(m.group(1) == "Human" for m in _BELLE_MARKER.finditer(text))


# --------------------------------------------------------------------------
# Record -> conversation
# --------------------------------------------------------------------------


def to_messages(record: dict, fmt: str) -> list[dict]:
    """Convert one record of format ``fmt`` into a clean conversation."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if not isinstance(record, dict):
        raise BadRecord(f"record is a {type(record).__name__}, not a dict")
    parse = _PARSERS[fmt]
    turns = parse(record)
    return _normalize(turns, strict=(fmt == "messages"))


def with_system_prompt(messages: list[dict], prompt: str, mode: str = "missing") -> list[dict]:
    """The conversation with the run's system prompt (data.system_prompt): put first where it has no system
    message; with mode "replace", in place of the one it has. An empty prompt changes nothing."""
    if not prompt:
        return messages
    system = {"role": SYSTEM, "content": _unix_newlines(prompt)}
    if messages and messages[0]["role"] == SYSTEM:
        return [system, *messages[1:]] if mode == "replace" else messages
    return [system, *messages]


def _parse_messages(record: dict) -> list[dict]:
    raw = record.get("messages")
    if not isinstance(raw, list):
        raise BadRecord("'messages' is missing or not a list")
    turns = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise BadRecord(f"message {index} is not a dict")
        role = message.get("role")
        if role not in (SYSTEM, USER, ASSISTANT):
            raise BadRecord(f"message {index} has role {role!r}; allowed: system, user, assistant")
        turns.append(_turn(role, message.get("content"), f"message {index}"))
    return turns


def _parse_sharegpt(record: dict) -> list[dict]:
    raw = record.get("conversations")
    if not isinstance(raw, list):
        raise BadRecord("'conversations' is missing or not a list")
    turns = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise BadRecord(f"turn {index} is not a dict")
        speaker = entry.get("from", entry.get("role"))
        role = _SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise BadRecord(
                f"turn {index} comes from {speaker!r}; allowed: {', '.join(_SHAREGPT_ROLES)}"
            )
        turns.append(_turn(role, entry.get("value", entry.get("content")), f"turn {index}"))
    return turns


def _parse_alpaca(record: dict) -> list[dict]:
    turns = []
    system = record.get("system")
    if system is not None:
        turns.append(_turn(SYSTEM, system, "'system'"))
    history = record.get("history") or []
    if not isinstance(history, list):
        raise BadRecord("'history' is not a list of [question, answer] pairs")
    for index, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadRecord(f"history entry {index} is not a [question, answer] pair")
        turns.append(_turn(USER, pair[0], f"history {index} question"))
        turns.append(_turn(ASSISTANT, pair[1], f"history {index} answer"))
    question = _required_text(record, "instruction")
    turns.append({"role": USER, "content": _append_input(question, record)})
    turns.append({"role": ASSISTANT, "content": _required_text(record, "output")})
    return turns


def _parse_belle(record: dict) -> list[dict]:
    # lstrip: whitespace before the very first marker is not a user turn.
    instruction = _unix_newlines(_required_text(record, "instruction")).lstrip()
    output = _unix_newlines(_required_text(record, "output"))
    turns = _split_belle_dialogue(instruction)
    if turns and turns[-1]["role"] == ASSISTANT:
        if turns[-1]["content"].strip():
            raise BadRecord("instruction already ends with an assistant reply; cannot place 'output'")
        turns.pop()  # the empty "Assistant:" prompt that output fills
    if not turns:
        raise BadRecord("instruction holds no user turn")
    # "input" belongs to the question the output answers: the last user turn.
    last_user = _last_index_of(turns, USER)
    if last_user is not None:
        turns[last_user]["content"] = _append_input(turns[last_user]["content"], record)
    turns.append({"role": ASSISTANT, "content": output})
    return turns


_PARSERS = {
    "messages": _parse_messages,
    "sharegpt": _parse_sharegpt,
    "alpaca": _parse_alpaca,
    "belle": _parse_belle,
}


def _split_belle_dialogue(text: str) -> list[dict]:
    """Cut belle text at line-start markers into role-tagged turns."""
    turns = []
    markers = list(_BELLE_MARKER.finditer(text))
    preamble_end = markers[0].start() if markers else len(text)
    if text[:preamble_end].strip():
        turns.append({"role": USER, "content": text[:preamble_end]})
    for position, marker in enumerate(markers):
        end = markers[position + 1].start() if position + 1 < len(markers) else len(text)
        role = _BELLE_ROLES[marker.group(1)]
        turns.append({"role": role, "content": text[marker.end():end]})
    return turns


# --------------------------------------------------------------------------
# Shared clean-up
# --------------------------------------------------------------------------


def _normalize(turns: list[dict], *, strict: bool) -> list[dict]:
    """Apply the shared rules (see module docstring) to parsed turns."""
    system, dialogue = _split_system(turns)
    dialogue = _merge_same_role([_stripped(t) for t in dialogue])
    if dialogue and dialogue[0]["role"] == ASSISTANT:
        if strict:
            raise BadRecord("conversation starts with an assistant turn, not a user turn")
        dialogue = dialogue[1:]
    if dialogue and dialogue[-1]["role"] == USER:
        if strict:
            raise BadRecord("conversation ends with a user turn; it must end with an assistant reply")
        dialogue = dialogue[:-1]
    exchanges = [
        (dialogue[i], dialogue[i + 1])
        for i in range(0, len(dialogue), 2)
        if dialogue[i]["content"] and dialogue[i + 1]["content"]
    ]
    if not exchanges:
        raise BadRecord("no exchange with a non-empty question and a non-empty reply")
    conversation = [system] if system is not None else []
    for question, reply in exchanges:
        conversation.extend((question, reply))
    return conversation


def _split_system(turns: list[dict]) -> tuple[dict | None, list[dict]]:
    for index, turn in enumerate(turns):
        if turn["role"] == SYSTEM and index != 0:
            raise BadRecord(f"system message at position {index}; only the first message may be system")
    if turns and turns[0]["role"] == SYSTEM:
        system = _stripped(turns[0])
        return (system if system["content"] else None), turns[1:]
    return None, turns


def _merge_same_role(turns: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            parts = [p for p in (merged[-1]["content"], turn["content"]) if p]
            merged[-1] = {"role": turn["role"], "content": "\n\n".join(parts)}
        else:
            merged.append(dict(turn))
    return merged


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _turn(role: str, content, where: str) -> dict:
    if not isinstance(content, str):
        raise BadRecord(f"{where}: content is {type(content).__name__}, not a string")
    return {"role": role, "content": _unix_newlines(content)}


def _required_text(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        raise BadRecord(f"missing {key!r}")
    if not isinstance(value, str):
        raise BadRecord(f"{key!r} is {type(value).__name__}, not a string")
    return value


def _append_input(question: str, record: dict) -> str:
    extra = record.get("input")
    if extra is None:
        return question
    if not isinstance(extra, str):
        raise BadRecord(f"'input' is {type(extra).__name__}, not a string")
    extra = _unix_newlines(extra).strip()
    if not extra:
        return question
    return f"{question.strip()}\n{extra}" if question.strip() else extra


def _stripped(turn: dict) -> dict:
    return {"role": turn["role"], "content": turn["content"].strip()}


def _unix_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _last_index_of(turns: list[dict], role: str) -> int | None:
    for index in range(len(turns) - 1, -1, -1):
        if turns[index]["role"] == role:
            return index
    return None
