"""Files the package ships so the demo and the tests need no network.

`builtin:NAME` in a run file names one of them; scripts/build_assets.py rebuilds them.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
BUILTIN_PREFIX = "builtin:"

BUILTINS: dict[str, Path] = {
    "tiny-chat": ASSETS_DIR / "tiny-chat",
    "belle-sample": ASSETS_DIR / "data" / "belle_sample.jsonl",
}


def is_builtin(ref: str) -> bool:
    return ref.startswith(BUILTIN_PREFIX)


def builtin_path(ref: str) -> Path:
    """The shipped file or folder that `builtin:NAME` stands for; KeyError when NAME is unknown."""
    return BUILTINS[ref[len(BUILTIN_PREFIX):]]
