"""The from_pretrained fences: where a model or tokenizer is read from, and its failures as one line.

Training (engine/), data preparation and its preview (data/), the wizard's probes (probe.py) and
chat, eval and merge (after/) all load the run's tokenizer and model config the same way, through
these functions, so a path, a hub id or a builtin means the same thing everywhere and a failure the
user can fix is a UserError naming the run-file key. Also what a model's config says that a run
must respect: its context length and its embedding rows. The libraries are imported inside the
functions: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tui_lora.assets import builtin_path, is_builtin
from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError, first_line


def model_source(ref: str) -> str:
    """What from_pretrained gets: builtin assets become their folder; hub ids pass through."""
    if is_builtin(ref):
        return str(builtin_path(ref))
    from tui_lora.config.rules import looks_local

    # looks_local, not Path.exists: a name the file system refuses (too long, a NUL) must not raise here
    return str(Path(ref).expanduser()) if looks_local(ref) else ref


@contextmanager
def loading(key: str, ref: str) -> Iterator[None]:
    """Turn from_pretrained's failures that the user can fix into one line naming the run-file key."""
    try:
        yield
    except ValueError as exc:
        if type(exc).__name__ == "HFValidationError":  # huggingface_hub refused it as a repo id
            raise UserError(f"{key}: {ref!r} is neither a local path nor a hub id: {first_line(exc)}") from None
        if "trust_remote_code" not in str(exc):
            raise
        raise UserError(f"{key}: {ref!r} needs its own Python code (the .py files in its repository) to load, and "
                        "model.trust_remote_code is off, so nothing was run; turning it on (model.trust_remote_code = "
                        "true) runs that code on this machine with your permissions, so do it only for a repository "
                        "whose authors you trust, after reading its .py files") from None
    except OSError as exc:
        raise UserError(f"{key}: cannot load {ref!r}: {first_line(exc)}") from None


def load_tokenizer(config: RunConfig):
    from transformers import AutoTokenizer

    key = "tokenizer.name_or_path" if config.tokenizer.name_or_path else "model.name_or_path"
    ref = config.tokenizer.name_or_path or config.model.name_or_path
    # model.revision names a commit of the model's repository, not of a separate tokenizer's
    revision = "main" if config.tokenizer.name_or_path else config.model.revision
    with loading(key, ref):
        tokenizer = AutoTokenizer.from_pretrained(model_source(ref), revision=revision,
                                                  trust_remote_code=config.model.trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding positions carry label -100 and attention 0, so reusing eos as pad trains nothing wrong.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_config(config: RunConfig):
    from transformers import AutoConfig

    ref = config.model.name_or_path
    with loading("model.name_or_path", ref):
        return AutoConfig.from_pretrained(model_source(ref), revision=config.model.revision,
                                          trust_remote_code=config.model.trust_remote_code)


# Where model configs keep their longest sequence, in the order transformers' own models use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def model_context(model_config) -> tuple[str, int] | None:
    """(attribute, tokens): the longest sequence the model's positions cover, when its config says."""
    for config in (model_config, getattr(model_config, "text_config", None)):
        # by the name the config file uses (GPT-2's n_positions is also readable as max_position_embeddings)
        stored = config.to_dict() if hasattr(config, "to_dict") else {}
        for key in CONTEXT_KEYS:
            value = stored.get(key)
            if isinstance(value, int) and value > 0:
                return key, value
    return None


def check_context(config: RunConfig, model_config) -> None:
    found = model_context(model_config)
    if found and config.tokenizer.max_length > found[1]:
        key, context = found
        raise UserError(f"tokenizer.max_length: {config.tokenizer.max_length} is longer than the model's context "
                        f"({key} = {context} in its config); use at most {context}")


def embedding_rows(model_config) -> int | None:
    """The rows of the model's input embedding, as its config says (vocab_size; the text model's for a
    multimodal config). Resizing the embeddings updates it, so it is what the loaded weights hold."""
    for candidate in (model_config, getattr(model_config, "text_config", None)):
        rows = getattr(candidate, "vocab_size", None)
        if isinstance(rows, int) and rows > 0:
            return rows
    return None


def check_vocabulary(config: RunConfig, model_config, tokenizer) -> None:
    """Every id the tokenizer can give must have an embedding row, or the first step dies with an IndexError.

    More rows than tokens is normal (Qwen pads its embedding to a multiple of 128); fewer is a tokenizer of
    another model, or one with tokens added and no embeddings resized for them.
    """
    rows = embedding_rows(model_config)
    ids = tokenizer.get_vocab().values()
    largest = max(ids, default=-1)
    if rows is None or largest < rows:
        return
    key = "tokenizer.name_or_path" if config.tokenizer.name_or_path else "model.name_or_path"
    raise UserError(f"{key}: the tokenizer gives ids up to {largest} but the model has {rows} embedding rows "
                    f"(vocab_size in its config), so training would stop at the first such token; use the model's "
                    "own tokenizer, or, for tokens added on purpose, a model whose embeddings were resized to "
                    f"{largest + 1} rows, trained with lora.modules_to_save = [\"embed_tokens\", \"lm_head\"]")
