"""A run's library logging: train.log gets all of it, the event log its warnings, and the libraries'
own progress bars are off while the run lasts (capture_logs, then CapturedLogs.release)."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable

from tui_lora.runs.events import EventLog
from tui_lora.runs.folder import RunFolder

# The loggers whose records a run keeps: the libraries it drives, its own, and Python warnings.
CAPTURED = ("transformers", "peft", "datasets", "accelerate", "bitsandbytes", "huggingface_hub", "tui_lora",
            "py.warnings")


@dataclass
class CapturedLogs:
    """What capture_logs changed, for release to undo."""

    added: list[tuple[logging.Logger, logging.Handler]] = field(default_factory=list)
    removed: list[tuple[logging.Logger, logging.Handler]] = field(default_factory=list)
    bars_to_enable: list[Callable[[], None]] = field(default_factory=list)

    def release(self) -> None:
        for logger, handler in self.added:
            logger.removeHandler(handler)
            handler.close()
        for logger, handler in self.removed:
            logger.addHandler(handler)
        for enable in self.bars_to_enable:
            enable()


def capture_logs(folder: RunFolder, events: EventLog) -> CapturedLogs:
    """Send library logging and Python warnings to train.log, and warnings to the event log."""
    import transformers

    transformers.utils.logging.disable_default_handler()  # its stderr lines would tear the progress bars
    transformers.utils.logging.set_verbosity_info()
    bars_to_enable = _quiet_progress_bars()
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", message=".*kernels.*")
    # datasets prints its INFO lines ("Using custom data configuration ...") through a stderr handler of its
    # own; at INFO they would bury the progress lines, so they go to train.log only while the run lasts.
    removed = [(logging.getLogger("datasets"), handler) for handler in logging.getLogger("datasets").handlers
               if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)]
    for logger, handler in removed:
        logger.removeHandler(handler)
    file_handler = logging.FileHandler(folder.log, encoding="utf-8")
    file_handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    events_handler = _EventsHandler(events)
    added = []
    for name in CAPTURED:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for handler in (file_handler, events_handler):
            logger.addHandler(handler)
            added.append((logger, handler))
    return CapturedLogs(added, removed, bars_to_enable)


def _quiet_progress_bars() -> list[Callable[[], None]]:
    """Turn off the libraries' own tqdm bars for the run; returns the switches that turn them back on.

    On a terminal they tear the run's progress display ("Loading weights: 100%|…|" under the bar); in a
    log they are cursor moves and carriage returns. What matters of them reaches the user as the run's
    own events: downloads (hub.fetch), loading and data preparation (status events).
    """
    import datasets
    import huggingface_hub.utils
    import transformers

    switches = [(transformers.utils.logging.is_progress_bar_enabled, transformers.utils.logging.disable_progress_bar,
                 transformers.utils.logging.enable_progress_bar),
                (datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
                (lambda: not huggingface_hub.utils.are_progress_bars_disabled(),
                 huggingface_hub.utils.disable_progress_bars, huggingface_hub.utils.enable_progress_bars)]
    enable_again = []
    for enabled, disable, enable in switches:
        if enabled():
            disable()
            enable_again.append(enable)
    return enable_again


class _EventsHandler(logging.Handler):
    """Warnings and errors from the libraries become log events the user sees, each message once."""

    # Library chatter that says nothing to someone training an adapter: kept in train.log only.
    QUIET = ("Failed to load CPU gemm_4bit_forward", "`is_gradient_checkpointing` is deprecated",
             "Setting `save_embedding_layers` to `True`",
             # peft (0.18+) warns whenever an adapter sits on a tied layer (the demo adapts lm_head, tied to the
             # embeddings) without ensure_weight_tying. Adapting only the output side is what the run file asks
             # for, and the "complications when merging" it warns of are handled: `tui-lora merge` unties
             # the embeddings first (after/merge.py). ensure_weight_tying would put the adapter on both sides.
             "`ensure_weight_tying` is not set")

    def __init__(self, events: EventLog):
        super().__init__(logging.WARNING)
        self.events = events
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().strip().splitlines()[0]
            if record.name == "py.warnings":  # "path/file.py:12: UserWarning: text" -> "UserWarning: text"
                message = re.sub(r"^.*?:\d+: (?=\w+: )", "", message)
            if message in self.seen or any(quiet in message for quiet in self.QUIET):
                return
            self.seen.add(message)
            self.events.log(record.levelname.lower(), message)
        except Exception:  # a log line must never break training
            pass


class _RedactingFormatter(logging.Formatter):
    """train.log's lines with any hub token blanked out, whichever library logged it."""

    def format(self, record: logging.LogRecord) -> str:
        from tui_lora.secret_guard import redact

        return redact(super().format(record))
