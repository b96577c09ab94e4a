"""The run queue: runs that start one after another on a shared machine, each as a detached run.

There is no daemon. A run is started by whoever looks at the queue next with the lock held:
the queued run that ends (its `tui-lora run` process advances the queue on its way out), and
every other `tui-lora` command, which checks the queue as it starts. So a run killed outright
(SIGKILL, the OOM killer) is noticed by the next command, and a queue whose creator is gone goes
on. One flock on the queue's lock file makes every change one at a time: two commands racing to
start the next run start it once.

The queue folder ($XDG_STATE_HOME/tui-lora/queue) holds
    queue.json   the entries, in order, and the queue's settings (written atomically)
    lock         the flock
    N.toml       entry N's run file as it was checked when queued, paths absolute and output_dir
                 chosen: editing the preset afterwards does not change a run already queued
    N.env        the environment it was queued from (mode 0600, like at(1) keeps it; removed
                 once the run has started): mirrors, tokens and the Python it runs with

Which runs may run together: at most `limit` at once (1 unless set), and never two that ask
for the same GPU. A run asks for GPUs with --gpus or CUDA_VISIBLE_DEVICES when it is queued;
one that asks for none in particular wants them all and runs alone. A waiting run never starts
on a GPU that a run ahead of it is waiting for, so nobody is overtaken for long.

A machine restart leaves the queue as it was, paused: the runs it killed are shown as died and
the rest start again with `tui-lora queue resume`.

Standard library only: every `tui-lora` command imports this.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tui_lora.errors import UserError
from tui_lora.places import APP, base_dir, display_path, replace_file
from tui_lora.runs.events import FINAL_STATES
from tui_lora.runs.folder import RunFolder, process_alive

# Set for a run the queue started, so that its process can say when it ends: the queue folder and its entry.
QUEUE_ENV = "TUI_LORA_QUEUE"
ENTRY_ENV = "TUI_LORA_QUEUE_ENTRY"
WAITING, RUNNING, CANCELLED = "waiting", "running", "cancelled"
ENDED_KEPT = 20  # ended entries listed, newest last; older ones are dropped
LOCK_WAIT = 60.0


def queue_dir() -> Path:
    return base_dir("XDG_STATE_HOME", ".local/state") / APP / "queue"


@dataclass
class Entry:
    id: int
    state: str  # waiting, running, cancelled, or how its run ended: finished, failed, aborted, interrupted, died
    run_file: str  # what was queued, for the listing
    folder: str  # the run folder (absolute)
    gpus: list[str] | None  # its CUDA_VISIBLE_DEVICES; None: it wants every GPU, so it runs alone
    user: str
    queued_at: float
    cwd: str
    python: str
    resume: str | None = None  # "latest" or a checkpoint, as for tui-lora run --resume
    pid: int | None = None
    pid_started: int | None = None  # the process's start time in the kernel's ticks: a reused pid is not it
    started_at: float | None = None
    ended_at: float | None = None
    message: str = ""
    stopping: bool = False  # cancelled while running: asked to stop

    @property
    def active(self) -> bool:
        return self.state in (WAITING, RUNNING)

    def gpus_text(self) -> str:
        return "all" if self.gpus is None else ",".join(self.gpus) or "none"


@dataclass
class Queue:
    entries: list[Entry] = field(default_factory=list)
    paused: bool = False
    paused_why: str = ""
    limit: int = 1  # runs at once
    next_id: int = 1
    boot: str = ""  # the boot the running entries belong to

    def waiting(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.state == WAITING]

    def running(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.state == RUNNING]

    def find(self, number: int) -> Entry:
        for entry in self.entries:
            if entry.id == number:
                return entry
        known = ", ".join(str(entry.id) for entry in self.entries if entry.active) or "none"
        raise UserError(f"queue: no entry {number}; waiting or running: {known} (tui-lora queue lists them)")


# ---------------------------------------------------------------- the file and its lock


@contextmanager
def locked(where: Path, wait: bool = True):
    """Hold the queue's lock; yields False at once instead when wait is False and someone else holds it.

    flock, so the lock goes with its holder: a process killed while holding it leaves nothing to clean up.
    """
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd = os.open(where / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _unwritable(where, exc) from None
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise UserError(f"queue: {where / 'lock'} has been held for {LOCK_WAIT:.0f} s; "
                                    "try again, or look for a hung tui-lora process") from None
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


def _unwritable(where: Path, exc: OSError) -> UserError:
    return UserError(f"queue: cannot write in {where}: {exc.strerror or exc}; the queue lives under "
                     "$XDG_STATE_HOME (default ~/.local/state): point it at a folder you can write")


def _write(where: Path, name: str, text: str) -> None:
    try:
        replace_file(where / name, text)
    except OSError as exc:
        raise _unwritable(where, exc) from None


def read_queue(where: Path) -> Queue:
    """The queue on disk; none yet is an empty one. A damaged file is refused, not silently emptied."""
    try:
        raw = json.loads((where / "queue.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Queue()
    except (OSError, ValueError) as exc:
        raise UserError(f"queue: cannot read {where / 'queue.json'}: {exc}; move it aside to start a new queue")
    names = {f.name for f in fields(Entry)}
    try:
        entries = [Entry(**{key: value for key, value in item.items() if key in names}) for item in raw["entries"]]
        return Queue(entries, bool(raw.get("paused")), str(raw.get("paused_why", "")), int(raw.get("limit", 1)),
                     int(raw.get("next_id", 1)), str(raw.get("boot", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"queue: {where / 'queue.json'} is not a queue file ({exc}); move it aside to start a "
                        "new queue")


def promised_folders(where: Path | None = None) -> dict[str, Entry]:
    """The run folders of the waiting and running entries: a new run must not take one (runs.folder asks).
    Read without the lock (the file is replaced whole); a queue that cannot be read promises nothing."""
    try:
        queue = read_queue(where or queue_dir())
    except UserError:
        return {}
    return {entry.folder: entry for entry in queue.entries if entry.active}


def write_queue(where: Path, queue: Queue) -> None:
    ended = [entry for entry in queue.entries if not entry.active]
    for entry in ended[:-ENDED_KEPT]:
        queue.entries.remove(entry)
    data = {**{key: value for key, value in asdict(queue).items() if key != "entries"},
            "entries": [asdict(entry) for entry in queue.entries]}
    _write(where, "queue.json", json.dumps(data, indent=1) + "\n")


# ---------------------------------------------------------------- processes


def boot_id() -> str:
    """This boot of the machine (Linux); "" where it cannot be told, and then no restart is noticed."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """When pid started, in clock ticks since boot (Linux /proc); None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(entry: Entry) -> bool:
    if entry.pid is None or not process_alive(entry.pid):
        return False
    return entry.pid_started is None or process_start(entry.pid) == entry.pid_started


