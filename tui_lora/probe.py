"""`python -m tui_lora.probe KIND RUNFILE.toml`: what the wizard needs to know that only the ML stack can tell.

The wizard process never imports torch, transformers, peft, datasets or bitsandbytes (start-up
time, and a crash in them must not take the UI down). When it needs the model's layers, a
preview of the tokenised data or a hub check, it writes its draft run file and asks a
short-lived child process, which prints exactly one JSON object on stdout and exits 0:

    model  {"ok": true, "architecture", "model_type", "parameters", "context_length", "vocab_size",
            "hidden_size", "num_layers", "config_dtype", "tied_embeddings", "output_layer",
            "linear": [...], "embedding": [...], "modules": [...], "bias_parameters", "cuda": [...]}
    data   {"ok": true, "format", "records", "skipped", "skip_reasons", "truncated",
            "used_default_template", "sampled", "examples": [...], "lengths": [...]}
    records {"ok": true, "sources": [{"where", "path", "columns", "record", "format", "messages", "error"}]}:
            each data source's first record as read and as a conversation after its mapping and system
            prompt (no tokenizer), for the wizard's data-set editor; a source that cannot be read has its
            one-line "error" and the others still answer
    hub    {"ok": bool, "lines": [...]}
    machine {"ok": true, "problems": ["<key>: <what run would refuse>", ...]}: what `tui-lora run` checks
            about this machine before it loads anything (engine.model.check_hardware, the quantisation
            backend, a system prompt the model's template refuses), asked with the run's own functions so
            the review never holds a copy of the rules

and for any problem {"ok": false, "error": "<one line>"}. The draft may be incomplete, so the
run file's validation issues are ignored (a bad field keeps its default); the probe fails
only on what it cannot work around.

`run_probe` is the wizard's side: it imports only the standard library, tomli_w and
tui_lora.config, so importing this module stays cheap. The heavy imports live inside the
per-kind functions, which only the child runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Any

from tui_lora.config.schema import HubSettings, RunConfig
from tui_lora.errors import UserError, first_line
from tui_lora.secret_guard import strip_secrets

KINDS = ("model", "data", "records", "hub", "machine")
DATA_SAMPLE_CAP = 200  # records encoded for the data preview: enough for a length histogram, quick to tokenise
SHOWN_EXAMPLES = 3
SHOWN_RECORD_CHARS = 600  # of a raw record as JSON, and of each message's content, in the data-set editor
# What AutoConfig reads from a repo: the config, and the code files when trust_remote_code is on.
CONFIG_PATTERNS = ["config.json", "*.py"]


# ---------------------------------------------------------------- the wizard's side


def run_probe(kind: str, raw: dict, timeout: float = 120.0, cancelled: Callable[[], bool] | None = None) -> dict:
    """Ask a child process about a draft run file; always returns a dict with "ok".

    `cancelled` is polled while the child works: the wizard passes its worker's flag, so
    quitting (or asking again) kills a probe at once instead of waiting seconds for its answer.
    """
    import tomli_w

    try:
        text = tomli_w.dumps(strip_secrets(raw)[0])  # a token typed into a field is not written, even to /tmp
    except (TypeError, ValueError) as exc:  # a value TOML cannot hold (None, a tuple of mixed types …)
        return _failure(f"the draft cannot be written as TOML: {first_line(exc)}")
    with tempfile.TemporaryDirectory(prefix="tui-lora-probe-") as folder:
        path = Path(folder) / "draft.toml"
        path.write_text(text, encoding="utf-8")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        argv = [sys.executable, "-m", "tui_lora.probe", kind, str(path)]
        try:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, encoding="utf-8", errors="replace", env=env)
        except OSError as exc:
            return _failure(f"the {kind} probe could not start: {first_line(exc)}")
        with child:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    stdout, stderr = child.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    stopped = cancelled is not None and cancelled()
                    if stopped or time.monotonic() > deadline:
                        child.kill()
                        child.communicate()
                        return _failure(f"the {kind} probe was cancelled" if stopped else
                                        f"the {kind} probe took longer than {timeout:g} s and was stopped")
    return read_answer(kind, subprocess.CompletedProcess(argv, child.returncode, stdout, stderr))


def read_answer(kind: str, done: subprocess.CompletedProcess) -> dict:
    """The child's JSON answer, or a one-line failure for a crash or output that is not an answer."""
    if done.returncode != 0:
        return _failure(f"the {kind} probe crashed (exit status {done.returncode}): {_last_line(done.stderr)}")
    try:
        answer = json.loads(_last_line(done.stdout))
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        return _failure(f"the {kind} probe gave no answer: {_last_line(done.stdout)[:200] or 'empty output'}")
    if not answer["ok"] and not isinstance(answer.get("error"), str):
        answer["error"] = f"the {kind} probe failed without saying why"
    return answer


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _failure(error: str) -> dict:
    return {"ok": False, "error": error}


