"""`tui-lora chat` in a terminal: one answer for scripts (--prompt), or a conversation read line by line.

Replies stream to stdout; everything about the session (loading, how to leave, a reply cut short)
goes to stderr, so `tui-lora chat RUN --prompt "..." > answer.txt` holds the answer alone.
With --compare every question is answered twice, with the adapter and by the base model alone,
each side keeping its own conversation.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from tui_lora.after.chat import ChatModel, GenerationSettings, Reply

SIDES = {"adapter": True, "base": False}  # label -> use the adapter
HELP = "/reset starts the conversation over, /quit (or Ctrl+D) leaves; Ctrl+C stops a reply"


@dataclass
class Conversation:
    """Each side's messages: with --compare the base model answers its own earlier replies, not the adapter's."""

    system: str | None
    sides: list[str]
    history: dict[str, list[dict]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        start = [{"role": "system", "content": self.system}] if self.system else []
        self.history = {side: list(start) for side in self.sides}

    def asked(self, side: str, question: str) -> list[dict]:
        return self.history[side] + [{"role": "user", "content": question}]

    def answered(self, side: str, question: str, reply: Reply) -> None:
        self.history[side] += [{"role": "user", "content": question}, {"role": "assistant", "content": reply.text}]


def chat(where: str, overrides: list[str], settings: GenerationSettings, prompt: str | None = None,
         system: str | None = None, compare: bool = False, as_json: bool = False) -> int:
    """`tui-lora chat`: load the run's adapter, then answer once (prompt) or converse."""
    from tui_lora.after.loading import check_device_map, find_adapter, quiet_libraries
    from tui_lora.places import display_path

    trained = find_adapter(where, overrides)
    quiet_libraries()
    check_device_map(trained.config)  # before saying "loading": a refusal is then the only line
    note(f"loading {trained.config.model.name_or_path} with the adapter in {display_path(trained.adapter)} …")
    model = ChatModel.load(trained)
    conversation = Conversation(system, list(SIDES) if compare else ["adapter"])
    if prompt is not None:
        return answer_once(model, conversation, prompt, settings, as_json)
    return converse(model, conversation, settings)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cut_note(side: str, reply: Reply, settings: GenerationSettings) -> str | None:
    if reply.stopped_by == "max_new_tokens":
        return f"({side}: cut at --max-new-tokens {settings.max_new_tokens} before the end of its turn)"
    if reply.stopped_by == "stopped":
        return f"({side}: stopped)"
    return None


def answer_once(model: ChatModel, conversation: Conversation, question: str, settings: GenerationSettings,
                as_json: bool) -> int:
    """--prompt: the reply (or, with --compare, both labelled) on stdout, then exit."""
    replies: dict[str, Reply] = {}
    for side in conversation.sides:
        labelled = len(conversation.sides) > 1 and not as_json
        if labelled:
            sys.stdout.write(f"{side}> ")
        stream = None if as_json else _write
        replies[side] = model.answer(conversation.asked(side, question), settings, stream, use_adapter=SIDES[side])
        if not as_json:
            sys.stdout.write("\n")
            sys.stdout.flush()
            cut = cut_note(side, replies[side], settings)
            if cut:
                note(cut)
    if as_json:
        print(json.dumps({side: reply.as_dict() for side, reply in replies.items()}, ensure_ascii=False))
    return 0


def converse(model: ChatModel, conversation: Conversation, settings: GenerationSettings) -> int:
    """Questions from stdin until /quit, Ctrl+D or Ctrl+C at the prompt; Ctrl+C during a reply stops it."""
    interactive = sys.stdin.isatty()
    note(HELP)
    while True:
        try:
            question = input("you> " if interactive else "").strip()
        except (EOFError, KeyboardInterrupt):
            if interactive:
                sys.stdout.write("\n")
            return 0
        if not question:
            continue
        if question in ("/quit", "/exit"):
            return 0
        if question == "/reset":
            conversation.reset()
            note("(a new conversation)")
            continue
        if question.startswith("/"):
            note(f"(unknown command {question.split()[0]}; {HELP})")
            continue
        for side in conversation.sides:
            sys.stdout.write(f"{side}> ")
            sys.stdout.flush()
            try:
                reply = model.answer(conversation.asked(side, question), settings, _write, use_adapter=SIDES[side])
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                note(f"({side}: stopped; this question is left out of the conversation)")
                break
            sys.stdout.write("\n")
            sys.stdout.flush()
            cut = cut_note(side, reply, settings)
            if cut:
                note(cut)
            conversation.answered(side, question, reply)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
