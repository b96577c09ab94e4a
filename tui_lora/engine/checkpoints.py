"""Checkpoints that are whole or absent: staged under a temporary name, renamed into place when complete.

The Trainer writes checkpoint-N file by file (adapter, optimizer, scheduler, RNG states, trainer state).
A run killed in the middle of that (kill -9, a lost machine, a full disk) would leave a folder named like
a checkpoint that is not one. Here the Trainer writes into RUN/.partial/checkpoint-N instead; once every
process has finished writing, the main process renames it to RUN/checkpoint-N (a rename inside one file
system is atomic) and only then deletes the checkpoints that save_total_limit lets go. So at every moment
the run folder holds only whole checkpoints, and the newest whole one survives anything that happens
while the next is written. A .partial folder left by a killed run is cleared by the next save.

This overrides two private Trainer methods (_get_output_dir, _save_checkpoint); tests/functional/
test_fault_injection.py kills runs in the middle of saving to hold it to its promise.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from transformers.trainer_utils import rotate_checkpoints

from tui_lora.file_modes import share_weights_like_other_files
from tui_lora.runs.folder import RunFolder

STAGING = ".partial"


class DiskFull(RuntimeError):
    """The disk filled up while a checkpoint was written; the previous whole checkpoint is untouched."""


class WholeCheckpoints:
    """Trainer mixin (trainer.RunTrainer): every checkpoint-N in the run folder is complete."""

    _staging: str | None = None

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is written the Trainer's idea of the run folder is the staging folder.
        return self._staging if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        staging_root = os.path.join(run_dir, STAGING)
        name = f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)  # what a killed run left half-written
        self._wait_for_everyone()
        self._staging = staging_root
        try:
            super()._save_checkpoint(model, trial)
        except Exception as exc:
            if not _disk_is_full(exc, run_dir):
                raise
            shutil.rmtree(staging_root, ignore_errors=True)  # give back the space the half checkpoint took
            raise DiskFull(_disk_full_message(run_dir, name)) from exc
        finally:
            self._staging = None
        self._wait_for_everyone()  # every process's share of the checkpoint is on disk
        if self.args.should_save:
            self._move_into_place(os.path.join(staging_root, name), os.path.join(run_dir, name))
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self._wait_for_everyone()

    def _move_into_place(self, staged: str, final: str) -> None:
        # The Trainer recorded the best checkpoint under the staging name: point it at the final one,
        # in the state it keeps and in the copy inside the checkpoint (read again on --resume).
        best = self.state.best_model_checkpoint
        if best and Path(best).parent == Path(staged).parent:
            self.state.best_model_checkpoint = os.path.join(os.path.dirname(final), Path(best).name)
            self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        share_weights_like_other_files(staged)  # before it is visible: no reader ever sees it private
        if os.path.isdir(final):  # a checkpoint of the same step from before a resume: replaced whole
            shutil.rmtree(final)
        os.rename(staged, final)
        _sync_folder(os.path.dirname(final))
        try:
            os.rmdir(os.path.dirname(staged))
        except OSError:
            pass

    def _wait_for_everyone(self) -> None:
        if self.args.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def _sync_folder(path: str) -> None:
    """Make the rename itself durable (it lives in the folder's entry list), where the system allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_is_full(exc: BaseException, run_dir: str) -> bool:
    """Did this save fail for want of space? torch.save reports it as a RuntimeError about a file position,
    not as ENOSPC, so the disk itself is asked too: nearly nothing left on it means it was full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc = exc.__cause__ or exc.__context__
    try:
        return shutil.disk_usage(run_dir).free < 256 * 1024
    except OSError:
        return False


def _disk_full_message(run_dir: str, name: str) -> str:
    free = shutil.disk_usage(run_dir).free
    whole = RunFolder(run_dir).latest_checkpoint()
    kept = (f"the last whole checkpoint ({whole.name}) is intact: free some space, then add --resume"
            if whole else "no earlier checkpoint was saved")
    return (f"the disk holding {run_dir} is full ({free / 2**20:.1f} MiB free) while writing {name}; {kept} "
            f"(or lower training.save_total_limit)")
