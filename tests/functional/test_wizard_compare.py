"""The start screen's Compare action: tick recent runs, then their curves, figures and differing settings.

The pilot tests drive the real wizard on run folders as a run records them, with fixed times and losses (so the
snapshots never vary); tests/functional/test_compare.py compares three runs trained for real.
Regenerate the snapshots after an intended change with

    python -m pytest -n 0 tests/functional/test_wizard_compare.py --snapshot-update
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import write_run_file
from test_wizard import settle
from test_wizard_snapshots import fixed_surroundings, ready, wizard  # noqa: F401 (the autouse fixture applies here)
from textual.widgets import DataTable, SelectionList

from tui_lora.places import display_path, record_run
from tui_lora.runs.events import read_events
from tui_lora.tui.screens.compare import SAME_SETTINGS, CompareChooser, CompareScreen
from tui_lora.tui.screens.start import StartScreen



@pytest.fixture
def runs():
    """Three finished runs as their folders record them (recorded_run below); tests/functional/test_compare.py
    compares three runs trained for real through the same tui_lora.runs.compare that this screen shows."""
    return [recorded_run(*settings) for settings in SNAP_RUNS]


def listed_newest_first(folders: list[Path]) -> None:
    """The recent-runs list (in this test's own state folder) with folders[0] on top, so it gets mark a."""
    for folder in reversed(folders):
        record_run(folder)


def notifications(app) -> list[str]:
    return [notification.message for notification in app._notifications]


def drive(scenario, size=(80, 24)) -> None:
    """Run the wizard under the pilot and play `scenario(app, pilot)` (as test_wizard.drive, with animations off)."""

    async def main():
        app = wizard()
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await scenario(app, pilot)

    asyncio.run(main())


async def press_button(pilot, button_id: str) -> None:
    pilot.app.screen.query_one(f"#{button_id}").focus()
    await pilot.press("enter")
    await settle(pilot)


async def open_chooser(pilot) -> SelectionList:
    assert isinstance(pilot.app.screen, StartScreen)
    options = pilot.app.screen.query_one("#start-choices")
    options.highlighted = next(i for i in range(options.option_count)
                               if options.get_option_at_index(i).id == "compare")
    await pilot.press("enter")
    await pilot.pause()
    assert isinstance(pilot.app.screen, CompareChooser)
    return pilot.app.screen.query_one("#compare-choices", SelectionList)


async def press_compare(pilot) -> None:
    await press_button(pilot, "compare-go")


def plot_grid(screen: CompareScreen) -> str:
    """The plot without its legend (which names every mark whatever the curves hold)."""
    return str(screen.query_one("#compare-plot").render()).split("  a / A")[0]


def settings_lines(screen: CompareScreen) -> list[str]:
    return str(screen.query_one("#compare-settings").render()).splitlines()


def test_compare_from_the_start_screen_shows_the_ticked_runs_side_by_side(runs):
    listed_newest_first(runs)

    async def scenario(app, pilot):
        choices = await open_chooser(pilot)
        assert [str(choices.get_option_at_index(i).prompt).split()[-1] for i in range(choices.option_count)] == \
            [display_path(folder) for folder in runs]  # each line: state, progress, folder (home as ~)
        assert all(str(choices.get_option_at_index(i).prompt).startswith("finished") for i in range(3))

        await pilot.press("space")  # one ticked: refused, with one line, and the chooser stays
        await press_compare(pilot)
        assert isinstance(app.screen, CompareChooser)
        assert notifications(app) == ["tick two runs or more to compare (Space ticks the highlighted one)"]

        await pilot.press("down", "space")
        assert choices.selected == runs[:2]
        await pilot.pause()
        ticked = str(app.screen.query_one("#compare-ticked").render())  # in words: the boxes differ by colour only
        assert ticked == f"2 ticked: {display_path(runs[0])}, {display_path(runs[1])}", ticked
        await pilot.press("down", "space")
        assert choices.selected == runs
        await press_compare(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen) and [run.folder for run in screen.runs] == runs

        grid = plot_grid(screen)
        for mark in "abcABC":  # each run's training loss (lower case) and evaluations (upper case)
            assert mark in grid, grid
        table = screen.query_one("#compare-table", DataTable)
        header = [str(column.label) for column in table.ordered_columns]
        assert header[:5] == ["run", "state", "steps", "train loss", "eval loss"]
        assert table.row_count == 3
        for number, folder in enumerate(runs):
            row = table.get_row_at(number)
            last_eval = [e for e in read_events(folder / "events.jsonl") if e.get("type") == "eval"][-1]
            assert row[:3] == [f"{'abc'[number]} {folder.name}", "finished", "20"]
            assert row[4] == f"{last_eval['eval_loss']:.4f}"
        lines = settings_lines(screen)
        assert lines[0].split() == ["setting", "a", "b", "c"]
        assert [line.split() for line in lines[1:]] == [["lora.lora_alpha", "8", "16", "8"], ["lora.r", "4", "8", "4"],
                                                        ["training.learning_rate", "0.002", "0.002", "0.0005"]]

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)

        # two runs that differ only in r and alpha: only those two settings
        await open_chooser(pilot)
        await pilot.press("space", "down", "space")
        await press_compare(pilot)
        assert [run.folder for run in app.screen.runs] == runs[:2]
        assert [line.split()[0] for line in settings_lines(app.screen)[1:]] == ["lora.lora_alpha", "lora.r"]
        assert "C" not in plot_grid(app.screen)

    drive(scenario)


