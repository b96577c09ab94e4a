"""The training recipe, top to bottom: config -> model + data -> Trainer -> adapter + events.

Read this file to know what a run does. Everything it calls is a small function
in model.py, data/ or callbacks.py that maps run-file fields onto one library call, or
the batching choice (packing/) and the Trainer it configures (trainer.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tui_lora.config.schema import RunConfig, mixed_precision
from tui_lora.runs.events import EventLog
from tui_lora.runs.folder import RunFolder

log = logging.getLogger("tui_lora")


@dataclass(frozen=True)
class TrainingOutcome:
    """How run_training ended: `interrupted`, a signal stopped it before the last step (the session reports
    that, knowing which signal it was), or finished, with `result` the result event it emitted.
    `step`: the last step trained."""

    interrupted: bool
    step: int
    result: dict | None = None


def training_arguments(config: RunConfig, folder: RunFolder, packed: bool = False):
    """TrainingArguments for the run; `packed`: batches come from packing.collator.PackedCollator."""
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
        lr_scheduler_kwargs=dict(t.lr_scheduler_kwargs),
        neftune_noise_alpha=t.neftune_noise_alpha or None,
        **_sampling(config),
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


def _sampling(config: RunConfig) -> dict:
    """collator.group_by_length as this transformers spells it: train_sampling_strategy (5.x) or group_by_length."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length" if config.collator.group_by_length else "random"}
    return {"group_by_length": config.collator.group_by_length}


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


def run_training(config: RunConfig, folder: RunFolder, events: EventLog, stop,
                 resume_from: Path | None = None) -> TrainingOutcome:
    """Train one run into `folder`; raises UserError for fixable input problems."""
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

    from tui_lora.data.encode import DEFAULT_CHAT_TEMPLATE
    from tui_lora.data.mix import example_lengths
    from tui_lora.data.prepare import prepare_datasets
    from tui_lora.engine import model as models
    from tui_lora.engine import preflight
    from tui_lora.engine.callbacks import DivergenceCheck, EventsCallback, GracefulStop, injected_fault
    from tui_lora.engine.packing.collator import PackedCollator
    from tui_lora.engine.packing.loss import PackedLoss
    from tui_lora.engine.packing.plan import choose_batching
    from tui_lora.engine.trainer import RunTrainer
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
    events.status("preparing_data", f"reading {config.data.described()}")
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
    if setup.should_save:
        models.save_initial_adapter(model, config, folder.initial_adapter)
    trainable, total = models.count_parameters(model)
    events.emit("model", trainable_parameters=trainable, total_parameters=total,
                quantization=config.quantization.mode)
    if setup.should_save:  # the disk that will hold the checkpoints, before the first hour is spent
        preflight.check_disk_space(folder.path, preflight.checkpoint_bytes(model, tokenizer_files(config)),
                                   preflight.planned_saves(config, report.train_examples, setup.world_size),
                                   warn=lambda line: events.log("warning", line))

    # padded or packed batches: the choice sets the model's attention, so it comes after loading
    plan = choose_batching(config, model, n_gpu=data_parallel_gpus(setup, model),
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
    trainer = RunTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                         processing_class=tokenizer, callbacks=callbacks,
                         data_collator=PackedCollator() if plan.packed else data_collator(config, tokenizer, model),
                         packed_loss=PackedLoss(plan.fused_head) if plan.packed else None,
                         loraplus_lr_ratio=config.lora.loraplus_lr_ratio,
                         lengths=example_lengths(train_set) if config.collator.group_by_length else None)
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our displays read the events instead
    if config.lora.init_lora_weights == "eva" and resume_from is None:  # a resumed run has its checkpoint's
        events.status("loading", "initialising the adapter from the data's activations (EVA)")
        models.initialize_eva(model, train_set, data_collator(config, tokenizer, model), config)
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    # A signal that came at or after the last step stops nothing: the run is done, so save it.
    # (the session reports the stop: it knows which signal it was)
    if stop.signal and trainer.state.global_step < trainer.state.max_steps:
        return TrainingOutcome(interrupted=True, step=trainer.state.global_step)

    events.status("saving", f"saving the adapter to {folder.adapter}")
    # Every process calls this (FSDP and DeepSpeed gather the weights from all of them); only the main process
    # writes: the adapter, the tokenizer with its chat template, and the training arguments.
    trainer.save_model(str(folder.adapter))
    if setup.should_save:
        models.convert_for_original_base(model, config, folder.adapter, folder.initial_adapter)
        from tui_lora.file_modes import share_weights_like_other_files

        share_weights_like_other_files(folder.adapter)
    metrics = {"train_loss": output.training_loss}
    if eval_set is not None:
        metrics.update(final_evaluation(trainer, config))
    stopped_early = (config.early_stopping.enabled and trainer.state.max_steps > trainer.state.global_step)
    # The Trainer's train_loss is the mean over the steps of this session only: after a resume it says so
    result = events.emit("result", adapter=str(folder.adapter), step=trainer.state.global_step,
                         stopped_early=stopped_early,
                         metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                         train_loss_steps=[reporter.resumed_from + 1, trainer.state.global_step])
    return TrainingOutcome(interrupted=False, step=trainer.state.global_step, result=result)


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
