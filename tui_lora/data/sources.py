"""Where training records come from: local files and folders, builtin samples, hub data sets.

Everything ends up as a datasets.Dataset (or IterableDataset when streaming) of raw
records; turning records into conversations is formats.py's job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tui_lora.assets import builtin_path, is_builtin
from tui_lora.config.rules import DATA_SUFFIXES, looks_local
from tui_lora.config.schema import DataSource
from tui_lora.data.formats import FORMATS
from tui_lora.errors import UserError, first_line

# datasets' builder name for each file type the run file accepts
BUILDERS = {suffix: "json" if suffix == ".jsonl" else suffix[1:] for suffix in DATA_SUFFIXES}
# Files read as text: they must be UTF-8 (datasets' readers let other bytes through, to fail mid-run)
TEXT_SUFFIXES = (".json", ".jsonl", ".csv")
# The column a line of a JSON Lines file that is not a record becomes: its reason, so it is counted and named
# like any other bad record (data.max_bad_share) instead of stopping a run on a 0.8M-line file for one line
UNREADABLE = "_tui_lora_unreadable"


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
        raise UserError(f"data.path: {ref!r} is empty; it must hold records in one of the formats "
                        f"{', '.join(FORMATS)} (one JSON object per line in a .jsonl file)")


def first_non_utf8(path: Path) -> tuple[int, int] | None:
    """(line, byte offset) of the first bytes in a file that are not UTF-8, or None; read in pieces."""
    done = lines = 0  # bytes and line breaks before `pending`
    pending = b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            data = pending + chunk
            try:
                data.decode("utf-8")
                good = len(data)
            except UnicodeDecodeError as exc:
                # a character cut in two by the end of this piece is finished by the next one
                if not (chunk and exc.reason == "unexpected end of data" and exc.end == len(data)):
                    return lines + data.count(b"\n", 0, exc.start) + 1, done + exc.start
                good = exc.start
            if not chunk:
                return None
            lines += data.count(b"\n", 0, good)
            done += good
            pending = data[good:]


def _check_utf8(files: list[str]) -> None:
    for name in files:
        if name.endswith(TEXT_SUFFIXES) and not _is_json_lines(Path(name)):
            found = first_non_utf8(Path(name))
            if found:
                raise UserError(f"data.path: {name!r} is not UTF-8 text (line {found[0]}, byte {found[1]}); "
                                "re-save it as UTF-8")


def first_json_problem(path: Path) -> str | None:
    """What is wrong where in a .json / .jsonl file that cannot be read as records, or None when it can.

    Only called after datasets failed on the file, to say where: its own errors name a byte position
    in an internal block, or nothing at all.
    """
    with open(path, encoding="utf-8", errors="replace") as handle:
        try:
            lines_of_records = isinstance(json.loads(handle.readline()), dict)
        except json.JSONDecodeError:
            lines_of_records = False
        handle.seek(0)
        if not lines_of_records:  # one JSON document (a list of records), perhaps over many lines
            try:
                json.load(handle)
            except json.JSONDecodeError as exc:
                return (f"is not valid JSON (line {exc.lineno}: {exc.msg}); a .json file holds a list of records, "
                        "or one record per line")
            return None
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                return (f"line {number} is not valid JSON ({exc.msg}); each line must be one record, a JSON "
                        "object {...}: fix or remove that line")
            if record is not None and not isinstance(record, dict):  # null is read as a record of nothing
                what = {list: "an array", str: "a string", bool: "true or false"}.get(type(record), "a number")
                return f"line {number} is {what}, not a record (a JSON object {{...}}): fix or remove that line"
    return None


def _is_json_lines(path: Path) -> bool:
    """A .jsonl file, or a .json file whose first line is a whole record (JSON Lines under another name)."""
    if path.suffix == ".jsonl":
        return True
    if path.suffix != ".json":
        return False
    with open(path, encoding="utf-8", errors="replace") as handle:
        try:
            return isinstance(json.loads(handle.readline()), dict)
        except json.JSONDecodeError:
            return False


def _line_problem(raw: bytes) -> str | None:
    """Why one line of a JSON Lines file is not a record, or None when it is one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte {exc.start} of the line)"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"is not valid JSON ({exc.msg})"
    if not isinstance(record, dict):
        what = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(
            type(record), "a number")
        return f"is {what}, not a record (a JSON object {{...}})"
    return None