def test_a_run_folder_that_cannot_be_read_is_one_line_and_the_ticks_stay(runs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.toml").write_text("[lora\n", encoding="utf-8")
    (broken / "events.jsonl").write_text("", encoding="utf-8")
    listed_newest_first([runs[0], broken])

    async def scenario(app, pilot):
        await open_chooser(pilot)
        await pilot.press("escape")  # Esc closes the chooser
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)
        choices = await open_chooser(pilot)
        choices.select_all()
        await press_compare(pilot)
        assert isinstance(app.screen, CompareChooser) and choices.selected == [runs[0], broken]
        [message] = notifications(app)
        assert message.startswith(f"{broken}/run.toml: TOML syntax error") and "\n" not in message
        await press_button(pilot, "cancel")
        assert isinstance(app.screen, StartScreen)

    drive(scenario)


def test_one_recent_run_has_no_compare_option(runs):
    listed_newest_first(runs[:1])

    async def scenario(app, pilot):
        options = app.screen.query_one("#start-choices")
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert f"run:{runs[0]}" in ids and "compare" not in ids

    drive(scenario)


# ---------------------------------------------------------------- snapshots


# (folder name, r, lora_alpha, learning rate, loss lost a step): three curves apart from each other on the plot
SNAP_RUNS = [("r4-lr2e-3", 4, 8, 2e-3, 0.06), ("r8-lr2e-3", 8, 16, 2e-3, 0.09), ("r4-lr5e-4", 4, 8, 5e-4, 0.03)]


def recorded_run(name: str, r: int, alpha: int, rate: float, drop: float) -> Path:
    """A finished run of 20 steps as its folder records it, with fixed times and losses, and no live process."""
    folder = Path.home() / "runs" / name
    folder.mkdir(parents=True)
    events = [{"t": 1000.0, "type": "status", "state": "starting", "message": f"run folder ~/runs/{name}"},
              {"t": 1002.0, "type": "status", "state": "training", "message": "training for 20 steps",
               "max_steps": 20, "resumed_from": 0}]
    for step in range(1, 21):
        t = 1002.0 + 1.5 * step
        events.append({"t": t, "type": "progress", "step": step, "max_steps": 20, "epoch": step / 10,
                       "num_epochs": 2.0, "elapsed": 1.5 * step, "elapsed_total": 1.5 * step,
                       "tokens_seen": 4096 * step})
        events.append({"t": t, "type": "train", "step": step, "loss": round(3.0 - drop * step + 0.04 * (step % 3), 4),
                       "learning_rate": rate * (1 - step / 20), "grad_norm": 1.5, "tokens_per_second": 2730.0,
                       "gpu_memory": (r * 64 + 900) * 2**20})
        if step % 5 == 0:
            events.append({"t": t + 0.2, "type": "eval", "step": step, "eval_loss": round(3.1 - 0.9 * drop * step, 4)})
    adapter = f"~/runs/{name}/adapter"  # as shown; a real log holds the absolute path
    events += [{"t": 1033.0, "type": "result", "adapter": adapter, "step": 20, "metrics": {}},
               {"t": 1033.1, "type": "status", "state": "finished", "message": f"adapter saved to {adapter}",
                "adapter": adapter}]
    (folder / "events.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    write_run_file(folder / "run.toml", {"model": {"name_or_path": "builtin:tiny-chat"},
                                         "lora": {"r": r, "lora_alpha": alpha},
                                         "training": {"output_dir": str(folder), "learning_rate": rate,
                                                      "max_steps": 20}})
    return folder


def recorded_runs() -> list[Path]:
    folders = [recorded_run(*settings) for settings in SNAP_RUNS]
    listed_newest_first(folders)
    return folders


@pytest.mark.parametrize("size", [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")])
def test_snapshot_compare_screen(snap_compare, size):
    recorded_runs()

    async def run_before(pilot):
        await open_chooser(pilot)
        await pilot.press("space", "down", "space", "down", "space")
        await press_compare(pilot)
        assert isinstance(pilot.app.screen, CompareScreen)
        await ready(pilot)

    assert snap_compare(wizard(), terminal_size=size, run_before=run_before)


def test_snapshot_chooser_with_two_ticked(snap_compare):
    folders = recorded_runs()

    async def run_before(pilot):
        choices = await open_chooser(pilot)
        await pilot.press("space", "down", "down", "space")
        assert choices.selected == [folders[0], folders[2]]
        await ready(pilot)

    assert snap_compare(wizard(), terminal_size=(80, 24), run_before=run_before)


def test_the_same_settings_are_one_line():
    from tui_lora.runs.compare import compare
    from tui_lora.tui.screens.compare import settings_text

    same = [recorded_run(f"same-{number}", 4, 8, 2e-3, 0.06) for number in range(2)]
    assert str(settings_text(compare([str(folder) for folder in same]))) == SAME_SETTINGS


def test_snapshots_show_no_temporary_paths():
    """A random folder in a snapshot would make it differ on every run."""
    folder = Path(__file__).parent / "__snapshots__" / Path(__file__).stem
    for svg in folder.glob("*.svg"):
        text = svg.read_text(encoding="utf-8")
        assert "pytest-" not in text and "/tmp/" not in text, svg.name
