"""Reading a run file: TOML text -> overrides -> typed RunConfig, with every problem named.

Problems are collected rather than raised one at a time, so `validate` and the
wizard can show all of them at once; `load_run_file` raises them together as a
ConfigError whose lines each name the key, what is wrong and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from tui_lora.config.schema import SECTIONS, DataSource, RunConfig, section_fields
from tui_lora.errors import UserError
from tui_lora.secret_guard import find_secrets, scrub_override, strip_secrets


@dataclass(frozen=True)
class ConfigIssue:
    key: str  # "section.key", or "" for the file as a whole
    message: str
    origin: str = ""  # the --set text the bad value came from; "" when it came from the file

    def __str__(self) -> str:
        if self.origin:
            return f"--set {self.origin}: {self.message}"
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(UserError):
    def __init__(self, issues: list[ConfigIssue], source: str = ""):
        self.issues = issues
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__("\n".join(str(issue) if issue.origin else f"{where}{issue}" for issue in issues))


# ---------------------------------------------------------------- reading


def read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path}: no such run file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the path of a .toml run file")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # editors on Windows may start the file with a BOM
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save the run file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: TOML syntax error: {exc}") from None


def _schema_type(section: str, key: str) -> str | None:
    if section not in SECTIONS:
        return None
    spec = section_fields(section).get(key)
    return spec.type if spec is not None else None


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, value).

    The value is read as TOML, else kept as a string. For a plain string key the text
    itself is the value, so output_dir=2024 or revision=1234567 stay strings.
    """
    target, sep, raw = text.partition("=")
    section, dot, key = target.strip().partition(".")
    section, key = section.strip(), key.strip()
    if not sep or not dot or not section or not key:
        raise UserError(f"--set {scrub_override(text)!r}: expected section.key=value, for example --set lora.r=16")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words and paths: output_dir=/tmp/run needs no quotes
    if _schema_type(section, key) == "str" and not isinstance(value, str):
        value = raw
    return section, key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    merged = {name: dict(body) if isinstance(body, dict) else body for name, body in raw.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise UserError(f"--set {scrub_override(text)!r}: {section} is not a section of the run file")
        target[key] = value
    return merged


def override_origins(raw: dict[str, Any], overrides: list[str]) -> dict[str, str]:
    """Issue key -> the --set text that supplied it (the last one wins, as in apply_overrides).

    A section the file does not have is attributed too, so `--set trainig.x=1` is blamed on --set.
    """
    origins: dict[str, str] = {}
    for text in overrides:
        section, key, _ = parse_override(text)
        shown = scrub_override(text.strip())  # a message names the --set it blames, never a secret in it
        origins[f"{section}.{key}"] = shown
        if section not in raw:
            origins[section] = shown
    return origins


def attribute_overrides(issues: list[ConfigIssue], origins: dict[str, str]) -> list[ConfigIssue]:
    """Issues about a key set with --set say so, instead of pointing at the run file."""
    return [ConfigIssue(issue.key, issue.message, origins[issue.key]) if issue.key in origins else issue
            for issue in issues]


# ---------------------------------------------------------------- typing


def closest(word: str, options: list[str]) -> str | None:
    """The option a mistyped word most likely meant (keys, choices, and the command line's verbs), or None."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: str, options: list[str]) -> str:
    close = closest(word, options)
    return f"; did you mean {close}?" if close else ""


def _key_elsewhere(key: str, section: str) -> str:
    """A key put in the wrong section is a common slip: say where it lives."""
    homes = [name for name in SECTIONS if name != section and key in section_fields(name)]
    return f"; {key} belongs in [{homes[0]}]" if homes else ""


def _type_name(annotation: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "list[str]": "a list of strings",
            "list[str] | str": "a string or a list of strings",
            "dict": "a table of names and numbers or strings, such as {min_lr_rate = 0.1}"}[annotation]


def _coerce(value: Any, annotation: str) -> tuple[bool, Any]:
    """Check a TOML value against a schema annotation; ints are accepted where floats are."""
    if annotation == "bool":
        return isinstance(value, bool), value
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation == "str":
        return isinstance(value, str), value
    if annotation == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value), value
    if annotation == "list[str] | str":
        if isinstance(value, str):
            return True, value
        return isinstance(value, list) and all(isinstance(v, str) for v in value), value
    if annotation == "dict":  # a table of plain values (lr_scheduler_kwargs): nothing nested
        return isinstance(value, dict) and all(isinstance(v, (int, float, str)) for v in value.values()), value
    raise AssertionError(f"schema uses an annotation the loader does not know: {annotation}")


def _check_value(value: Any, meta: dict[str, Any]) -> str | None:
    """Range and choice rules from the field metadata; None when the value is allowed."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not allowed; it must be a finite number"
    choices = meta["choices"]
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        why = f" ({meta['why']})" if meta.get("why") else ""
        return (f"{value!r} is not allowed; choose {'one of ' if len(choices) > 1 else ''}{allowed}{why}"
                f"{_suggest(str(value), [str(c) for c in choices])}")
    item_choices = meta["item_choices"]
    if item_choices is not None:
        for item in value:
            if item not in item_choices:
                allowed = ", ".join(repr(c) for c in item_choices)
                return f"{item!r} is not allowed in the list; choose from {allowed}"
    low, high = meta["min"], meta["max"]
    if low is not None and value < low:
        return f"{value!r} is too small; it must be at least {low}"
    if high is not None:
        if meta["max_exclusive"] and value >= high:
            return f"{value!r} is too large; it must be below {high}"
        if not meta["max_exclusive"] and value > high:
            return f"{value!r} is too large; it must be at most {high}"
    return None


def build_config(raw: dict[str, Any]) -> tuple[RunConfig, list[ConfigIssue]]:
    """Typed config from parsed TOML. Bad values keep their defaults and are reported."""
    # Secrets first, by name and never by value, then taken out: no later message can repeat one.
    issues = [ConfigIssue(key, why) for key, why in find_secrets(raw)]
    raw = strip_secrets(raw)[0]
    sections: dict[str, Any] = {}
    description = raw.get("description", "")
    if not isinstance(description, str):
        issues.append(ConfigIssue("description", f"{description!r} has the wrong type; it must be a string"))
        description = ""
    for name, body in raw.items():
        if name == "description":
            continue
        if name not in SECTIONS:
            hint = _suggest(name, list(SECTIONS)) or _key_elsewhere(name, "")
            issues.append(ConfigIssue(name, f"unknown section or top-level key{hint}; "
                                            f"sections are {', '.join(SECTIONS)}"))
            continue
        if not isinstance(body, dict):
            issues.append(ConfigIssue(name, f"must be a [{name}] table, not a single value"))
    for name, cls in SECTIONS.items():
        body = raw.get(name, {})
        sections[name] = _typed(cls, body if isinstance(body, dict) else {}, name, issues)
    return RunConfig(description=description, **sections), issues


def _typed(cls: type, body: dict[str, Any], where: str, issues: list[ConfigIssue]) -> Any:
    """One table (a section, or one [[data.sources]] entry) as its dataclass; bad values keep their defaults."""
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in body.items():
        full = f"{where}.{key}"
        if key not in known:
            section = where.split(".")[0]
            hint = _suggest(key, list(known)) or (_key_elsewhere(key, section) if where in SECTIONS else "")
            issues.append(ConfigIssue(full, f"unknown key{hint}"))
            continue
        spec = known[key]
        if spec.type in TABLE_LISTS:
            values[key] = _table_list(TABLE_LISTS[spec.type], value, full, issues)
            continue
        ok, value = _coerce(value, spec.type)
        if not ok:
            issues.append(ConfigIssue(full, f"{value!r} has the wrong type; it must be {_type_name(spec.type)}"))
            continue
        problem = _check_value(value, spec.metadata)
        if problem:
            issues.append(ConfigIssue(full, problem))
            continue
        values[key] = value
    return cls(**values)


# Keys whose value is a list of tables ([[data.sources]] in TOML), by annotation, with the dataclass of one table.
TABLE_LISTS = {"list[DataSource]": DataSource}


def _table_list(cls: type, value: Any, key: str, issues: list[ConfigIssue]) -> list:
    """Each table of the list typed on its own; its keys are named key[N].name, N counting from 1."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        issues.append(ConfigIssue(key, f"must be a list of tables ([[{key}]] in the run file, one per entry)"))
        return []
    return [_typed(cls, item, f"{key}[{number}]", issues) for number, item in enumerate(value, 1)]


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    body: dict[str, Any] = {"description": config.description} if config.description else {}
    for name in SECTIONS:
        section = getattr(config, name)
        body[name] = {f.name: _plain(getattr(section, f.name)) for f in fields(section)}
    return body


def _plain(value: Any) -> Any:
    """A value as TOML holds it: a list of tables (data.sources) as a list of dicts."""
    if isinstance(value, list) and value and is_dataclass(value[0]):
        return [asdict(item) for item in value]
    return value
