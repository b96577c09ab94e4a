"""The training recipe, top to bottom: config -> model + data -> Trainer -> adapter + events.

Read this file to know what a run does. Everything it calls is a small function
in model.py, data/ or callbacks.py that maps run-file fields onto one library call.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import asdict
from pathlib import Path

from tui_lora.config.schema import RunConfig, mixed_precision
from tui_lora.runs.events import EventLog
from tui_lora.runs.folder import RunFolder

log = logging.getLogger("tui_lora")


def training_arguments(config: RunConfig, folder: RunFolder, packed: bool = False):
    """TrainingArguments for the run; `packed`: batches come from batching.PackedCollator."""
    import torch
    from transformers import TrainingArguments

    t = config.training
    evaluating = t.eval_strategy != "no"
    precision = mixed_precision(config)
    # transformers 5.x renamed gradient checkpointing to activation checkpointing; the old name still
    # works but warns. The run file keeps the name users know; the library gets the current keyword.
    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                     else "gradient_checkpointing")
    return TrainingArguments(
        output_dir=str(folder.path),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler_type,
        # transformers 5 takes a ratio in [0, 1) or a step count through the one warmup_steps keyword
        warmup_steps=t.warmup_steps or t.warmup_ratio,
        optim=t.optim,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        **{checkpointing: t.gradient_checkpointing,
           f"{checkpointing}_kwargs": {"use_reentrant": False} if t.gradient_checkpointing else None},
        max_grad_norm=t.max_grad_norm,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        # Without a GPU, several processes (accelerate launch) must meet over gloo on the CPU; for one process
        # this changes nothing, the CPU is where it trains anyway.
        use_cpu=not torch.cuda.is_available(),
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps if evaluating else None,
        eval_on_start=t.eval_on_start and evaluating,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit or None,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to=[r for r in t.report_to if r != "none"] or "none",
        load_best_model_at_end=t.load_best_model_at_end,
        metric_for_best_model=t.metric_for_best_model if evaluating else None,
        seed=t.seed,
        data_seed=t.seed,
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only earns a warning
        # a packed row has no padding; counting "non-padding" there would skip real tokens equal to the pad id
        include_num_input_tokens_seen="all" if packed else "non_padding",
        logging_nan_inf_filter=False,  # a NaN loss must show as NaN (DivergenceCheck stops the run), not as 0
        disable_tqdm=True,
        label_names=["labels"],
    )


def data_collator(config: RunConfig, tokenizer, model):
    from transformers import DataCollatorForSeq2Seq

    c = config.collator
    return DataCollatorForSeq2Seq(
        tokenizer=tokenizer,
        model=model,
        padding=c.padding,
        max_length=config.tokenizer.max_length if c.padding == "max_length" else None,
        pad_to_multiple_of=c.pad_to_multiple_of or None,
        label_pad_token_id=c.label_pad_token_id,
        return_tensors="pt",
    )


def data_parallel_gpus(args, model) -> int:
    """GPUs the Trainer would split each batch over in this one process (torch DataParallel): its
    n_gpu, unless the model is already spread over several GPUs by device_map (then it uses one)."""
    devices = {d for d in (getattr(model, "hf_device_map", None) or {}).values() if d not in ("cpu", "disk")}
    return 1 if len(devices) > 1 else args.n_gpu


def run_training(config: RunConfig, folder: RunFolder, events: EventLog, stop, resume_from: Path | None = None) -> dict:
    """Train one run into `folder`. Returns the result event; raises UserError for fixable input problems."""
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

    from tui_lora.data.encode import DEFAULT_CHAT_TEMPLATE
    from tui_lora.data.prepare import prepare_datasets
    from tui_lora.engine import batching
    from tui_lora.engine import model as models
    from tui_lora.engine import preflight
    from tui_lora.engine.checkpoints import RunTrainer
    from tui_lora.engine.callbacks import DivergenceCheck, EventsCallback, GracefulStop, injected_fault
    from tui_lora.hub import resolve_sources
    from tui_lora.models import check_context, check_vocabulary, load_model_config, load_tokenizer

    os.environ["TENSORBOARD_LOGGING_DIR"] = config.training.logging_dir or str(folder.tensorboard)

    models.check_hardware(config)
    preflight.check_quantization_backend(config)
    # With several processes (launch.num_processes > 1) each needs the model and the data: the first process on
    # each machine fetches and tokenises while the others wait, then they find everything in the caches instead
    # of writing the same files at once. Building the arguments sets up the processes' group; alone it is a no-op.
    setup = training_arguments(config, folder)
    if config.model.trust_remote_code:  # said before anything is fetched, through logging: train.log and events
        log.warning(f"trust_remote_code is on: Python code shipped with {config.model.name_or_path} runs on this "
                    "machine, with your permissions, when the model loads")
    with setup.main_process_first(desc="fetching the model and data"):
        config = resolve_sources(config, events.emit)  # hub ids -> local folders, downloading what is missing
    events.status("loading", f"reading the configuration of {config.model.name_or_path}")
    model_config = load_model_config(config)
    models.check_target_modules(config, *models.module_names(model_config, config.model.trust_remote_code))
    check_context(config, model_config)

    tokenizer = load_tokenizer(config)
    check_vocabulary(config, model_config, tokenizer)
    events.status("preparing_data", f"reading {config.data.path}")
    with setup.main_process_first(desc="preparing the data"):
        train_set, eval_set, report = prepare_datasets(config, tokenizer)
    if report.used_default_template:
        events.log("warning", "the tokenizer has no chat template; using tui-lora's default ChatML template")
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE  # saved with the adapter: chat as it was trained
    for number, reason in report.bad_records:
        events.log("warning", f"skipped record {number}: {reason}")
    events.emit("data", **asdict(report))

    events.status("loading", f"loading {config.model.name_or_path}")
    model = models.load_model(config)
    set_seed(config.training.seed)  # the adapter's random initialisation is the seed's too, not the clock's
    model = models.apply_lora(model, config)
    trainable, total = models.count_parameters(model)
    events.emit("model", trainable_parameters=trainable, total_parameters=total,
                quantization=config.quantization.mode)
    if setup.should_save:  # the disk that will hold the checkpoints, before the first hour is spent
        preflight.check_disk_space(folder.path, preflight.checkpoint_bytes(model, tokenizer_files(config)),
                                   preflight.planned_saves(config, report.train_examples, setup.world_size),
                                   warn=lambda line: events.log("warning", line))

    # padded or packed batches: the choice sets the model's attention, so it comes after loading
    plan = batching.choose_batching(config, model, n_gpu=data_parallel_gpus(setup, model),
                                    log=lambda line: events.log("info", line))
    log.info(plan.description)
    events.log("info", plan.description)
    args = training_arguments(config, folder, packed=plan.packed)

    early = (EarlyStoppingCallback(early_stopping_patience=config.early_stopping.patience,
                                   early_stopping_threshold=config.early_stopping.threshold)
             if config.early_stopping.enabled else None)
    # EventsCallback comes after early stopping, so the counter it reports is already updated.
    reporter = EventsCallback(events, early)
    callbacks = [GracefulStop(stop), DivergenceCheck(), *([early] if early else []), reporter, *injected_fault()]
    common = dict(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer,
                  callbacks=callbacks)
    if plan.packed:
        trainer = batching.PackedTrainer(data_collator=batching.PackedCollator(),
                                         fused_head=plan.fused_head, **common)
    else:
        trainer = RunTrainer(data_collator=data_collator(config, tokenizer, model), **common)
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our displays read the events instead
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    # A signal that came at or after the last step stops nothing: the run is done, so save it.
    # (the session reports the stop: it knows which signal it was)
    if stop.signal and trainer.state.global_step < trainer.state.max_steps:
        return {"interrupted": True, "step": trainer.state.global_step}

    events.status("saving", f"saving the adapter to {folder.adapter}")
    # Every process calls this (FSDP and DeepSpeed gather the weights from all of them); only the main process
    # writes: the adapter, the tokenizer with its chat template, and the training arguments.
    trainer.save_model(str(folder.adapter))
    if setup.should_save:
        from tui_lora.file_modes import share_weights_like_other_files

        share_weights_like_other_files(folder.adapter)
    metrics = {"train_loss": output.training_loss}
    if eval_set is not None:
        metrics.update(final_evaluation(trainer, config))
    stopped_early = (config.early_stopping.enabled and trainer.state.max_steps > trainer.state.global_step)
    # The Trainer's train_loss is the mean over the steps of this session only: after a resume it says so
    return events.emit("result", adapter=str(folder.adapter), step=trainer.state.global_step,
                       stopped_early=stopped_early,
                       metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                       train_loss_steps=[reporter.resumed_from + 1, trainer.state.global_step])


def tokenizer_files(config: RunConfig) -> list[Path]:
    """The tokenizer's files, which every checkpoint and the adapter carry a copy of."""
    from tui_lora.models import model_source

    folder = Path(model_source(config.tokenizer.name_or_path or config.model.name_or_path))
    patterns = ("tokenizer*", "vocab*", "merges.txt", "*.model", "special_tokens_map.json", "chat_template*")
    return [path for pattern in patterns for path in folder.glob(pattern)] if folder.is_dir() else []


