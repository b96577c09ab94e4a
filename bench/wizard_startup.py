"""How long `tui-lora` takes to put its first screen on a real terminal (tmux, 80×24).

Run from the repository root with the project installed:  python bench/wizard_startup.py [--runs 5]
Each run opens a tmux window with the console script and polls capture-pane about every 10 ms
until the start screen's text is there; the time is from asking tmux for the window to the
first poll that sees it, so it includes tmux starting the process and one poll's delay. One
warm-up run is not counted. `tui-lora --help` (timed as in startup_and_demo.py) is the floor
to compare with: Python and the command line, without Textual. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from startup_and_demo import timed

CONSOLE_SCRIPT = Path(sys.executable).parent / "tui-lora"
START_SCREEN_TEXT = "Choose where to start"
POLL = 0.01
TIMEOUT = 30.0


def first_screen(socket: str, name: str, env: dict[str, str], workdir: str) -> float:
    """Seconds from opening a window running tui-lora to its start screen showing in the pane."""
    tmux = ["tmux", "-L", socket]
    command = " ".join(["exec env", *(f"{key}={shlex.quote(value)}" for key, value in env.items()),
                        shlex.quote(str(CONSOLE_SCRIPT))])
    started = time.perf_counter()
    subprocess.run([*tmux, "new-window", "-d", "-n", name, "-c", workdir, command], check=True)
    try:
        while time.perf_counter() - started < TIMEOUT:
            pane = subprocess.run([*tmux, "capture-pane", "-p", "-t", f":{name}"], capture_output=True,
                                  text=True).stdout
            if START_SCREEN_TEXT in pane:
                return time.perf_counter() - started
            time.sleep(POLL)
        raise SystemExit(f"the start screen did not appear within {TIMEOUT:g} s; the pane shows:\n{pane}")
    finally:
        subprocess.run([*tmux, "kill-window", "-t", f":{name}"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    if shutil.which("tmux") is None or not CONSOLE_SCRIPT.exists():
        raise SystemExit("needs tmux and the tui-lora console script next to this Python")
    socket = f"tui-lora-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        # Empty presets and recent-runs folders, so every run draws the same start screen.
        env = {"XDG_CONFIG_HOME": f"{tmp}/config", "XDG_STATE_HOME": f"{tmp}/state", "TERM": "xterm-256color",
               "HF_HUB_OFFLINE": "1", "LANG": os.environ.get("LANG", "C.UTF-8")}
        subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "bench",
                        "-x", "80", "-y", "24", "sleep 3600"], check=True)
        subprocess.run(["tmux", "-L", socket, "set", "-g", "default-size", "80x24"], check=True)
        try:
            first_screen(socket, "warm-up", env, tmp)
            wizard = [first_screen(socket, f"run{number}", env, tmp) for number in range(runs)]
        finally:
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    helps = [timed(["--help"]) for _ in range(runs)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"{runs} runs each")
    print("| command | median s | min s | max s |\n|---|---|---|---|")
    for name, times in (("tui-lora (start screen drawn, tmux 80x24)", wizard), ("tui-lora --help", helps)):
        print(f"| `{name}` | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")


if __name__ == "__main__":
    main()
