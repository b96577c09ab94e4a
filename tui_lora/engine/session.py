"""One training session in this process: run folder, logs and event log around the recipe."""

from __future__ import annotations

import traceback

from tui_lora.config import save_run_file
from tui_lora.config.schema import RunConfig
from tui_lora.errors import RunFailed, UserError
from tui_lora.events import EventLog, Listener
from tui_lora.hub import apply_hub_environment
from tui_lora.runs import RunFolder


class Interrupted(Exception):
    """The run stopped on a signal after saving a checkpoint (exit status 130)."""


def execute(config: RunConfig, folder: RunFolder, resume_from=None, listeners: list[Listener] = ()) -> dict:
    """Run the recipe with its events and logs going to `folder`; the caller holds the folder's lock."""
    save_run_file(config, folder.run_file, overwrite=resume_from is not None)
    events = EventLog(folder.events, list(listeners))
    events.status("starting", f"run folder {folder.path}", folder=str(folder.path),
                  resumed_from=str(resume_from) if resume_from else None)
    attached = []
    try:
        late = apply_hub_environment(config.hub)
        if late:
            events.log("warning", late)
        from tui_lora.engine.train import capture_logs, release_logs, run_training

        attached = capture_logs(folder, events)
        result = run_training(config, folder, events, resume_from)
    except UserError as exc:
        events.status("failed", str(exc))
        raise
    except KeyboardInterrupt:
        events.status("interrupted", "stopped at once by a second Ctrl+C; the last checkpoint is intact")
        raise Interrupted("stopped by Ctrl+C") from None
    except Exception as exc:
        with open(folder.log, "a", encoding="utf-8") as handle:
            handle.write(traceback.format_exc())
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        events.status("failed", message)
        raise RunFailed(f"{message} (full traceback in {folder.log})") from exc
    else:
        if result.get("interrupted"):
            raise Interrupted(f"stopped at step {result['step']} after saving a checkpoint")
        events.status("finished", f"adapter saved to {folder.adapter}", adapter=str(folder.adapter))
        return result
    finally:
        if attached:
            release_logs(attached)
        events.close()
