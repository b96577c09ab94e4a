"""Run folders: what a run leaves on disk, and the lock that keeps two runs out of one folder.

    run.toml        the resolved run file (every default filled in)
    events.jsonl    the event log (tui_lora.events)
    train.log       everything the training process logged
    checkpoint-N/   Trainer checkpoints (adapter, optimizer, scheduler, RNG state)
    adapter/        the final adapter with its tokenizer and chat template
    tensorboard/    TensorBoard logs
    .lock           present while a run is writing here
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tui_lora.errors import UserError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().absolute()

    run_file = property(lambda self: self.path / "run.toml")
    events = property(lambda self: self.path / "events.jsonl")
    log = property(lambda self: self.path / "train.log")
    adapter = property(lambda self: self.path / "adapter")
    tensorboard = property(lambda self: self.path / "tensorboard")
    lock_file = property(lambda self: self.path / ".lock")

    def holds_run(self) -> bool:
        return self.run_file.exists() or self.events.exists()

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

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    # ------------------------------------------------------------ lock

    def acquire(self) -> None:
        """Claim the folder for this process; a lock left by a process that no longer exists is taken over."""
        self.path.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._lock_owner()
                if owner is not None and _alive(owner):
                    raise UserError(f"{self.path} is in use by a running training process (pid {owner}); "
                                    "wait for it, or choose another training.output_dir") from None
                self.lock_file.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return
        raise UserError(f"{self.path}: could not take the run lock; remove {self.lock_file} if no run is active")

    def release(self) -> None:
        if self._lock_owner() == os.getpid():
            self.lock_file.unlink(missing_ok=True)

    def _lock_owner(self) -> int | None:
        try:
            return int(self.lock_file.read_text().strip())
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        model=replace(config.model, name_or_path=absolute(config.model.name_or_path)),
        tokenizer=replace(config.tokenizer, name_or_path=absolute(config.tokenizer.name_or_path)),
        data=replace(config.data, path=absolute(config.data.path)),
        training=replace(t, output_dir=str(Path(t.output_dir).expanduser().absolute()),
                         logging_dir=str(Path(t.logging_dir).expanduser().absolute()) if t.logging_dir else ""),
    )


def open_run_folder(config, resume: str | None) -> tuple[RunFolder, Path | None]:
    """The run folder for config, checked and locked, plus the checkpoint to resume from (or None).

    resume is None (a new run), "latest", or a checkpoint path. A folder that already holds
    a run is only reused when resuming: nothing a user trained is overwritten.
    """
    folder = RunFolder(config.training.output_dir)
    checkpoint: Path | None = None
    if resume is None:
        if folder.holds_run():
            raise UserError(f"{folder.path} already holds a run; continue it with --resume, or start a new one "
                            f"with --set training.output_dir=<new folder>")
    elif resume == "latest":
        checkpoint = folder.latest_checkpoint()
        if checkpoint is None:
            raise UserError(f"--resume: {folder.path} has no complete checkpoint to resume from")
    else:
        checkpoint = Path(resume).expanduser().absolute()
        if not (checkpoint / "trainer_state.json").exists():
            raise UserError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    folder.acquire()
    return folder, checkpoint
