"""Parity checks: each from-scratch piece in `tunelab.scratch` against the library it reimplements.

Every module in this package defines `CHECKS`, a list of `Check`. A check builds the reference
(torch, transformers, peft or TRL) and our version from the same weights and inputs, and returns
the largest absolute difference between their outputs (for token sequences: the number of tokens
that differ). `tunelab parity` runs them all and prints a table; tests/test_parity.py runs each one
as a pytest test.

Where the outputs' scale varies (trained logits reach 30, random ones 1; bfloat16 keeps 8 bits of mantissa),
a check sets `rtol` and its run returns the pair (ours, reference) instead of a number: it passes when every
element has |ours - ref| <= tol + rtol * |ref|, torch.testing.assert_close's rule, and its row shows
"tol + rtol·|ref|" as the tolerance.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Check:
    component: str  # what of ours is checked, e.g. "qwen2 logits"
    reference: str  # what it is compared with, e.g. "transformers Qwen2ForCausalLM"
    # returns the max absolute difference (or count of differing tokens); with rtol, the pair (ours, reference)
    run: Callable[[], float | tuple[torch.Tensor, torch.Tensor]]
    tol: float  # passes when the difference is <= tol (with rtol: the absolute part of the allowance)
    rtol: float | None = None  # passes when every |ours - ref| <= tol + rtol * |ref|

    @property
    def tolerance(self) -> str:
        return f"{self.tol:.0e}" if self.rtol is None else f"{self.tol:.0e} + {self.rtol:.1e}·|ref|"


@dataclass(frozen=True)
class Result:
    check: Check
    diff: float  # max |ours - ref|, the table's figure
    seconds: float
    over: float | None = None  # with rtol: max of |ours - ref| - rtol * |ref|, compared with tol

    @property
    def passed(self) -> bool:
        return (self.diff if self.over is None else self.over) <= self.check.tol  # NaN fails


# The README's reading order: from attention to Qwen2 and the other families, then the fine-tuning methods.
# A module not listed here still runs, after these.
READING_ORDER = ["transformer", "losses", "qwen2", "rope_scaling", "alibi", "moe", "mla", "mamba", "rwkv", "decoding",
                 "bert", "t5", "clip", "vit", "mae", "dino", "lora", "dora", "ia3", "bitfit", "bottleneck", "prefix",
                 "dpo", "reward", "grpo", "kto"]


def all_checks() -> list[Check]:
    names = [info.name for info in pkgutil.iter_modules(__path__)]
    names.sort(key=lambda n: (READING_ORDER.index(n) if n in READING_ORDER else len(READING_ORDER), n))
    checks = []
    for name in names:
        checks.extend(importlib.import_module(f"{__name__}.{name}").CHECKS)
    return checks


def run(check: Check) -> Result:
    start = time.perf_counter()
    out = check.run()
    seconds = time.perf_counter() - start
    if check.rtol is None:
        return Result(check, float(out), seconds)
    ours, ref = (t.detach().double() for t in out)  # float64: the allowance itself must not round
    if ours.shape != ref.shape:  # broadcasting would compare the wrong elements
        return Result(check, math.inf, seconds, over=math.inf)
    err = (ours - ref).abs()
    return Result(check, err.max().item(), seconds, over=(err - check.rtol * ref.abs()).max().item())


def table(results: list[Result]) -> str:
    rows = [("component", "reference", "max |diff|", "tolerance", "result")]
    rows += [(r.check.component, r.check.reference, f"{r.diff:.2e}", r.check.tolerance,
              "pass" if r.passed else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
