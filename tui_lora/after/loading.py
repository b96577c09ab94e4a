"""What a run trained, and loading it the way the run did: base model, adapter, tokenizer.

A run folder holds run.toml (the resolved run file) and adapter/; its checkpoint-N/ folders
hold adapters too. An adapter folder given on its own (adapter_config.json, no run.toml
above it) names its base model in adapter_config.json; everything else about loading then
takes the run file's defaults. The model side reuses the engine's own mapping of the run
file onto from_pretrained (engine/model.py), so chat, eval and merge load what training
loaded: the same dtype, device map, trust_remote_code, attention and quantisation.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError, first_line

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class TrainedAdapter:
    adapter: Path            # the folder holding adapter_config.json
    config: RunConfig        # the run file that trained it (defaults around its base model when unknown)
    run_folder: Path | None  # None for an adapter folder given on its own

    @property
    def has_tokenizer(self) -> bool:
        return (self.adapter / "tokenizer_config.json").is_file()


def find_adapter(where: str, overrides: list[str] = ()) -> TrainedAdapter:
    """A run folder, one of its checkpoints, or an adapter folder -> what to load; UserError otherwise.

    `overrides` are --set SECTION.KEY=VALUE, applied to the run file (e.g. model.device_map=cpu to
    chat on a machine without the GPU the run trained on).
    """
    path = Path(where).expanduser().absolute()
    if not path.exists():
        raise UserError(f"{where}: no such folder; give a run folder (the run's training.output_dir) "
                        "or an adapter folder")
    if not path.is_dir():
        raise UserError(f"{where}: not a folder; give a run folder or an adapter folder")
    if (path / ADAPTER_CONFIG).is_file():
        run_file = path.parent / "run.toml"
        if run_file.is_file():  # adapter/ or checkpoint-N/ inside a run folder
            return TrainedAdapter(path, _run_config(run_file, overrides), path.parent)
        return TrainedAdapter(path, _config_around_base(path, overrides), None)
    if (path / "run.toml").is_file():
        adapter = path / "adapter"
        if not (adapter / ADAPTER_CONFIG).is_file():
            raise UserError(_no_adapter_yet(where, path))
        return TrainedAdapter(adapter, _run_config(path / "run.toml", overrides), path)
    raise UserError(f"{where}: not a run folder (no run.toml in it) nor an adapter folder (no {ADAPTER_CONFIG}); "
                    "tui-lora runs lists the run folders")


def _no_adapter_yet(where: str, path: Path) -> str:
    from tui_lora.runs.folder import RunFolder

    latest = RunFolder(path).latest_checkpoint()
    if latest is None:
        return (f"{where}: the run has no adapter yet (it saves one when it finishes) and no checkpoint; "
                f"tui-lora runs {where} says where it stands")
    return (f"{where}: the run has no adapter yet (it saves one when it finishes); its latest checkpoint "
            f"has one: use {latest} instead")


def _run_config(run_file: Path, overrides: list[str]) -> RunConfig:
    from tui_lora.config import load_run_file

    return load_run_file(run_file, list(overrides))


def _config_around_base(adapter: Path, overrides: list[str]) -> RunConfig:
    """Run-file defaults around the base model an adapter folder names (peft writes it when saving)."""
    from tui_lora.config.load import ConfigError, apply_overrides, build_config

    try:
        saved = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{adapter / ADAPTER_CONFIG}: cannot read it: {first_line(exc)}") from None
    base = saved.get("base_model_name_or_path") if isinstance(saved, dict) else None
    if not base:
        raise UserError(f"{adapter / ADAPTER_CONFIG} does not name its base model (base_model_name_or_path); "
                        "give it with --set model.name_or_path=BASE")
    model = {"name_or_path": base}
    if saved.get("revision"):
        model["revision"] = saved["revision"]
    # Rules are not checked: they are about training (a data path, a run folder), which this is not.
    config, issues = build_config(apply_overrides({"model": model}, list(overrides)))
    if issues:
        raise ConfigError(issues, str(adapter / ADAPTER_CONFIG))
    return config


# ---------------------------------------------------------------- loading


def prepare_sources(config: RunConfig, with_data: bool = False) -> RunConfig:
    """Hub environment, a hardware check, and hub ids fetched to local folders (the data only when asked).

    The hub environment goes first: huggingface_hub reads HF_ENDPOINT once, when it is imported.
    """
    from tui_lora.hub import apply_hub_environment

    apply_hub_environment(config.hub)
    from tui_lora.hub import resolve_sources

    check_device_map(config)
    if with_data:
        return resolve_sources(config)
    without_data = replace(config, data=replace(config.data, path="", sources=[]))
    return replace(resolve_sources(without_data), data=config.data)


def check_device_map(config: RunConfig) -> None:
    """A device map this machine cannot honour, as one line (the run may have trained on another machine).

    Only this part of the engine's check_hardware applies: its mixed-precision and process-count checks
    are about training.
    """
    from tui_lora.engine.model import device_map_problem

    problem = device_map_problem(config.model.device_map)
    if problem:
        raise UserError(f"model.device_map: the run used {config.model.device_map!r} but {problem}; "
                        "add --set model.device_map=cpu (or auto)")


def load_tokenizer(trained: TrainedAdapter, config: RunConfig):
    """The tokenizer and chat template saved beside the adapter (what training used), else the base model's."""
    from tui_lora.data.encode import DEFAULT_CHAT_TEMPLATE
    from tui_lora.models import load_tokenizer as base_model_tokenizer, loading

    if trained.has_tokenizer:
        from transformers import AutoTokenizer

        with loading("adapter", str(trained.adapter)):
            tokenizer = AutoTokenizer.from_pretrained(str(trained.adapter),
                                                      trust_remote_code=config.model.trust_remote_code)
    else:
        tokenizer = base_model_tokenizer(config)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE  # what training falls back to, and saves
    return tokenizer


