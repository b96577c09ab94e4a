"""The model card (README.md) that `tui-lora push` uploads: what was trained, on what, how it went, how to load it.

The metadata block is the one the hubs read, written by huggingface_hub's ModelCardData: base_model (a hub id
only, the hub links it), library_name (peft for an adapter, transformers for a merged model, which is also how
the hub tells the two apart), and the tui-lora tag. That tag and library_name are how push recognises a repo
that an earlier push of the same kind filled (`card_kind`). The numbers come from the run's event log, read with
the readers `tui-lora runs` uses.

Local paths stay out of the card: a base model or data file on this machine is named by its file name only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui_lora import __version__
from tui_lora.assets import is_builtin
from tui_lora.config.schema import RunConfig
from tui_lora.hub import is_hub_id

TAG = "tui-lora"
# what a push uploads -> the library that loads it (the card's library_name)
LIBRARY = {"adapter": "peft", "merged": "transformers"}
WHAT = {"adapter": "LoRA adapter", "merged": "merged model"}


@dataclass
class RunMetrics:
    step: int
    max_steps: int | None
    train_loss: float | None       # the last logged training loss
    eval_loss: float | None        # the last evaluation (the final one, when the run evaluates)
    best_eval_loss: float | None
    best_eval_step: int | None
    state: str


def run_metrics(run_folder: Path) -> RunMetrics:
    from tui_lora.runs.events import read_events
    from tui_lora.runs.status import read_status

    status = read_status(run_folder)
    evaluations = [(e["eval_loss"], e.get("step")) for e in read_events(status.folder / "events.jsonl")
                   if e.get("type") == "eval" and isinstance(e.get("eval_loss"), (int, float))]
    best = min(evaluations, key=lambda pair: pair[0]) if evaluations else (None, None)
    return RunMetrics(status.step, status.max_steps, status.loss, status.eval_loss, best[0], best[1], status.state)


def public_name(ref: str) -> str:
    """A model or data reference fit for a public page: hub ids and builtins as they are, a local path by its name."""
    if is_hub_id(ref) or is_builtin(ref):
        return ref
    return f"{Path(ref).name} (a local file or folder)"


def _public_data(config: RunConfig) -> str:
    """The data sources in a few words (DataSettings.described), local paths by their names."""
    return config.data.with_each("path", [public_name(path) for _, path in config.data.keyed_paths()]).described()


def model_card(config: RunConfig, kind: str, repo_id: str, metrics: RunMetrics, modelscope: bool = False) -> str:
    """The README.md for `repo_id`: metadata block, what it is, the run's key settings and results, how to load it."""
    from huggingface_hub import ModelCardData

    base = config.model.name_or_path
    metadata = ModelCardData(
        base_model=base if is_hub_id(base) else None, library_name=LIBRARY[kind], pipeline_tag="text-generation",
        tags=[TAG, "lora", *(["qlora"] if config.quantization.mode != "none" else []),
              *(["merged"] if kind == "merged" else [])],
        datasets=[path for _, path in config.data.keyed_paths() if is_hub_id(path)] or None)
    what = (f"A {WHAT[kind]} for `{public_name(base)}`" if kind == "adapter" else
            f"`{public_name(base)}` with a LoRA adapter folded into its weights (`tui-lora merge`)")
    sections = [f"---\n{metadata.to_yaml()}\n---", f"# {repo_id.split('/')[-1]}",
                f"{what}, trained on {_public_data(config)} with tui-lora {__version__}.",
                "## Training\n\n" + _table("setting", _settings(config)),
                "## Results\n\nFrom the run's event log.\n\n" + _table("measure", _results(metrics)),
                "## Use it\n\n" + _how_to_load(config, kind, repo_id, modelscope),
                f"Made by tui-lora {__version__} (`tui-lora push`)."]
    return "\n\n".join(sections) + "\n"


def card_kind(text: str) -> str | None:
    """"adapter" or "merged" when `text` is a card tui-lora push wrote, else None."""
    if not text.startswith("---"):
        return None
    from huggingface_hub import ModelCard

    data = ModelCard(text, ignore_metadata_errors=True).data
    if TAG not in (data.tags or []):
        return None
    return next((kind for kind, library in LIBRARY.items() if data.library_name == library), None)


