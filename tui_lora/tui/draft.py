"""The run file being edited in the wizard, and what is wrong with it right now.

The draft keeps the run file as the TOML dict a person would write, so a preset read
from disk keeps every key it had, even ones the wizard has no field for. Checking it
goes through the same `build_config` and `check_rules` as `tui-lora validate`; the
wizard has no rules of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_lora.config.load import ConfigIssue, build_config, config_to_dict, read_toml
from tui_lora.config.rules import check_rules
from tui_lora.config.schema import RunConfig, section_fields
from tui_lora.secret_guard import find_secrets, strip_secrets


def field_spec(key: str):
    """The schema field behind "section.key" (description is the one top-level key)."""
    if key == "description":
        from dataclasses import fields

        return next(f for f in fields(RunConfig) if f.name == "description")
    section, name = key.split(".", 1)
    return section_fields(section)[name]


def value_text(value: Any) -> str:
    """How a value appears in a text field: lists as comma-separated names."""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e16 else f"{value:.1f}"
    return str(value)


def parse_text(key: str, text: str) -> Any:
    """Text typed into a field -> the value the run file gets.

    Text that does not fit the field's type is kept as the text itself, so the loader
    reports it with the same message `tui-lora validate` would give.
    """
    annotation = field_spec(key).type
    text = text.strip()
    if annotation == "int":
        try:
            return int(text.replace("_", ""))
        except ValueError:
            return text
    if annotation == "float":
        try:
            return float(text.replace("_", ""))
        except ValueError:
            return text
    if annotation == "list[str]":
        return [item.strip() for item in text.split(",") if item.strip()]
    if annotation == "list[str] | str":  # lora.target_modules: "all-linear" or a list of names
        return text if text == "all-linear" else [item.strip() for item in text.split(",") if item.strip()]
    return text


@dataclass
class Check:
    """One look at the draft: the typed config and every problem, by key.

    `field_issues` are values a field cannot hold at all (wrong type, out of range, not a
    choice); they block leaving the step. `rule_issues` involve other fields or the
    disk, may be fixed on a later step, and only block starting the run.
    """

    config: RunConfig
    field_issues: list[ConfigIssue] = field(default_factory=list)
    rule_issues: list[ConfigIssue] = field(default_factory=list)

    @property
    def issues(self) -> list[ConfigIssue]:
        return self.field_issues + self.rule_issues

    def for_key(self, key: str) -> list[ConfigIssue]:
        return [issue for issue in self.issues if issue.key == key]

    def blocking(self, keys) -> list[ConfigIssue]:
        keys = set(keys)
        return [issue for issue in self.field_issues if issue.key in keys]


class Draft:
    def __init__(self, raw: dict | None = None, source: Path | None = None):
        # Unknown keys are kept, secrets are not: a token read from a hand-edited file is dropped here, so
        # no preview, saved preset or probe ever holds it; the review says which keys went.
        self.raw, self.removed_secrets = strip_secrets(copy.deepcopy(raw) if raw else {})
        self.source = source  # the file it was read from, if any
        self.check = self._check()

    @classmethod
    def from_file(cls, path: Path) -> "Draft":
        return cls(read_toml(path), source=path)

    def get(self, key: str) -> Any:
        """The value as the draft holds it, else the schema default."""
        if key == "description":
            return self.raw.get("description", "")
        section, name = key.split(".", 1)
        body = self.raw.get(section)
        if isinstance(body, dict) and name in body:
            return body[name]
        return getattr(getattr(RunConfig(), section), name)

    def set(self, key: str, value: Any) -> bool:
        """Store a value; True when it changed anything (an editor echoing the draft's value does not)."""
        current = self.get(key)
        if current == value and isinstance(current, bool) == isinstance(value, bool):
            return False
        if key == "description":
            self.raw["description"] = value
        else:
            section, name = key.split(".", 1)
            body = self.raw.get(section)
            if not isinstance(body, dict):
                body = self.raw[section] = {}
            body[name] = value
        self.check = self._check()
        return True

    def _check(self) -> Check:
        config, field_issues = build_config(self.raw)
        # Rules run on the typed config even when some fields are bad (those keep their
        # defaults), so a mistake in one step never hides the problems of the others.
        return Check(config, field_issues, check_rules(config))

    def file_body(self) -> dict[str, Any]:
        """What a saved preset holds: every setting with defaults filled in, as `tui-lora show`
        prints it, except that a value the schema refuses is kept as typed, not lost."""
        body = config_to_dict(self.check.config)
        refused = {key for key, _ in find_secrets(self.raw)}  # typed into a field: the default is written
        if not body.get("description") and "description" in self.raw and "description" not in refused:
            body = {"description": self.raw["description"], **body}
        for issue in self.check.field_issues:
            if issue.key in refused:
                continue
            section, _, name = issue.key.partition(".")
            if issue.key == "description":
                body["description"] = self.raw.get("description")
            elif name and isinstance(self.raw.get(section), dict) and name in self.raw[section]:
                body.setdefault(section, {})[name] = self.raw[section][name]
            elif section in self.raw:  # an unknown section or a section that is not a table
                body[section] = copy.deepcopy(self.raw[section])
        return strip_secrets(body)[0]  # the last guard: whatever the draft holds, a preset never holds a secret

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.file_body())
