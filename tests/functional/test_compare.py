"""`tui-lora compare`: three real finished runs on the tiny model, different r and learning rates."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, train_compared_runs

from tui_lora.runs.events import read_events



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_compared_runs(tmp_path_factory.mktemp("compare"))


def events_of(folder, kind):
    return [event for event in read_events(folder / "events.jsonl") if event.get("type") == kind]


def test_the_json_has_each_runs_figures_from_its_events_and_exactly_the_settings_that_differ(runs):
    done = run_cli("compare", *map(str, runs), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["differing_settings"] == {"lora.lora_alpha": [8, 16, 8], "lora.r": [4, 8, 4],
                                            "training.learning_rate": [2e-3, 2e-3, 5e-4]}
    for folder, run in zip(runs, answer["runs"]):
        train, evals = events_of(folder, "train"), events_of(folder, "eval")
        progress = events_of(folder, "progress")[-1]
        assert run["state"] == "finished" and run["steps"] == 4
        assert run["train"] == [[float(e["step"]), e["loss"]] for e in train]
        assert run["final_train_loss"] == train[-1]["loss"] and run["final_eval_loss"] == evals[-1]["eval_loss"]
        best = min(evals, key=lambda e: e["eval_loss"])
        assert (run["best_eval_loss"], run["best_eval_step"]) == (best["eval_loss"], best["step"])
        assert run["wall_seconds"] == progress["elapsed_total"]
        assert run["tokens_per_second"] == pytest.approx(progress["tokens_seen"] / progress["elapsed_total"])
        assert run["peak_gpu_memory"] is None  # no GPU here: nothing measured, nothing made up


def test_the_plot_the_table_and_the_differences_in_a_pipe(runs, tmp_path):
    done = run_cli("compare", *map(str, runs), "--png", str(tmp_path / "curves.png"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # plain text in a pipe
    plot = out.split("  a / A")[0]
    for mark in "abcABC":  # a line a run (lower case) and its evaluations (upper case)
        assert mark in plot, plot
    legend = [line for line in out.splitlines() if " / " in line and "training loss / evaluations" in line]
    assert [line.split()[0] for line in legend] == ["a", "b", "c"]
    table = out.splitlines()[out.splitlines().index(next(l for l in out.splitlines() if l.startswith("run "))):]
    for number, folder in enumerate(runs):
        row = next(line for line in table if line.startswith(f"{'abc'[number]} {folder.name} "))
        last_eval = events_of(folder, "eval")[-1]["eval_loss"]
        assert f"{last_eval:.4f}" in row and "finished" in row
    differing = out.split("settings that differ:")[1].split("\nplot written to")[0].splitlines()
    assert [line.split()[0] for line in differing if line.strip()][1:] == ["lora.lora_alpha", "lora.r",
                                                                           "training.learning_rate"]
    assert out.rstrip().endswith(f"plot written to {tmp_path / 'curves.png'}")
    picture = (tmp_path / "curves.png").read_bytes()
    assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 10_000


def test_one_folder_or_a_folder_that_is_no_run_is_one_line(runs, tmp_path):
    for args in ([str(runs[0])], [str(runs[0]), str(tmp_path)]):
        done = run_cli("compare", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
