"""The run file being edited in the wizard, and what is wrong with it right now.

The draft keeps the run file as the TOML dict a person would write, so a preset read
from disk keeps every key it had, even ones the wizard has no field for. Checking it
goes through the same `build_config` and `check_rules` as `tui-lora validate`; the
wizard has no rules of its own.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tui_lora.config.load import ConfigIssue, build_config, config_to_dict, read_toml
from tui_lora.config.rules import check_rules
from tui_lora.config.schema import PER_SOURCE_KEYS, DataSource, RunConfig, section_fields
from tui_lora.secret_guard import find_secrets, strip_secrets


SOURCE_KEY = re.compile(r"data\.sources\[(\d+)\]\.(\w+)")


def source_key(key: str) -> tuple[int, str] | None:
    """"data.sources[2].path" -> (2, "path"): a key of one [[data.sources]] table (counting from 1, as the
    validator's messages do), else None."""
    found = SOURCE_KEY.fullmatch(key)
    return (int(found[1]), found[2]) if found else None


def source_field_key(number: int, name: str) -> str:
    """source_key's inverse: (2, "path") -> "data.sources[2].path"."""
    return f"data.sources[{number}].{name}"


def field_spec(key: str):
    """The schema field behind "section.key" or "data.sources[N].key" (description is the one top-level key)."""
    if key == "description":
        return next(f for f in fields(RunConfig) if f.name == "description")
    in_source = source_key(key)
    if in_source is not None:
        return {f.name: f for f in fields(DataSource)}[in_source[1]]
    section, name = key.split(".", 1)
    return section_fields(section)[name]


def value_text(value: Any) -> str:
    """How a value appears in a text field: lists as comma-separated names."""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):  # lr_scheduler_kwargs: "min_lr_rate=0.1, num_cycles=0.5"
        return ", ".join(f"{name}={value_text(item)}" for name, item in value.items())
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
    if annotation == "dict":
        return _parse_table(text)
    if annotation == "list[str] | str":  # lora.target_modules: "all-linear" or a list of names
        return text if text == "all-linear" else [item.strip() for item in text.split(",") if item.strip()]
    return text


def _parse_table(text: str) -> Any:
    """"min_lr_rate=0.1, decay_type=cosine" -> {"min_lr_rate": 0.1, "decay_type": "cosine"}; numbers where they
    read as numbers. Text that is not name=value pairs is kept as it is, for the loader to name."""
    table: dict[str, Any] = {}
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        name, equals, item = (piece.strip() for piece in part.partition("="))
        if not equals or not name:
            return text
        for kind in (int, float):
            try:
                table[name] = kind(item)
                break
            except ValueError:
                continue
        else:
            table[name] = item
    return table


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


OUTPUT_DIR = "training.output_dir"


