"""Writing run files: TOML text in schema order, saved atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tomli_w

from tui_lora.config.load import config_to_dict
from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError


def to_toml(config: RunConfig) -> str:
    return tomli_w.dumps(config_to_dict(config))


def write_atomic(path: Path, text: str, overwrite: bool = False) -> None:
    """Write text to path through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; choose another name or allow overwriting (--force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_run_file(config: RunConfig, path: Path, overwrite: bool = False) -> None:
    write_atomic(path, to_toml(config), overwrite=overwrite)
