"""One training session in this process: run folder, logs, signals and event log around the recipe.

`execute` is the run as it is reported: the only process of a run, or the main one of several.
`execute_replica` is one of the other processes of a multi-process run (engine/worker.py): it
trains beside the main process, obeys the same signals and writes nothing to the run folder.
"""

from __future__ import annotations

import signal
import traceback

from tui_lora.config import save_run_file
from tui_lora.config.schema import RunConfig
from tui_lora.errors import RunFailed, UserError, first_line
from tui_lora.runs.events import EventLog, Listener, stopped_state
from tui_lora.hub import apply_hub_environment
from tui_lora.runs.folder import RunFolder
from tui_lora.secret_guard import redact


class Interrupted(Exception):
    """The run stopped on a signal (exit status 130); state is "interrupted" (Ctrl+C) or "aborted" (SIGTERM)."""

    def __init__(self, message: str, state: str = "interrupted"):
        super().__init__(message)
        self.state = state


class StopRequest:
    """Ctrl+C and SIGTERM for the whole session.

    Before training starts there is nothing to save, so a signal stops at once. Once the
    Trainer runs, the first signal only asks it to save a checkpoint after the current step
    and stop (callbacks.GracefulStop reads `signal`); a second Ctrl+C stops at once.

    Ctrl+C is a person at the terminal ("interrupted"); SIGTERM is someone stopping the run from
    elsewhere, such as the UI's abort or `kill PID` on a detached run ("aborted"). Both exit with 130.
    """

    def __init__(self, events: EventLog):
        self.events = events
        self.signal: str | None = None
        self.training = False
        self._previous: dict[int, object] = {}

    @property
    def state(self) -> str:
        return stopped_state(self.signal or "SIGINT")

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        first = self.signal is None
        self.signal = self.signal or signal.Signals(signum).name
        if not self.training or not first:
            raise KeyboardInterrupt
        try:
            self.events.log("warning", f"{self.signal} received: saving a checkpoint after this step, then "
                                       "stopping (Ctrl+C again to stop at once)")
        except Exception:
            # Anything raised here would surface in the middle of the training step and fail the run before it
            # saves: a terminal that is gone, or a write interrupted inside the same stream ("reentrant call").
            # The stop is already recorded in self.signal; the status event after the checkpoint says the rest.
            pass


def execute(config: RunConfig, folder: RunFolder, resume_from=None, listeners: list[Listener] = ()) -> dict:
    """Run the recipe with its events and logs going to `folder`; the caller holds the folder's lock."""
    # The folder was checked by runs.open_run_folder: it holds nothing trained, or this is its resumption.
    save_run_file(config, folder.run_file, overwrite=True)
    events = EventLog(folder.events, list(listeners))
    stop = StopRequest(events)
    stop.install()
    events.status("starting", f"run folder {folder.path}", folder=str(folder.path),
                  resumed_from=str(resume_from) if resume_from else None)
    logs = None
    try:
        late = apply_hub_environment(config.hub)
        if late:
            events.log("warning", late)
        from tui_lora.engine.logs import capture_logs
        from tui_lora.engine.train import run_training

        logs = capture_logs(folder, events)
        outcome = run_training(config, folder, events, stop, resume_from)
    except UserError as exc:
        events.status("failed", str(exc))
        raise
    except KeyboardInterrupt:
        if stop.training:
            message = "stopped at once by a second signal; the last complete checkpoint is intact"
        else:
            message = f"stopped by {stop.signal or 'SIGINT'} before training started; nothing was trained"
        events.status(stop.state, message)
        raise Interrupted(message, stop.state) from None
    except Exception as exc:
        with open(folder.log, "a", encoding="utf-8") as handle:
            handle.write(redact(traceback.format_exc()))  # exception texts can quote request headers
        message = f"{type(exc).__name__}: {first_line(exc)}"
        events.status("failed", message)
        raise RunFailed(f"{message} (full traceback in {folder.log})") from exc
    else:
        if outcome.interrupted:
            step, latest = outcome.step, folder.latest_checkpoint()
            if latest is not None and latest.name == f"checkpoint-{step}":
                saved = f"checkpoint saved at step {step}; continue with --resume"
            elif latest is not None:
                saved = f"no checkpoint at step {step}; --resume continues from {latest.name}"
            else:
                saved = "no checkpoint was saved, so a new run starts from the beginning"
            message = f"stopped by {stop.signal} at step {step}; {saved}"
            events.status(stop.state, message, step=step)
            raise Interrupted(message, stop.state)
        events.status("finished", f"adapter saved to {folder.adapter}", adapter=str(folder.adapter))
        return outcome.result
    finally:
        stop.uninstall()
        if logs is not None:
            logs.release()
        events.close()


def execute_replica(config: RunConfig, folder: RunFolder, resume_from=None) -> dict:
    """Train as one of the other processes of a multi-process run; the main process reports the run.

    Its events go nowhere (an EventLog without a file) and its library logging stays on stderr,
    which the launcher keeps in launch.log. Raises Interrupted after a signal, like `execute`.
    """
    events = EventLog(None)
    stop = StopRequest(events)
    stop.install()
    try:
        apply_hub_environment(config.hub)
        from tui_lora.engine.train import run_training

        outcome = run_training(config, folder, events, stop, resume_from)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped by {stop.signal or 'SIGINT'}", stop.state) from None
    finally:
        stop.uninstall()
    if outcome.interrupted:
        raise Interrupted(f"stopped by {stop.signal} at step {outcome.step}", stop.state)
    return outcome.result
