"""Parity checks: each from-scratch piece in `tunelab.scratch` against the library it reimplements.

Every module in this package defines `CHECKS`, a list of `Check`. A check builds the reference
(torch, transformers, peft or TRL) and our version from the same weights and inputs, and returns
the largest absolute difference between their outputs (for token sequences: the number of tokens
that differ). `tunelab parity` runs them all and prints a table; tests/test_parity.py runs each one
as a pytest test.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Check:
    component: str  # what of ours is checked, e.g. "qwen2 logits"
    reference: str  # what it is compared with, e.g. "transformers Qwen2ForCausalLM"
    run: Callable[[], float]  # returns the max absolute difference (or count of differing tokens)
    tol: float  # passes when the difference is <= tol


@dataclass(frozen=True)
class Result:
    check: Check
    diff: float
    seconds: float

    @property
    def passed(self) -> bool:
        return self.diff <= self.check.tol  # NaN fails


# The README's reading order: from attention to Qwen2 and the other families, then the fine-tuning methods.
# A module not listed here still runs, after these.
READING_ORDER = ["transformer", "losses", "qwen2", "rope_scaling", "moe", "decoding", "bert", "t5", "clip", "lora",
                 "dora", "ia3", "bitfit", "bottleneck", "prefix", "dpo", "reward", "grpo", "kto"]


def all_checks() -> list[Check]:
    names = [info.name for info in pkgutil.iter_modules(__path__)]
    names.sort(key=lambda n: (READING_ORDER.index(n) if n in READING_ORDER else len(READING_ORDER), n))
    checks = []
    for name in names:
        checks.extend(importlib.import_module(f"{__name__}.{name}").CHECKS)
    return checks


def run(check: Check) -> Result:
    start = time.perf_counter()
    diff = float(check.run())
    return Result(check, diff, time.perf_counter() - start)


def table(results: list[Result]) -> str:
    rows = [("component", "reference", "max |diff|", "tolerance", "result")]
    rows += [(r.check.component, r.check.reference, f"{r.diff:.2e}", f"{r.check.tol:.0e}",
              "pass" if r.passed else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
