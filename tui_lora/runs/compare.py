"""`tui-lora compare RUN_FOLDER…`: several runs side by side, from what their folders already record.

Each folder's events.jsonl gives the loss curves (a resumed run's repeated steps replace the earlier ones, as on
the run screen), the final and best losses, the steps, the wall time of every session together, the tokens per
second and the peak GPU memory; its run.toml gives the settings, of which only those that differ are shown.
Nothing is written anywhere but the optional PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text

from tui_lora.errors import UserError
from tui_lora.runs.events import add_curve_point, read_events
from tui_lora.runs.folder import RunFolder
from tui_lora.runs.status import is_run_folder, read_status

# One letter a run: lower case on its training loss, upper case on its evaluations, so the plot reads without colour.
MARKS = "abcdefghijklmnopqrstuvwxyz"
COLOURS = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_white")
# Settings that differ between any two runs by nature: where each one wrote.
OWN_FOLDER_KEYS = ("training.output_dir", "training.logging_dir")


@dataclass
class RunCurves:
    folder: Path
    name: str
    state: str
    train: list[tuple[float, float]] = field(default_factory=list)  # (step, loss)
    eval: list[tuple[float, float]] = field(default_factory=list)  # (step, eval_loss)
    steps: int = 0
    wall_seconds: float | None = None
    tokens_per_second: float | None = None
    peak_gpu_memory: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def final_train_loss(self) -> float | None:
        return self.train[-1][1] if self.train else None

    @property
    def final_eval_loss(self) -> float | None:
        return self.eval[-1][1] if self.eval else None

    @property
    def best_eval(self) -> tuple[float, float] | None:
        """(step, eval_loss) of the lowest evaluation."""
        return min(self.eval, key=lambda point: point[1]) if self.eval else None


def _add(points: list, step, value) -> None:
    if isinstance(step, (int, float)) and isinstance(value, (int, float)):
        add_curve_point(points, (float(step), float(value)))


def read_run(where: str) -> RunCurves:
    path = Path(where).expanduser()
    if not is_run_folder(path):
        raise UserError(f"{where}: not a run folder (no run.toml and events.jsonl in it); tui-lora runs lists them")
    folder = RunFolder(path)
    run = RunCurves(folder=folder.path, name=path.name, state=read_status(path).state)
    for event in read_events(folder.events):
        kind = event.get("type")
        if kind == "train":
            _add(run.train, event.get("step"), event.get("loss"))
            if isinstance(event.get("gpu_memory"), int):
                run.peak_gpu_memory = max(run.peak_gpu_memory or 0, event["gpu_memory"])
        elif kind == "eval":
            _add(run.eval, event.get("step"), event.get("eval_loss"))
        elif kind == "progress":
            run.steps = int(event.get("step") or run.steps)
            elapsed, tokens = event.get("elapsed_total"), event.get("tokens_seen")
            if isinstance(elapsed, (int, float)) and elapsed > 0:
                run.wall_seconds = float(elapsed)
                if isinstance(tokens, (int, float)):
                    run.tokens_per_second = tokens / elapsed
    run.settings = _flat_settings(folder.run_file)
    return run


def _flat_settings(run_file: Path) -> dict[str, Any]:
    from tui_lora.config.load import read_toml

    flat: dict[str, Any] = {}
    for section, body in read_toml(run_file).items():
        if not isinstance(body, dict):
            flat[section] = body
            continue
        for key, value in body.items():
            # tables (lr_scheduler_kwargs) and lists of tables (data.sources) compare, and show, as their JSON
            if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(i, dict) for i in value)):
                value = json.dumps(value, sort_keys=True)
            flat[f"{section}.{key}"] = value
    return flat


def differing_settings(runs: list[RunCurves]) -> dict[str, list[Any]]:
    """The settings whose values are not the same in every run: key -> each run's value (None where unset)."""
    keys = sorted({key for run in runs for key in run.settings} - set(OWN_FOLDER_KEYS))
    differing = {}
    for key in keys:
        values = [run.settings.get(key) for run in runs]
        if any(value != values[0] for value in values[1:]):
            differing[key] = values
    return differing


def compare(folders: list[str]) -> list[RunCurves]:
    if len(folders) < 2:
        raise UserError("compare: give two run folders or more (tui-lora runs lists them)")
    if len(folders) > len(MARKS):
        raise UserError(f"compare: at most {len(MARKS)} runs at once")
    runs = [read_run(where) for where in folders]
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # two folders of one name in different places: say where
        for run in runs:
            run.name = str(run.folder)
    return runs


# ---------------------------------------------------------------- the terminal plot


