"""The run-file reference in Markdown, written from the schema so the README cannot drift from it."""

from __future__ import annotations

from dataclasses import fields

from tui_lora.config.schema import SECTIONS, DataSource, section_fields


def _default(value) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`".replace("'", '"')


def _allowed(meta: dict) -> str:
    if meta["choices"]:
        return ", ".join(f"`{c}`" for c in meta["choices"])
    if meta["item_choices"]:
        return "list of " + ", ".join(f"`{c}`" for c in meta["item_choices"])
    low, high = meta["min"], meta["max"]
    if low is not None and high is not None:
        return f"{low} to {high}" + (" (exclusive)" if meta["max_exclusive"] else "")
    if low is not None:
        return f"≥ {low}"
    return ""


def _table(title: str, specs) -> list[str]:
    lines = [f"#### {title}", "", "| key | default | allowed | what it does |", "|---|---|---|---|"]
    for spec in specs:
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        lines.append(f"| `{spec.name}` | {_default(default)} | {_allowed(spec.metadata)} | "
                     f"{spec.metadata['help'].replace('|', '/')} |")
    return lines + [""]


def markdown_reference() -> str:
    lines = []
    for section in SECTIONS:
        lines += _table(f"[{section}]", section_fields(section).values())
        if section == "data":  # its list of tables, right after the section that holds it
            lines += _table("[[data.sources]] (one table per source)", fields(DataSource))
    return "\n".join(lines)
