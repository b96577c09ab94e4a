"""`tui-lora attach RUN_FOLDER`: the run screen on its own, for a run started elsewhere (or finished)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from tui_lora.tui.screens.run import RunScreen


class AttachApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "tui-lora"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+q", "leave", "Leave", priority=True)]

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def on_mount(self) -> None:
        self.push_screen(RunScreen(self.folder))

    def action_leave(self) -> None:
        screen = self.screen
        if isinstance(screen, RunScreen):
            screen.action_leave()
        else:
            self.exit()
