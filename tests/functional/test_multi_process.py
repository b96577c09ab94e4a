"""Runs of two processes through accelerate launch, for real: gloo on this machine's CPU, the tiny model.

The same global batch (2 examples in each of 2 processes, against 4 in one) gives the same optimizer
steps on the same examples (accelerate hands consecutive batches of one shuffled order to the processes
in turn), so the two-process run must reproduce the one-process loss curve, not only roughly follow it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import run_cli, tiny_run_file, write_run_file
from test_detach import running_with, wait_for

from tui_lora.runs.events import read_events
from tui_lora.runs.detach import abort, start_detached, wait_gone
from tui_lora.runs.folder import RunFolder

# 36 training and 12 evaluation examples; evaluation batches that divide 12 evenly in both runs, so
# neither run pads its last evaluation batch with repeated examples.
DATA = {"max_samples": 48, "validation_split": 0.25}
ONE = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 12}
TWO = {"per_device_train_batch_size": 2, "per_device_eval_batch_size": 6}


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def train(tmp_path: Path, name: str, processes: int, packing: str, **training) -> tuple[RunFolder, list[dict]]:
    raw = tiny_run_file(tmp_path / name, data=DATA, collator={"packing": packing},
                        training={"max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
                                  **(TWO if processes > 1 else ONE), **training},
                        launch={"num_processes": processes})
    started = time.monotonic()
    done = run_cli("run", str(write_run_file(tmp_path / f"{name}.toml", raw)), "--plain", timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    print(f"{name}: {time.monotonic() - started:.1f} s")
    folder = RunFolder(tmp_path / name)
    return folder, list(read_events(folder.events))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one-process run, two-process run) per collator.packing, trained on first use."""
    made = {}

    def get(packing: str):
        if packing not in made:
            place = tmp_path_factory.mktemp(f"runs-{packing}")
            made[packing] = (train(place, "one", 1, packing), train(place, "two", 2, packing))
        return made[packing]

    return get


@pytest.mark.parametrize("packing", ["off", "auto"])
def test_two_processes_take_the_same_steps_as_one_with_the_same_global_batch(runs, packing):
    (one, one_events), (two, two_events) = runs(packing)
    assert (two.path / "launch.log").read_text().count("tui_lora.engine.worker") >= 1
    assert not (one.path / "launch.log").exists()  # one process trains in the tui-lora process itself

    assert [e["step"] for e in of_type(two_events, "train")] == [1, 2, 3, 4]
    assert of_type(two_events, "status")[-1]["state"] == "finished"
    assert of_type(two_events, "result")[0]["step"] == 4
    # one process writes the events: one line per step, one "starting", one result
    assert [e["step"] for e in of_type(two_events, "progress")] == [1, 2, 3, 4]
    assert [e["state"] for e in of_type(two_events, "status")].count("starting") == 1
    assert len(of_type(two_events, "result")) == 1
    # one adapter, and the checkpoints, written once
    assert sorted(p.name for p in two.path.iterdir() if p.is_dir()) == ["adapter", "checkpoint-2", "checkpoint-4"]
    assert (two.adapter / "adapter_model.safetensors").is_file()
    assert not two.lock_file.exists()

    # the same examples in every step (the token counts) and the same losses
    tokens = {e["step"]: e["tokens_seen"] for e in of_type(one_events, "progress")}
    assert {e["step"]: e["tokens_seen"] for e in of_type(two_events, "progress")} == tokens
    one_losses = [e["loss"] for e in of_type(one_events, "train")]
    two_losses = [e["loss"] for e in of_type(two_events, "train")]
    assert two_losses == pytest.approx(one_losses, rel=1e-3)
    assert one_losses[-1] < one_losses[0]  # it trained: the comparison is between curves that move


def test_two_processes_evaluate_like_one_padded(runs):
    (_, one_events), (_, two_events) = runs("off")
    assert [e["eval_loss"] for e in of_type(two_events, "eval")] == pytest.approx(
        [e["eval_loss"] for e in of_type(one_events, "eval")], rel=1e-3)


def test_two_processes_evaluate_like_one_packed(runs):
    (_, one_events), (_, two_events) = runs("auto")
    assert [e["eval_loss"] for e in of_type(two_events, "eval")] == pytest.approx(
        [e["eval_loss"] for e in of_type(one_events, "eval")], rel=1e-3)


def test_a_failing_process_ends_the_whole_run_with_its_error(tmp_path):
    raw = tiny_run_file(tmp_path / "run", data={"validation_split": 0.0, "max_samples": 32},
                        training={"max_steps": 40, "eval_strategy": "no", "save_steps": 1000, **TWO},
                        launch={"num_processes": 2})
    run_file = write_run_file(tmp_path / "run.toml", raw)
    started = time.monotonic()
    done = run_cli("run", str(run_file), "--plain", timeout=240,
                   env={**os.environ, "TUI_LORA_TEST_FAIL_AT": "1:2"})  # process 1 raises at step 2
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert time.monotonic() - started < 120  # process 0 did not go on training (40 steps) or hang
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("run failed: process 1: InjectedFault: failing on purpose at step 2")

    folder = RunFolder(tmp_path / "run")
    events = list(read_events(folder.events))
    final = of_type(events, "status")[-1]
    assert (final["state"], final["process"]) == ("failed", 1)
    assert "InjectedFault: failing on purpose" in final["message"]
    assert max(e["step"] for e in of_type(events, "progress")) < 40
    log = folder.log.read_text()
    assert "[process 1] Traceback" in log and "[process 1] tui_lora.engine.callbacks.InjectedFault" in log
    assert not folder.adapter.exists() and not folder.lock_file.exists()
    assert not running_with(str(run_file))  # no process of the run is left behind


def test_abort_of_a_detached_two_process_run_saves_a_checkpoint_and_resume_finishes(tmp_path):
    raw = tiny_run_file(tmp_path / "run", data={"validation_split": 0.0, "max_samples": 32},
                        training={"max_steps": 60, "eval_strategy": "no", "save_steps": 1000, **TWO},
                        launch={"num_processes": 2})
    run_file = write_run_file(tmp_path / "run.toml", raw)
    folder = tmp_path / "run"
    run = start_detached(run_file)
    try:
        training = wait_for(folder, lambda s: (s.state == "training" and s.step >= 2) or s.pid is None, timeout=120)
        assert training.state == "training" and training.pid == run.pid, training
        assert abort(folder) == run.pid  # SIGTERM to the launcher, which passes it to every process
        assert wait_gone(run.pid, 60)
    finally:
        if RunFolder(folder).owner() == run.pid:
            os.kill(run.pid, 9)
    stopped = wait_for(folder, lambda s: s.pid is None)
    assert stopped.state == "aborted", (stopped, (folder / "console.log").read_text()[-3000:])
    assert stopped.latest_checkpoint == folder / f"checkpoint-{stopped.step}" and 2 <= stopped.step < 60
    assert not running_with(str(run_file))

    resumed = run_cli("run", str(run_file), "--resume", "--plain", "--set", f"training.max_steps={stopped.step + 2}",
                      timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    events = list(read_events(folder / "events.jsonl"))
    second = events[max(i for i, e in enumerate(events) if e.get("state") == "starting"):]
    assert [e["step"] for e in of_type(second, "train")] == [stopped.step + 1, stopped.step + 2]
    assert json.loads((folder / "adapter" / "adapter_config.json").read_text())["r"] == 4
