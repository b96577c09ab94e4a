"""Run folders: what a run leaves on disk, and the lock that keeps two runs out of one folder.

    run.toml        the resolved run file (every default filled in)
    events.jsonl    the event log (tui_lora.runs.events)
    train.log       everything the training process logged
    console.log     what a detached run (tui-lora run --detach) printed: its stdout and stderr
    checkpoint-N/   Trainer checkpoints (adapter, optimizer, scheduler, RNG state)
    adapter/        the final adapter with its tokenizer and chat template
    initial-adapter/  the adapter before step 1, with init_lora_weights pissa or olora (for the conversion)
    tensorboard/    TensorBoard logs
    .lock           present while a run is writing here
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from tui_lora import places
from tui_lora.errors import UserError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder (checkpoint-N)."""
    return int(CHECKPOINT.match(path.name).group(1))


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().absolute()

    run_file = property(lambda self: self.path / "run.toml")
    events = property(lambda self: self.path / "events.jsonl")
    log = property(lambda self: self.path / "train.log")
    adapter = property(lambda self: self.path / "adapter")
    # the adapter before step 1, when PiSSA or OLoRA changed the base: what converts the final one (engine.model)
    initial_adapter = property(lambda self: self.path / "initial-adapter")
    tensorboard = property(lambda self: self.path / "tensorboard")
    lock_file = property(lambda self: self.path / ".lock")
    console_log = property(lambda self: self.path / "console.log")

    def holds_training(self) -> bool:
        """True once a run here has saved anything trained (a checkpoint or an adapter).

        A folder where a run failed or was stopped before its first checkpoint holds nothing
        worth keeping but its logs, so a new run may start there (its events are appended).
        """
        return bool(self.checkpoints()) or self.adapter.exists()

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a checkpoint without trainer_state.json was cut off)."""
        if not self.path.is_dir():
            return []
        found = []
        for child in self.path.iterdir():
            match = CHECKPOINT.match(child.name)
            if match and child.is_dir() and (child / "trainer_state.json").exists():
                found.append((int(match.group(1)), child))
        return [path for _, path in sorted(found)]

    def checkpoint_steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return [checkpoint_step(path) for path in self.checkpoints()]

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    # ------------------------------------------------------------ lock

    def acquire(self) -> None:
        """Claim the folder for this process; a lock left by a process that no longer exists is taken over."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # The lock appears with the pid already in it (written aside, then hard-linked into
            # place), so no other process can ever read an empty lock and take it for stale.
            fd, staged = tempfile.mkstemp(prefix=".lock.", dir=self.path)
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
        except OSError as exc:
            raise UserError(f"training.output_dir: cannot write to {self.path}: {exc.strerror or exc}") from None
        try:
            for _ in range(2):
                try:
                    os.link(staged, self.lock_file)
                    return
                except FileExistsError:
                    owner = self.lock_holder()
                    if owner is not None and process_alive(owner):
                        raise UserError(f"{self.path} is in use by a running training process (pid {owner}); "
                                        "wait for it, or choose another training.output_dir") from None
                    self.lock_file.unlink(missing_ok=True)
            raise UserError(f"{self.path}: could not take the run lock; remove {self.lock_file} if no run is active")
        finally:
            os.unlink(staged)

    def release(self) -> None:
        if self.lock_holder() == os.getpid():
            self.lock_file.unlink(missing_ok=True)

    def owner(self) -> int | None:
        """The pid of the live process holding this folder's lock, or None when no run is active here."""
        owner = self.lock_holder()
        return owner if owner is not None and process_alive(owner) else None

    def lock_holder(self) -> int | None:
        """The pid written in the lock, alive or not (owner() is the live one)."""
        try:
            return int(self.lock_file.read_text().strip())
        except (OSError, ValueError):
            return None


