"""Where a run stands, read from its folder alone: the event log and the lock.

`tui-lora runs`, the TUI and scripts use this; none of them needs the training process to
answer, so it works the same for a run started here, detached, or on another terminal.
Standard library only: the TUI imports it at start-up.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tui_lora.runs.events import FINAL_STATES, STOPPED_STATES
from tui_lora.runs.folder import RunFolder, checkpoint_step



@dataclass
class RunStatus:
    folder: Path
    state: str  # a status event's state, "new" (no events yet) or "died" (gone without a final state)
    message: str = ""
    step: int = 0
    max_steps: int | None = None
    epoch: float | None = None
    num_epochs: float | None = None
    started: float | None = None  # unix time the latest run in the log started (a resumption is a run)
    updated: float | None = None  # unix time of the last event
    pid: int | None = None  # the live training process holding the folder, if any
    adapter: Path | None = None
    latest_checkpoint: Path | None = None
    # the steps of the checkpoints on disk now, oldest first: save_total_limit removes old ones, so the
    # checkpoint events in the log name some that are gone (the latest checkpoint event lists these too)
    checkpoints: list[int] = field(default_factory=list)
    loss: float | None = None  # the last training loss
    eval_loss: float | None = None  # the last evaluation loss


def is_run_folder(path: str | Path) -> bool:
    folder = RunFolder(path)
    return folder.path.is_dir() and any(f.exists() for f in (folder.run_file, folder.events, folder.lock_file))


# The kinds of event a status needs only the last of: their lines are kept as text and only the
# last few parsed, so a log of hundreds of thousands of progress lines reads in a fraction of a second.
_LAST_ONLY = ("progress", "train", "eval")
_TYPE_AT = '"type": "'


def _kind(line: str) -> str | None:
    """The type of an event line as EventLog writes it ({"t": ..., "type": "..."), without parsing it;
    None when the line is laid out some other way (then it is parsed)."""
    start = line.find(_TYPE_AT, 0, 40)
    if start < 0:
        return None
    start += len(_TYPE_AT)
    end = line.find('"', start, start + 20)
    return line[start:end] if end > 0 else None


def _parse(line: str) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a torn line: the writer was killed in the middle of it
    return event if isinstance(event, dict) else None


class _Latest:
    """The last few lines of one kind of event since a mark, parsed only when asked for."""

    def __init__(self):
        self.lines: deque[str] = deque(maxlen=4)
        self.before: deque[str] = deque(maxlen=4)  # the same, from earlier runs in the log

    def add(self, line: str) -> None:
        self.lines.append(line)

    def new_run(self) -> None:
        if self.lines:
            self.before = self.lines
            self.lines = deque(maxlen=4)

    def event(self, earlier_runs: bool) -> dict | None:
        for lines in (self.lines, self.before) if earlier_runs else (self.lines,):
            for line in reversed(lines):
                event = _parse(line)
                if event is not None:
                    return event
        return None


def read_status(folder: str | Path) -> RunStatus:
    """The state of the run in folder. Reads events.jsonl once; never raises for a missing or damaged log."""
    run = RunFolder(folder)
    statuses: list[dict] = []  # status events of the latest run in the log
    latest = {kind: _Latest() for kind in _LAST_ONLY}
    tail: deque[str] = deque(maxlen=4)  # the last lines of any kind, for the time of the last event
    try:
        with open(run.events, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                kind = _kind(line)
                if kind in _LAST_ONLY:
                    latest[kind].add(line)
                elif kind is None or kind == "status":
                    event = _parse(line)
                    if event is None:
                        continue
                    kind = event.get("type")
                    if kind in _LAST_ONLY:
                        latest[kind].add(line)
                    elif kind == "status":
                        if event.get("state") == "starting":
                            statuses = []
                            for kept in latest.values():
                                kept.new_run()
                        statuses.append(event)
                tail.append(line)
    except OSError:
        pass

    on_disk = run.checkpoints()
    status = RunStatus(folder=run.path, state="new", pid=run.owner(),
                       adapter=run.adapter if run.adapter.is_dir() else None,
                       latest_checkpoint=on_disk[-1] if on_disk else None,
                       checkpoints=[checkpoint_step(path) for path in on_disk])
    for line in reversed(tail):
        event = _parse(line)
        if event is not None and isinstance(event.get("t"), (int, float)):
            status.updated = event["t"]
            break
    if not statuses:
        return status
    first, last = statuses[0], statuses[-1]
    status.started = first.get("t")
    status.state, status.message = str(last.get("state", "")), str(last.get("message", ""))
    # A resumption goes on from the run it continues: until its own first step, that run's numbers hold.
    resumed = bool(first.get("resumed_from"))
    training = next((e for e in reversed(statuses) if e.get("state") == "training"), None)

    progress = latest["progress"].event(resumed)
    if progress is not None:
        status.step = _int(progress.get("step")) or 0
        status.max_steps = _int(progress.get("max_steps"))
        status.epoch, status.num_epochs = _number(progress.get("epoch")), _number(progress.get("num_epochs"))
    if training is not None:  # training has begun and no step has ended in this run yet, or a longer resumption
        status.max_steps = _int(training.get("max_steps")) or status.max_steps
        status.step = max(status.step, _int(training.get("resumed_from")) or 0)
    if status.state in STOPPED_STATES and _int(last.get("step")) is not None:
        status.step = _int(last.get("step"))
    train = latest["train"].event(resumed)
    status.loss = _number(train.get("loss")) if train else None
    evaluation = latest["eval"].event(resumed)
    status.eval_loss = _number(evaluation.get("eval_loss")) if evaluation else None

    if status.state not in FINAL_STATES and status.pid is None:
        checkpoint = status.latest_checkpoint
        status.message = (f"the training process is gone (killed, or the machine restarted) while "
                          f"{status.state}; " + (
                              f"the last checkpoint is {checkpoint.name}; continue with: "
                              f"tui-lora run {run.run_file} --resume" if checkpoint else
                              "no checkpoint was saved; start it again"))
        status.state = "died"
    return status


def _int(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def progress_text(status: RunStatus) -> str:
    """How far the run is, e.g. "step 40/123 (33%)"; "-" before its first step is known."""
    if status.max_steps and status.max_steps > 0:
        share = status.step / status.max_steps
        percent = 100 if status.step >= status.max_steps else min(99, round(100 * share))
        return f"step {status.step}/{status.max_steps} ({percent}%)"
    if status.step:
        return f"step {status.step}"
    return "-"


def status_to_dict(status: RunStatus) -> dict:
    """The status as JSON-ready values (paths as strings), for `tui-lora runs --json`."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(status).items()}
