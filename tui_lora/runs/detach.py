"""Starting a run that outlives whoever started it, and stopping it again.

A detached run is `tui-lora run PRESET --plain` in a process of its own session: closing the
terminal, the TUI or the SSH session sends it nothing, and nothing holds it in a pipe (its
output goes to console.log in the run folder). Whoever wants to know how it goes reads the run
folder (runs/status.py, events.jsonl); stopping it is SIGTERM to the pid in the folder's lock,
which saves a checkpoint first.

Standard library only, like cli.py: the TUI calls this without loading the ML stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tui_lora.errors import RunFailed, UserError
from tui_lora.runs.folder import RunFolder, process_alive


@dataclass(frozen=True)
class DetachedRun:
    folder: Path  # the run folder (absolute)
    pid: int  # the training process: the pid in the folder's lock, the one to signal


def start_detached(preset: str | Path, overrides: list[str] = (), resume: str | None = None,
                   wait: float = 15.0) -> DetachedRun:
    """Start `tui-lora run` on preset in the background and return once it holds the run folder.

    Whatever `tui-lora run` would refuse is refused here, as a UserError, before anything starts.
    A run that exits before taking its folder raises the last line it printed (UserError for bad
    input, RunFailed otherwise). If it neither takes the folder nor exits within `wait` seconds,
    this returns anyway: it is still starting.
    """
    path, folder, checkpoint = check_run(preset, overrides, resume)
    command = run_command(path, overrides, checkpoint)
    child = spawn(command, folder)
    deadline = time.monotonic() + wait
    while child.poll() is None and folder.lock_holder() != child.pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if child.returncode is not None and folder.lock_holder() != child.pid:
        if child.returncode == 0:  # done already (a very short run)
            return DetachedRun(folder.path, child.pid)
        last = last_line(folder.console_log) or f"exit status {child.returncode}"
        if child.returncode == 2:
            raise UserError(last.removeprefix("error: "))
        raise RunFailed(f"{last.removeprefix('run failed: ')} (output in {folder.console_log})")
    if child.returncode is None:
        # Collect its exit status when it ends, so a long-lived caller (the TUI) keeps no zombie.
        threading.Thread(target=child.wait, name=f"reap-{child.pid}", daemon=True).start()
    return DetachedRun(folder.path, child.pid)


def check_run(preset: str | Path, overrides: list[str] = (), resume: str | None = None):
    """What `tui-lora run` checks before it trains, without keeping the folder: the run file's absolute path,
    the run folder and the checkpoint a resume continues (None for a new run). Raises UserError."""
    from tui_lora.presets import resolve_preset
    from tui_lora.config import load_run_file
    from tui_lora.runs.folder import open_run_folder, resolve_paths

    path = resolve_preset(str(preset)).expanduser().absolute()
    config = resolve_paths(load_run_file(path, list(overrides)))
    folder, checkpoint = open_run_folder(config, resume)
    folder.release()  # checked: the run's own process takes it
    return path, folder, checkpoint


def run_command(run_file: Path, overrides: list[str] = (), resume: str | Path | None = None,
                python: str | None = None) -> list[str]:
    """`tui-lora run RUN_FILE --plain` as the detached process runs it (resume: "latest" or a checkpoint)."""
    command = [python or sys.executable, "-m", "tui_lora.cli", "run", str(run_file), "--plain"]
    for override in overrides:
        command += ["--set", override]
    if resume is not None:
        command += ["--resume", str(resume)]
    return command


def spawn(command: list[str], folder: RunFolder, env: dict[str, str] | None = None,
          cwd: str | None = None, note: str = "") -> subprocess.Popen:
    """Start command in a session of its own, its output appended to the folder's console.log."""
    folder.path.mkdir(parents=True, exist_ok=True)
    with open(folder.console_log, "ab") as console:
        stamp = time.strftime('%Y-%m-%d %H:%M:%S')
        console.write(f"\n--- {stamp} {' '.join(command)}{f' ({note})' if note else ''}\n".encode())
        console.flush()
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, close_fds=True,
            cwd=cwd or os.getcwd(), start_new_session=True,  # no SIGHUP with the terminal, no Ctrl+C from it
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
        )


def last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def abort(folder: str | Path) -> int | None:
    """Ask the run in folder to stop: SIGTERM to the process holding its lock, which saves a checkpoint
    after the current step and ends as "aborted". Returns that pid, or None when no run is active there."""
    pid = RunFolder(folder).owner()
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    return pid


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process pid has ended (a zombie counts as ended); True if it did within timeout seconds."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
