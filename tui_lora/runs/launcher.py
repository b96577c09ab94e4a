"""Runs of more than one process: the `accelerate launch` command, and watching what it starts.

A run file whose [launch] asks for several processes (or names an accelerate config file, which
needs accelerate to apply it) is not trained in the `tui-lora run` process. That process becomes
the launcher: it checks and locks the run folder as for any run, starts `accelerate launch` with
the engine's worker (tui_lora/engine/worker.py) as its program, shows the progress the main
process writes to events.jsonl, passes Ctrl+C and SIGTERM on, and when a process fails ends the
run with that process's error. accelerate (torchrun underneath) tears the whole group down when
one process fails, and gives every process a signal it receives.

Standard library only: the wizard's review screen shows the command without loading the ML stack.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tui_lora.errors import RunFailed, UserError
from tui_lora.runs.events import STOPPED_STATES, EventLog, EventTail, stopped_state
from tui_lora.runs.folder import RunFolder, open_run_folder

# Set for the workers (engine/worker.py reads them from here): this process's pid (it holds the run folder's
# lock), and the folder where a failing worker leaves its error.
LAUNCHER_ENV = "TUI_LORA_LAUNCHER_PID"
ERRORS_ENV = "TUI_LORA_WORKER_ERRORS"
# By module name: accelerate starts it in processes of its own, and the launcher loads no engine module.
WORKER = "tui_lora.engine.worker"
EXIT_INTERRUPTED = 130


def needs_launcher(config) -> bool:
    """Several processes, or an accelerate config file (DeepSpeed ZeRO-Offload on one GPU needs one too)."""
    return config.launch.num_processes > 1 or bool(config.launch.config_file)


def accelerate_program() -> list[str]:
    """`accelerate launch` from this Python's environment, so the workers run the same installation."""
    script = Path(sys.executable).parent / "accelerate"
    return [str(script), "launch"] if script.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]


def launch_command(config, run_file: str | Path, overrides: list[str] = (), resume: str | None = None) -> list[str]:
    """The accelerate launch command line for the run; the [launch] keys win over the config file's."""
    from tui_lora.config.schema import mixed_precision

    launch = config.launch
    command = accelerate_program()
    if launch.config_file:
        command += ["--config_file", launch.config_file]  # its distributed_type (FSDP, DeepSpeed …) applies
    else:
        # plain data parallel (DDP): one process per GPU, or processes meeting over gloo on a machine without one
        command += ["--multi_gpu", "--dynamo_backend", "no"]
    command += ["--num_processes", str(launch.num_processes), "--num_machines", str(launch.num_machines),
                "--machine_rank", str(launch.machine_rank), "--main_process_port", str(launch.main_process_port)]
    if launch.main_process_ip:
        command += ["--main_process_ip", launch.main_process_ip]
    command += ["--mixed_precision", mixed_precision(config)]
    command += ["-m", WORKER, str(Path(run_file).expanduser().absolute())]
    for override in overrides:
        command += ["--set", override]
    if resume:
        command += ["--resume", str(resume)]
    return command


def printable_command(config, run_file: str | Path, overrides: list[str] = (), resume: str | None = None) -> str:
    """What `tui-lora run --print-command` prints: the launch command, or for one process `tui-lora run` itself."""
    if needs_launcher(config):
        return shlex.join(launch_command(config, run_file, overrides, resume))
    command = ["tui-lora", "run", str(Path(run_file).expanduser().absolute())]
    for override in overrides:
        command += ["--set", override]
    if resume:
        command += ["--resume", resume] if resume != "latest" else ["--resume"]
    return shlex.join(command)


# ---------------------------------------------------------------- running it


@dataclass(frozen=True)
class WorkerFailure:
    rank: int
    kind: str  # "usage" (bad input: exit status 2) or "failed"
    message: str
    traceback: str
    t: float

    @property
    def who(self) -> str:
        return f"process {self.rank}: " if self.rank else ""


