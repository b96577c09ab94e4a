"""Broken data, through the real command line: one clear line and exit status 2, never a traceback.

Each case is a real file in tests/functional/bad_data/ given to `tui-lora run` (and `tui-lora data`) in a
subprocess of its own. The commands start together, a few at a time, in one module fixture: each spends
seconds importing torch before it reaches the data, and the tests then only read what they left.
(The run-file side of the corpus, through `tui-lora validate`, is tests/unit/bad_run_files/; LoRA target
modules the model lacks, through `tui-lora run`, are in test_training.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, tiny_run_file, write_run_file

from tui_lora.runs.events import read_events

BAD_DATA = Path(__file__).parent / "bad_data"
FORMATS_NAMED = "belle, messages, sharegpt, alpaca"


@dataclass(frozen=True)
class Case:
    name: str
    verb: str  # run or data
    data: str  # a file in bad_data/
    expect: str  # what the one error line must say: the problem and what is allowed


CASES = [
    Case("empty file", "run", "empty.jsonl", f"is empty; it must hold records in one of the formats {FORMATS_NAMED}"),
    Case("no known format", "run", "unknown_format.jsonl",
         f"unknown record format: keys seen ['answer', 'question']; expected one of {FORMATS_NAMED}"),
    Case("not a data file", "run", "notes.txt", "is not a data file; a data file's name must end in .json, .jsonl"),
    # A line that is not a record is a bad record: 1 of these 8 is more than data.max_bad_share (10%)
    Case("broken JSON line", "run", "broken_json_line.jsonl",
         "more than data.max_bad_share (10%); first: record 3: broken_json_line.jsonl line 3 is not valid JSON "
         "(Expecting ',' delimiter)"),
    Case("a line that is not a record", "run", "not_a_record.jsonl",
         "first: record 5: not_a_record.jsonl line 5 is an array, not a record (a JSON object {...})"),
    Case("not UTF-8", "run", "not_utf8.jsonl", "first: record 3: not_utf8.jsonl line 3 is not UTF-8 text (byte "),
    Case("every record unusable", "run", "all_unusable.jsonl",
         "none of the 8 records could be used as 'belle' (record 1: missing 'output'); check data.format"),
    Case("data: not UTF-8", "data", "not_utf8.jsonl", "record 3: not_utf8.jsonl line 3 is not UTF-8 text (byte "),
    Case("data: broken JSON line", "data", "broken_json_line.jsonl",
         "record 3: broken_json_line.jsonl line 3 is not valid JSON"),
]
FEW_BAD_ROWS = "a_few_bad_rows.jsonl"  # 26 records, 2 of them unusable: skipped and counted, the run goes on
# 30 lines: one broken JSON, one not UTF-8, one an array (3/30 = 10%, not more than the share): the run goes on
BROKEN_LINES = "broken_lines_among_many.jsonl"


def run_file(tmp: Path, name: str, data: str) -> Path:
    raw = tiny_run_file(tmp / "run", data={"path": str(BAD_DATA / data), "max_samples": 0, "validation_split": 0.0},
                        tokenizer={"max_length": 128},
                        training={"max_steps": 2, "eval_strategy": "no", "save_strategy": "no"})
    return write_run_file(tmp / f"{name}.toml", raw)


def command(verb: str, path: Path) -> list[str]:
    return [sys.executable, "-m", "tui_lora.cli", verb, str(path), *(["--plain"] if verb == "run" else [])]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Case name -> (its run folder, what the command did); every case started three at a time."""
    jobs = {}
    for number, case in enumerate(CASES):
        tmp = tmp_path_factory.mktemp(f"case{number}")
        jobs[case.name] = (tmp / "run", command(case.verb, run_file(tmp, "bad", case.data)))
    tmp = tmp_path_factory.mktemp("few-bad")
    few_bad = run_file(tmp, "few", FEW_BAD_ROWS)
    jobs["few bad rows: run"] = (tmp / "run", command("run", few_bad))
    jobs["few bad rows: data"] = (tmp / "run", command("data", few_bad))
    tmp = tmp_path_factory.mktemp("broken-lines")
    broken = run_file(tmp, "broken", BROKEN_LINES)
    jobs["broken lines: run"] = (tmp / "run", command("run", broken))

    def finish(argv):
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(finish, [argv for _, argv in jobs.values()]))
    return {name: (folder, result) for (name, (folder, _)), result in zip(jobs.items(), done)}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_data_is_one_line_and_exit_2(outcomes, case):
    folder, done = outcomes[case.name]
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 2, done.stderr
    if case.verb == "run":
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    else:  # `data` shows datasets' progress bars on stderr (they say when it tokenises); one line says what failed
        assert [line for line in done.stderr.splitlines() if "error" in line.lower()] == \
            [done.stderr.splitlines()[-1]], done.stderr
        assert done.stderr.splitlines()[-1].startswith("error: ")
    assert case.expect in done.stderr
    if case.verb == "run" and (folder / "events.jsonl").exists():
        states = [e["state"] for e in read_events(folder / "events.jsonl") if e["type"] == "status"]
        assert states[-1] == "failed"
        assert not (folder / "adapter").exists()


