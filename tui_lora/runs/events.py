"""The run's event log: one JSON object per line in events.jsonl.

The training process appends; the headless display, the TUI and `tui-lora runs`
read. Every event has "t" (unix seconds) and "type":
  status    state (starting, loading, preparing_data, training, saving, finished,
            failed, interrupted (Ctrl+C), aborted (SIGTERM)) and message
  progress  step, max_steps, epoch, num_epochs, tokens_seen, elapsed (seconds of this session),
            elapsed_total (of every session of the run: a resumed run adds the time before it)
  train     step, epoch, loss, learning_rate, grad_norm, tokens_per_second, and on a GPU
            gpu_memory / gpu_memory_reserved (peak bytes so far)
  eval      step, epoch, eval_loss and any other eval_* metric
  early_stopping  step, evaluations_without_improvement, patience (after each evaluation)
  data      counts from data preparation (records, examples, skipped and why, shortened, tokens)
  download  a hub fetch: state start (files, bytes to fetch, source), files_done/files,
            bytes_done/bytes (at most once a second), state done (folder)
  model     trainable and total parameters, quantisation
  checkpoint  step and folder of each checkpoint saved, and checkpoints: the steps of those on disk
            once it is in place (save_total_limit may have removed older ones)
  summary   the Trainer's closing numbers (runtime, samples per second, train loss)
  log       level and message (warnings and errors from the training process; info lines of
            its own, such as which batching path runs)
  result    where the adapter is and the final metrics; train_loss_steps [first, last]: the steps the
            Trainer's train_loss averages (this session's only, after a resume)
  merge     written by `tui-lora merge` after the run (out, dtype, parameters): where the merged model is,
            which `tui-lora push --merged` uploads
Readers ignore types and keys they do not know, so the log can grow.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tui_lora.secret_guard import redact_value

Event = dict[str, Any]
Listener = Callable[[Event], None]

# The states a status event names, in the order a run goes through them. A run stopped by a signal saved a
# checkpoint first: interrupted is Ctrl+C at its terminal, aborted is SIGTERM from elsewhere (the UI, kill).
# "died" is no event: it is what runs/status.py calls a run whose process is gone before a final state.
RUN_STATES = ("starting", "loading", "preparing_data", "training", "saving",
              "finished", "failed", "interrupted", "aborted")
STOPPED_STATES = ("interrupted", "aborted")
FINAL_STATES = ("finished", "failed", *STOPPED_STATES)


def stopped_state(signal_name: str) -> str:
    """The state a run stopped by this signal ends in."""
    return "aborted" if signal_name == "SIGTERM" else "interrupted"


def _clean(value: Any) -> Any:
    # JSON has no NaN or infinity; a diverged loss must still be a valid line.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class EventLog:
    """Appends events to a file (flushed per line, so readers see them at once) and tells listeners."""

    def __init__(self, path: Path | None, listeners: list[Listener] | None = None):
        self.path = path
        self.listeners = list(listeners or [])
        self._handle = open(path, "a", encoding="utf-8") if path else None
        if self._handle and self._handle.tell() and not _ends_with_newline(path):
            # the last writer was killed in the middle of a line: end it, so our first event is a line of its own
            self._handle.write("\n")

    def emit(self, type: str, **fields: Any) -> Event:
        # redacted: a hub token echoed by a library message must not reach the log or the screen
        fields = {k: _clean(redact_value(v)) for k, v in fields.items()}
        event = {"t": round(time.time(), 3), "type": type, **fields}
        if self._handle:
            self._handle.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._handle.flush()
        for listener in self.listeners:
            listener(event)
        return event

    def status(self, state: str, message: str = "", **fields: Any) -> Event:
        return self.emit("status", state=state, message=message, **fields)

    def log(self, level: str, message: str) -> Event:
        return self.emit("log", level=level, message=message)

    def close(self) -> None:
        if self._handle:
            self._handle.close()
            self._handle = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def add_curve_point(points: list[tuple[float, float]], point: tuple[float, float]) -> None:
    """The next (step, value) of a loss curve. A resumed run repeats the steps after its checkpoint: the newer
    values replace the older ones, so the curve joins its first part (the run screen, compare)."""
    while points and points[-1][0] >= point[0]:
        points.pop()
    points.append(point)


def read_events(path: Path) -> Iterator[Event]:
    """Events from a log; a torn last line (the writer was killed mid-write) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


class EventTail:
    """New events from a log that another process is still writing, read from where the last read stopped.

    Only whole lines are taken: a line the writer has not finished yet waits for the next read.
    """

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self._partial = b""

    def read(self, limit: int = 4 << 20) -> list[Event]:
        """Events appended since the last call (at most about `limit` bytes of them per call)."""
        try:
            with open(self.path, "rb") as handle:
                if handle.seek(0, 2) < self.offset:  # the log was replaced: start again
                    self.offset, self._partial = 0, b""
                handle.seek(self.offset)
                chunk = handle.read(limit)
        except OSError:
            return []
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(event, dict):
                events.append(event)
        return events
