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


@pytest.mark.unit
def test_parity_command_prints_a_table_and_fails_on_a_failed_check(capsys, monkeypatch):
    from tunelab.cli import main

    assert main(["parity", "-k", "lora"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["component", "reference"] and "lora merge" in out
    broken = parity.Check("lora broken", "a deliberate mismatch", lambda: 1e-3, 1e-5)
    monkeypatch.setattr(parity, "all_checks", lambda: [broken])
    assert main(["parity"]) == 1
    assert "FAIL" in capsys.readouterr().out