def process_alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """True for a process that has exited but whose parent has not collected it yet (Linux; False elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] == b"Z"  # the state follows the command name in parentheses


# ---------------------------------------------------------------- starting a run


def resolve_paths(config):
    """The config with local paths made absolute, so run.toml works from any folder (resume, attach)."""
    from dataclasses import replace

    from tui_lora.config.rules import looks_local

    def absolute(ref: str) -> str:
        return str(Path(ref).expanduser().absolute()) if ref and looks_local(ref) else ref

    t = config.training
    return replace(
        config,
        launch=replace(config.launch, config_file=absolute(config.launch.config_file)),
        model=replace(config.model, name_or_path=absolute(config.model.name_or_path)),
        tokenizer=replace(config.tokenizer, name_or_path=absolute(config.tokenizer.name_or_path)),
        data=config.data.with_each("path", [absolute(path) for _, path in config.data.keyed_paths()]),
        training=replace(t, output_dir=str(Path(t.output_dir).expanduser().absolute()),
                         logging_dir=str(Path(t.logging_dir).expanduser().absolute()) if t.logging_dir else ""),
    )


# What may differ between a run and its resumption: how long it goes on and how it reports.
# Anything else (LoRA shape, data, optimizer, batch size …) would not match the checkpoint.
RESUMABLE_CHANGES = {
    "training": {"num_train_epochs", "max_steps", "eval_steps", "save_steps", "save_total_limit", "logging_steps",
                 "report_to", "per_device_eval_batch_size", "dataloader_num_workers", "eval_on_start"},
    "early_stopping": {"enabled", "patience", "threshold"},
    "hub": {"source", "endpoint", "offline", "timeout", "cache_dir"},
    # where the machines meet may change between jobs; how many processes share the batch may not
    "launch": {"machine_rank", "main_process_ip", "main_process_port"},
    "description": None,
}


def _changed_keys(before, after) -> list[str]:
    from tui_lora.config import config_to_dict

    old, new = config_to_dict(before), config_to_dict(after)
    changed = []
    for section in sorted(set(old) | set(new)):
        if isinstance(new.get(section), dict):
            for key, value in new[section].items():
                if old.get(section, {}).get(key) != value and key not in (RESUMABLE_CHANGES.get(section) or ()):
                    changed.append(f"{section}.{key}")
        elif section not in RESUMABLE_CHANGES and old.get(section) != new.get(section):
            changed.append(section)
    return changed


def _check_resume(folder: RunFolder, config, checkpoint: Path) -> None:
    """A resume must continue the same run, and that run must have steps left to train."""
    from tui_lora.config import load_run_file

    # The run that made the checkpoint (it may live in another folder when a checkpoint path is given)
    made_by = next((f for f in (checkpoint.parent / "run.toml", folder.run_file) if f.exists()), None)
    if made_by is not None:
        changed = _changed_keys(load_run_file(made_by), config)
        if changed:
            raise UserError(f"--resume: changed since the run being resumed ({made_by}): {', '.join(changed)}; "
                            "a checkpoint only continues the run that made it. Only the training length, "
                            "evaluation, saving, logging and hub settings may change")
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    step, epoch = state.get("global_step", 0), state.get("epoch") or 0.0
    t = config.training
    finished = step >= t.max_steps if t.max_steps > 0 else epoch >= t.num_train_epochs - 1e-9
    if finished:
        raise UserError(f"--resume: {checkpoint.name} is already at the end of the run (step {step}, epoch "
                        f"{epoch:g}); raise training.max_steps or training.num_train_epochs to train further")


def open_run_folder(config, resume: str | None) -> tuple[RunFolder, Path | None]:
    """The run folder for config, checked and locked, plus the checkpoint to resume from (or None)."""
    folder, checkpoint = check_run_folder(config, resume)
    folder.acquire()
    # Listed from the moment the folder is ours; the list shows it once the run has written its run.toml.
    places.record_run(folder.path)
    return folder, checkpoint


def check_run_folder(config, resume: str | None) -> tuple[RunFolder, Path | None]:
    """The run folder for config and the checkpoint to resume from (or None), checked but not taken.

    resume is None (a new run), "latest", or a checkpoint path. A folder that holds trained
    work is only reused when resuming: nothing a user trained is overwritten.
    """
    folder = RunFolder(config.training.output_dir)
    checkpoint: Path | None = None
    if resume is None:
        if folder.holds_training():
            # the free name is worked out here, so the advice is a command that works as written
            free = fresh_run_folder("", taken=config.training.output_dir)
            go_on = ("it has finished: train it further with --resume and a higher training.max_steps or "
                     "num_train_epochs" if folder.adapter.is_dir() else "continue it with --resume")
            raise UserError(f"{folder.path} already holds a run ({go_on}); start a new one with "
                            f"--set training.output_dir={free}")
    elif resume == "latest":
        checkpoint = folder.latest_checkpoint()
        if checkpoint is None:
            raise UserError(f"--resume: {folder.path} has no complete checkpoint to resume from")
    else:
        checkpoint = Path(resume).expanduser().absolute()
        if not (checkpoint / "trainer_state.json").exists():
            raise UserError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    if checkpoint is not None:
        _check_resume(folder, config, checkpoint)
    return folder, checkpoint


# ---------------------------------------------------------------- naming a new run folder


def fresh_run_folder(model_ref: str, taken: str | None = None, today=None, parent: str = "runs",
                     busy: frozenset[str] = frozenset()) -> str:
    """A run folder that does not exist yet, so a new run never lands in another run's folder.

    With `taken` (a folder the user chose that already holds a run) it is that name with the first
    free counter (runs/demo -> runs/demo-2); otherwise the model's name, the date and a counter
    (runs/tiny-chat-2026-12-02-1), readable in `tui-lora runs` and sorted by date in a listing.
    Relative names stay relative, like the schema's default: they are read from the working folder.
    busy holds absolute folders that do not exist yet but are promised (runs waiting in the queue).
    """
    import datetime

    if taken:
        base = str(taken).rstrip("/") or "run"
        match = re.fullmatch(r"(.*)-(\d+)", base)
        stem, first = (match.group(1), int(match.group(2)) + 1) if match else (base, 2)
    else:
        ref = str(model_ref).removeprefix("builtin:").rstrip("/")
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", ref.rsplit("/", 1)[-1]).strip("-.") or "run"
        day = (today or datetime.date.today()).isoformat()
        stem, first = f"{parent}/{name}-{day}", 1
    counter = first
    while Path(f"{stem}-{counter}").expanduser().exists() or \
            str(Path(f"{stem}-{counter}").expanduser().absolute()) in busy:
        counter += 1
    return f"{stem}-{counter}"


def new_run_folder(run_file: Path, overrides: list[str], busy: frozenset[str] = frozenset()) -> str | None:
    """A fresh folder for a run whose run file and --set name no training.output_dir, else None.

    The schema's default folder (runs/run) would make every second run without an output_dir collide with
    the first; such a run gets its own folder instead (model, date, counter). The caller works it out once
    and hands it on as `--set training.output_dir=…`, so that the launcher's processes and a detached child
    all train into the same one (each resolves the run file again). A resume is left alone: it continues a
    folder that exists.
    """
    from tui_lora.config.load import parse_override, read_toml

    named = [parse_override(text) for text in overrides]
    if any((section, key) == ("training", "output_dir") for section, key, _ in named):
        return None
    raw = read_toml(Path(run_file))
    training = raw.get("training")
    if isinstance(training, dict) and "output_dir" in training:
        return None
    model = raw.get("model", {}).get("name_or_path", "") if isinstance(raw.get("model"), dict) else ""
    model = next((value for section, key, value in named if (section, key) == ("model", "name_or_path")), model)
    return fresh_run_folder(str(model), busy=busy)
