#!/bin/bash
# The README's compression tables and docs/prune_curve.png: distillation, quantization and pruning on the tiny
# default and on the real SmolLM2-135M-Instruct (about 2 hours on 2 CPU cores). Every command that is timed runs
# under `flock /tmp/tunelab-bench.lock`, so that timed runs never overlap.
# Each model's runs are then timed again in one process (examples/compression_speed.py), so that their speeds
# are comparable. Then: .venv/bin/python examples/compression.py runs/compression
# Only one part: examples/compression.sh tiny   or   examples/compression.sh smollm2
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ROOT=runs/compression
PART=${1:-all}
timed() { flock /tmp/tunelab-bench.lock .venv/bin/tunelab "$@"; }

# compress SOURCE DIR MAX_SAMPLES UNSTRUCTURED CHANNELS HEADS: the three quantizations and the pruning sweep
compress() {
  local source=$1 dir=$2 n=$3
  for method in int8 nf4 dynamic-int8; do
    timed quantize "$source" "$dir/quantize-$method" --method "$method" --max-samples "$n" --overwrite
  done
  for s in $4; do timed prune "$source" "$dir/prune-unstructured-$s" --sparsity "$s" --max-samples "$n" --overwrite; done
  for s in $5; do timed prune "$source" "$dir/prune-channels-$s" --sparsity "$s" --structured channels \
                    --max-samples "$n" --overwrite; done
  for s in $6; do timed prune "$source" "$dir/prune-heads-$s" --sparsity "$s" --structured heads \
                    --max-samples "$n" --overwrite; done
  flock /tmp/tunelab-bench.lock .venv/bin/python examples/compression_speed.py "$dir"
}

if [[ $PART == all || $PART == tiny ]]; then
  # Distillation: the 2-layer student from scratch with the teacher (alpha 0.5) and without it (alpha 0).
  timed train qwen2/distill_full --output-dir $ROOT/tiny/distill --overwrite
  timed train qwen2/distill_full --output-dir $ROOT/tiny/distill-alone --overwrite train.alpha=0
  # Quantization and pruning of a full SFT run of the tiny default (held-out questions, exact match).
  timed train qwen2/sft_full --output-dir $ROOT/tiny/sft_full --overwrite
  compress $ROOT/tiny/sft_full $ROOT/tiny 200 "0.1 0.3 0.5 0.7 0.9" "0.25 0.5 0.75" "0.5"
fi
if [[ $PART == all || $PART == smollm2 ]]; then
  timed train smollm2/distill_full --output-dir $ROOT/smollm2/distill --overwrite
  timed train smollm2/distill_full --output-dir $ROOT/smollm2/distill-alone --overwrite train.alpha=0
  # The real-model demo's LoRA SFT run (JSON extraction): quantize and prune merge its adapter first.
  timed train smollm2/sft_lora --output-dir $ROOT/smollm2/sft_lora --overwrite
  compress $ROOT/smollm2/sft_lora $ROOT/smollm2 16 "0.3 0.5" "0.25 0.5" "0.34"
fi
