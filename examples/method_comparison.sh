#!/bin/bash
# The README's method comparison (about 3 hours on 2 CPU cores): every method on the real MiniLM (intent
# classification and address tagging) and every method that fits on the real SmolLM2-135M-Instruct (the
# real-model demo's JSON extraction, English and Chinese), each with a learning-rate search on a validation split;
# on SmolLM2, forgetting is measured as the change in perplexity on store reports, text the task never shows.
# Then: .venv/bin/python examples/method_comparison.py runs/methods_minilm runs/methods_minilm_tag runs/methods_smollm2
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
TUNELAB=.venv/bin/tunelab

# Each method searches x0.3, x1 and x3 of its own rate: the recipe's 1e-3 for LoRA-like methods, or the one below.
$TUNELAB sweep recipes/bert/classify_lora.yaml --output-dir runs/methods_minilm --overwrite \
  --methods lora,dora,adalora,ia3,ln_tuning,bitfit,embedding,last_layers,bottleneck,prefix,prompt,full,gradual_unfreeze \
  --lr-search x0.3,x1,x3 \
  adalora:train.learning_rate=2e-3 ia3:train.learning_rate=1e-2 ln_tuning:train.learning_rate=1e-2 \
  bitfit:train.learning_rate=1e-2 last_layers:train.learning_rate=2e-4 prefix:train.learning_rate=1e-2 \
  prompt:train.learning_rate=3e-2 full:train.learning_rate=5e-5 gradual_unfreeze:train.learning_rate=5e-5

# The classification search chose the top of its grid for most methods, so tagging searches x1, x3 and x10.
# Prompt tuning and p-tuning are refused for tagging: PEFT does not align their virtual tokens with the tags.
$TUNELAB sweep recipes/bert/tag_lora.yaml --output-dir runs/methods_minilm_tag --overwrite \
  --methods lora,dora,adalora,ia3,ln_tuning,bitfit,embedding,last_layers,bottleneck,prefix,full,gradual_unfreeze \
  --lr-search x1,x3,x10 train.num_train_epochs=2 \
  adalora:train.learning_rate=2e-3 ia3:train.learning_rate=1e-2 ln_tuning:train.learning_rate=1e-2 \
  bitfit:train.learning_rate=1e-2 last_layers:train.learning_rate=2e-4 prefix:train.learning_rate=1e-2 \
  full:train.learning_rate=5e-5 gradual_unfreeze:train.learning_rate=5e-5

# SmolLM2 has no bias terms (bitfit is refused); 20 steps of 4 for every method, about 8 minutes a method with
# its search (the search runs score eval loss only, without generating).
METHODS="lora full dora adalora ia3 ln_tuning bottleneck last_layers gradual_unfreeze embedding prompt prefix"
$TUNELAB sweep recipes/smollm2/sft_lora.yaml --output-dir runs/methods_smollm2 --overwrite \
  --methods "$(echo $METHODS | tr ' ' ,)" --lr-search x0.3,x1,x3 \
  train.max_steps=20 train.per_device_train_batch_size=4 eval.max_samples=24 \
  lora:train.learning_rate=1e-3 dora:train.learning_rate=1e-3 adalora:train.learning_rate=2e-3 \
  ia3:train.learning_rate=1e-2 ln_tuning:train.learning_rate=1e-2 bottleneck:train.learning_rate=2e-3 \
  last_layers:train.learning_rate=1e-4 full:train.learning_rate=3e-5 gradual_unfreeze:train.learning_rate=3e-5 \
  embedding:train.learning_rate=3e-4 prompt:train.learning_rate=3e-2 prefix:train.learning_rate=1e-2
baseline=--baseline  # the base model's perplexity on the same text, once
for m in $METHODS; do
  $TUNELAB eval runs/methods_smollm2/$m --data builtin:reports_corpus_eval --format text --max-samples 40 $baseline
  baseline=
done
