"""`tui-lora merge`: the adapter folded into the base weights, written as a plain transformers model folder.

Three things make the merged model answer exactly as base + adapter did:

- A quantised base is loaded again unquantised (in the run's dtype, else the checkpoint's own,
  usually 16-bit) before merging, as peft advises: adding the update to 4- or 8-bit weights would
  round it away, and the folder would need bitsandbytes to load.
- Tied input and output embeddings (most small chat models) are untied before merging. An adapter
  on lm_head (or on the embeddings) would otherwise be added to the one shared matrix and change
  both ends of the model. If the merge leaves the two equal after all, they are tied again, so an
  adapter that touched neither costs no extra matrix.
- The folder is written next to its destination and renamed into place at the end, so a failure
  (a full disk, Ctrl+C) leaves no half-written model under the name asked for.

Merging a run's final adapter adds a "merge" event to the run's event log (out, dtype, parameters):
`tui-lora push RUN --merged` finds the merged model there, and a "result" event after it says the run
saved a newer adapter since (it was resumed), so that merge is out of date. Readers that do not know
the type skip it, as they skip any (runs/events.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from tui_lora.errors import UserError
from tui_lora.file_modes import current_umask, share_weights_like_other_files


@dataclass
class MergeResult:
    out: Path
    dtype: str
    parameters: int
    untied: bool  # the embeddings stayed untied because the adapter changed one side
    recorded: bool = False  # noted in the run's event log, for push --merged


def check_destination(out: Path, force: bool, adapter: Path, run_folder: Path | None) -> None:
    """Refuse a destination that holds something, unless --force; never the run or its adapter."""
    out = out.expanduser().absolute()
    protected = [p for p in (adapter, run_folder) if p is not None]
    for path in protected:
        if out == path or out in path.parents:
            raise UserError(f"--out {out}: that would replace the run's own files ({path}); choose another folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out}: the folder is not empty; choose a new or empty folder, or add --force to "
                        "replace what is in it")


def merge_dtype(config, dtype: str | None) -> str:
    """--dtype, else the run's model.dtype; "auto" keeps the checkpoint's own (16-bit for most models)."""
    return dtype or config.model.dtype


def untie_embeddings(model) -> bool:
    """Give the output layer its own copy of tied embeddings; True when they were tied."""
    import torch

    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embeddings is None or head.weight is not embeddings.weight:
        return False
    head.weight = torch.nn.Parameter(embeddings.weight.detach().clone(), requires_grad=False)
    _set_tied(model, False)
    return True


def retie_if_equal(model) -> bool:
    """Tie the embeddings again when merging left them equal; True when they now differ (stay untied)."""
    import torch

    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if torch.equal(head.weight, embeddings.weight):
        head.weight = embeddings.weight
        _set_tied(model, True)
        return False
    return True


def _set_tied(model, tied: bool) -> None:
    # save_pretrained and from_pretrained read this flag: tied, lm_head is not written and is tied on load
    configs = {id(model.config): model.config}
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    configs[id(text)] = text
    for config in configs.values():
        config.tie_word_embeddings = tied


def merge(where: str, out: str, overrides: list[str] = (), force: bool = False, dtype: str | None = None,
          progress=None) -> MergeResult:
    from tui_lora.after.loading import attach_adapter, find_adapter, load_base_model, load_tokenizer, prepare_sources

    trained = find_adapter(where, overrides)
    destination = Path(out).expanduser().absolute()
    check_destination(destination, force, trained.adapter, trained.run_folder)
    config = prepare_sources(trained.config)
    chosen = merge_dtype(config, dtype)
    quantised = config.quantization.mode != "none"
    if progress:
        again = " again without quantisation" if quantised else ""
        progress(f"loading {trained.config.model.name_or_path}{again} (dtype {chosen}) and the adapter …")
    tokenizer = load_tokenizer(trained, config)
    unquantised = replace(config, quantization=replace(config.quantization, load_in_4bit=False, load_in_8bit=False))
    base = load_base_model(unquantised, quantized=False, dtype=chosen)
    was_tied = untie_embeddings(base)
    merged = attach_adapter(base, trained).merge_and_unload(safe_merge=True)  # safe_merge: refuse NaN weights
    untied = retie_if_equal(merged) if was_tied else False
    if progress:
        progress(f"writing {destination} …")
    _write_atomically(destination, lambda stage: _save(merged, tokenizer, stage))
    parameters = sum(p.numel() for p in merged.parameters())
    result = MergeResult(destination, str(next(merged.parameters()).dtype).removeprefix("torch."), parameters, untied)
    result.recorded = record_merge(trained.run_folder, trained.adapter, result)
    return result


MERGE_EVENT = "merge"


def record_merge(run_folder: Path | None, adapter: Path, result: MergeResult) -> bool:
    """Note in the run's event log where its final adapter was merged to; False when there is no run to note it
    in (a checkpoint or an adapter folder was merged) or its log cannot be written (a read-only run folder)."""
    from tui_lora.runs.events import EventLog
    from tui_lora.runs.folder import RunFolder

    if run_folder is None or adapter != RunFolder(run_folder).adapter:
        return False
    try:
        log = EventLog(RunFolder(run_folder).events)
    except OSError:
        return False
    try:
        log.emit(MERGE_EVENT, out=str(result.out), dtype=result.dtype, parameters=result.parameters)
    finally:
        log.close()
    return True


def recorded_merge(run_folder: Path) -> tuple[Path | None, bool]:
    """(the folder the run's final adapter was last merged to, or None; whether the run saved a newer adapter
    after that merge)."""
    from tui_lora.runs.events import read_events
    from tui_lora.runs.folder import RunFolder

    out, outdated = None, False
    for event in read_events(RunFolder(run_folder).events):
        if event.get("type") == MERGE_EVENT and event.get("out"):
            out, outdated = Path(event["out"]), False
        elif event.get("type") == "result" and out is not None:
            outdated = True
    return out, outdated


def _save(model, tokenizer, folder: Path) -> None:
    model.config.use_cache = True  # a merged model is for inference
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))  # with the chat template the run trained on


def _write_atomically(destination: Path, write) -> None:
    """Write into a fresh folder beside `destination`, then put it in place with renames."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{destination.name}.merging-", dir=destination.parent))
    try:
        write(stage)
        # mkdtemp makes the folder private to its owner and safetensors the weights; a model folder is
        # usually shared, so both get the modes the umask gives any new folder and file
        os.chmod(stage, 0o777 & ~current_umask())
        share_weights_like_other_files(stage)
        if destination.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.replaced-", dir=destination.parent))
            os.replace(destination, old / destination.name)
            os.replace(stage, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, destination)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
