"""The training process: model, quantisation, LoRA, Trainer, callbacks -> events.

Importing this package is cheap; the heavy libraries load inside `execute`.

What lives where:
  session.py      execute / execute_replica: one run in this process (signals, logs, event log around the recipe)
  worker.py       the program accelerate launch runs in every process of a multi-process run
  train.py        the recipe, top to bottom: config -> model + data -> Trainer -> adapter + result event
  model.py        tokenizer, quantisation, base model and LoRA adapter, each from its part of the run file
  packing/        packed batches (collator, attention kernels, loss, the packed-or-padded choice)
  trainer.py      RunTrainer: the library's Trainer with whole checkpoints and, when packed, the packed loss
  checkpoints.py  WholeCheckpoints: each checkpoint-N staged and renamed into place, whole or absent
  callbacks.py    Trainer callbacks: events, graceful stop on a signal, divergence check, injected faults
  logs.py         library logging and warnings to train.log and the event log while a run lasts
  preflight.py    checks before training: quantisation backend, disk space for the checkpoints
"""