def final_evaluation(trainer, config: RunConfig) -> dict:
    """Metrics of the adapter as saved: reuse an evaluation already made at the last step, else run one."""
    state = trainer.state
    if not config.training.load_best_model_at_end:  # otherwise the saved weights may be an earlier step's
        for entry in reversed(state.log_history):
            if "eval_loss" in entry:
                if entry.get("step") == state.global_step:
                    return entry
                break
    return trainer.evaluate()


class _EventsHandler(logging.Handler):
    """Warnings and errors from the libraries become log events the user sees, each message once."""

    # Library chatter that says nothing to someone training an adapter: kept in train.log only.
    QUIET = ("Failed to load CPU gemm_4bit_forward", "`is_gradient_checkpointing` is deprecated",
             "Setting `save_embedding_layers` to `True`",
             # peft (0.18+) warns whenever an adapter sits on a tied layer (the demo adapts lm_head, tied to the
             # embeddings) without ensure_weight_tying. Adapting only the output side is what the run file asks
             # for, and the "complications when merging" it warns of are handled: `tui-lora merge` unties
             # the embeddings first (after/merge.py). ensure_weight_tying would put the adapter on both sides.
             "`ensure_weight_tying` is not set")

    def __init__(self, events: EventLog):
        super().__init__(logging.WARNING)
        self.events = events
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().strip().splitlines()[0]
            if record.name == "py.warnings":  # "path/file.py:12: UserWarning: text" -> "UserWarning: text"
                message = re.sub(r"^.*?:\d+: (?=\w+: )", "", message)
            if message in self.seen or any(quiet in message for quiet in self.QUIET):
                return
            self.seen.add(message)
            self.events.log(record.levelname.lower(), message)
        except Exception:  # a log line must never break training
            pass


