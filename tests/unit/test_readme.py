"""README.md stays true: the CI script runs its test command, and the run-file reference matches the schema."""

from __future__ import annotations

import re
from pathlib import Path

from tui_lora.cli import build_parser
from tui_lora.config.reference import markdown_reference

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def fenced_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv[^\n]+)\n```", README)


def test_readme_starts_with_the_demo_and_test_commands():
    demo, tests = fenced_commands()[:2]
    assert demo.endswith("tui-lora run demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert fenced_commands()[1] in ci


def test_run_file_reference_is_current():
    assert markdown_reference() in README, "run: python scripts/write_run_file_reference.py"


def test_every_verb_is_documented():
    verbs = build_parser()._subparsers._group_actions[0].choices
    for verb in verbs:
        assert f"tui-lora {verb}" in README, verb