def load_base_model(config: RunConfig, quantized: bool = True, dtype: str | None = None):
    """The base model as the run loaded it, for inference; `quantized=False` loads it unquantised
    (in `dtype`, a run-file dtype name, when given)."""
    from transformers import AutoModelForCausalLM

    from tui_lora.engine import model as models
    from tui_lora.models import loading, model_source

    kwargs = models.base_model_kwargs(config)
    if not quantized:
        kwargs.pop("quantization_config", None)
    if dtype is not None:
        kwargs["dtype"] = models.TORCH_DTYPES.get(dtype, "auto")
    with loading("model.name_or_path", config.model.name_or_path):
        model = AutoModelForCausalLM.from_pretrained(model_source(config.model.name_or_path), **kwargs)
    return model


def _mismatch(exc: BaseException) -> str:
    """The line of torch's load_state_dict report that names a layer (its first line only says "Error(s)")."""
    for line in str(exc).splitlines():
        line = line.strip().rstrip(".")
        if line.startswith(("size mismatch", "Missing key", "Unexpected key")):
            return line
    return first_line(exc)


def attach_adapter(base, trained: TrainedAdapter):
    """The base model with the trained adapter on it, in eval mode (no dropout)."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base, str(trained.adapter))
    except (ValueError, KeyError, RuntimeError) as exc:
        # a different base than the adapter was trained on shows as mismatched shapes or missing modules
        raise UserError(f"{trained.adapter}: the adapter does not fit the base model "
                        f"{trained.config.model.name_or_path}: {_mismatch(exc)}") from None
    model.eval()
    return model


def load_adapter_model(trained: TrainedAdapter):
    """(model with the adapter, tokenizer), loaded as the run loaded them."""
    config = prepare_sources(trained.config)
    tokenizer = load_tokenizer(trained, config)
    return attach_adapter(load_base_model(config), trained), tokenizer


def quiet_libraries() -> None:
    """For the commands here: no library progress bars or advice on the terminal, only our own lines.

    Loading a trained adapter is routine; the warnings the libraries print while doing it (tied
    embeddings, deprecations, optional CPU kernels) are about training or merging choices already made.
    """
    import os

    # Environment switches, because they must be set before the libraries are imported (and the hub's
    # environment, HF_ENDPOINT and the rest, must be applied before that too: importing them here would freeze it).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow this one too
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("transformers", "peft", "bitsandbytes", "accelerate", "datasets", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