# ---------------------------------------------------------------- the child process


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with _stdout_to_stderr():
        answer = _answer(args)
        try:
            line = json.dumps(answer, ensure_ascii=False)
        except (TypeError, ValueError) as exc:  # a library value that is not plain data: a bug, still one line
            line = json.dumps(_failure(f"the answer could not be written as JSON: {first_line(exc)}"))
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


def _answer(args: list[str]) -> dict:
    if len(args) != 2 or args[0] not in KINDS:
        return _failure(f"usage: python -m tui_lora.probe {{{'|'.join(KINDS)}}} RUNFILE.toml")
    kind, path = args
    try:
        config = read_draft(Path(path))
        from tui_lora.hub import apply_hub_environment

        apply_hub_environment(config.hub)  # before anything imports huggingface_hub
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        return {"model": probe_model, "data": probe_data, "records": probe_records, "hub": probe_hub,
                "machine": probe_machine}[kind](config)
    except UserError as exc:
        return _failure(first_line(exc))
    except Exception as exc:  # a bug or a library failure: still one line, never a traceback on stdout
        return _failure(f"{type(exc).__name__}: {first_line(exc)}")


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout meanwhile (Python prints, C libraries writing to fd 1)
    to stderr, so the answer is the only thing on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def read_draft(path: Path) -> RunConfig:
    """The run file as far as it is usable: fields with problems keep their defaults."""
    from tui_lora.config.load import build_config, read_toml

    config, _issues = build_config(read_toml(path))
    return config


def _check_ref(key: str, ref: str, hub: HubSettings) -> None:
    """Refuse what the libraries would turn into a confusing error or an unwanted download."""
    from tui_lora.assets import BUILTINS, BUILTIN_PREFIX, is_builtin
    from tui_lora.hub import is_hub_id

    if not ref:
        raise UserError(f"{key}: is required")
    if is_builtin(ref) and ref[len(BUILTIN_PREFIX):] not in BUILTINS:
        raise UserError(f"{key}: {ref!r} is not a builtin; known: "
                        + ", ".join(BUILTIN_PREFIX + name for name in BUILTINS))
    if is_hub_id(ref) and hub.source == "local":
        raise UserError(f"{key}: {ref!r} looks like a hub id, but hub.source is \"local\"")


def _modelscope_files(key: str, ref: str, revision: str, hub: HubSettings, patterns: list[str]) -> Path:
    """Only the named files of a ModelScope model repo (hub.fetch would take the weights too)."""
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError:
        raise UserError("hub.source is \"modelscope\" but the modelscope package is not installed; run: "
                        "pip install 'tui-lora[modelscope]'") from None
    kwargs = dict(revision=None if revision == "main" else revision, cache_dir=hub.cache_dir or None,
                  local_files_only=hub.offline)
    try:
        try:
            folder = snapshot_download(ref, allow_patterns=patterns, **kwargs)
        except TypeError:  # modelscope before allow_patterns called it allow_file_pattern
            folder = snapshot_download(ref, allow_file_pattern=patterns, **kwargs)
    except Exception as exc:  # modelscope raises plain exceptions of many kinds for a missing id or no network
        raise UserError(f"{key}: cannot fetch {ref!r} from ModelScope: {first_line(exc)}") from None
    return Path(folder)


