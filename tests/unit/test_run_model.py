"""The run screen's model: events folded into counters and plot points, and a log read while it grows."""

from __future__ import annotations

import json

from tui_lora.runs.events import EventTail
from tui_lora.tui.run_model import PLOT_POINTS, RunProgress
from tui_lora.tui.widgets.loss_plot import draw


def session(first_step: int, last_step: int, max_steps: int, loss_at) -> list[dict]:
    events = [{"type": "status", "state": "starting", "message": "run folder x"},
              {"type": "status", "state": "training", "message": "", "max_steps": max_steps,
               "resumed_from": first_step}]
    for step in range(first_step + 1, last_step + 1):
        events.append({"type": "progress", "step": step, "max_steps": max_steps, "epoch": step / 10,
                       "num_epochs": max_steps / 10, "elapsed": 2.0 * (step - first_step)})
        events.append({"type": "train", "step": step, "loss": loss_at(step), "learning_rate": 1e-4})
    return events


def test_a_resumed_run_continues_the_count_and_joins_the_plot():
    progress = RunProgress()
    for event in session(0, 6, 10, lambda step: 10.0 - step):
        progress.apply(event)
    progress.apply({"type": "status", "state": "aborted", "message": "stopped by SIGTERM at step 6"})
    assert progress.final and progress.step == 6
    # the resumption starts from checkpoint 4, so steps 5 and 6 come again with new values
    for event in session(4, 10, 10, lambda step: 5.0 - step / 10):
        progress.apply(event)
    assert progress.step == 10 and progress.fraction == 1.0
    steps = [step for step, _ in progress.train_points]
    assert steps == list(range(1, 11))                    # one point per step, no going back
    assert progress.train_points[4] == (5.0, 4.5)         # the resumption's value replaced the old one
    assert progress.eta is None or progress.eta == 0       # nothing left
    progress.step = 7
    assert progress.eta == 2.0 * (10 - 4) / (7 - 4) * 3   # pace of this session only


def test_eval_early_stopping_checkpoints_and_final_state():
    progress = RunProgress()
    lines = []
    for event in [{"type": "eval", "step": 2, "eval_loss": 3.5},
                  {"type": "early_stopping", "step": 2, "evaluations_without_improvement": 1, "patience": 3},
                  {"type": "checkpoint", "step": 2, "path": "checkpoint-2"},
                  {"type": "log", "level": "warning", "message": "careful"},
                  {"type": "status", "state": "failed", "message": "TrainingDiverged: loss became nan"},
                  {"type": "unknown-kind", "x": 1}]:
        lines += progress.apply(event)
    assert progress.eval_points == [(2.0, 3.5)] and progress.early_stopping == (1, 3)
    assert progress.checkpoints == [2] and progress.state == "failed"
    assert ("warning", "careful") in lines and ("error", "failed: TrainingDiverged: loss became nan") in lines


def test_long_runs_keep_a_bounded_number_of_plot_points():
    progress = RunProgress()
    for step in range(1, 5 * PLOT_POINTS):
        progress.apply({"type": "train", "step": step, "loss": 1.0 / step})
    assert len(progress.train_points) <= PLOT_POINTS
    assert progress.train_points[-1] == (5 * PLOT_POINTS - 1, 1.0 / (5 * PLOT_POINTS - 1))
    assert progress.train_points[0][0] == 1


def test_a_line_being_written_waits_for_its_end(tmp_path):
    log = tmp_path / "events.jsonl"
    tail = EventTail(log)
    assert tail.read() == []  # no file yet
    first = json.dumps({"type": "train", "step": 1, "loss": 2.0})
    second = json.dumps({"type": "train", "step": 2, "loss": 1.5})
    log.write_text(first + "\n" + second[:10], encoding="utf-8")
    assert [event["step"] for event in tail.read()] == [1]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(second[10:] + "\nnot json\n")
    assert [event["step"] for event in tail.read()] == [2]
    assert tail.read() == []
    log.write_text(first + "\n", encoding="utf-8")  # replaced by a shorter file: read from the start
    assert [event["step"] for event in tail.read()] == [1]


def test_the_plot_draws_both_series_and_its_axes():
    text = draw([(1, 4.0), (2, 3.0), (3, 2.5), (10, 1.0)], [(5, 2.0), (10, 1.2)], width=60, height=10).plain
    lines = text.splitlines()
    assert len(lines) == 10
    assert lines[0].strip().startswith("4┤") and lines[7].strip().startswith("1┤")
    assert text.count("•") >= 2 + 1  # two eval points and the legend
    assert any("\u2800" < char <= "\u28ff" for char in text)  # braille dots for the training line
    assert "10 step" in lines[8]
    assert "the loss appears here" in draw([], [], 60, 10).plain


def test_the_loss_axis_is_labelled_at_several_ticks():
    plot = draw([(step, 8.0 - 0.1 * step) for step in range(1, 21)], [], width=60, height=12)
    rows = plot.plain.splitlines()[:-2]  # the plot rows, without the step axis and the legend
    labels = [row.split("┤")[0].strip() for row in rows]
    values = [float(label) for label in labels if label]
    assert len(values) >= 4 and values == sorted(values, reverse=True)
    assert values[0] == 7.9 and values[-1] == 6.0  # the extremes exact, the ticks between them
