"""Rewrite the run-file reference in README.md from the schema (tests/unit/test_readme.py checks it)."""

from pathlib import Path

from tui_lora.config.reference import markdown_reference

START, END = "<!-- run-file-reference:start -->", "<!-- run-file-reference:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"

text = README.read_text(encoding="utf-8")
head, rest = text.split(START)
_, tail = rest.split(END)
README.write_text(f"{head}{START}\n{markdown_reference()}{END}{tail}", encoding="utf-8")
print(f"updated {README}")