class Draft:
    def __init__(self, raw: dict | None = None, source: Path | None = None, source_text: str | None = None):
        # Unknown keys are kept, secrets are not: a token read from a hand-edited file is dropped here, so
        # no preview, saved preset or probe ever holds it; the review says which keys went.
        self.raw, self.removed_secrets = strip_secrets(copy.deepcopy(raw) if raw else {})
        self.source = source  # the file it was read from, if any
        self.source_text = source_text  # its text: saving over it keeps its comments and layout
        self.check = self._check()

    @classmethod
    def from_file(cls, path: Path) -> "Draft":
        raw = read_toml(path)  # first: a missing or broken file is its one-line UserError
        return cls(raw, source=path, source_text=path.read_bytes().decode("utf-8-sig"))

    def _table(self, key: str) -> tuple[dict | None, str]:
        """The table of the run file that holds key, if it exists, and key's name in it."""
        in_source = source_key(key)
        if in_source is not None:
            number, name = in_source
            sources = self.sources()
            return (sources[number - 1] if number <= len(sources) else None), name
        section, _, name = key.partition(".")
        body = self.raw.get(section)
        return (body if isinstance(body, dict) else None), name

    def names(self, key: str) -> bool:
        """True when the run file itself holds key (typed in the wizard, or in the file it came from)."""
        body, name = self._table(key)
        return body is not None and name in body

    def get(self, key: str) -> Any:
        """The value as the draft holds it, else the schema default."""
        if key == "description":
            return self.raw.get("description", "")
        if source_key(key) is not None:
            body, name = self._table(key)
            return body[name] if body is not None and name in body else getattr(DataSource(), name)
        section, name = key.split(".", 1)
        body = self.raw.get(section)
        if isinstance(body, dict) and name in body:
            return body[name]
        if key == OUTPUT_DIR:
            return self.check.config.training.output_dir  # the fresh folder _check chose
        return getattr(getattr(RunConfig(), section), name)

    def set(self, key: str, value: Any) -> bool:
        """Store a value; True when it changed anything (an editor echoing the draft's value does not)."""
        current = self.get(key)
        if current == value and isinstance(current, bool) == isinstance(value, bool):
            return False
        if key == "description":
            self.raw["description"] = value
        elif source_key(key) is not None:
            body, name = self._table(key)
            if body is None:
                raise KeyError(f"{key}: the run file has no such source")
            body[name] = value
        else:
            section, name = key.split(".", 1)
            body = self.raw.get(section)
            if not isinstance(body, dict):
                body = self.raw[section] = {}
            body[name] = value
        self.check = self._check()
        return True

    # ------------------------------------------------------------ [[data.sources]]

    def sources(self) -> list[dict]:
        """The run file's [[data.sources]] tables as it holds them (empty for a one-source run)."""
        data = self.raw.get("data")
        sources = data.get("sources") if isinstance(data, dict) else None
        return [table for table in sources if isinstance(table, dict)] if isinstance(sources, list) else []

    def add_source(self) -> int:
        """A new, empty data set at the end of [[data.sources]]; its number. The first time, the one source
        [data] describes becomes data.sources[1] (its path, format, split, cap and mapping move with it), so
        nothing typed is lost and [data] keeps only what all sources share."""
        data = self.raw.get("data")
        if not isinstance(data, dict):
            data = self.raw["data"] = {}
        sources = self.sources()
        if not sources:
            own = {name: data.pop(name) for name in PER_SOURCE_KEYS if name in data}
            sources = [own] if own else []
        sources.append({"path": ""})
        data["sources"] = sources
        self.check = self._check()
        return len(sources)

    def remove_source(self, number: int) -> None:
        """Take data set `number` out. When one is left, it goes back into [data] (the one-source form, where
        data.mix and data.validation_per_source mean nothing and are dropped)."""
        data = self.raw["data"]
        sources = self.sources()
        del sources[number - 1]
        if len(sources) > 1:
            data["sources"] = sources
        else:
            del data["sources"]
            for name in ("mix", "validation_per_source"):
                data.pop(name, None)
            for name, value in (sources[0] if sources else {}).items():
                if name == "system_prompt":
                    if value:  # its own prompt was in place of the run's: it stays this source's prompt
                        data["system_prompt"] = value
                elif name != "weight":
                    data[name] = value
        self.check = self._check()

    def _check(self) -> Check:
        raw = self.raw
        if not self.names(OUTPUT_DIR) and isinstance(raw.get("training", {}), dict):
            # A run file that does not name its folder gets a new one of its own (model, date, counter), never
            # the shared default where the next run would collide with this one; naming one keeps it.
            from tui_lora.runs.folder import fresh_run_folder
            from tui_lora.runs.queue import promised_folders

            model = (raw.get("model") or {}).get("name_or_path", "") if isinstance(raw.get("model"), dict) else ""
            fresh = fresh_run_folder(model if isinstance(model, str) else "", busy=frozenset(promised_folders()))
            raw = {**raw, "training": {**raw.get("training", {}), "output_dir": fresh}}
        config, field_issues = build_config(raw)
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
            in_source = source_key(issue.key)
            if in_source is not None:  # kept as typed in its own table
                table, name = self._table(issue.key)
                listed = body.get("data", {}).get("sources", [])
                if table is not None and name in table and in_source[0] <= len(listed):
                    listed[in_source[0] - 1][name] = table[name]
                continue
            section, _, name = issue.key.partition(".")
            if issue.key == "description":
                body["description"] = self.raw.get("description")
            elif name and isinstance(self.raw.get(section), dict) and name in self.raw[section]:
                body.setdefault(section, {})[name] = self.raw[section][name]
            elif section in self.raw:  # an unknown section or a section that is not a table
                body[section] = copy.deepcopy(self.raw[section])
        return strip_secrets(body)[0]  # the last guard: whatever the draft holds, a preset never holds a secret

    # ------------------------------------------------------------ the run folder

    def pin_output_dir(self) -> bool:
        """Write the fresh folder the draft was showing into the run file itself (True when it was not there),
        so the run trains there and `tui-lora run FILE --resume` finds it again."""
        if self.names(OUTPUT_DIR) or not isinstance(self.raw.get("training", {}), dict):
            return False
        self.raw.setdefault("training", {})[OUTPUT_DIR.split(".")[1]] = self.check.config.training.output_dir
        self.check = self._check()
        return True

    def folder_issues(self) -> list[ConfigIssue]:
        """What `tui-lora run` refuses about the folder of a new run (runs.open_run_folder and the lock it
        takes), asked of the same RunFolder it asks, so the review finds it before Start does."""
        from tui_lora.runs.folder import RunFolder
        from tui_lora.runs.status import read_status

        where = str(self.check.config.training.output_dir)
        if not where.strip():
            return []  # the rules already say it is required
        folder = RunFolder(where)
        pid = folder.owner()
        if pid is not None:
            return [ConfigIssue(OUTPUT_DIR, f"{where} is in use by a running training process (pid {pid}); "
                                            "a new run needs a folder of its own")]
        if folder.holds_training():
            state = read_status(folder.path).state
            return [ConfigIssue(OUTPUT_DIR, f"{where} already holds a {state} run, which is never overwritten; "
                                            "a new run needs a folder of its own")]
        from tui_lora.runs.queue import promised_folders

        queued = promised_folders().get(str(folder.path))
        if queued is not None:
            return [ConfigIssue(OUTPUT_DIR, f"{where} is the run folder of queue entry {queued.id} ({queued.state}); "
                                            "a new run needs a folder of its own")]
        return []

    def free_folder(self) -> str:
        """The folder offered when the chosen one is taken: the same name counted on (runs/demo-2), or a fresh
        model-and-date name when the file never chose one or kept the schema's placeholder."""
        from tui_lora.runs.folder import fresh_run_folder

        chosen = str(self.get(OUTPUT_DIR))
        placeholder = getattr(RunConfig().training, "output_dir")
        taken = chosen if self.names(OUTPUT_DIR) and chosen != placeholder else None
        from tui_lora.runs.queue import promised_folders

        return fresh_run_folder(str(self.get("model.name_or_path")), taken=taken, busy=frozenset(promised_folders()))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.file_body())

    def file_text(self) -> str:
        """What saving writes. A draft read from a file is that file with the values that changed put in
        (tomlkit keeps its comments, order and number formats wherever a value stayed the same); a new run
        file has every setting written out, as `tui-lora show` prints it."""
        if self.source_text is None:
            return self.to_toml()
        import tomlkit

        document = tomlkit.parse(self.source_text)
        _merge(document, strip_secrets(self.raw)[0])
        return tomlkit.dumps(document)


