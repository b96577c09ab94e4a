"""Why a value cannot be a path on this machine, in one line: the operating system answers (one stat).

The run file names files and folders (model, tokenizer, data, run folder, logs, cache, launch config);
a name the file system refuses (too long, a NUL byte, through a file, no permission, a loop of links)
is found here at validation, not as an OSError in the middle of a run. Standard library only.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def readable_path_exists(ref: str) -> bool:
    """Path.exists that never raises: a name too long or with a NUL in it is for path_problem to explain."""
    try:
        return Path(ref).expanduser().exists()
    except (OSError, ValueError):  # ENAMETOOLONG, EACCES, ELOOP …; ValueError: a NUL byte
        return False


def path_problem(ref: str) -> str | None:
    """Why ref cannot be a path on this machine, in words, or None (a path that does not exist yet is fine
    here; each field says whether it must exist). The operating system answers: one stat of the path."""
    if "\0" in ref:
        return f"{quoted(ref)} contains a NUL character, which no file name can hold"
    path = Path(ref).expanduser()
    try:
        path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            longest = max(path.parts, key=len)
            return (f"{quoted(ref)} is too long for a file name here ({len(longest.encode())} bytes in one part "
                    f"of it, {len(ref.encode())} in all; this file system allows {_name_max(path)} per part)")
        if exc.errno == errno.ENOTDIR:
            blocker = next((str(parent) for parent in reversed(path.parents) if parent.is_file()), "a part of it")
            return f"{quoted(ref)} goes through {blocker}, which is a file, not a folder"
        if exc.errno == errno.EACCES:
            return f"{quoted(ref)} cannot be reached: permission denied ({_denied_at(path)})"
        if exc.errno == errno.ELOOP:
            return f"{quoted(ref)} is a loop of symbolic links"
        return f"{quoted(ref)} cannot be read: {exc.strerror or exc}"
    return None


def quoted(ref: str) -> str:
    """A value as a message quotes it: a 300-character name is shown by its start and its length."""
    return repr(ref) if len(ref) <= 80 else f"{ref[:40]!r}… ({len(ref)} characters)"


def _name_max(path: Path) -> int:
    for folder in (*path.parents, Path(".")):
        try:
            return os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def _denied_at(path: Path) -> str:
    """The folder whose permissions stop the lookup: the deepest one that exists but cannot be searched."""
    for parent in reversed(path.absolute().parents):
        try:
            parent.stat()
        except OSError:
            return f"{parent.parent} cannot be searched"
        if not os.access(parent, os.X_OK):
            return f"{parent} cannot be searched"
    return f"{path.parent} cannot be searched"


def folder_problem(ref: str) -> str | None:
    """Why a folder the run creates (output_dir, logging_dir, cache_dir) cannot be made at ref, or None."""
    problem = path_problem(ref)
    if problem:
        return problem
    path = Path(ref).expanduser().absolute()
    if path.exists():
        return None if path.is_dir() else f"{quoted(ref)} is a file; give a folder"
    ancestor = next((p for p in path.parents if p.exists()), None)
    if ancestor is not None and not os.access(ancestor, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(ancestor).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "it is on a read-only file system" if read_only else f"no permission to write in {ancestor}"
        return f"{quoted(ref)} cannot be created: {why}"
    return None
