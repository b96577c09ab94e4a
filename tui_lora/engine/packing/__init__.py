"""How a step's examples reach the model: packed without padding where that is exact, padded elsewhere.

Packed ("padding-free"): the examples of a batch are laid end to end in one row. Position ids
restart at 0 for every example and the attention runs inside each example only, from the example
boundaries (cu_seq_lens), so no token attends across a boundary and no compute goes to padding.
The loss reads the model's output only at positions whose next token is trained and turns it into
logits a chunk at a time, so full-vocabulary logits are never made for every position. Per-example
losses equal the padded path's (tests/functional/test_packing.py checks it on the tiny model); the
loss is normalised the same way: summed over the trained tokens of the whole optimizer step and
divided by their number (the Trainer's num_items_in_batch).

Which attention keeps examples apart depends on the machine and the model:
  flash-attention varlen   the model was loaded with flash_attention_2/3 (transformers' own path)
  torch varlen             sdpa on a CUDA GPU in float16/bfloat16 (torch.nn.attention.varlen)
  sdpa per example         sdpa anywhere else (the CPU): one causal SDPA call per example
Each candidate is checked on three made-up examples against the padded path before it is used; when
none agrees, or packing cannot be exact for this model (eager attention, sliding windows shorter
than max_length, logit soft-capping, several GPUs in one process), batches are padded as before and
the run log says why.

What lives where:
  collator.py  PackedCollator (examples -> one row) and packed_model_inputs (the boundaries the model reads)
  kernels.py   the attention functions that stay inside each example, registered with transformers
               when a plan first sets a model to one of them
  loss.py      the loss on trained positions only (PackedLoss, the chunked output layer)
  check.py     disagreement: a candidate attention against the padded path on made-up examples
  plan.py      choose_batching: packed or padded for this run, and the line the run log shows

Importing this package loads nothing; the modules import torch and transformers.
"""
