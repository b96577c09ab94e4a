"""Column and role mapping: a record in the user's own layout -> a record of a format formats.py reads.

For exports that auto-detection does not know: the conversation under another column name
(`conversation`, `dialog`), turns keyed `speaker`/`text`, speakers called `human`/`bot` or
`A`/`B`, instruction records with `question`/`context`/`answer`, a system prompt in a column
of its own. The mapping renames; formats.py then applies its usual rules (strict, as for
`messages`: a conversation must start with the user and end with a reply). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui_lora.data.formats import ASSISTANT, SYSTEM, USER, BadRecord


@dataclass(frozen=True)
class ColumnMapping:
    messages_column: str = ""
    role_key: str = "role"
    content_key: str = "content"
    user_roles: tuple[str, ...] = ()
    assistant_roles: tuple[str, ...] = ()
    system_roles: tuple[str, ...] = ()
    prompt_column: str = ""
    input_column: str = ""
    reply_column: str = ""
    system_column: str = ""

    @classmethod
    def from_settings(cls, data) -> ColumnMapping | None:
        """The mapping a source's keys ask for (data.*, or one [[data.sources]] table), or None when the layout is
        left to auto-detection."""
        mapping = cls(data.messages_column, data.role_key, data.content_key, tuple(data.user_roles),
                      tuple(data.assistant_roles), tuple(data.system_roles), data.prompt_column,
                      data.input_column, data.reply_column, data.system_column)
        return mapping if mapping.messages_column or mapping.prompt_column else None

    @property
    def format(self) -> str:
        """The format the mapped records are in."""
        return "messages" if self.messages_column else "alpaca"

    def columns(self, where: str = "data") -> dict[str, str]:
        """Run-file key -> the column it names, for the columns every record must have; `where` is the table the
        mapping is written in (data, or data.sources[N])."""
        named = {f"{where}.messages_column": self.messages_column, f"{where}.prompt_column": self.prompt_column,
                 f"{where}.reply_column": self.reply_column}
        return {key: column for key, column in named.items() if column}

    def missing_column(self, columns: list[str], where: str = "data") -> str | None:
        """Why these columns do not fit the mapping, in words (for a UserError), or None."""
        for key, column in self.columns(where).items():
            if column not in columns:
                return f"{key}: the data has no column {column!r}; its columns are {', '.join(columns) or 'none'}"
        return None

    def apply(self, record: dict) -> dict:
        """The record as one of formats.py's: {"messages": [...]} or instruction / input / output / system."""
        system = record.get(self.system_column) if self.system_column else None
        if self.messages_column:
            messages = [self._message(index, turn) for index, turn in enumerate(self._turns(record))]
            if isinstance(system, str) and system.strip() and not (messages and messages[0]["role"] == SYSTEM):
                messages.insert(0, {"role": SYSTEM, "content": system})
            return {"messages": messages}
        mapped = {"instruction": record.get(self.prompt_column), "output": record.get(self.reply_column)}
        if self.input_column and record.get(self.input_column) is not None:
            mapped["input"] = record[self.input_column]
        if system is not None:
            mapped["system"] = system
        return mapped

    def _turns(self, record: dict) -> list:
        turns = record.get(self.messages_column)
        if not isinstance(turns, list):
            what = "missing" if turns is None else f"a {type(turns).__name__}"
            raise BadRecord(f"{self.messages_column!r} is {what}, not a list of turns")
        return turns

    def _message(self, index: int, turn) -> dict:
        if not isinstance(turn, dict):
            raise BadRecord(f"turn {index} of {self.messages_column!r} is not an object")
        speaker = turn.get(self.role_key)
        # speakers numbered 0/1 in the file are named "0"/"1" in the run file (TOML lists of strings)
        speaker = str(speaker) if isinstance(speaker, int) and not isinstance(speaker, bool) else speaker
        for role, values in ((USER, self.user_roles), (ASSISTANT, self.assistant_roles),
                             (SYSTEM, self.system_roles)):
            if speaker in values:
                return {"role": role, "content": turn.get(self.content_key)}
        raise BadRecord(f"turn {index} has {self.role_key} {speaker!r}, which the mapping does not name; "
                        f"{self._roles_named()}")

    def _roles_named(self) -> str:
        named = [f"{value!r} ({role})" for role, values in (("user", self.user_roles), ("assistant",
                 self.assistant_roles), ("system", self.system_roles)) for value in values]
        return f"mapped: {', '.join(named)}"
