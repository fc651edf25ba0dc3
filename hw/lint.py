"""Verilator lint of the generated Verilog, with every waiver documented.

``lowbit verilog`` output passes ``verilator --lint-only -Wall`` with exactly these warning
classes waived. Each is a property of how Amaranth's Verilog backend writes code whose
semantics Amaranth already fixes (checked by simulation), not a design problem:
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lowbit.config import AccelConfig

from .top import TOP_NAME, generate_verilog

__all__ = ["LINT_WAIVERS", "lint_config"]

LINT_WAIVERS: dict[str, str] = {
    "WIDTHEXPAND": "Amaranth emits operands at their natural width and relies on Verilog's "
                   "context-determined extension (e.g. `acc + a*w`); widths follow Amaranth's "
                   "arithmetic rules.",
    "WIDTHTRUNC": "assignments to narrower targets are Amaranth's defined truncation "
                  "(two's-complement wrap of accumulators, address counters).",
    "CASEINCOMPLETE": "Amaranth Switch/FSM lowers to `case` without a default where the "
                      "default is 'keep the value'.",
    "PROCASSINIT": "Amaranth declares registers with their reset value (`reg x = 0;`) and also "
                   "assigns them in processes.",
    "UNUSEDSIGNAL": "units decode only the instruction fields they need, and Amaranth keeps "
                    "intermediate names that Verilator sees as partially unused.",
    "DECLFILENAME": "the output file name is the user's choice, the module is `lowbit_top`.",
}


def lint_config(cfg: AccelConfig) -> None:
    """Generate and lint ``cfg``'s Verilog; raises VerilatorLintError with the output."""
    from lowbit.sim.toolchain import lint_verilog

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accel.v"
        path.write_text(generate_verilog(cfg))
        lint_verilog(path, TOP_NAME, waivers=list(LINT_WAIVERS))