# ---------------------------------------------------------------- keeping it up to date


def _end(entry: Entry, where: Path, exit_status: int | None = None, restarted: bool = False) -> None:
    """Entry's run is over: its state is what its run folder says, else what its process's exit says."""
    from tui_lora.runs.detach import last_line
    from tui_lora.runs.status import read_status

    folder = RunFolder(entry.folder)
    status = read_status(folder.path)
    # the folder's last run is this one (a folder may hold an earlier failed run's log)
    ours = (status.started or 0) >= (entry.started_at or 0) - 1
    if ours and status.state in FINAL_STATES:
        entry.state, entry.message = status.state, status.message
    elif entry.stopping:
        entry.state, entry.message = CANCELLED, "stopped before training began"
    elif exit_status == 0:
        entry.state = "finished"
    else:
        entry.state = "failed" if exit_status is not None and not restarted else "died"
        entry.message = (status.message if ours and status.state == "died" and not exit_status else
                         last_line(folder.console_log).removeprefix("error: ").removeprefix("run failed: "))
        if restarted:
            entry.message = "the machine restarted while it ran" + (f"; {entry.message}" if entry.message else "")
    entry.ended_at = time.time()
    _forget_files(entry, where)


def _forget_files(entry: Entry, where: Path) -> None:
    for suffix in (".toml", ".env"):
        (where / f"{entry.id}{suffix}").unlink(missing_ok=True)


def refresh(queue: Queue, where: Path) -> None:
    """Entries whose process is gone are ended; after a restart the queue pauses (see the module's note)."""
    boot = boot_id()
    if queue.boot and boot and boot != queue.boot:
        died = queue.running()
        for entry in died:
            _end(entry, where, restarted=True)
        if queue.waiting():
            queue.paused = True
            queue.paused_why = ("the machine restarted" + (f" and {len(died)} queued run(s) died" if died else "")
                                + "; tui-lora queue resume starts the waiting runs")
    queue.boot = boot
    for entry in queue.running():
        if not _alive(entry):
            _end(entry, where)


def _overlap(a: list[str] | None, b: list[str] | None) -> bool:
    """Whether two runs' GPUs meet: none meets nothing, all (None) meets every other."""
    if a == [] or b == []:
        return False
    return a is None or b is None or bool(set(a) & set(b))