# ---------------------------------------------------------------- model


def probe_machine(config: RunConfig) -> dict:
    """The refusals `tui-lora run` makes about this machine before loading, each check run as the run runs it,
    and whether the model's template takes the run's system prompts (as `tui-lora validate` checks it)."""
    from tui_lora.data.prepare import check_system_prompts_here
    from tui_lora.engine import model as models
    from tui_lora.engine import preflight

    problems = []
    for check in (models.check_hardware, preflight.check_quantization_backend, check_system_prompts_here):
        try:
            check(config)
        except UserError as exc:  # each check stops at its first problem, as it does in the run
            problems.append(first_line(exc))
    return {"ok": True, "problems": problems}


def probe_model(config: RunConfig) -> dict:
    """The model's shape from its config alone: a skeleton on the meta device, no weights read or fetched."""
    import torch

    ref, hub = config.model.name_or_path, config.hub
    _check_ref("model.name_or_path", ref, hub)
    with _hub_guard(ref, hub):
        model_config = _fetch_model_config(config)
        skeleton = _skeleton(model_config, config)
    return {"ok": True, **describe_model(skeleton, model_config), "cuda": _cuda_devices(torch)}


@contextmanager
def _hub_guard(ref: str, hub: HubSettings) -> Iterator[None]:
    """Hub failures (and hangs) as one line, for hub ids fetched from Hugging Face or a mirror."""
    from tui_lora.hub import bound_timeouts, hub_errors, is_hub_id

    if not is_hub_id(ref) or hub.source != "huggingface":
        yield
        return
    bound_timeouts(hub.timeout)
    with hub_errors(ref, "model", hub):
        yield


def _fetch_model_config(config: RunConfig):
    from transformers import AutoConfig

    from tui_lora.models import load_model_config, loading
    from tui_lora.hub import is_hub_id

    m, hub = config.model, config.hub
    if not is_hub_id(m.name_or_path):
        return load_model_config(config)  # builtin or local folder: the engine's own call
    if hub.source == "modelscope":
        source = str(_modelscope_files("model.name_or_path", m.name_or_path, m.revision, hub, CONFIG_PATTERNS))
    else:
        source = m.name_or_path
        if not hub.offline:
            from huggingface_hub import HfApi

            # One API call first: it fails the way the hub means it (not found, gated, no such revision)
            # and within hub.timeout, where transformers retries and rewraps every failure as OSError.
            HfApi(endpoint=hub.endpoint.rstrip("/") or None).repo_info(m.name_or_path, revision=m.revision)
    with loading("model.name_or_path", m.name_or_path):
        # transformers reads the endpoint from HF_ENDPOINT, set by apply_hub_environment
        return AutoConfig.from_pretrained(source, revision=m.revision, cache_dir=hub.cache_dir or None,
                                          trust_remote_code=m.trust_remote_code)


def _skeleton(model_config, config: RunConfig):
    """The model built on the meta device, as engine.model.module_names builds it."""
    import torch
    from transformers import AutoModelForCausalLM

    from tui_lora.models import loading

    ref = config.model.name_or_path
    try:
        with loading("model.name_or_path", ref), torch.device("meta"):
            return AutoModelForCausalLM.from_config(model_config, trust_remote_code=config.model.trust_remote_code)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        raise UserError(f"model.name_or_path: {ref!r} is a {model_config.model_type!r} model, which transformers "
                        "cannot load as a causal language model (AutoModelForCausalLM)") from None


