"""Each parity check (src/tunelab/parity) as a pytest test: our from-scratch code against the library."""

import pytest
import torch

from tunelab import parity

CHECKS = parity.all_checks()


@pytest.mark.parity
@pytest.mark.parametrize("check", CHECKS, ids=[c.component for c in CHECKS])
def test_parity(check):
    torch.manual_seed(0)
    result = parity.run(check)
    assert result.passed, f"{check.component} vs {check.reference}: max |diff| {result.diff:.3e} > {check.tol:.0e}"