def due(queue: Queue) -> list[Entry]:
    """The waiting entries to start now, in order (see the module's note for the rule)."""
    if queue.paused:
        return []
    busy = [entry.gpus for entry in queue.running()]
    room = queue.limit - len(busy)
    chosen, passed_over = [], []
    for entry in queue.waiting():
        if room <= 0:
            break
        if any(_overlap(entry.gpus, gpus) for gpus in busy + passed_over):
            passed_over.append(entry.gpus)
            continue
        chosen.append(entry)
        busy.append(entry.gpus)
        room -= 1
    return chosen


def _start(entry: Entry, where: Path) -> None:
    from tui_lora.runs.detach import run_command, spawn

    try:
        env = json.loads((where / f"{entry.id}.env").read_text(encoding="utf-8"))
        if not (isinstance(env, dict) and (where / f"{entry.id}.toml").is_file()):
            raise ValueError("damaged")
    except (OSError, ValueError):
        entry.state, entry.message, entry.ended_at = "failed", f"its saved run file or environment in {where} " \
                                                               "is gone; queue it again", time.time()
        _forget_files(entry, where)
        return
    if entry.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(entry.gpus)
    env.update({QUEUE_ENV: str(where), ENTRY_ENV: str(entry.id)})
    command = run_command(where / f"{entry.id}.toml", resume=entry.resume, python=entry.python)
    try:
        child = spawn(command, RunFolder(entry.folder), env, entry.cwd,
                      note=f"queue entry {entry.id}, GPUs {entry.gpus_text()}")
    except OSError as exc:
        entry.state, entry.ended_at = "failed", time.time()
        entry.message = f"could not start: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
        _forget_files(entry, where)
        return
    # Collect its exit status when it ends, so a long-lived caller (the wizard) keeps no zombie.
    threading.Thread(target=child.wait, name=f"reap-{child.pid}", daemon=True).start()
    entry.state, entry.pid, entry.pid_started = RUNNING, child.pid, process_start(child.pid)
    entry.started_at, entry.message = time.time(), ""
    (where / f"{entry.id}.env").unlink(missing_ok=True)  # its process has it now


@contextmanager
def editing(where: Path, wait: bool = True):
    """The queue under its lock and up to date, for the block to change; then what is due starts and the queue is
    written. A block that raises writes nothing. With wait False and the lock held elsewhere it yields None."""
    with locked(where, wait) as got:
        if not got:
            yield None
            return
        queue = read_queue(where)
        refresh(queue, where)
        yield queue
        for entry in due(queue):
            _start(entry, where)
        write_queue(where, queue)


def check(where: Path | None = None) -> None:
    """What every tui-lora command does on its way in: start what is due, unless someone else is at it.

    Never fails the command it rides on: a queue that cannot be read is for `tui-lora queue` to report.
    """
    where = where or queue_dir()
    if not (where / "queue.json").is_file():
        return
    try:
        with editing(where, wait=False):
            pass  # brought up to date, what is due started: all there is to do
    except (OSError, UserError):
        pass


def run_ended(exit_status: int) -> None:
    """Called by a run the queue started as its process ends: record how it went and start what is next."""
    where, number = os.environ.get(QUEUE_ENV), os.environ.get(ENTRY_ENV, "")
    if not where or not number.isdigit():
        return
    where = Path(where)
    try:
        with editing(where) as queue:
            entry = next((entry for entry in queue.entries if entry.id == int(number)), None)
            if entry is not None and entry.state == RUNNING:  # still alive (this process), so refresh left it
                _end(entry, where, exit_status)
    except (OSError, UserError) as exc:
        print(f"queue: could not start the next run: {exc}; any tui-lora command tries again", flush=True)


# ---------------------------------------------------------------- what the commands do


