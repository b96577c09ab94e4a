#!/usr/bin/env bash
# GPU smoke check of the CUDA-only paths (bf16, 4-bit QLoRA with paged 8-bit AdamW and gradient
# checkpointing, 8-bit QLoRA with fp16) on the tiny model. Needs a CUDA machine with the package's
# dependencies importable; writes each run's events and train.log under ${OUT:-/tmp/gpu-smoke}.
set -u
out=${OUT:-/tmp/gpu-smoke}
mkdir -p "$out"
python3 - <<'PY'
import torch, transformers, peft, datasets, bitsandbytes
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("transformers", transformers.__version__, "peft", peft.__version__, "datasets", datasets.__version__, "bitsandbytes", bitsandbytes.__version__)
PY
run() {
  name=$1; shift
  start=$(date +%s%N)
  python3 -m tui_lora.cli run demo --plain --set training.output_dir=/tmp/gpu-smoke/$name \
    --set model.device_map=auto --set training.max_steps=40 --set training.eval_steps=20 --set training.save_steps=20 "$@" \
    > "$out/$name.out" 2>&1
  rc=$?
  end=$(date +%s%N)
  printf '%-10s rc=%s  %ss  %s\n' "$name" "$rc" "$(( (end - start) / 1000000000 ))" "$(grep -E '^done|^error|^run failed' "$out/$name.out" | head -2 | tr '\n' ' ')"
  python3 - "$name" <<'PY'
import json, sys
events = [json.loads(l) for l in open(f"/tmp/gpu-smoke/{sys.argv[1]}/events.jsonl")]
model = [e for e in events if e["type"] == "model"]
train = [e for e in events if e["type"] == "train"]
if model: print("   ", model[0])
if train: print("    steps", len(train), "last", {k: train[-1][k] for k in ("step", "loss", "tokens_per_second")})
PY
  cp /tmp/gpu-smoke/$name/train.log "$out/$name.train.log" 2>/dev/null
}
rm -rf /tmp/gpu-smoke/*/
run bf16-lora --set model.dtype=bfloat16 --set training.bf16=true
run qlora-4bit --set model.dtype=bfloat16 --set quantization.load_in_4bit=true --set quantization.compute_dtype=bfloat16 \
  --set training.bf16=true --set training.optim=paged_adamw_8bit --set training.gradient_checkpointing=true
run qlora-8bit --set model.dtype=float16 --set quantization.load_in_8bit=true --set training.fp16=true
run fp16-save-head --set model.dtype=float16 --set training.fp16=true --set 'lora.target_modules=["q_proj","v_proj"]' \
  --set 'lora.modules_to_save=["lm_head"]'
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