def machine_issues(answer: dict | None) -> list[ConfigIssue]:
    """The machine probe's refusals as issues of the keys they name, so the review can jump to them."""
    if not answer or not answer.get("ok"):
        return []  # a check that could not run blocks nothing: the run makes the same checks itself
    return [issue_from_line(line) for line in answer.get("problems", [])]


def issue_from_line(line: str) -> ConfigIssue:
    """"training.bf16: no GPU …" -> an issue of training.bf16 (a line that names no key stays whole)."""
    key, _, message = line.partition(": ")
    try:
        field_spec(key)
    except (KeyError, ValueError, StopIteration):
        return ConfigIssue("", line)
    return ConfigIssue(key, message)


def _same(old: Any, new: Any) -> bool:
    """Equal and of the same kind: 1 is not 1.0 or true in a run file."""
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new))
    return type(old) is type(new) and old == new


def _merge(table, wanted: dict) -> None:
    """Make a tomlkit table hold `wanted`, touching only the keys whose values differ."""
    for key in [key for key in table if key not in wanted]:
        del table[key]  # taken out in the wizard (a secret read from the file)
    for key, value in wanted.items():
        if key in table:
            old = table[key]
            if isinstance(value, dict) and isinstance(old, dict):
                _merge(old, value)
                continue
            if _same(old.unwrap() if hasattr(old, "unwrap") else old, value):
                continue
        table[key] = value
