"""One interface, several executors.

``run(program, inputs, backend=...)`` executes a compiled :class:`~lowbit.program.Program`
on one of:

``reference``
    A functional numpy interpreter of the ISA (:mod:`lowbit.sim.reference`): bit-exact,
    no timing (``cycles`` is ``None``).
``sim``
    The transaction-level cycle-accurate simulator (:mod:`lowbit.sim.cycle`): bit-exact
    outputs and the exact cycle count of the RTL.
``rtl``
    The generated Verilog under Verilator and cocotb (:mod:`lowbit.sim.rtl`), with the
    memory image in an AXI4 memory model.
``board``
    An FPGA board (or a simulated one) running ``lowbit_board`` over its UART
    (:mod:`lowbit.boards.host`; options ``port``, ``baud``, ``timeout_s``). The memory
    latency is the bitstream's, not ``mem_latency``.

Every backend returns a :class:`RunResult` with the same fields; the ``counters`` keys that
two backends both report must agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .program import Program, ProgramError

__all__ = ["BACKENDS", "DEFAULT_MEM_LATENCY", "RunResult", "run"]

#: Cycles from an AXI address handshake to the first data beat (reads) or from the last
#: write beat to the write response, in the memory model shared by ``sim`` and ``rtl``.
DEFAULT_MEM_LATENCY = 20

BACKENDS = ("reference", "sim", "rtl", "board")


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    cycles: int | None
    counters: dict[str, int] = field(default_factory=dict)
    backend: str = ""
    seconds: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)

    def latency_us(self, clock_mhz: float) -> float | None:
        return None if self.cycles is None else self.cycles / clock_mhz


def run(program: Program, inputs: dict[str, np.ndarray] | np.ndarray, *,
        backend: str = "sim", mem_latency: int = DEFAULT_MEM_LATENCY,
        **options) -> RunResult:
    """Run ``program`` on ``inputs`` (a dict by input name, or one array for one input)."""
    if not isinstance(inputs, dict):
        if len(program.inputs) != 1:
            raise ProgramError(f"program has {len(program.inputs)} inputs; pass a dict")
        inputs = {program.inputs[0].name: inputs}
    if not isinstance(mem_latency, int) or not 1 <= mem_latency <= 1000:
        raise ProgramError(f"mem_latency must be an integer from 1 to 1000, not {mem_latency!r}")
    start = time.perf_counter()
    if backend == "reference":
        from .sim.reference import run_reference
        result = run_reference(program, inputs, **options)
    elif backend == "sim":
        from .sim.cycle import run_cycle_sim
        result = run_cycle_sim(program, inputs, mem_latency=mem_latency, **options)
    elif backend == "rtl":
        from .sim.rtl import run_rtl
        result = run_rtl(program, inputs, mem_latency=mem_latency, **options)
    elif backend == "board":
        from .boards.host import run_board
        result = run_board(program, inputs, **options)
    else:
        raise ProgramError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    result.backend = backend
    result.seconds = time.perf_counter() - start
    return result