def describe_model(skeleton, model_config) -> dict[str, Any]:
    from tui_lora.models import model_context

    text = model_config.get_text_config()  # multimodal configs keep the language model's numbers here
    inputs, outputs = skeleton.get_input_embeddings(), skeleton.get_output_embeddings()
    output_name = next((name for name, module in skeleton.named_modules() if module is outputs), None)
    tied = inputs is not None and outputs is not None and outputs.weight is inputs.weight
    return {
        "architecture": type(skeleton).__name__,
        "model_type": model_config.model_type,
        "parameters": sum(p.numel() for p in skeleton.parameters()),  # shared (tied) weights count once
        "context_length": (model_context(model_config) or (None, None))[1],  # what the run checks against
        "vocab_size": getattr(text, "vocab_size", None) or getattr(inputs, "num_embeddings", None),
        "hidden_size": getattr(text, "hidden_size", None) or getattr(inputs, "embedding_dim", None),
        "num_layers": getattr(text, "num_hidden_layers", None),
        "config_dtype": _dtype_name(getattr(model_config, "dtype", None) or getattr(text, "dtype", None)),
        "tied_embeddings": tied,
        "output_layer": output_name,
        "linear": linear_groups(skeleton),
        "embedding": embedding_groups(skeleton),
        "modules": module_groups(skeleton),
        # peft's bias="all" trains every parameter with "bias" in its name, norms' biases included
        "bias_parameters": sum(p.numel() for name, p in skeleton.named_parameters() if "bias" in name),
    }


def _dtype_name(dtype) -> str | None:
    return str(dtype).removeprefix("torch.") if dtype is not None else None


def linear_groups(skeleton) -> list[dict]:
    """Every layer LoRA treats as linear (nn.Linear, transformers' Conv1D), grouped by
    (last name, in, out, bias) in order of first appearance. `path` is the first full name,
    for matching dotted target names and parents the way peft does."""
    import torch
    from transformers.pytorch_utils import Conv1D  # GPT-2 style models use it for their projections

    groups: dict[tuple, dict] = {}
    for path, module in skeleton.named_modules():
        if isinstance(module, torch.nn.Linear):
            size_in, size_out = module.in_features, module.out_features
        elif isinstance(module, Conv1D):
            size_in, size_out = module.weight.shape  # Conv1D stores its weight transposed: (in, out)
        else:
            continue
        name = path.rsplit(".", 1)[-1]
        key = (name, int(size_in), int(size_out), module.bias is not None)
        group = groups.setdefault(key, {"name": name, "in": key[1], "out": key[2], "count": 0, "bias": key[3],
                                        "path": path})
        group["count"] += 1
    return list(groups.values())


def embedding_groups(skeleton) -> list[dict]:
    import torch

    groups: dict[str, dict] = {}
    for path, module in skeleton.named_modules():
        if isinstance(module, torch.nn.Embedding):
            name = path.rsplit(".", 1)[-1]
            group = groups.setdefault(name, {"name": name, "count": 0, "parameters": 0, "path": path,
                                             "num_embeddings": module.num_embeddings,
                                             "embedding_dim": module.embedding_dim})
            group["count"] += 1
            group["parameters"] += module.weight.numel()
    return list(groups.values())


def module_groups(skeleton) -> list[dict]:
    """Every module by last name with its parameters (shared ones included), for counting
    lora.modules_to_save: peft trains a full copy of each module whose name ends with an entry.
    Positions in layer lists ("0", "1" …) are left out; nobody saves a module by its index."""
    groups: dict[str, dict] = {}
    for path, module in skeleton.named_modules():
        name = path.rsplit(".", 1)[-1]
        if not path or name.isdigit():
            continue
        group = groups.setdefault(name, {"name": name, "count": 0, "parameters": 0, "path": path})
        group["count"] += 1
        group["parameters"] += sum(p.numel() for p in module.parameters())
    return list(groups.values())


def _cuda_devices(torch) -> list[dict]:
    if not torch.cuda.is_available():
        return []
    return [{"name": torch.cuda.get_device_name(i), "memory": torch.cuda.get_device_properties(i).total_memory}
            for i in range(torch.cuda.device_count())]


# ---------------------------------------------------------------- data