def plot_text(runs: list[RunCurves], width: int = 80, height: int = 16) -> Text:
    """Every run's curves on one grid: its letter in lower case along its training loss, in upper case at its
    evaluations, each run in its own colour; the loss on the left, the step along the bottom."""
    points = [point for run in runs for point in run.train + run.eval]
    if not points:
        return Text("no losses logged yet")
    axis = 9
    columns, rows = max(10, width - axis), max(4, height)
    low_step, high_step = min(p[0] for p in points), max(p[0] for p in points)
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    span_step, span = (high_step - low_step) or 1.0, (high - low) or 1.0
    grid: list[list[tuple[str, str] | None]] = [[None] * columns for _ in range(rows)]

    def put(step: float, value: float, mark: str, colour: str) -> None:
        column = round((step - low_step) / span_step * (columns - 1))
        row = rows - 1 - round((value - low) / span * (rows - 1))
        if grid[row][column] is None or mark.isupper():  # evaluations over training points
            grid[row][column] = (mark, colour)

    for number, run in enumerate(runs):
        colour = COLOURS[number % len(COLOURS)]
        for step, value in _spread(run.train, low_step, span_step, columns):
            put(step, value, MARKS[number], colour)
        for step, value in run.eval:
            put(step, value, MARKS[number].upper(), colour)
    text = Text()
    for row, cells in enumerate(grid):
        value = high - row / (rows - 1) * span
        text.append(f"{value:>8.4g} " if row in (0, rows // 2, rows - 1) else " " * axis, style="dim")
        for cell in cells:
            if cell is None:
                text.append(" ")
            else:
                text.append(cell[0], style=cell[1])
        text.append("\n")
    left, right = f"{low_step:g}", f"step {high_step:g}"
    text.append(" " * axis + left + right.rjust(columns - len(left)) + "\n", style="dim")
    for number, run in enumerate(runs):
        mark = MARKS[number]
        text.append(f"  {mark} / {mark.upper()}", style=f"bold {COLOURS[number % len(COLOURS)]}")
        text.append(f"  {run.name}: training loss / evaluations\n")
    return text


def _spread(points: list[tuple[float, float]], low: float, span: float, columns: int):
    """At most one training point per column (the last of each), so a long run does not draw a solid bar."""
    by_column: dict[int, tuple[float, float]] = {}
    for step, value in points:
        by_column[round((step - low) / span * (columns - 1))] = (step, value)
    return by_column.values()


# ---------------------------------------------------------------- the table and the JSON


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_rows(runs: list[RunCurves]) -> list[list[str]]:
    """[header, one row a run]: the figures the table shows, as text."""
    from tui_lora.hub import readable_size

    rows = [["run", "state", "steps", "train loss", "eval loss", "best eval (step)", "wall time", "tokens/s",
             "peak GPU memory"]]
    for number, run in enumerate(runs):
        best = run.best_eval
        rows.append([f"{MARKS[number]} {run.name}", run.state, str(run.steps), _number(run.final_train_loss),
                     _number(run.final_eval_loss), f"{best[1]:.4f} ({best[0]:g})" if best else "—",
                     "—" if run.wall_seconds is None else f"{run.wall_seconds:.1f} s",
                     "—" if run.tokens_per_second is None else f"{run.tokens_per_second:,.0f}",
                     "—" if run.peak_gpu_memory is None else readable_size(run.peak_gpu_memory)])
    return rows


def settings_rows(runs: list[RunCurves]) -> list[list[str]]:
    """[header, one row a differing setting]: the settings that differ, as text, a column a run (by its mark)."""
    rows = [["setting", *MARKS[:len(runs)]]]
    for key, values in differing_settings(runs).items():
        rows.append([key, *("(unset)" if value is None else str(value).lower() if isinstance(value, bool)
                            else str(value) for value in values)])
    return rows


def as_json(runs: list[RunCurves]) -> dict[str, Any]:
    return {"runs": [{"folder": str(run.folder), "name": run.name, "state": run.state, "steps": run.steps,
                      "final_train_loss": run.final_train_loss, "final_eval_loss": run.final_eval_loss,
                      "best_eval_loss": run.best_eval[1] if run.best_eval else None,
                      "best_eval_step": run.best_eval[0] if run.best_eval else None,
                      "wall_seconds": run.wall_seconds, "tokens_per_second": run.tokens_per_second,
                      "peak_gpu_memory": run.peak_gpu_memory,
                      "train": [list(point) for point in run.train], "eval": [list(point) for point in run.eval]}
                     for run in runs],
            "differing_settings": differing_settings(runs)}


def write_png(runs: list[RunCurves], path: Path) -> Path:
    """The curves as a picture (matplotlib, an optional extra): solid training lines, evaluations as markers."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("compare --png: drawing a picture needs matplotlib, which is not installed; "
                        "pip install matplotlib (or pip install 'tui-lora[plot]')") from None
    figure, axes = plt.subplots(figsize=(9, 5), dpi=100)
    for number, run in enumerate(runs):
        colour = f"C{number % 10}"
        if run.train:
            axes.plot(*zip(*run.train), color=colour, label=f"{run.name} train")
        if run.eval:
            axes.plot(*zip(*run.eval), color=colour, linestyle="--", marker="os^Dv<>p*h"[number % 10],
                      label=f"{run.name} eval")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as exc:
        raise UserError(f"compare --png: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
    return path
