"""Detached runs: they outlive whoever started them, stop cleanly on abort, and say when they died."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, tiny_run_file, write_run_file

from tui_lora.runs.detach import abort, start_detached, wait_gone
from tui_lora.runs.status import read_status
from tui_lora.runs.folder import RunFolder

# Without evaluation and with little data, so each run is a few seconds of start-up and a few of steps.
QUICK = dict(data={"validation_split": 0.0, "max_samples": 32})


def quick_run_file(tmp_path: Path, name: str, **training) -> Path:
    raw = tiny_run_file(tmp_path / "runs" / name, training={"eval_strategy": "no", **training}, **QUICK)
    return write_run_file(tmp_path / f"{name}.toml", raw)


def wait_for(folder: Path, done, timeout: float = 90):
    """Poll read_status until done(status) is true; the last status either way."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(folder)
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def processes_of(pid: int) -> list[str]:
    """Living processes that are pid itself, its children, or in its process group (zombies don't count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid, pgrp = stat[stat.rfind(")") + 2:].split()[:3]
        if state != "Z" and pid in (int(entry.name), int(ppid), int(pgrp)):
            found.append(stat)
    return found


def running_with(text: str) -> list[str]:
    """Command lines of living processes that mention text."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and entry.name != str(os.getpid()):
            found.append(cmdline)
    return found


def test_a_detached_run_survives_its_parent_being_killed(tmp_path):
    run_file = quick_run_file(tmp_path, "survivor", max_steps=5, save_steps=5)
    folder = tmp_path / "runs" / "survivor"
    parent_script = tmp_path / "parent.py"
    parent_script.write_text(textwrap.dedent(f"""
        import time
        from tui_lora.runs.detach import start_detached
        run = start_detached({str(run_file)!r})
        print(run.pid, flush=True)
        time.sleep(600)
    """))
    # the parent in a session of its own, like a terminal (or an SSH session) that is about to go away
    parent = subprocess.Popen([sys.executable, str(parent_script)], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        pid = int(parent.stdout.readline())
        training = wait_for(folder, lambda s: s.state == "training" or s.state in ("died", "failed"))
        assert training.state == "training", training
        assert training.pid == pid
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()

    done = wait_for(folder, lambda s: s.state not in ("starting", "loading", "preparing_data", "training", "saving"))
    assert done.state == "finished", (done, (folder / "console.log").read_text()[-2000:])
    assert (folder / "adapter" / "adapter_model.safetensors").exists()
    listed = run_cli("runs", str(folder), "--json", timeout=30)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    row = json.loads(line)
    assert (row["state"], row["step"], row["max_steps"], row["pid"]) == ("finished", 5, 5, None)
    assert row["folder"] == str(folder) and row["adapter"] == str(folder / "adapter")
    # what the run printed went to its console.log, not to the parent that is gone
    console = (folder / "console.log").read_text()
    assert "[finished]" in console and "Traceback" not in console


def test_detach_refuses_bad_input_before_anything_starts(tmp_path):
    raw = tiny_run_file(tmp_path / "runs" / "bad", **QUICK)
    raw["lora"]["rank"] = 8  # no such key
    run_file = write_run_file(tmp_path / "bad.toml", raw)
    refused = run_cli("run", str(run_file), "--detach", cwd=tmp_path, timeout=30)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: ") and "lora.rank" in refused.stderr
    assert refused.stdout == ""
    assert not (tmp_path / "runs").exists()
    assert not running_with(str(run_file))

    # a folder that already holds trained work is refused the same way, and keeps what it had
    good = quick_run_file(tmp_path, "taken")
    taken = RunFolder(tmp_path / "runs" / "taken")
    checkpoint = taken.path / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    refused = run_cli("run", str(good), "--detach", "--plain", cwd=tmp_path, timeout=30)
    assert refused.returncode == 2 and "already holds a run (continue it with --resume); start a new one with " \
        f"--set training.output_dir={taken.path}-2" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert sorted(p.name for p in taken.path.iterdir()) == ["checkpoint-2"]  # no lock, no console.log
    assert not running_with(str(good))


def test_abort_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path, train_in_process):
    run_file = quick_run_file(tmp_path, "aborted", max_steps=16, save_steps=1000, logging_steps=1)
    folder = tmp_path / "runs" / "aborted"
    run = start_detached(run_file)
    assert run.folder == folder and RunFolder(folder).owner() == run.pid
    try:
        training = wait_for(folder, lambda s: (s.state == "training" and s.step >= 1) or s.pid is None)
        assert training.state == "training" and training.step >= 1, training
        assert abort(folder) == run.pid
        assert wait_gone(run.pid, 20)
    finally:
        if RunFolder(folder).owner() == run.pid:
            os.kill(run.pid, signal.SIGKILL)

    stopped = read_status(folder)
    assert stopped.state == "aborted", (stopped, (folder / "console.log").read_text()[-2000:])
    assert 1 <= stopped.step < 16
    assert stopped.latest_checkpoint == folder / f"checkpoint-{stopped.step}"
    assert f"checkpoint saved at step {stopped.step}" in stopped.message and "--resume" in stopped.message
    assert stopped.pid is None and not (folder / ".lock").exists()
    deadline = time.monotonic() + 5  # the reaper thread collects it
    while Path(f"/proc/{run.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{run.pid}").exists()
    assert processes_of(run.pid) == []
    assert "aborted: stopped by SIGTERM" in (folder / "console.log").read_text()
    assert abort(folder) is None  # nothing left to stop

    import tomllib

    raw = tomllib.loads(run_file.read_text())
    _, result, events = train_in_process(raw, resume="latest")
    assert result["step"] == 16
    steps = [e["step"] for e in events if e["type"] == "train"]
    assert steps[0] == stopped.step + 1 and steps[-1] == 16
    final = read_status(folder)
    assert (final.state, final.step, final.max_steps) == ("finished", 16, 16)


def test_a_run_killed_outright_has_died_and_names_its_last_checkpoint(tmp_path):
    run_file = quick_run_file(tmp_path, "killed", max_steps=40, save_steps=2)
    folder = tmp_path / "runs" / "killed"
    run = start_detached(run_file)
    try:
        saved = wait_for(folder, lambda s: s.latest_checkpoint is not None or s.pid is None)
        assert saved.latest_checkpoint is not None, saved
    finally:
        os.kill(run.pid, signal.SIGKILL)
    assert wait_gone(run.pid, 10)
    died = read_status(folder)
    assert died.state == "died" and died.pid is None
    last = RunFolder(folder).latest_checkpoint()
    assert died.latest_checkpoint == last and last.name in died.message
    assert "--resume" in died.message
    listed = run_cli("runs", str(folder), timeout=30)
    assert listed.returncode == 0 and "died" in listed.stdout
