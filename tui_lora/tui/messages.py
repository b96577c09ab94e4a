"""Messages that more than one module of the wizard handles: the app posts them, screens take them."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class ProbeAnswered(Message, bubble=False):
    """A probe (a child process) has answered `kind` for the draft as it was then (`key`).

    The probe worker posts it to the app, which records the answer and posts a copy to the screen on top; a
    screen that shows what that probe finds handles it. It never bubbles: a screen's copy must not reach the
    app a second time.
    """

    kind: str
    key: tuple
    answer: dict
