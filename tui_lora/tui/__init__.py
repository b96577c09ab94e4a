"""The Textual front door: `tui-lora` with no arguments opens the wizard.

Only Textual and the config package load here; anything that needs the ML libraries
runs in a child process (tui_lora.probe) or in the training process.
"""

from __future__ import annotations

from pathlib import Path


def run_wizard(preset: Path | None = None):
    """Run the wizard in this terminal; returns what the user chose at the end, e.g. ("run", path)."""
    from tui_lora.tui.app import WizardApp

    return WizardApp(preset).run()


def run_attached(folder: Path):
    """The run screen for one run folder; returns ("left", folder) when the user leaves a live run."""
    from tui_lora.tui.attach import AttachApp

    return AttachApp(folder).run()
