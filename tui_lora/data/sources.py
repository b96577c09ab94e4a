"""Where training records come from: local files and folders, builtin samples, hub data sets.

Everything ends up as a datasets.Dataset (or IterableDataset when streaming) of raw
records; turning records into conversations is formats.py's job.
"""

from __future__ import annotations

from pathlib import Path

from tui_lora.assets import builtin_path, is_builtin
from tui_lora.config.rules import DATA_SUFFIXES, looks_local
from tui_lora.config.schema import DataSettings
from tui_lora.errors import UserError, first_line

# datasets' builder name for each file type the run file accepts
BUILDERS = {suffix: "json" if suffix == ".jsonl" else suffix[1:] for suffix in DATA_SUFFIXES}


def local_data_files(path: Path) -> tuple[str, list[str]]:
    """The datasets builder and file list for a local file or a folder of data files of one kind."""
    if path.is_file():
        if path.suffix not in BUILDERS:
            raise UserError(f"data.path: {path.name} is not a data file; use one of {', '.join(DATA_SUFFIXES)}")
        return BUILDERS[path.suffix], [str(path)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in BUILDERS
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))  # .ipynb_checkpoints …
    if not files:
        raise UserError(f"data.path: {path} holds no {', '.join(DATA_SUFFIXES)} files")
    builders = {BUILDERS[p.suffix] for p in files}
    if len(builders) > 1:
        raise UserError(f"data.path: {path} mixes file types ({', '.join(sorted(builders))}); "
                        "keep one kind of file per folder")
    return builders.pop(), [str(p) for p in files]


def _check_not_empty(files: list[str], ref: str) -> None:
    # datasets' readers fail on empty files with errors that name neither the file nor the problem
    if all(Path(name).stat().st_size == 0 for name in files):
        raise UserError(f"data.path: {ref!r} is empty")


def load_records(settings: DataSettings):
    """Raw records as a datasets (Iterable)Dataset, with the split slice applied.

    data.path is a builtin or a local path here: hub ids are fetched into the cache and replaced
    by their folder first (tui_lora.hub.resolve_sources), so every download goes through one place.
    """
    import datasets

    ref = settings.path
    if not (is_builtin(ref) or looks_local(ref)):
        raise ValueError(f"load_records got the hub id {ref!r}; call tui_lora.hub.resolve_sources first")
    path = builtin_path(ref) if is_builtin(ref) else Path(ref).expanduser()
    try:
        if (path / "dataset_info.json").exists() and (path / "state.json").exists():
            return _saved_dataset(path, settings)
        builder, files = local_data_files(path)
        _check_not_empty(files, ref)
        if path.is_dir():
            # datasets' own folder reading: splits from file names (train-*.parquet, test.jsonl …) and
            # the configs of a downloaded hub repo's README, as the hub would serve them
            return datasets.load_dataset(str(path), split=settings.split, streaming=settings.streaming)
        return datasets.load_dataset(builder, data_files={"train": files}, split=settings.split,
                                     streaming=settings.streaming)
    except UserError:
        raise
    except UnicodeDecodeError as exc:
        raise UserError(f"data.path: {ref!r} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except ValueError as exc:
        if "corresponds to no data" in str(exc):
            raise UserError(f"data.path: {ref!r} holds no records") from None
        # bad split names and slices arrive as ValueError; say which field to fix
        raise UserError(f"data: cannot read {ref!r} with split {settings.split!r}: {first_line(exc)}") from None
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise UserError(f"data.path: {ref!r} was not found ({first_line(exc)})") from None
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, UnicodeDecodeError):
            raise UserError(f"data.path: {ref!r} is not UTF-8 text; re-save it as UTF-8") from None
        raise UserError(f"data.path: {ref!r} could not be parsed: {first_line(cause)}") from None


def _saved_dataset(path: Path, settings: DataSettings):
    """A folder written by Dataset.save_to_disk (the seed pipeline caches its data that way)."""
    import datasets

    records = datasets.load_from_disk(str(path))
    if isinstance(records, datasets.DatasetDict):
        split = settings.split.split("[")[0]
        if split not in records:
            raise UserError(f"data.split: {path} has splits {', '.join(records)}, not {split!r}")
        records = records[split]
    if "[" in settings.split:
        raise UserError(f"data.split: slicing ({settings.split!r}) is not supported for save_to_disk folders; "
                        "use data.max_samples")
    return records.to_iterable_dataset() if settings.streaming else records