def parse_gpus(text: str | None) -> list[str] | None:
    """--gpus 0,1 (or a CUDA_VISIBLE_DEVICES value); None when nothing was asked."""
    if text is None:
        return None
    gpus = [part.strip() for part in text.split(",") if part.strip()]
    for gpu in gpus:
        if not (gpu.isdigit() or gpu.startswith(("GPU-", "MIG-"))):
            raise UserError(f"--gpus {text}: {gpu!r} is not a GPU; give indices (0,1) or UUIDs (GPU-…), "
                            "as CUDA_VISIBLE_DEVICES takes them")
    return list(dict.fromkeys(gpus))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def enqueue(preset: str | Path, overrides: list[str] = (), resume: str | None = None,
            gpus: str | None = None, where: Path | None = None) -> tuple[Entry, Queue]:
    """Check the run as `tui-lora run` would, add it at the end of the queue, and start what is due.

    Refused (UserError) as the run itself would be refused, and when its run folder is already
    promised to another waiting or running entry. Returns the entry (started already, or waiting) and the
    queue after the change.
    """
    from tui_lora.config import load_run_file
    from tui_lora.config.write import to_toml
    from tui_lora.presets import run_file_of
    from tui_lora.runs.folder import check_run_folder, new_run_folder, resolve_paths

    where = where or queue_dir()
    path = run_file_of(str(preset)).expanduser().absolute()
    asked = parse_gpus(gpus if gpus is not None else os.environ.get("CUDA_VISIBLE_DEVICES"))
    with editing(where) as queue:
        promised = {entry.folder: entry for entry in queue.entries if entry.active}
        overrides = list(overrides)
        if resume is None:
            fresh = new_run_folder(path, overrides, busy=frozenset(promised))
            if fresh:
                overrides.append(f"training.output_dir={fresh}")
        config = resolve_paths(load_run_file(path, overrides))
        folder = config.training.output_dir
        if folder in promised:
            other = promised[folder]
            raise UserError(f"training.output_dir: {display_path(folder)} is the run folder of queue entry "
                            f"{other.id} ({other.state}); give this run another with --set training.output_dir=…")
        check_run_folder(config, resume)
        entry = Entry(id=queue.next_id, state=WAITING, run_file=str(path), folder=folder, gpus=asked, user=_user(),
                      queued_at=time.time(), cwd=os.getcwd(), python=sys.executable, resume=resume)
        _write(where, f"{entry.id}.toml", to_toml(config))
        env = {key: value for key, value in os.environ.items() if key not in (QUEUE_ENV, ENTRY_ENV)}
        _write(where, f"{entry.id}.env", json.dumps(env))  # 0600: mkstemp's mode
        queue.next_id += 1
        queue.entries.append(entry)
    return entry, queue


def cancel(numbers: list[int], where: Path | None = None) -> list[str]:
    """Cancel waiting entries (they never start) and stop running ones (SIGTERM: a checkpoint first)."""
    from tui_lora.runs.detach import abort

    where = where or queue_dir()
    said = []
    with editing(where) as queue:
        entries = [queue.find(number) for number in numbers]
        for entry in entries:
            if entry.state == WAITING:
                entry.state, entry.ended_at = CANCELLED, time.time()
                _forget_files(entry, where)
                said.append(f"{entry.id}: cancelled; it will not start")
            elif entry.state == RUNNING:
                pid = abort(entry.folder) or _terminate(entry)
                entry.stopping = True
                said.append(f"{entry.id}: stopping (pid {pid}): it saves a checkpoint after the current step, "
                            "then the next run starts")
            else:
                raise UserError(f"queue: entry {entry.id} has already ended ({entry.state}); "
                                "tui-lora queue clear removes ended entries")
    return said


def _terminate(entry: Entry) -> int | None:
    """A run not yet holding its folder (still starting) is stopped through its own process."""
    import signal

    if entry.pid is not None and _alive(entry):
        try:
            os.kill(entry.pid, signal.SIGTERM)
            return entry.pid
        except ProcessLookupError:
            pass
    return None


def move(number: int, position: int, where: Path | None = None) -> str:
    where = where or queue_dir()
    with editing(where) as queue:
        entry = queue.find(number)
        waiting = queue.waiting()
        if entry.state != WAITING:
            raise UserError(f"queue: entry {number} is {entry.state}; only waiting entries move")
        if not 1 <= position <= len(waiting):
            raise UserError(f"queue move: position {position} is out of range; {len(waiting)} runs are waiting, "
                            f"so a position is 1 to {len(waiting)}")
        waiting.remove(entry)
        waiting.insert(position - 1, entry)
        order = iter(waiting)
        queue.entries = [next(order) if item.state == WAITING else item for item in queue.entries]
    return f"{number}: now position {position} of {len(waiting)} waiting"


def change(where: Path | None = None, paused: bool | None = None, limit: int | None = None,
           clear: bool = False) -> Queue:
    """pause, resume, limit N and clear: a setting of the queue, then start what is due."""
    where = where or queue_dir()
    with editing(where) as queue:
        if paused is not None:
            queue.paused, queue.paused_why = paused, ""
        if limit is not None:
            queue.limit = limit
        if clear:
            queue.entries = [entry for entry in queue.entries if entry.active]
    return queue


def current(where: Path | None = None) -> Queue:
    """The queue brought up to date (what `tui-lora queue` lists)."""
    where = where or queue_dir()
    if not (where / "queue.json").is_file():
        return Queue()
    with editing(where) as queue:
        pass
    return queue