def test_failed_runs_leave_folders_that_tui_lora_runs_can_list(outcomes):
    folders = [str(folder) for name, (folder, _) in outcomes.items() if "data" not in name and folder.exists()]
    assert len(folders) >= len(CASES) - 3  # all but the data cases and notes.txt, refused before the run began
    listed = subprocess.run([sys.executable, "-m", "tui_lora.cli", "runs", "--json", *folders], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    states = {row["folder"]: row["state"] for row in map(json.loads, listed.stdout.splitlines())}
    assert len(states) == len(folders)
    assert set(states.values()) <= {"failed", "finished"}


def test_a_few_bad_rows_are_skipped_and_counted_and_the_run_goes_on(outcomes):
    folder, done = outcomes["few bad rows: run"]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "26 records as 'belle', 2 skipped" in done.stdout
    assert "skipped record 6: missing 'output'" in done.stdout
    assert "skipped record 18: no exchange with a non-empty question and a non-empty reply" in done.stdout
    events = list(read_events(folder / "events.jsonl"))
    data = next(e for e in events if e["type"] == "data")
    assert (data["records"], data["skipped"], data["train_examples"]) == (26, 2, 24)
    assert [number for number, _ in data["bad_records"]] == [6, 18]
    assert [e["state"] for e in events if e["type"] == "status"][-1] == "finished"

    shown, shown_done = outcomes["few bad rows: data"]
    assert shown_done.returncode == 0, shown_done.stderr
    assert "skipped" in shown_done.stdout and "1 × missing 'output'" in shown_done.stdout
    assert "2 (records 6, 18)" in shown_done.stdout  # the numbers `run` names, too


def test_lines_that_are_not_records_are_skipped_counted_and_named(outcomes):
    folder, done = outcomes["broken lines: run"]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "30 records as 'belle', 3 skipped" in done.stdout
    for number, why in ((4, "is not valid JSON (Expecting ',' delimiter)"), (12, "is not UTF-8 text (byte 25 of the line)"),
                        (20, "is an array, not a record")):
        assert f"skipped record {number}: {BROKEN_LINES} line {number} {why}" in done.stdout
    data = next(e for e in read_events(folder / "events.jsonl") if e["type"] == "data")
    assert (data["records"], data["skipped"], data["train_examples"]) == (30, 3, 27)
    assert [e["state"] for e in read_events(folder / "events.jsonl") if e["type"] == "status"][-1] == "finished"


def test_a_tokenizer_with_more_ids_than_the_model_has_rows_is_refused_before_training(tmp_path):
    """Tokens added to the tiny model's tokenizer without resizing the model: `data` and `run` both say so in
    one line naming both sizes (before, `run` died at step 1 with an IndexError from the embedding)."""
    from conftest import run_cli
    from transformers import AutoTokenizer

    from tui_lora.assets import builtin_path

    tokenizer = AutoTokenizer.from_pretrained(builtin_path("builtin:tiny-chat"))
    rows = json.loads((builtin_path("builtin:tiny-chat") / "config.json").read_text())["vocab_size"]
    tokenizer.add_tokens([f"<new_{n}>" for n in range(len(tokenizer) - rows + 3)])
    tokenizer.save_pretrained(tmp_path / "bigger-tokenizer")
    largest = len(tokenizer) - 1
    raw = tiny_run_file(tmp_path / "run", tokenizer={"name_or_path": str(tmp_path / "bigger-tokenizer")})
    path = write_run_file(tmp_path / "run.toml", raw)
    for verb in ("data", "run"):
        done = run_cli(verb, str(path), *(["--plain"] if verb == "run" else []))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: tokenizer.name_or_path: the tokenizer gives ids up to "
                               f"{largest} but the model has {rows} embedding rows"), last
    assert not (tmp_path / "run" / "adapter").exists()
