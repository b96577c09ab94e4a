"""The wizard in a real terminal: the installed `tui-lora` console script inside tmux, driven with keys.

The pilot tests (test_wizard.py) run the app headless in this process; this one goes through
what they cannot: the console script, a terminal's key sequences, the terminal being given
back when the app quits.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tui_lora.config import load_run_file

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "tui-lora"
WAIT = 20.0  # seconds for any one thing to appear; the wizard needs about 1 s to start here
HEAVY = ("torch", "transformers", "datasets", "peft", "bitsandbytes")


class Pane:
    """One tmux session on a private server socket, showing one command at a fixed size."""

    def __init__(self, workdir: Path, width: int = 80, height: int = 24):
        self.socket = f"tui-lora-test-{uuid.uuid4().hex[:12]}"
        self.workdir, self.width, self.height = workdir, width, height
        self.last = ""

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {done.stderr.strip()}\n{self.last}")
        return done.stdout

    def start(self, command: list[str], env: dict[str, str]) -> None:
        # -f: no user tmux.conf. The command runs under sh, which prints its exit status into the
        # pane once the app has ended and given the terminal back, then keeps the pane open (a
        # stand-in for the user's shell) so the state the app left the terminal in can be read.
        config = self.workdir / "tmux.conf"
        config.write_text("set -g status off\n", encoding="utf-8")
        script = " ".join(map(shlex.quote, command)) + '; echo "[exit status $?]"; exec sleep 600'
        line = " ".join(["exec", "env", *(f"{key}={shlex.quote(value)}" for key, value in env.items()),
                         "sh", "-c", shlex.quote(script)])
        self.tmux("-f", str(config), "new-session", "-d", "-s", "wizard", "-x", str(self.width),
                  "-y", str(self.height), "-c", str(self.workdir), line)

    def screen(self) -> str:
        self.last = self.tmux("capture-pane", "-p", "-t", "wizard")
        return self.last

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.screen():
                return self.last
            time.sleep(0.05)
        raise AssertionError(f"{text!r} did not appear within {timeout:g} s; the pane shows:\n{self.last}")

    def wait_for_setting(self, label: str, value: str, timeout: float = WAIT) -> None:
        """A setting's row showing value (a placeholder or help text may name the same value)."""
        row = re.compile(rf"^\s*{re.escape(label)}\s+{re.escape(value)}\s*$", re.MULTILINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if row.search(self.screen()):
                return
            time.sleep(0.05)
        raise AssertionError(f"{label} = {value} did not appear within {timeout:g} s; the pane shows:\n{self.last}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "wizard", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "wizard", "-l", text)

    def show(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", "wizard", fmt).strip()

    def wait_until_ended(self, timeout: float = WAIT) -> int:
        """The command's exit status, once it has ended (sh prints it)."""
        text = self.wait_for("[exit status ", timeout)
        return int(text.split("[exit status ", 1)[1].split("]", 1)[0])

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def clear_field(pane: Pane, shown_when_empty: str) -> None:
    """Empty the focused text field, and see it empty before typing.

    Textual runs an Input's bound keys (Home, Ctrl+K, Backspace) after printable keys that
    arrive in the same read (Textualize/textual#6605), so "Home Ctrl+K text" sent at once can
    end up as "text Home Ctrl+K" = an empty field. A person sees the field empty first.
    """
    pane.keys("Home", "C-k")
    pane.wait_for(shown_when_empty)


@pytest.fixture
def pane(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the real-terminal test needs it (apt-get install tmux)")
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"the tui-lora console script is not installed next to {sys.executable}")
    workdir = tmp_path / "work"
    workdir.mkdir()
    terminal = Pane(workdir)
    try:
        yield terminal
    finally:
        terminal.kill()


def test_a_run_file_made_with_keys_in_a_real_terminal(pane, tmp_path):
    config_home, state_home = tmp_path / "config", tmp_path / "state"
    pane.start([str(CONSOLE_SCRIPT)], {
        "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(config_home), "XDG_STATE_HOME": str(state_home),
        "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8"})

    pane.wait_for("Choose where to start")
    pane.keys("Enter")  # "New run, from the defaults"
    pane.wait_for("1/7")
    pane.type("builtin:tiny-chat")  # the model field has the focus
    pane.wait_for_setting("model", "builtin:tiny-chat")
    pane.wait_for("Qwen2ForCausalLM")  # read by the probe, a child process, after a pause in typing
    for number in range(2, 6):
        pane.keys("C-n")
        pane.wait_for(f"{number}/7")
    pane.type("builtin:belle-sample")  # the data step opens on its path
    pane.wait_for_setting("path", "builtin:belle-sample")
    pane.keys("C-n")
    pane.wait_for("6/7")
    clear_field(pane, "is required")  # the output folder has a default to replace
    pane.type("runs/from-tmux")
    pane.wait_for_setting("output_dir", "runs/from-tmux")
    pane.keys("C-n")
    pane.wait_for("7/7")
    pane.wait_for("No problems")
    pane.keys("C-s")
    pane.wait_for("Save the run file as a preset")
    clear_field(pane, "needs a name")
    pane.type("tmux-run")
    pane.wait_for("tmux-run.toml")
    pane.keys("Enter")
    preset = config_home / "tui-lora" / "presets" / "tmux-run.toml"
    pane.wait_for("Preset saved")
    pane.keys("C-q")  # saved: quits without asking

    status = pane.wait_until_ended()
    left = pane.screen()
    assert status == 0, f"tui-lora exited with status {status}; the pane shows:\n{left}"
    # The terminal is given back: off the alternate screen, cursor shown, no mouse reporting.
    modes = "#{alternate_on} #{cursor_flag} #{mouse_any_flag} #{mouse_button_flag} #{mouse_sgr_flag}"
    assert pane.show(modes) == "0 1 0 0 0", f"{modes}: {pane.show(modes)}\n{left}"
    assert "7/7" not in left and "Choose where to start" not in left, left

    assert preset.is_file(), f"no preset at {preset}; the pane showed:\n{left}"
    saved = load_run_file(preset)
    assert saved.model.name_or_path == "builtin:tiny-chat"
    assert saved.data.path == "builtin:belle-sample"
    assert saved.training.output_dir == "runs/from-tmux"


def test_the_wizard_loads_no_ml_library_up_to_the_model_step():
    """The start screen and the first step come up without torch and friends (probes run in a child)."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        import tui_lora.cli
        from tui_lora.tui.app import WizardApp
        from tui_lora.tui.screens.model import ModelScreen

        async def main():
            app = WizardApp()
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause()
                await pilot.press("enter")
                await pilot.pause()
                assert isinstance(app.screen, ModelScreen), type(app.screen).__name__
                await app.workers.wait_for_complete()
            print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