def readable_json_lines(path: Path) -> Path:
    """The file itself when every line is a record, else a copy where each line that is not one (broken JSON,
    bytes that are not UTF-8, an array …) is replaced by a record holding only its reason (UNREADABLE).

    Records keep their numbers. The copy sits in datasets' cache, named after the file's path, size and
    modification time, so an unchanged file is read once; one pass over the bytes, line by line.
    """
    with open(path, "rb") as handle:
        if not any(raw.strip() and _line_problem(raw) for raw in handle):
            return path
    import datasets

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    copy = Path(datasets.config.HF_DATASETS_CACHE) / "tui-lora-readable" / f"{key}-{path.stem}.jsonl"
    if copy.exists():
        return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    partial = copy.with_suffix(".partial")
    with open(path, "rb") as source, open(partial, "wb") as out:
        for number, raw in enumerate(source, 1):
            if not raw.strip():
                continue
            problem = _line_problem(raw)
            if problem:
                reason = f"{path.name} line {number} {problem}"
                raw = json.dumps({UNREADABLE: reason}, ensure_ascii=False).encode("utf-8") + b"\n"
            out.write(raw if raw.endswith(b"\n") else raw + b"\n")
    partial.replace(copy)  # whole or absent: a run stopped mid-copy never reads half a file
    return copy


def _explain_bad_json(builder: str | None, files: list[str]) -> None:
    """Raise the one line that names the broken line of a JSON file, when that is what failed."""
    if builder != "json":
        return
    for name in files:
        problem = first_json_problem(Path(name))
        if problem:
            raise UserError(f"data.path: {name!r} {problem}")


def load_records(source: DataSource, streaming: bool = False, where: str = "data"):
    """Raw records of one source as a datasets (Iterable)Dataset, with the split slice applied.

    source.path is a builtin or a local path here: hub ids are fetched into the cache and replaced
    by their folder first (tui_lora.hub.resolve_sources), so every download goes through one place.
    `where` is the run-file table the source is written in (data, or data.sources[N]); messages name its keys.
    """
    try:
        return _load(source.path, source.split, streaming)
    except UserError as exc:
        message = str(exc)
        if where == "data" or not message.startswith("data"):
            raise
        raise UserError(where + message[len("data"):]) from None


def _load(ref: str, split: str, streaming: bool):
    import datasets

    if not (is_builtin(ref) or looks_local(ref)):
        raise ValueError(f"load_records got the hub id {ref!r}; call tui_lora.hub.resolve_sources first")
    path = builtin_path(ref) if is_builtin(ref) else Path(ref).expanduser()
    builder, files = None, []
    try:
        if (path / "dataset_info.json").exists() and (path / "state.json").exists():
            return _saved_dataset(path, split, streaming)
        builder, files = local_data_files(path)
        _check_not_empty(files, ref)
        _check_utf8(files)
        if path.is_file() and _is_json_lines(path):
            return _json_lines(path, split, streaming)
        if path.is_dir():
            # datasets' own folder reading: splits from file names (train-*.parquet, test.jsonl …) and
            # the configs of a downloaded hub repo's README, as the hub would serve them
            return datasets.load_dataset(str(path), split=split, streaming=streaming)
        return datasets.load_dataset(builder, data_files={"train": files}, split=split, streaming=streaming)
    except UserError:
        raise
    except UnicodeDecodeError as exc:
        raise UserError(f"data.path: {ref!r} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except ValueError as exc:
        if "corresponds to no data" in str(exc):
            raise UserError(f"data.path: {ref!r} holds no records") from None
        _explain_bad_json(builder, files)
        # bad split names and slices arrive as ValueError; say which field to fix
        raise UserError(f"data: cannot read {ref!r} with split {split!r}: {first_line(exc)}") from None
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise UserError(f"data.path: {ref!r} was not found ({first_line(exc)})") from None
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        _explain_bad_json(builder, files)
        if isinstance(cause, UnicodeDecodeError):
            raise UserError(f"data.path: {ref!r} is not UTF-8 text; re-save it as UTF-8") from None
        raise UserError(f"data.path: {ref!r} could not be parsed: {first_line(cause)}") from None


def _json_lines(path: Path, split: str, streaming: bool):
    """A JSON Lines file, where a line that is not a record is a bad record (see readable_json_lines).

    datasets' own reader goes first (it is fast, and most files are clean); the line by line pass runs when
    it fails, when the file holds bytes that are not UTF-8 (which that reader lets through), and when
    streaming, where a broken line would only be met mid-run.
    """
    import datasets

    def load(target: Path):
        return datasets.load_dataset("json", data_files={"train": [str(target)]}, split=split, streaming=streaming)

    if streaming or first_non_utf8(path):
        return load(readable_json_lines(path))
    try:
        return load(path)
    except (datasets.exceptions.DatasetGenerationError, ValueError):
        readable = readable_json_lines(path)
        if readable == path:  # every line is a record: the failure is something else, said by load_records
            raise
        return load(readable)


def _saved_dataset(path: Path, split: str, streaming: bool):
    """A folder written by Dataset.save_to_disk (the seed pipeline caches its data that way)."""
    import datasets

    records = datasets.load_from_disk(str(path))
    if isinstance(records, datasets.DatasetDict):
        name = split.split("[")[0]
        if name not in records:
            raise UserError(f"data.split: {path} has splits {', '.join(records)}, not {name!r}")
        records = records[name]
    if "[" in split:
        raise UserError(f"data.split: slicing ({split!r}) is not supported for save_to_disk folders; "
                        "use data.max_samples")
    return records.to_iterable_dataset() if streaming else records
