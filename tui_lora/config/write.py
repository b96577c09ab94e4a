"""Writing run files: TOML text in schema order, saved atomically."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import tomli_w

from tui_lora.config.load import config_to_dict
from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError
from tui_lora.file_modes import current_umask


def to_toml(config: RunConfig) -> str:
    return tomli_w.dumps(config_to_dict(config))


def _new_file_mode(path: Path) -> int:
    """The mode a plain open() would give: an overwritten file keeps its own, a new one 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def write_atomic(path: Path, text: str, overwrite: bool = False) -> None:
    """Write text to path through a temporary file and a rename, so a crash never leaves half a file.

    Anything the file system refuses (a folder that cannot be made, no write permission, a path
    under a file) becomes a UserError naming the path and the reason.
    """
    path = Path(path)
    tmp = None
    try:
        if path.exists() and not overwrite:
            raise UserError(f"{path} already exists; choose another name or allow overwriting (--force)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), _new_file_mode(path))  # mkstemp makes it 0600
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        # name the other path involved (the parent that cannot be made), never our temporary file
        culprit = exc.filename if exc.filename and exc.filename != str(path) and \
            not Path(exc.filename).name.startswith(f".{path.name}.") else None
        raise UserError(f"{path}: cannot write the file: {reason}"
                        + (f" ({culprit})" if culprit else "")) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def save_run_file(config: RunConfig, path: Path, overwrite: bool = False) -> None:
    write_atomic(path, to_toml(config), overwrite=overwrite)
