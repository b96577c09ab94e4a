"""Chat with a finished run's adapter, opened from the run screen.

The model loads in a worker thread and answers there too; the workers only post messages,
and the screen writes them into its log as they arrive, so the reply streams while the UI
stays responsive. The ML libraries are imported inside the worker: opening the wizard or the
run screen never loads them. Esc asks a reply in progress to stop (at its next token) and
goes back; the model is dropped with the screen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Log, Static

HELP = "Enter asks · Ctrl+R starts a new conversation · Esc goes back (and stops a reply)"


@dataclass
class ModelLoaded(Message):
    model: object  # tui_lora.after.chat.ChatModel
    described: str


@dataclass
class ReplyPiece(Message):
    text: str


@dataclass
class ReplyDone(Message):
    reply: object  # tui_lora.after.chat.Reply
    question: str


@dataclass
class ChatFailed(Message):
    error: str


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "leave", "Back"),
        Binding("ctrl+r", "reset", "New conversation"),
    ]

    def __init__(self, where: Path, settings=None) -> None:
        super().__init__()
        self.where = Path(where)
        self.settings = settings  # GenerationSettings; the defaults are made in the worker (no ML import here)
        self.model = None
        self.messages: list[dict] = []
        self.replies: list = []  # every finished Reply, in order
        self.busy = False
        self.stop = threading.Event()

    def compose(self) -> ComposeResult:
        from tui_lora.places import display_path

        yield Static(f"[b]tui-lora[/b]  chat  {display_path(self.where)}", id="step-title", markup=True)
        yield Log(id="chat-log", auto_scroll=True)
        yield Static("loading the base model and the adapter…", id="chat-status", markup=False)
        yield Input(placeholder="ask something (the model is loading)", id="chat-input", disabled=True, compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    # ------------------------------------------------------------ workers (they only post messages)

    @work(thread=True, group="chat-load")
    def _load(self) -> None:
        try:
            from tui_lora.after.chat import ChatModel, GenerationSettings
            from tui_lora.after.loading import find_adapter, quiet_libraries

            quiet_libraries()
            trained = find_adapter(str(self.where))
            if self.settings is None:
                self.settings = GenerationSettings()
            model = ChatModel.load(trained)
            self.post_message(ModelLoaded(model, f"{trained.config.model.name_or_path} + {trained.adapter}"))
        except Exception as exc:  # a UserError or a bug: either is shown on the screen, not a crash
            self.post_message(ChatFailed(_one_line(exc)))

    @work(thread=True, group="chat-answer")
    def _answer(self, question: str, messages: list[dict]) -> None:
        try:
            reply = self.model.answer(messages, self.settings, on_text=lambda text: self.post_message(ReplyPiece(text)),
                                      stop=self.stop)
            self.post_message(ReplyDone(reply, question))
        except Exception as exc:
            self.post_message(ChatFailed(_one_line(exc)))

    # ------------------------------------------------------------ what the workers report

    @on(ModelLoaded)
    def _loaded(self, message: ModelLoaded) -> None:
        self.model = message.model
        self._status(f"{message.described} · {self._settings_text()} · {HELP}")
        chat_input = self.query_one("#chat-input", Input)
        chat_input.disabled = False
        chat_input.placeholder = "ask something, then Enter"
        chat_input.focus()

    @on(ReplyPiece)
    def _piece(self, message: ReplyPiece) -> None:
        # only write(), never write_line(): a line written whole is not continued by the next write
        self.query_one("#chat-log", Log).write(message.text)

    @on(ReplyDone)
    def _done(self, message: ReplyDone) -> None:
        reply = message.reply
        self.busy = False
        self.replies.append(reply)
        self.query_one("#chat-log", Log).write("\n")
        if reply.stopped_by != "end_of_turn":
            why = "cut at the token limit" if reply.stopped_by == "max_new_tokens" else "stopped"
            self.query_one("#chat-log", Log).write(f"({why})\n")
        self.messages += [{"role": "user", "content": message.question},
                          {"role": "assistant", "content": reply.text}]
        self._status(f"{reply.new_tokens} tokens in {reply.seconds:.1f} s · {self._settings_text()} · {HELP}")

    @on(ChatFailed)
    def _failed(self, message: ChatFailed) -> None:
        self.busy = False
        self._status(f"✗ {message.error} · Esc goes back")
        self.query_one("#chat-log", Log).write(f"error: {message.error}\n")

    # ------------------------------------------------------------ the user

    @on(Input.Submitted, "#chat-input")
    def _ask(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question or self.busy or self.model is None:
            return
        event.input.value = ""
        self.busy = True
        self.stop.clear()
        log = self.query_one("#chat-log", Log)
        log.write(f"you> {question}\n")
        log.write("adapter> ")
        self._status(f"answering… · {HELP}")
        self._answer(question, self.messages + [{"role": "user", "content": question}])

    def action_reset(self) -> None:
        if self.busy:
            self.notify("wait for the reply to finish (Esc stops it)", severity="warning")
            return
        self.messages = []
        self.query_one("#chat-log", Log).write("(a new conversation)\n")

    def action_leave(self) -> None:
        self.stop.set()  # a reply in progress ends at its next token
        self.model = None
        self.app.pop_screen()

    def _status(self, text: str) -> None:
        self.query_one("#chat-status", Static).update(text)

    def _settings_text(self) -> str:
        s = self.settings
        sampling = "greedy" if s.temperature == 0 else f"temperature {s.temperature:g}, top-p {s.top_p:g}"
        return f"{sampling}, up to {s.max_new_tokens} tokens"


def _one_line(exc: Exception) -> str:
    from tui_lora.errors import UserError, first_line

    return first_line(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {first_line(exc)}"
