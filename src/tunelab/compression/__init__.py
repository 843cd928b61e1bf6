"""Model compression for causal LM runs: a smaller student taught by a teacher, fewer bits, fewer weights.

- distill.py: `causal_lm.distill`, a recipe stage. The student (the recipe's model, optionally cut to fewer layers)
  learns from the teacher's next-token distribution as well as from the data (Hinton et al., 2015).
- quantize.py: `tunelab quantize RUN OUT --method int8|nf4|dynamic-int8` (bitsandbytes, torch dynamic int8).
- prune.py: `tunelab prune RUN OUT --sparsity S [--structured heads|channels]` (magnitude pruning).
- runs.py: what quantize and prune share: the source run (a LoRA run merged first), its scores before and
  after, and the run directory they write, which `tunelab eval`, `generate` and `compare` read.
"""