def capture_logs(folder: RunFolder, events: EventLog) -> list[tuple[logging.Logger, logging.Handler]]:
    """Send library logging and Python warnings to train.log, and warnings to the event log."""
    import transformers

    transformers.utils.logging.disable_default_handler()  # its stderr lines would tear the progress bars
    transformers.utils.logging.set_verbosity_info()
    bars = _quiet_progress_bars()
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", message=".*kernels.*")
    # datasets prints its INFO lines ("Using custom data configuration ...") through a stderr handler of its
    # own; at INFO they would bury the progress lines, so they go to train.log only while the run lasts.
    quiet = [(logging.getLogger("datasets"), handler) for handler in logging.getLogger("datasets").handlers
             if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)]
    for logger, handler in quiet:
        logger.removeHandler(handler)
    file_handler = logging.FileHandler(folder.log, encoding="utf-8")
    file_handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    events_handler = _EventsHandler(events)
    attached = []
    for name in ("transformers", "peft", "datasets", "accelerate", "bitsandbytes", "huggingface_hub", "tui_lora",
                 "py.warnings"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for handler in (file_handler, events_handler):
            logger.addHandler(handler)
            attached.append((logger, handler))
    return attached + [(logger, _Restore(handler)) for logger, handler in quiet] + bars


def _quiet_progress_bars() -> list:
    """Turn off the libraries' own tqdm bars for the run; returns what release_logs turns back on.

    On a terminal they tear the run's progress display ("Loading weights: 100%|…|" under the bar); in a
    log they are cursor moves and carriage returns. What matters of them reaches the user as the run's
    own events: downloads (hub.fetch), loading and data preparation (status events).
    """
    import datasets
    import huggingface_hub.utils
    import transformers

    switches = [(transformers.utils.logging.is_progress_bar_enabled, transformers.utils.logging.disable_progress_bar,
                 transformers.utils.logging.enable_progress_bar),
                (datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
                (lambda: not huggingface_hub.utils.are_progress_bars_disabled(),
                 huggingface_hub.utils.disable_progress_bars, huggingface_hub.utils.enable_progress_bars)]
    restore = []
    for enabled, disable, enable in switches:
        if enabled():
            disable()
            restore.append((None, _Restore(enable)))
    return restore


class _RedactingFormatter(logging.Formatter):
    """train.log's lines with any hub token blanked out, whichever library logged it."""

    def format(self, record: logging.LogRecord) -> str:
        from tui_lora.secret_guard import redact

        return redact(super().format(record))


class _Restore:
    """What capture_logs took away, for release_logs to give back: a logging handler, or (paired with no
    logger) the function that turns a library's progress bars on again."""

    def __init__(self, handler: logging.Handler):
        self.handler = handler


def release_logs(attached: list) -> None:
    for logger, handler in attached:
        if isinstance(handler, _Restore) and logger is None:
            handler.handler()  # a progress bar switch turned back on
        elif isinstance(handler, _Restore):
            logger.addHandler(handler.handler)
        else:
            logger.removeHandler(handler)
            handler.close()

