"""Run folders: the lock, checkpoints, and which folders a new run may use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tui_lora.errors import UserError
from tui_lora.runs.folder import RunFolder


def test_lock_holds_the_pid_and_keeps_a_second_process_out(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.acquire()
    try:
        assert folder.lock_file.read_text() == str(__import__("os").getpid())
        other = subprocess.run(
            [sys.executable, "-c", "from tui_lora.runs.folder import RunFolder; import sys; "
                                   f"RunFolder({str(folder.path)!r}).acquire()"],
            capture_output=True, text=True)
        assert other.returncode != 0 and "is in use by a running training process" in other.stderr
    finally:
        folder.release()
    assert not folder.lock_file.exists()
    assert [p.name for p in folder.path.iterdir()] == []  # no staged lock left behind


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder.lock_file.write_text(dead.stdout.strip())
    folder.acquire()
    folder.release()


def test_unwritable_output_dir_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="training.output_dir: cannot write to .*a-file/run"):
        RunFolder(blocker / "run").acquire()


def test_only_trained_work_makes_a_folder_taken(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    (folder.path / "run.toml").write_text("")
    (folder.path / "events.jsonl").write_text('{"t": 1, "type": "status", "state": "failed"}\n')
    assert not folder.holds_training()  # a run that failed before its first checkpoint
    (folder.path / "checkpoint-3").mkdir()
    assert not folder.holds_training()  # cut off while writing: no trainer_state.json
    (folder.path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert folder.holds_training() and folder.latest_checkpoint().name == "checkpoint-3"
