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
    assert result.passed, f"{check.component} vs {check.reference}: max |diff| {result.diff:.3e} ({check.tolerance})"


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


@pytest.mark.unit
def test_rtol_check_allows_each_element_its_own_share_of_the_reference():
    """atol 1e-5 + rtol 1e-3 * |ref|: a reference of 100 may be 0.1 off, one of 0.01 only 2e-5."""
    ref = torch.tensor([100.0, 0.01])
    ok = parity.Check("scaled", "by hand", lambda: (ref + torch.tensor([0.09, 1.5e-5]), ref), 1e-5, rtol=1e-3)
    small_off = parity.Check("scaled", "by hand", lambda: (ref + torch.tensor([0.0, 3e-5]), ref), 1e-5, rtol=1e-3)
    misshapen = parity.Check("scaled", "by hand", lambda: (ref, ref[:1]), 1e-5, rtol=1e-3)
    result = parity.run(ok)
    assert result.passed and result.diff == pytest.approx(0.09, rel=1e-3)
    assert not parity.run(small_off).passed and not parity.run(misshapen).passed
    assert "1e-05 + 1.0e-03·|ref|" in parity.table([result])
