"""The program `accelerate launch` runs in every process of a multi-process run.

    python -m tui_lora.engine.worker RUN_FILE [--set SECTION.KEY=VALUE ...] [--resume CHECKPOINT]

The main process (global rank 0) is the run as one process of `tui-lora run` would do it: run.toml,
events.jsonl, train.log, checkpoints and the adapter are its. The others train beside it and write
nothing to the run folder: a failure of theirs is printed to stderr and, under the launcher, left as
a small JSON file in $TUI_LORA_WORKER_ERRORS for the launcher to report.

Started by `tui-lora run` (tui_lora/runs/launcher.py), rank 0 finds the run folder checked and
locked by the launcher, and --resume names the very checkpoint the launcher checked. Started directly
(the command `tui-lora run --print-command` prints, submitted to a scheduler), rank 0 checks and locks
the folder itself and prints plain progress lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from tui_lora.errors import RunFailed, UserError, first_line
from tui_lora.runs.launcher import ERRORS_ENV, LAUNCHER_ENV, end_with_parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tui_lora.engine.worker",
                                     description="One process of a multi-process tui-lora run (accelerate launch).")
    parser.add_argument("run_file", metavar="RUN_FILE")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="a checkpoint folder, or latest")
    return parser.parse_args(argv)


def report_failure(rank: int, kind: str, message: str, trace: str) -> None:
    """One line on stderr, the traceback after it, and for the launcher a record of its own."""
    prefix = f"process {rank}: " if rank else ""
    errors = os.environ.get(ERRORS_ENV)
    # Under the launcher stderr is launch.log, where the traceback belongs; started by a scheduler it is what
    # the user reads, so there (as in the CLI) the traceback is shown only on request.
    shown = bool(trace) and bool(errors or os.environ.get("TUI_LORA_DEBUG"))
    hint = " (set TUI_LORA_DEBUG=1 for the traceback)" if trace and not shown else ""
    print(f"error: {prefix}{message}{hint}", file=sys.stderr)
    if shown:
        print(trace, file=sys.stderr, end="")
    if not errors:
        return
    record = {"rank": rank, "kind": kind, "message": message, "traceback": trace, "t": time.time()}
    staged = Path(errors) / f".rank-{rank}.json"
    staged.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    staged.replace(Path(errors) / f"rank-{rank}.json")  # whole or not at all


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    end_with_parent()
    try:
        return _run(args, rank)
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Close the processes' group before the interpreter exits. Left to the exit, its communication threads can
    abort a process (SIGABRT, "terminate called without an active exception") after the run has finished, and the
    launch then ends with a failure although every step and the adapter were saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run(args: argparse.Namespace, rank: int) -> int:
    from tui_lora.config import load_run_file
    from tui_lora.engine.session import Interrupted, execute, execute_replica
    from tui_lora.runs.folder import RunFolder, open_run_folder, resolve_paths

    try:
        config = resolve_paths(load_run_file(args.run_file, args.set))
        launched = bool(os.environ.get(LAUNCHER_ENV))
        if rank == 0 and not launched:
            from tui_lora.runs.display import PlainDisplay

            folder, checkpoint = open_run_folder(config, args.resume)
            try:
                execute(config, folder, checkpoint, listeners=[PlainDisplay()])
            finally:
                folder.release()
            return 0
        folder = RunFolder(config.training.output_dir)
        checkpoint = folder.latest_checkpoint() if args.resume == "latest" else \
            Path(args.resume).expanduser().absolute() if args.resume else None
        if rank == 0:
            execute(config, folder, checkpoint)  # the launcher shows its events
        else:
            execute_replica(config, folder, checkpoint)
        return 0
    except Interrupted as exc:
        if rank == 0:
            print(f"{exc.state}: {exc}", file=sys.stderr)
        return 130
    except UserError as exc:
        report_failure(rank, "usage", str(exc), "")
        return 2
    except RunFailed as exc:  # the main process: the traceback is in train.log already
        cause = exc.__cause__ or exc
        report_failure(rank, "failed", f"{type(cause).__name__}: {first_line(cause)}",
                       "".join(traceback.format_exception(cause)))
        return 1
    except Exception as exc:
        report_failure(rank, "failed", f"{type(exc).__name__}: {first_line(exc)}", traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main())
