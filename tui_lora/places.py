"""Where the user's own files live: the XDG folders (presets.py keeps its presets there) and the list of
recent runs.

Folders follow the XDG base-directory spec, so they move with XDG_CONFIG_HOME and XDG_STATE_HOME
like every other tool's. Standard library only: the wizard imports this at start-up.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


APP = "tui-lora"
RECENT_KEPT = 20


def base_dir(variable: str, default: str) -> Path:
    """An XDG base folder; the spec says to ignore the variable when it is empty or relative."""
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / default


def display_path(path: str | Path) -> str:
    """path with the home folder written as ~, for the UI and messages."""
    try:
        return str(Path("~") / Path(path).relative_to(Path.home()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- recent runs


def recent_runs_file() -> Path:
    return base_dir("XDG_STATE_HOME", ".local/state") / APP / "recent-runs.json"


def _read_recent() -> list[str]:
    """The folders on record, newest first; a missing or damaged file is an empty list, not an error."""
    try:
        entries = json.loads(recent_runs_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(entries, list):
        return []
    return list(dict.fromkeys(entry for entry in entries if isinstance(entry, str) and os.path.isabs(entry)))


def replace_file(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def record_run(folder: str | Path) -> None:
    """Put folder first in the recent-runs list.

    Never raises for the file system: a run must not fail because this list cannot be written.
    Two runs starting at the same moment may keep only one of their entries; the file itself
    is never damaged.
    """
    entry = str(Path(folder).expanduser().absolute())
    entries = [entry] + [known for known in _read_recent() if known != entry]
    try:
        replace_file(recent_runs_file(), json.dumps(entries[:RECENT_KEPT], indent=1) + "\n")
    except OSError:
        pass


def recent_runs(limit: int = 10) -> list[Path]:
    """Recent run folders, newest first: only those still there with their run.toml."""
    alive = [Path(entry) for entry in _read_recent() if os.path.isfile(os.path.join(entry, "run.toml"))]
    return alive[:limit]
