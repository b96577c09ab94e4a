"""Where a run stands, read from hand-written run folders: the event log and the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tui_lora.runs.status import RunStatus, progress_text, read_status, status_to_dict


def status(t, state, message="", **fields):
    return {"t": t, "type": "status", "state": state, "message": message, **fields}


def progress(t, step, max_steps, epoch=None, num_epochs=1):
    return {"t": t, "type": "progress", "step": step, "max_steps": max_steps,
            "epoch": epoch if epoch is not None else step / max_steps, "num_epochs": num_epochs,
            "tokens_seen": 100 * step, "elapsed": 0.5 * step}


def train(t, step, loss):
    return {"t": t, "type": "train", "step": step, "epoch": 0.1, "loss": loss, "learning_rate": 1e-4,
            "grad_norm": 0.5, "tokens_per_second": 1000.0}


def one_run(t0, steps, max_steps, end=None, resumed_from=None):
    """The events of one run (or resumption) of `steps` steps, ending with the status `end` if given."""
    first = resumed_from[0] if resumed_from else 0
    events = [status(t0, "starting", "run folder x", resumed_from=resumed_from[1] if resumed_from else None),
              status(t0 + 1, "loading", "reading"), status(t0 + 2, "preparing_data", "reading"),
              status(t0 + 3, "training", f"training for {max_steps} steps", max_steps=max_steps, resumed_from=first)]
    for step in range(first + 1, first + steps + 1):
        events += [progress(t0 + 3 + step, step, max_steps), train(t0 + 3 + step, step, 10.0 / step)]
    if end:
        events.append(status(t0 + 100, *end))
    return events


def write_log(folder, events, tail: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.toml").write_text("")
    lines = "".join(json.dumps(event) + "\n" for event in events)
    (folder / "events.jsonl").write_text(lines + tail)
    return folder


def checkpoint(folder, step):
    (folder / f"checkpoint-{step}").mkdir()
    (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def hold_lock(folder, pid):
    (folder / ".lock").write_text(str(pid))


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_a_finished_run(tmp_path):
    events = one_run(1000.0, 6, 6, end=("finished", "adapter saved to x/adapter"))
    events.insert(-1, {"t": 1050.0, "type": "eval", "step": 6, "epoch": 1.0, "eval_loss": 1.25})
    folder = write_log(tmp_path / "run", events)
    (folder / "adapter").mkdir()
    checkpoint(folder, 3)
    checkpoint(folder, 6)
    got = read_status(folder)
    assert (got.state, got.message) == ("finished", "adapter saved to x/adapter")
    assert (got.step, got.max_steps, got.epoch, got.num_epochs) == (6, 6, 1.0, 1)
    assert (got.started, got.updated) == (1000.0, 1100.0)
    assert got.loss == pytest.approx(10.0 / 6) and got.eval_loss == 1.25
    assert got.adapter == folder / "adapter" and got.latest_checkpoint == folder / "checkpoint-6"
    assert got.pid is None
    assert progress_text(got) == "step 6/6 (100%)"
    assert json.loads(json.dumps(status_to_dict(got)))["adapter"] == str(folder / "adapter")


def test_a_failed_run_keeps_its_reason_and_has_no_adapter(tmp_path):
    folder = write_log(tmp_path / "run", one_run(1000.0, 2, 10, end=("failed", "TrainingDiverged: loss became nan")))
    got = read_status(folder)
    assert (got.state, got.message) == ("failed", "TrainingDiverged: loss became nan")
    assert got.step == 2 and got.adapter is None and got.latest_checkpoint is None


def test_an_aborted_run_says_where_it_stopped(tmp_path):
    events = one_run(1000.0, 3, 40)
    events.append(status(1200.0, "aborted", "stopped by SIGTERM at step 3; checkpoint saved at step 3; "
                                            "continue with --resume", step=3))
    folder = write_log(tmp_path / "run", events)
    checkpoint(folder, 3)
    got = read_status(folder)
    assert got.state == "aborted" and "checkpoint saved at step 3" in got.message
    assert got.step == 3 and progress_text(got) == "step 3/40 (8%)"
    assert got.latest_checkpoint == folder / "checkpoint-3"


def test_a_torn_last_line_is_skipped(tmp_path):
    folder = write_log(tmp_path / "run", one_run(1000.0, 4, 10),
                       tail='{"t": 1020.0, "type": "progress", "step": 5, "max_st')
    hold_lock(folder, os.getpid())  # still running
    got = read_status(folder)
    assert got.state == "training" and got.pid == os.getpid()
    assert got.step == 4 and got.updated == 1007.0 and got.loss == pytest.approx(2.5)


def test_a_resumption_continues_the_step_count_and_starts_its_own_clock(tmp_path):
    first = one_run(1000.0, 3, 10, end=("interrupted", "stopped by SIGINT at step 3"))
    second = one_run(5000.0, 0, 10, resumed_from=(3, "/x/checkpoint-3"))
    folder = write_log(tmp_path / "run", first + second)
    hold_lock(folder, os.getpid())
    got = read_status(folder)
    # training has begun in the resumption but no step has ended yet: the first run's numbers hold
    assert (got.state, got.started) == ("training", 5000.0)
    assert (got.step, got.max_steps) == (3, 10) and got.loss == pytest.approx(10.0 / 3)

    second = one_run(5000.0, 4, 10, resumed_from=(3, "/x/checkpoint-3"), end=("finished", "adapter saved"))
    write_log(folder, first + second)
    (folder / ".lock").unlink()
    got = read_status(folder)
    assert (got.state, got.started, got.step, got.max_steps) == ("finished", 5000.0, 7, 10)
    assert got.loss == pytest.approx(10.0 / 7)


def test_a_new_run_in_a_folder_whose_last_run_failed_does_not_inherit_its_steps(tmp_path):
    first = one_run(1000.0, 2, 10, end=("failed", "boom"))
    folder = write_log(tmp_path / "run", first + [status(2000.0, "starting", "run folder x", resumed_from=None)])
    hold_lock(folder, os.getpid())
    got = read_status(folder)
    assert (got.state, got.step, got.max_steps, got.loss, got.started) == ("starting", 0, None, None, 2000.0)
    assert progress_text(got) == "-"


def test_a_run_whose_process_is_gone_has_died_and_names_its_checkpoint(tmp_path):
    folder = write_log(tmp_path / "run", one_run(1000.0, 5, 10))
    checkpoint(folder, 4)
    hold_lock(folder, dead_pid())  # killed with -9: the lock stays behind
    got = read_status(folder)
    assert got.state == "died" and got.pid is None
    assert "checkpoint-4" in got.message and f"tui-lora run {folder / 'run.toml'} --resume" in got.message
    assert got.step == 5

    (folder / ".lock").unlink()
    for child in folder.glob("checkpoint-*"):
        (child / "trainer_state.json").unlink()
    assert "no checkpoint was saved" in read_status(folder).message


def test_a_folder_without_events_is_new(tmp_path):
    (tmp_path / "run").mkdir()
    got = read_status(tmp_path / "run")
    assert (got.state, got.step, got.started, got.updated, got.pid) == ("new", 0, None, None, None)
    assert read_status(tmp_path / "missing").state == "new"


def test_events_written_another_way_are_still_read(tmp_path):
    """Tools other than EventLog may write the log with other spacing; the fast path must not miss them."""
    folder = tmp_path / "run"
    folder.mkdir()
    events = one_run(1000.0, 2, 4, end=("finished", "done"))
    (folder / "events.jsonl").write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
    got = read_status(folder)
    assert (got.state, got.step, got.max_steps, got.loss) == ("finished", 2, 4, 5.0)


def test_a_long_log_reads_quickly(tmp_path):
    events = one_run(1000.0, 0, 100_000)
    folder = write_log(tmp_path / "run", events)
    with open(folder / "events.jsonl", "a") as handle:
        for step in range(1, 100_001):
            handle.write(json.dumps(progress(1000.0 + step, step, 100_000)) + "\n")
            handle.write(json.dumps(train(1000.0 + step, step, 1.0)) + "\n")
    started = time.perf_counter()
    got = read_status(folder)
    elapsed = time.perf_counter() - started
    assert got.step == 100_000 and got.state == "died"
    assert elapsed < 2.0  # about 0.15 s here for these 35 MB; parsing every line takes about five times longer


def test_progress_text():
    def of(step, max_steps):
        return progress_text(RunStatus(folder=None, state="training", step=step, max_steps=max_steps))

    assert of(40, 123) == "step 40/123 (33%)"
    assert of(0, 10) == "step 0/10 (0%)"
    assert of(999, 1000) == "step 999/1000 (99%)"  # never 100% before the last step
    assert of(1000, 1000) == "step 1000/1000 (100%)"
    assert of(7, None) == "step 7"
    assert of(0, None) == "-"
