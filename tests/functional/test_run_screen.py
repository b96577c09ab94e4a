"""The run screen on real runs: a finished run's log replayed, a live detached run followed, an abort."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from conftest import tiny_run_file, train_run, write_run_file

from tui_lora.runs.detach import start_detached, wait_gone
from tui_lora.runs.folder import RunFolder
from tui_lora.tui.attach import AttachApp
from tui_lora.tui.screens.dialogs import ConfirmDialog
from tui_lora.tui.screens.run import RunScreen
from tui_lora.tui.widgets.loss_plot import LossPlot


def watch(folder: Path, scenario, size=(100, 30)):
    async def main():
        app = AttachApp(folder)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.5)
            await scenario(app, app.screen, pilot)
        return app

    return asyncio.run(main())


async def until(pilot, condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await pilot.pause(0.25)


def log_text(screen: RunScreen) -> str:
    return "\n".join(screen.logged)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, request):
    """A real short run, finished, whose events.jsonl the screen replays."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    # save_total_limit 1: checkpoint-3 is deleted when checkpoint-6 is saved, as a long run deletes its old ones
    train_run(tiny_run_file(folder, training={"max_steps": 6, "eval_steps": 3, "save_steps": 3, "save_total_limit": 1}))
    return folder


def test_a_finished_runs_history_is_replayed_whole(finished_run):
    async def scenario(app, screen, pilot):
        progress = screen.progress
        assert progress.state == "finished" and progress.step == progress.max_steps == 6
        assert screen.query_one("#steps-bar").percentage == 1.0
        plot = screen.query_one(LossPlot)
        assert len(plot.train) == 6 and len(plot.evals) >= 2
        log = log_text(screen)
        assert "checkpoint saved: checkpoint-3" in log and "next steps:" in log
        state = str(screen.query_one("#run-state").render())
        assert state.startswith("✓ finished at step 6") and str(finished_run / "adapter") in state
        assert not screen.query_one("#abort").display  # nothing to abort
        # the events reported both checkpoints; only the one left in the folder is offered
        assert progress.checkpoints == [3, 6] and not (finished_run / "checkpoint-3").exists()
        stats = str(screen.query_one("#run-stats").render())
        assert "checkpoints at 6" in stats and "3, 6" not in stats
        # long lines (the next steps' commands) wrap: nothing is cut, nothing needs a sideways scroll
        log = screen.query_one("#run-log")
        assert log.max_scroll_x == 0 and any("tui-lora merge" in line for line in screen.logged)

    watch(finished_run, scenario, size=(80, 24))


def test_a_live_detached_run_is_followed_to_the_end(tmp_path):
    preset = write_run_file(tmp_path / "live.toml", tiny_run_file(
        tmp_path / "run", training={"max_steps": 8, "eval_steps": 4, "save_steps": 4}))
    started = start_detached(preset)

    async def scenario(app, screen, pilot):
        await until(pilot, lambda: screen.progress.final, 120, "the run to finish")
        await pilot.pause(0.5)
        assert screen.progress.state == "finished", log_text(screen)
        assert screen.query_one("#steps-bar").percentage == 1.0
        assert len(screen.query_one(LossPlot).train) == 8
        assert "training" in log_text(screen)

    watch(started.folder, scenario)
    assert wait_gone(started.pid, 20)


def test_abort_from_the_screen_saves_a_checkpoint_and_leaves_no_process(tmp_path):
    preset = write_run_file(tmp_path / "long.toml", tiny_run_file(
        tmp_path / "run", training={"max_steps": 400, "eval_steps": 1000, "save_steps": 1000}))
    started = start_detached(preset)

    async def scenario(app, screen, pilot):
        await until(pilot, lambda: screen.progress.step >= 2, 120, "training to start")
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        assert app.focused.id == "keep"  # Enter keeps training; aborting takes a deliberate choice
        await pilot.click("#abort")
        await until(pilot, lambda: screen.progress.final, 60, "the run to stop")
        assert screen.progress.state == "aborted", log_text(screen)
        await pilot.pause(0.5)
        assert "aborted" in str(screen.query_one("#run-state").render())

    watch(started.folder, scenario)
    assert wait_gone(started.pid, 20)
    assert RunFolder(started.folder).latest_checkpoint() is not None
    assert RunFolder(started.folder).owner() is None
    strays = [pid for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == started.pid]
    assert strays == []


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_the_start_screen_resumes_an_aborted_run_and_the_plot_joins_its_history(tmp_path):
    from tui_lora.runs.detach import abort
    from tui_lora.runs.status import read_status
    from tui_lora.tui.app import WizardApp

    preset = write_run_file(tmp_path / "stop.toml", tiny_run_file(
        tmp_path / "run", training={"max_steps": 14, "save_steps": 1000, "eval_steps": 1000}))
    started = start_detached(preset)
    deadline = time.monotonic() + 120
    while read_status(started.folder).step < 3:
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    abort(started.folder)
    assert wait_gone(started.pid, 30)
    stopped = read_status(started.folder)
    assert stopped.state == "aborted" and stopped.latest_checkpoint is not None

    async def main():
        app = WizardApp()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            options = app.screen.query_one("#start-choices")
            ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
            options.highlighted = ids.index(f"run:{started.folder}")
            assert "aborted" in str(options.get_option_at_index(options.highlighted).prompt)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmDialog)
            # four answers, the resume one long: every button whole and inside the screen, so Tab reaches them
            for button in app.screen.query("Button"):
                assert app.screen.region.contains_region(button.region), button.id
                assert button.region.width >= len(str(button.label)), button.id  # the label not cut
            await pilot.click("#resume")
            await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.progress.state == "finished"
                        and app.screen.progress.step == 14, 180, "the resumed run to finish")
            points = app.screen.query_one(LossPlot).train
            assert [step for step, _ in points] == [float(step) for step in range(1, 15)]
        return app

    asyncio.run(main())
    assert read_status(started.folder).state == "finished"
