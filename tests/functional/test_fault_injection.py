"""Fault injection: runs killed at random moments and starved of disk on purpose, then what survived is checked.

What must hold after every fault: each checkpoint-N in the run folder is whole (engine/checkpoints.py stages
it and renames it into place), `tui-lora runs` still reads the folder, and `--resume` carries the run to the
same final step as a run nobody touched. Broken input files are tried in tests/unit (run files) and
tests/functional/test_bad_inputs.py (data files). The README's reliability section quotes the counts here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, tiny_run_file, write_run_file

from tui_lora.config.paths import quoted
from tui_lora.runs.folder import CHECKPOINT, RunFolder

MAX_STEPS = 10
KILLS = 3  # kill -9 this many times: the first and the last in the middle of writing a checkpoint
WHOLE = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


def start(run_file: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "tui_lora.cli", "run", str(run_file), "--plain", *(["--resume"] if resume else [])]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def assert_only_whole_checkpoints(folder: Path) -> list[int]:
    """Every checkpoint-N holds all its files and a trainer state for step N; returns the steps."""
    steps = []
    for child in folder.iterdir():
        match = CHECKPOINT.match(child.name)
        if not match:
            continue
        missing = [name for name in WHOLE if not (child / name).is_file()]
        assert not missing, f"{child.name} is missing {missing}"
        state = json.loads((child / "trainer_state.json").read_text(encoding="utf-8"))
        assert state["global_step"] == int(match.group(1))
        steps.append(int(match.group(1)))
    return sorted(steps)


def assert_folder_reads(folder: Path) -> dict:
    """`tui-lora runs --json FOLDER` works on the folder as the fault left it; returns its status."""
    listed = run_cli("runs", "--json", str(folder), timeout=60)
    assert listed.returncode == 0, listed.stderr
    for line in folder.joinpath("events.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line)  # a killed writer never leaves half a line
    return json.loads(listed.stdout)


def kill_when(process: subprocess.Popen, folder: Path, ready, timeout: float = 120) -> bool:
    """SIGKILL the run as soon as ready() is true; False when it ended by itself first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if ready():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        assert time.monotonic() < deadline, "the run neither reached the moment nor ended"
        time.sleep(0.0005)
    return False


def progress_step(folder: Path) -> int:
    try:
        text = folder.joinpath("events.jsonl").read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    # read while the run writes: a last line without its newline is still being written
    lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
    steps = [event.get("step", 0) for event in map(json.loads, lines) if event.get("type") == "progress"]
    return max(steps, default=0)


def test_kill_9_mid_checkpoint_and_mid_step_then_resume_reaches_the_same_end(tmp_path):
    folder = tmp_path / "run"
    raw = tiny_run_file(folder, training={"max_steps": MAX_STEPS, "save_steps": 1, "eval_strategy": "no",
                                          "save_total_limit": 3},
                        data={"validation_split": 0.0, "max_samples": 48})
    run_file = write_run_file(tmp_path / "run.toml", raw)
    rng = random.Random(10)
    staging = folder / ".partial"
    killed = mid_save = 0
    for attempt in range(KILLS):
        resume = RunFolder(folder).latest_checkpoint() is not None
        process = start(run_file, resume)
        if attempt % 2 == 0:  # in the middle of writing a checkpoint: the staging folder holds a part of one
            ready = lambda: staging.is_dir() and any(staging.iterdir())  # noqa: E731
        else:  # somewhere in a step, a little after this start's first progress
            target = progress_step(folder) + rng.randint(1, 3)
            ready = lambda: progress_step(folder) >= target  # noqa: E731
        if not kill_when(process, folder, ready):
            pytest.fail(f"the run ended (status {process.returncode}) before it could be killed: "
                        f"{process.stderr.read()[-2000:]}")
        killed += 1
        if attempt % 2 == 0 and staging.is_dir():
            mid_save += 1
        steps = assert_only_whole_checkpoints(folder)
        assert len(steps) <= 4  # save_total_limit 3, plus the newest while the oldest waits to go
        status = assert_folder_reads(folder)
        assert status["state"] == "died"
    assert killed == KILLS and mid_save >= 1, (killed, mid_save)

    finished = subprocess.run([sys.executable, "-m", "tui_lora.cli", "run", str(run_file), "--plain", "--resume"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    result = [e for e in map(json.loads, folder.joinpath("events.jsonl").read_text().splitlines())
              if e.get("type") == "result"][-1]
    assert result["step"] == MAX_STEPS
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert assert_only_whole_checkpoints(folder)[-1] == MAX_STEPS
    assert not staging.exists()
    assert assert_folder_reads(folder)["state"] == "finished"
    print(f"\nfault injection: {killed} kill -9 ({mid_save} while a checkpoint was written), "
          f"{killed} resumes, finished at step {result['step']} of {MAX_STEPS}")


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of the size asked for, mounted under tmp_path (root and a kernel that allows it)."""
    mounted = []

    def mount(kib: int, read_only: bool = False) -> Path:
        point = tmp_path / f"disk-{kib}k"
        point.mkdir()
        options = f"size={kib}k" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode}); "
                        "the full-disk case needs root and mount rights")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_full_disk_fails_the_run_and_keeps_the_last_whole_checkpoint(tmp_path, small_disk):
    # One checkpoint of this run is about 0.75 MiB: 2 MiB hold two and the logs, not three.
    folder = small_disk(2048) / "run"
    raw = tiny_run_file(folder, training={"max_steps": 8, "save_steps": 1, "eval_strategy": "no"},
                        data={"validation_split": 0.0, "max_samples": 48})
    run = run_cli("run", str(write_run_file(tmp_path / "run.toml", raw)), "--plain")
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "is full" in run.stderr and "checkpoint-2) is intact" in run.stderr, run.stderr
    assert assert_only_whole_checkpoints(folder) == [1, 2]
    assert not (folder / ".partial").exists()  # the half checkpoint gave its space back
    events = [json.loads(line) for line in folder.joinpath("events.jsonl").read_text().splitlines()]
    assert any(e.get("level") == "warning" and "may fill up" in e.get("message", "") for e in events)
    assert assert_folder_reads(folder)["state"] == "failed"


def test_a_disk_smaller_than_one_checkpoint_is_refused_before_training(tmp_path, small_disk):
    folder = small_disk(512) / "run"
    raw = tiny_run_file(folder, training={"max_steps": 4, "eval_strategy": "no"},
                        data={"validation_split": 0.0, "max_samples": 16})
    run = run_cli("run", str(write_run_file(tmp_path / "run.toml", raw)), "--plain")
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "less than one checkpoint" in errors[0], run.stderr
    assert not [child for child in folder.iterdir() if CHECKPOINT.match(child.name)]


def test_a_read_only_run_folder_is_refused_before_anything_loads(tmp_path, small_disk):
    folder = small_disk(1024, read_only=True) / "run"  # root may write anywhere, except on a read-only mount
    raw = tiny_run_file(folder, training={"max_steps": 2, "eval_strategy": "no"})
    run = run_cli("run", str(write_run_file(tmp_path / "run.toml", raw)), "--plain")
    assert run.returncode == 2
    # found by the run file's check, before the run folder (or anything else) is touched
    assert run.stderr.splitlines() == [f"error: {tmp_path / 'run.toml'}: training.output_dir: {quoted(str(folder))} "
                                       "cannot be created: it is on a read-only file system"]
