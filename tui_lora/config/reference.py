"""The run-file reference in Markdown, written from the schema so the README cannot drift from it."""

from __future__ import annotations

from tui_lora.config.schema import SECTIONS, section_fields


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


def markdown_reference() -> str:
    lines = []
    for section in SECTIONS:
        lines += [f"#### [{section}]", "", "| key | default | allowed | what it does |", "|---|---|---|---|"]
        for name, spec in section_fields(section).items():
            default = spec.default_factory() if callable(spec.default_factory) else spec.default
            lines.append(f"| `{name}` | {_default(default)} | {_allowed(spec.metadata)} | "
                         f"{spec.metadata['help'].replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)