def read_failures(folder: Path) -> list[WorkerFailure]:
    """The failures workers left in folder, the first one first (the others mostly follow from it)."""
    found = []
    for path in folder.glob("rank-*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            found.append(WorkerFailure(int(record["rank"]), str(record["kind"]), str(record["message"]),
                                       str(record.get("traceback", "")), float(record["t"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda failure: failure.t)


def end_with_parent() -> None:
    """Ask Linux for SIGTERM when the process that started this one dies, even by SIGKILL (elsewhere a no-op).

    Called in the launch command's process before it runs accelerate, and by each worker (engine/worker.py)
    under accelerate: a process left behind would train on with nobody to report it, where the signal
    makes it save a checkpoint and stop.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: only the signals the launcher passes on stop the workers


class _Launched:
    """The launch command in a session of its own, with this process's SIGINT and SIGTERM passed on to it.

    Its own session: a Ctrl+C at the terminal reaches this process only, and accelerate gets it once,
    from here, and passes it to every worker once (a second Ctrl+C passes a second, which stops at once).
    """

    def __init__(self, command: list[str], env: dict, output):
        self.signals: list[str] = []
        self.child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True, preexec_fn=end_with_parent)
        self._previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _forward(self, signum, frame) -> None:
        self.signals.append(signal.Signals(signum).name)
        try:
            os.kill(self.child.pid, signum)
        except ProcessLookupError:
            pass

    def poll(self) -> int | None:
        return self.child.poll()

    def close(self) -> int:
        try:
            return self.child.wait()
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    @property
    def stopped_by(self) -> str | None:
        return self.signals[0] if self.signals else None


def _worker_env(errors: Path) -> dict:
    return {**os.environ, LAUNCHER_ENV: str(os.getpid()), ERRORS_ENV: str(errors), "PYTHONUNBUFFERED": "1"}


def run_launched(config, run_file: str | Path, overrides: list[str], resume: str | None, display,
                 out=sys.stderr) -> int:
    """Train through accelerate launch; 0 finished, 130 stopped by a signal; raises UserError or RunFailed."""
    if config.launch.machine_rank > 0:
        return _run_other_machine(config, run_file, overrides, resume, out)
    folder, checkpoint = open_run_folder(config, resume)
    errors = Path(tempfile.mkdtemp(prefix="tui-lora-workers-"))
    try:
        command = launch_command(config, run_file, overrides, str(checkpoint) if checkpoint else None)
        tail = EventTail(folder.events)
        tail.offset = folder.events.stat().st_size if folder.events.exists() else 0  # this run's events only
        launch_log = folder.path / "launch.log"
        display.line(f"[launching] {config.launch.num_processes} processes on {config.launch.num_machines} "
                     f"machine(s): {shlex.join(command)}")
        with open(launch_log, "ab") as output:
            output.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n".encode())
            output.flush()
            launched = _Launched(command, _worker_env(errors), output)
            statuses = []
            try:
                while launched.poll() is None:
                    statuses += _show(tail.read(), display)
                    time.sleep(0.2)
            finally:
                returncode = launched.close()
        statuses += _show(tail.read(), display)
        display.close()
        last = statuses[-1] if statuses else {}
        if launched.stopped_by:
            return _stopped(folder, last, launched.stopped_by, out)
        if returncode == 0 and last.get("state") == "finished":
            return 0
        _fail(folder, last, read_failures(errors), returncode, launch_log)
    finally:
        for path in errors.iterdir():
            path.unlink()
        errors.rmdir()
        folder.release()
    return 1  # not reached: _fail raises


def _show(events: list[dict], display) -> list[dict]:
    """Pass events to the display; the status events among them."""
    for event in events:
        display(event)
    return [event for event in events if event.get("type") == "status"]


def _stopped(folder: RunFolder, last: dict, signal_name: str, out) -> int:
    state = last.get("state")
    if state in STOPPED_STATES:
        message = last.get("message", "")
    else:  # the main process ended before it could say so
        state = stopped_state(signal_name)
        latest = folder.latest_checkpoint()
        message = (f"stopped by {signal_name}; " + (f"--resume continues from {latest.name}" if latest
                                                    else "no checkpoint was saved"))
        _record(folder, "status", state=state, message=message)
    print(f"{state}: {message}; run folder {folder.path}", file=out)
    return EXIT_INTERRUPTED


def _record(folder: RunFolder, kind: str, **fields) -> None:
    events = EventLog(folder.events)
    try:
        events.emit(kind, **fields)
    finally:
        events.close()


def _fail(folder: RunFolder, last: dict, failures: list[WorkerFailure], returncode: int, launch_log: Path):
    """End the run with the first failure's error (the others usually follow from it)."""
    if not failures:
        reason = (f"the launch command ended with exit status {returncode} and no process reported an error "
                  f"(killed, for example by the out-of-memory killer?); its output is in {launch_log}")
        _record(folder, "status", state="failed", message=reason)
        raise RunFailed(reason)
    first = failures[0]
    if first.rank:
        # the main process's traceback is in train.log already; a worker's goes there too, marked as its own
        with open(folder.log, "a", encoding="utf-8") as log:
            log.write("".join(f"[process {first.rank}] {line}\n"
                              for line in (first.traceback or first.message).splitlines()))
    if first.rank or last.get("state") != "failed":
        _record(folder, "status", state="failed", message=first.who + first.message, process=first.rank)
    if first.kind == "usage":
        raise UserError(first.who + first.message)
    raise RunFailed(f"{first.who}{first.message} (full traceback in {folder.log})")


def _run_other_machine(config, run_file, overrides, resume, out) -> int:
    """Machine 1 and up: start this machine's processes and pass their output through. The run folder is
    machine 0's: its main process writes it and shows the progress there."""
    launch = config.launch
    per_machine = launch.num_processes // launch.num_machines
    command = launch_command(config, run_file, overrides, resume)
    print(f"machine {launch.machine_rank} of {launch.num_machines}: starting {per_machine} processes; machine 0 "
          f"shows the progress and writes the run folder\n{shlex.join(command)}", file=out, flush=True)
    errors = Path(tempfile.mkdtemp(prefix="tui-lora-workers-"))
    try:
        launched = _Launched(command, _worker_env(errors), None)
        returncode = launched.close()
        failures = read_failures(errors)
    finally:
        for path in errors.iterdir():
            path.unlink()
        errors.rmdir()
    if launched.stopped_by:
        print(f"stopped by {launched.stopped_by}; machine 0 saves the checkpoint", file=out)
        return EXIT_INTERRUPTED
    if returncode == 0:
        print(f"machine {launch.machine_rank}: its processes finished", file=out)
        return 0
    if failures and failures[0].kind == "usage":
        raise UserError(failures[0].who + failures[0].message)
    if failures:
        raise RunFailed(failures[0].who + failures[0].message)
    raise RunFailed(f"the launch command ended with exit status {returncode}; its output is above")
