"""Weights that follow the umask like every other file a run writes.

safetensors' save_file creates its file with mode 0600, whatever the umask: an adapter,
a checkpoint or a merged model written through it is private to its owner while the
tokenizer, config and logs beside it are readable by the group (a shared server, a
colleague evaluating the adapter, a serving process under another user). After each save
the weights get the mode any other new file gets. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """This process's umask, read without changing it where the system allows (another thread creating a
    file during os.umask's brief change would get the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_weights_like_other_files(folder: str | Path) -> None:
    """Give every *.safetensors under folder the mode a newly created file gets (0o666 & ~umask)."""
    mode = 0o666 & ~current_umask()
    for path in Path(folder).rglob("*.safetensors"):
        try:
            if path.is_file() and not path.is_symlink():
                os.chmod(path, mode)
        except OSError:
            pass  # a file of someone else's (a shared cache): its mode is not ours to change
