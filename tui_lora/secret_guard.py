"""Hub tokens stay out of run files, event logs, previews and error messages.

A token comes from the environment (HF_TOKEN) or the user's login (`hf auth login`, or
ModelScope's own); a run file is copied into every run folder and shared with presets, so
it never holds one. This module says which keys and values are secrets, and blanks them out
of any text about to be shown or written, as a last line of defence.

Standard library only: the CLI and the config loader import it before anything heavy.
(Not named secrets.py, which would shadow the standard library's module of that name.)
"""

from __future__ import annotations

import os
import re
from typing import Any

# Where tokens are read from; their values are blanked wherever they turn up.
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN")

# A Hugging Face access token: "hf_" and a few dozen letters and digits (34 today).
HUB_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")

# Key names that hold a secret, by their last word: token, hf_token, use_auth_token, api_key, password ...
# Anchored at the end so label_pad_token_id and tokenizer (real settings) are not secrets.
SECRET_KEY = re.compile(r"(^|[_.-])(token|auth|password|passwd|secret|credentials?|"
                        r"(api|access|secret|private)[_-]?key)$", re.IGNORECASE)

WHERE_TOKENS_COME_FROM = ("a hub token comes from the HF_TOKEN environment variable or `hf auth login` "
                          "(ModelScope: its own login)")

MASK = "***"
# Values shorter than this are not blanked: "1" or "abc" in HF_TOKEN would blank half of every message.
SHORTEST_MASKED = 8


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key.strip()))


def holds_token(value: Any) -> bool:
    """Whether a run-file value (a string, or a list of them) contains something shaped like a hub token."""
    if isinstance(value, str):
        return bool(HUB_TOKEN.search(value))
    if isinstance(value, list):
        return any(holds_token(item) for item in value)
    return False


def refusal(key: str, value: Any) -> str | None:
    """Why `key = value` may not be in a run file, in words that never repeat the value; None when it may.

    A table is judged key by key (find_secrets), so here it is only refused for a secret's name.
    """
    if is_secret_key(str(key)):
        return ("is a secret, and secrets never go in a run file (it is copied into every run folder); "
                f"{WHERE_TOKENS_COME_FROM}")
    if holds_token(value):
        return ("holds what looks like a hub token (hf_…), which never goes in a run file; remove it: "
                f"{WHERE_TOKENS_COME_FROM}")
    return None


def find_secrets(raw: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, why it may not be there) for every secret in a run file, in tables of any depth."""
    found: list[tuple[str, str]] = []
    for key, value in raw.items():
        why = refusal(key, value)
        if why:
            found.append((f"{prefix}{key}", why))
        elif isinstance(value, dict):
            found += find_secrets(value, f"{prefix}{key}.")
    return found


def strip_secrets(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the run file without what find_secrets finds, the dotted keys taken out)."""
    removed = [key for key, _ in find_secrets(raw)]

    def kept(table: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {key: kept(value, f"{prefix}{key}.") if isinstance(value, dict) else value
                for key, value in table.items() if f"{prefix}{key}" not in removed}

    return kept(raw, ""), removed


def scrub_override(text: str) -> str:
    """A --set text fit to echo: the value of a secret key becomes ***."""
    target, sep, value = text.partition("=")
    if sep and is_secret_key(target.strip().rpartition(".")[2]):
        return f"{target.strip()}={MASK}"
    return redact(text)


def redact(text: str) -> str:
    """`text` with every token from the environment, and anything shaped like a hub token, replaced by ***."""
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if len(value) >= SHORTEST_MASKED and value in text:
            text = text.replace(value, MASK)
    return HUB_TOKEN.sub(MASK, text) if "hf_" in text else text


def redact_value(value: Any) -> Any:
    """redact() through the strings of an event: nested lists and dicts too."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    return value
