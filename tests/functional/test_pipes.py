"""`tui-lora run` in a shell pipeline, the way people watch and keep a log: `| tee log`, `| head`.

Real shells, real tee and head, a real SIGINT to the whole process group (what Ctrl+C does in a
terminal): the reader of the pipe dies first, and the run must neither notice nor lose its checkpoint.
The interrupted run is then continued from its folder (`tui-lora run RUN_FOLDER --resume`).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

from conftest import REPO, run_cli, tiny_run_file, write_run_file

from tui_lora.runs.events import read_events
from tui_lora.runs.folder import RunFolder


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def last_session(events):
    return events[max(i for i, e in enumerate(events) if e.get("state") == "starting"):]


def test_ctrl_c_on_a_run_piped_into_tee_saves_a_checkpoint_and_the_folder_resumes(tmp_path):
    # lm_head among the targets, as in the demo: peft's tie_word_embeddings warning must stay in train.log
    raw = tiny_run_file(tmp_path / "run", lora={"target_modules": ["q_proj", "v_proj", "lm_head"]},
                        training={"max_steps": 30, "eval_strategy": "no", "save_steps": 100, "logging_steps": 1},
                        data={"validation_split": 0.0, "max_samples": 32})
    run_file = write_run_file(tmp_path / "run.toml", raw)
    folder = RunFolder(tmp_path / "run")
    status, log = tmp_path / "status", tmp_path / "log"
    # started with an override: the folder's run.toml keeps it, so the resumption trains to 40, not 30
    pipeline = (f"{{ {sys.executable} -m tui_lora.cli run {run_file} --set training.max_steps=40; "
                f"echo $? > {status}; }} | tee {log} > /dev/null")
    shell = subprocess.Popen(["bash", "-c", pipeline], cwd=REPO, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # a process group of its own, like a terminal's job
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and shell.poll() is None:
        if of_type(read_events(folder.events), "progress"):
            os.killpg(shell.pid, signal.SIGINT)  # Ctrl+C: the whole pipeline, tee included, gets it
            break
        time.sleep(0.05)
    err = shell.communicate(timeout=240)[1]
    assert status.read_text().strip() == "130", err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    events = list(read_events(folder.events))
    stopped = of_type(events, "status")[-1]
    assert stopped["state"] == "interrupted", stopped
    assert folder.latest_checkpoint() == folder.path / f"checkpoint-{stopped['step']}"
    assert 1 <= stopped["step"] < 40
    assert f"interrupted: stopped by SIGINT at step {stopped['step']}; checkpoint saved" in err
    listed = json.loads(run_cli("runs", str(folder.path), "--json", timeout=30).stdout)
    assert (listed["state"], listed["step"], listed["max_steps"]) == ("interrupted", stopped["step"], 40)

    # the run folder stands for its run.toml: the run as it was started, the --set included
    resumed = run_cli("run", str(folder.path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    out = resumed.stdout
    assert f"[training] resuming at step {stopped['step']} of 40" in out
    assert "step 40/40 epoch " in out  # plain progress lines carry the total
    assert f"checkpoint saved at step 40: {folder.path / 'checkpoint-40'}" in out
    # the Trainer's train_loss covers this session only, and says so
    assert "train_loss " in out and f"(steps {stopped['step'] + 1}-40, this session)" in out
    assert "ensure_weight_tying" not in out + resumed.stderr
    assert "ensure_weight_tying" in folder.log.read_text()
    second = last_session(list(read_events(folder.events)))
    progress = of_type(second, "progress")
    assert progress[0]["step"] == stopped["step"] + 1 and progress[-1]["step"] == 40
    assert all(p["elapsed_total"] > p["elapsed"] for p in progress)  # the first session's time is counted
    assert of_type(second, "status")[-1]["state"] == "finished"


def test_a_run_piped_into_head_goes_on_to_the_end_and_its_weights_follow_the_umask(tmp_path):
    raw = tiny_run_file(tmp_path / "run", training={"max_steps": 4, "eval_strategy": "no", "save_steps": 1,
                                                    "save_total_limit": 2},
                        data={"validation_split": 0.0, "max_samples": 32})
    run_file = write_run_file(tmp_path / "run.toml", raw)
    done = subprocess.run(["bash", "-c", f"umask 022; {sys.executable} -m tui_lora.cli run {run_file} | head -3; "
                                         "exit ${PIPESTATUS[0]}"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    # head took its three lines and left; the run did not notice
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 3 and done.stderr == ""
    folder = RunFolder(tmp_path / "run")
    events = list(read_events(folder.events))
    assert of_type(events, "status")[-1]["state"] == "finished"
    assert (folder.adapter / "adapter_model.safetensors").is_file()

    # save_total_limit=2 removed checkpoints 1 and 2: the events and `runs` say which exist, not which were made
    assert [e["checkpoints"] for e in of_type(events, "checkpoint")] == [[1], [1, 2], [2, 3], [3, 4]]
    listed = json.loads(run_cli("runs", str(folder.path), "--json", timeout=30).stdout)
    assert listed["checkpoints"] == [3, 4] and [p.name for p in folder.checkpoints()] == ["checkpoint-3",
                                                                                       "checkpoint-4"]

    # safetensors writes 0600 whatever the umask; every file of the run follows the umask (022) instead
    modes = {str(path.relative_to(folder.path)): stat.S_IMODE(path.stat().st_mode)
             for path in folder.path.rglob("*") if path.is_file()}
    assert "adapter/adapter_model.safetensors" in modes and "checkpoint-4/adapter_model.safetensors" in modes
    assert {name: mode for name, mode in modes.items() if mode != 0o644} == {}