def probe_data(config: RunConfig) -> dict:
    """The first records encoded exactly as the run encodes them, with the first examples' label masks.

    "sampled" is true when the run will see more records than the probe encoded.
    """
    from tui_lora.data.encode import label_mask_segments
    from tui_lora.data.mix import first_of_each
    from tui_lora.data.prepare import encode_records
    from tui_lora.models import load_tokenizer

    data = config.data
    # the probe's own cap on each source (shared out between several), not the run's max_samples
    each = DATA_SAMPLE_CAP if not data.sources else max(SHOWN_EXAMPLES, DATA_SAMPLE_CAP // len(data.sources))
    capped = [not source.max_samples or source.max_samples > each for source in data.source_list()]
    caps = [each if cut else source.max_samples for cut, source in zip(capped, data.source_list())]
    # one process: a pool of tokenising workers costs more than 200 records, and would outlive a timeout
    data = replace(data.with_each("max_samples", caps), num_proc=1)
    config = _tokenizer_and_data_sources(replace(config, data=data))
    tokenizer = load_tokenizer(config)
    examples, report = encode_records(config, tokenizer)
    pad = config.collator.label_pad_token_id
    if config.data.streaming:
        rows = list(examples)
        counts = _streamed_counts(rows, len(caps))
        counts["sampled"] = any(capped)  # a stream's length is unknown; it is read no further than the cap
        lengths = [row["n_tokens"] for row in rows]
    else:
        rows = list(examples.select(first_of_each(examples, SHOWN_EXAMPLES)))
        counts = {"records": report.records, "skipped": report.skipped, "skip_reasons": report.skip_reasons,
                  "truncated": report.truncated,
                  "sampled": any(cut and source.records == cap and _more_than(config, number, cap)
                                 for number, (cut, cap, source) in enumerate(zip(capped, caps, report.sources)))}
        lengths = [int(n) for n in examples["n_tokens"]]  # a datasets Column, not a list
    shown = [{"segments": [[text, trained] for text, trained in
                           label_mask_segments(tokenizer, row["input_ids"], row["labels"], pad)],
              "tokens": row["n_tokens"], "trained": row["n_trained"], "source": row["source"]}
             for row in rows[:SHOWN_EXAMPLES]]
    sources = [{"path": source.path, "format": source.format, "records": source.records, "skipped": source.skipped,
                "truncated": source.truncated} for source in report.sources]
    return {"ok": True, "format": report.format, **counts, "used_default_template": report.used_default_template,
            "examples": shown, "lengths": lengths, "sources": sources}


def probe_records(config: RunConfig) -> dict:
    """Each source's first record, raw and as the conversation its mapping (or its detected format) and system
    prompt make of it: how a user checks a column mapping without a tokenizer or a pass over the data."""
    return {"ok": True, "sources": [_first_record(config, where, source) for where, source in config.data.tables()]}


def _first_record(config: RunConfig, where: str, source) -> dict:
    from tui_lora.data.formats import BadRecord, to_messages, with_system_prompt
    from tui_lora.data.mapping import ColumnMapping
    from tui_lora.data.prepare import choose_format, source_system_prompt
    from tui_lora.data.sources import UNREADABLE, load_records

    answer: dict[str, Any] = {"where": where, "path": source.path, "columns": [], "record": "", "format": "",
                              "messages": [], "error": ""}
    try:
        source = replace(source, path=_local_data_path(f"{where}.path", source.path, config.hub))
        records = load_records(source, streaming=True, where=where)  # a stream: the first record, not the file
        first = next(iter(records), None)
        if first is None:
            raise UserError(f"{where}.path: the data set is empty")
        if first.get(UNREADABLE):
            raise UserError(f"{where}.path: {first[UNREADABLE]}")
        first = {key: value for key, value in first.items() if key != UNREADABLE}
        answer["columns"] = list(first)
        answer["record"] = _cut(json.dumps(first, ensure_ascii=False, default=str))
        mapping = ColumnMapping.from_settings(source)
        if mapping is not None:
            problem = mapping.missing_column(list(first), where)
            if problem:
                raise UserError(problem)
        fmt = mapping.format if mapping is not None else choose_format([first], source.format, where)
        answer["format"] = fmt
        try:
            record = mapping.apply(first) if mapping is not None else first
            messages = with_system_prompt(to_messages(record, fmt), source_system_prompt(config.data, source),
                                          config.data.system_prompt_mode)
        except BadRecord as exc:
            raise UserError(f"record 1 cannot be used as {fmt!r}: {exc}") from None
        answer["messages"] = [{"role": message["role"], "content": _cut(str(message["content"]))}
                              for message in messages]
    except UserError as exc:
        answer["error"] = first_line(exc)
    except Exception as exc:  # one source's failure is its own line; the others still answer
        answer["error"] = f"{where}.path: {type(exc).__name__}: {first_line(exc)}"
    return answer


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_RECORD_CHARS else text[:SHOWN_RECORD_CHARS - 1] + "…"


def _streamed_counts(rows: list[dict], sources: int) -> dict:
    """A streamed data set passes only usable rows; skipped ones show as gaps in each source's record numbers
    (their reasons are not kept, and unusable records after the last usable one go unseen)."""
    seen = sum(max((row["record"] for row in rows if row["source"] == number), default=0)
               for number in range(sources))
    return {"records": seen, "skipped": seen - len(rows), "skip_reasons": {},
            "truncated": sum(1 for row in rows if row["truncated"])}


def _more_than(config: RunConfig, number: int, cap: int) -> bool:
    """Whether a source has records beyond the ones encoded (the second read comes from datasets' cache)."""
    from tui_lora.data.sources import load_records

    return len(load_records(config.data.source_list()[number])) > cap


def _tokenizer_and_data_sources(config: RunConfig) -> RunConfig:
    """Hub ids replaced by local folders: the tokenizer's files only (not the model's weights), and the data."""
    from tui_lora.hub import is_hub_id

    model, tokenizer, data, hub = config.model, config.tokenizer, config.data, config.hub
    for key, ref in data.keyed_paths():  # every source's path before anything is fetched
        _check_ref(key, ref, hub)
    if tokenizer.name_or_path:
        _check_ref("tokenizer.name_or_path", tokenizer.name_or_path, hub)
        if is_hub_id(tokenizer.name_or_path):
            folder = _fetch_tokenizer("tokenizer.name_or_path", tokenizer.name_or_path, "main", hub)
            tokenizer = replace(tokenizer, name_or_path=str(folder))
    else:
        _check_ref("model.name_or_path", model.name_or_path, hub)
        if is_hub_id(model.name_or_path):
            # load_tokenizer reads the model's folder when no tokenizer is named; give it the tokenizer's files
            folder = _fetch_tokenizer("model.name_or_path", model.name_or_path, model.revision, hub)
            model = replace(model, name_or_path=str(folder))
    data = data.with_each("path", [_local_data_path(key, ref, hub) for key, ref in data.keyed_paths()])
    return replace(config, model=model, tokenizer=tokenizer, data=data)


def _local_data_path(key: str, ref: str, hub: HubSettings) -> str:
    """A data source's path as the loaders take it: checked, and a hub id fetched into the cache."""
    from tui_lora.hub import fetch, is_hub_id

    _check_ref(key, ref, hub)
    return str(fetch(ref, "dataset", "main", hub, key=key)) if is_hub_id(ref) else ref


def _fetch_tokenizer(key: str, ref: str, revision: str, hub: HubSettings) -> Path:
    from tui_lora.hub import TOKENIZER_PATTERNS, fetch

    if hub.source == "modelscope":
        return _modelscope_files(key, ref, revision, hub, TOKENIZER_PATTERNS)
    try:
        return fetch(ref, "tokenizer", revision, hub)
    except UserError as exc:  # fetch names tokenizer.name_or_path; the id may have come from the model's key
        message = str(exc)
        prefix = "tokenizer.name_or_path: "
        raise UserError(key + ": " + message[len(prefix):] if message.startswith(prefix) else message) from None


# ---------------------------------------------------------------- hub


def probe_hub(config: RunConfig) -> dict:
    from tui_lora.hub import check_hub

    lines, ok = check_hub(config)
    return {"ok": ok, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())