def _settings(config: RunConfig) -> list[tuple[str, str]]:
    lora, training, quantization = config.lora, config.training, config.quantization
    targets = lora.target_modules if isinstance(lora.target_modules, str) else ", ".join(lora.target_modules)
    quantised = {"4-bit": f"4-bit {quantization.quant_type} (QLoRA)", "8-bit": "8-bit (QLoRA)"}
    length = (f"{training.max_steps} steps" if training.max_steps > 0 else f"{training.num_train_epochs:g} epochs")
    batch = f"{training.per_device_train_batch_size} per device × {training.gradient_accumulation_steps} accumulated"
    if config.launch.num_processes > 1:
        batch += f" × {config.launch.num_processes} processes"
    revision = f" (revision {config.model.revision})" if config.model.revision != "main" else ""
    return [("base model", f"`{public_name(config.model.name_or_path)}`{revision}"),
            ("data", _public_data(config)),
            ("LoRA", f"r={lora.r}, alpha={lora.lora_alpha}, dropout={lora.lora_dropout:g}, on {targets}"),
            ("quantisation", quantised.get(quantization.mode, "none")),
            ("learning rate", f"{training.learning_rate:g} ({training.lr_scheduler_type})"),
            ("length", length), ("max length", f"{config.tokenizer.max_length} tokens"), ("batch size", batch),
            ("packing", config.collator.packing)]


def _results(metrics: RunMetrics) -> list[tuple[str, str]]:
    def loss(value):
        return f"{value:.4f}" if value is not None else "-"

    steps = f"{metrics.step} of {metrics.max_steps}" if metrics.max_steps else str(metrics.step)
    best = loss(metrics.best_eval_loss) + (f" (step {metrics.best_eval_step})" if metrics.best_eval_step else "")
    return [("steps", steps), ("last train loss", loss(metrics.train_loss)),
            ("last eval loss", loss(metrics.eval_loss)), ("best eval loss", best)]


def _table(what: str, rows: list[tuple[str, str]]) -> str:
    return "\n".join([f"| {what} | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def _how_to_load(config: RunConfig, kind: str, repo_id: str, modelscope: bool) -> str:
    where, fetch = f'"{repo_id}"', ""
    if modelscope:  # transformers and peft read from the Hugging Face hub; ModelScope's files come down first
        fetch, where = f'from modelscope import snapshot_download\nfolder = snapshot_download("{repo_id}")\n', "folder"
    base = config.model.name_or_path
    if kind == "merged":
        code = (f"{fetch}from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"model = AutoModelForCausalLM.from_pretrained({where})  # a plain transformers model: no peft")
    elif is_hub_id(base):  # adapter_config.json names it, so peft fetches the base itself
        code = (f"{fetch}from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
                f"model = AutoPeftModelForCausalLM.from_pretrained({where})  # the base model, then the adapter")
    else:  # adapter_config.json names a folder on the machine that trained it
        home = "ships inside the tui-lora package (tui_lora/assets)" if is_builtin(base) else "is not on a hub"
        code = (f"{fetch}from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"# the base model, {public_name(base)}, {home}: load it from where you have it\n"
                f'base = AutoModelForCausalLM.from_pretrained("path/to/{Path(base.removeprefix("builtin:")).name}")\n'
                f"model = PeftModel.from_pretrained(base, {where})")
    if kind == "adapter" and config.quantization.mode != "none":
        code += ("\n# it trained on a quantised base: from_pretrained(..., "
                 "quantization_config=BitsAndBytesConfig(...)) loads it the same way")
    chat = (f"tokenizer = AutoTokenizer.from_pretrained({where})  # with the chat template it trained on\n\n"
            'messages = [{"role": "user", "content": "Hello!"}]\n'
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
            'return_dict=True)\n'
            'reply = model.generate(**inputs, max_new_tokens=128)[0][inputs["input_ids"].shape[1]:]\n'
            'print(tokenizer.decode(reply, skip_special_tokens=True))')
    return f"```python\n{code}\n{chat}\n```"
