"""Our scratch Qwen2 on a real LoRA SFT run: load_run merges the adapter, and our model, loaded from the
merged weights, must give the same logits."""

import pytest

from tunelab import parity
from tunelab.parity.qwen2 import run_dir_checks


@pytest.mark.parity
def test_scratch_qwen2_matches_merged_lora_run(sft_run):
    assert (sft_run / "adapter").is_dir() and not (sft_run / "model").exists()  # a LoRA run: merge path
    checks = run_dir_checks(sft_run)
    for check in checks:
        result = parity.run(check)
        assert result.passed, f"{check.component} vs {check.reference}: max |diff| {result.diff:.3e} > {check.tol:.0e}"
