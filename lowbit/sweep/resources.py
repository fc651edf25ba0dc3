"""FPGA resources of a config: a cheap analytic estimate, or synthesis/P&R on a board.

A *resource model* is a function ``model(cfg, *, board, work_dir) -> Resources`` (a dict with
the same keys is accepted too). A sweep names its model with ``resources = ...``:

``"analytic"`` (default)
    :func:`analytic_resources`, a closed-form count of the PE array, the memories and a
    fixed control overhead (documented in ``docs/sweep.md``). Milliseconds per config; no
    Fmax, so latency is taken at the config's target clock.
``"pnr"``
    Synthesis, place and route of the board target through ``lowbit.boards.build``
    (iCE40, ECP5; for Xilinx boards a yosys estimate without Fmax); latency is taken at the
    achieved Fmax. Counts are in the board's units. Needs ``boards``.
``"package.module:function"``
    Any importable function with the signature above. It is imported by name in each worker
    process (so it works with process pools and Dask clusters alike).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lowbit.config import AccelConfig

__all__ = [
    "BUILTIN_MODELS",
    "Resources",
    "ResourceModel",
    "analytic_resources",
    "check_resource_model",
    "known_boards",
    "memory_bits",
    "pnr_resources",
    "resolve_resource_model",
    "resources_from_report",
]


@dataclass(frozen=True)
class Resources:
    """Resource use of one config. ``bram`` counts 18-Kbit block RAMs; ``bram_bits`` is the
    memory the design asks for; ``fmax_mhz`` is ``None`` unless a timing analysis ran."""

    lut: int | None = None
    ff: int | None = None
    dsp: int | None = None
    bram: int | float | None = None
    bram_bits: int | None = None
    fmax_mhz: float | None = None
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


ResourceModel = Callable[..., "Resources | dict"]

# Analytic-model constants (see docs/sweep.md). Control: fetch/dispatch, decoders, the
# three units' sequencers, AXI masters, CSRs and the build wrapper, independent of the array;
# set from one ECP5 build of the tiny preset at weight_bits=2 (9200 LUT4s, of which the array,
# accumulators, store unit, queues and bus datapath the model counts below are about 2300).
_CONTROL_LUT, _CONTROL_FF = 7000, 1500
_STORE_MULT_BITS = 16           # post-processing multiplier width (lowbit.layout.MULT_BITS)
_STORE_SHIFT_LEVELS = 6         # rounding shift amount 0..63
_DSP_WIDTH = 18                 # one DSP multiplies 18 x 18
#: The analytic model counts block RAMs of this family's 18-Kbit blocks.
_BRAM_FAMILY = "ecp5"


def memory_bits(cfg: AccelConfig) -> int:
    """Bits of the accelerator's on-chip memories (``lowbit.boards.estimate.memories``)."""
    from lowbit.boards.estimate import memories

    return sum(m.bits for m in memories(cfg))


def analytic_resources(cfg: AccelConfig, *, board: str | None = None,
                       work_dir: Path | None = None) -> Resources:
    """A closed-form estimate of LUT4s, flip-flops, DSPs and 18-Kbit BRAMs.

    Meant for ranking configs against each other, not for sign-off: the constants are
    round numbers for a LUT4 fabric with carry chains, not fitted to a synthesis tool.
    """
    from lowbit.hw.pe import ACT_WIDTH, psum_width
    from lowbit.hw.store import CLAMP_BITS
    from lowbit.layout import MULT_BITS

    assert MULT_BITS == _STORE_MULT_BITS
    a, wb, acc = ACT_WIDTH, cfg.weight_bits, cfg.acc_bits
    r, c = cfg.rows, cfg.cols
    # PE: ACT_WIDTH x wb array multiplier (one LUT per partial-product bit), the acc_bits
    # partial-sum adder, a bank-select mux; registers: two weight banks, the activation,
    # the bank select and the partial sum.
    pe_lut = a * wb + acc + wb
    pe_ff = 2 * wb + a + 1 + acc
    # Depthwise FIR mode: per PE row an adder tree over its last dw_taps products at the
    # in-array partial-sum width (taps - 1 adders, a register every two levels), a bank mask
    # per product and the mode mux per column; nothing without taps.
    psum = psum_width(rows=r, weight_bits=wb, acc_bits=acc)
    t = cfg.fir_taps
    dw_lut = r * ((t - 1) * psum + t * (a + wb)) if t else 0
    dw_ff = r * (math.ceil(t / 4) + 1) * psum if t else 0
    # Array edges: input skew (triangle of activation registers) and output de-skew.
    skew_ff = (r * (r - 1) // 2) * (a + 1) + (c * (c - 1) // 2) * acc
    # Accumulator read-modify-write adders, one per column, and their pipeline registers.
    accum_lut, accum_ff = c * acc, 2 * c * acc
    # Store unit per column (hw/store.py): bias adder (sb bits), two 17 x 16 partial
    # products on DSPs, their sum and the rounding add (xm + 2 bits), the overflow flag (two
    # bits per LUT), the rounding shifter (a mux level per shift bit, each keeping the
    # CLAMP_BITS + 2^k - 1 bits later levels can bring down), the clamp comparators and the
    # thermometer decode of the shift; registers of its pipeline stages and of the
    # parameters (bias, mult, shift, rounding mask, zero point and thresholds).
    sb = max(acc, 32) + 1
    xm = sb - 1 + _STORE_MULT_BITS
    y = CLAMP_BITS
    shifter = sum(min(y + (1 << k) - 1, xm + 2) for k in range(_STORE_SHIFT_LEVELS))
    store_lut = c * (sb + 2 * (xm + 2) + (xm + 2) // 2 + shifter // 2 + 2 * y + 16
                     + (xm + 2))
    store_ff = c * (acc + sb + 2 * (17 + _STORE_MULT_BITS) + (xm + 1) + (xm + 2) + y + 2 + 8
                    + 32 + _STORE_MULT_BITS + 12 + (xm + 1) + 1 + 38)
    dsp = c * math.ceil(sb / _DSP_WIDTH)
    # Instruction queues in LUT RAM (16 x 1 per LUT), three of 128-bit entries.
    queue_lut = 3 * 128 * math.ceil(cfg.queue_depth / 16)
    # Bus-wide datapath: DMA width conversion muxes and beat registers.
    bus_lut, bus_ff = 4 * cfg.bus_bits, 3 * cfg.bus_bits
    from lowbit.boards.estimate import bram_blocks, memories

    bram = sum(m.copies * int(bram_blocks(_BRAM_FAMILY, m.depth, m.width))
               for m in memories(cfg))
    lut = r * c * pe_lut + dw_lut + accum_lut + store_lut + queue_lut + bus_lut + _CONTROL_LUT
    ff = r * c * pe_ff + dw_ff + skew_ff + accum_ff + store_ff + bus_ff + _CONTROL_FF
    return Resources(lut=lut, ff=ff, dsp=dsp, bram=bram, bram_bits=memory_bits(cfg),
                     fmax_mhz=None, source="analytic")


# -- lowbit.boards ---------------------------------------------------------------------------

def known_boards() -> set[str] | None:
    """Board names ``lowbit.boards`` knows, or ``None`` if this lowbit has no board list."""
    try:
        table = importlib.import_module("lowbit.boards.targets").BOARDS
    except (ImportError, AttributeError):
        return None
    return set(table) if isinstance(table, dict) and table else None


def resources_from_report(report, *, cfg: AccelConfig) -> Resources:
    """A :class:`Resources` from a ``lowbit.boards`` :class:`BuildReport`: used logic cells
    (the board's unit: LC, LUT4 or LUT6), FFs, DSPs and block RAMs (the board's blocks), the
    post-route Fmax (``None`` when the flow does not route, e.g. Xilinx estimates), and
    ``bram_bits`` from the config's memories."""
    def used(name):
        entry = report.resources.get(name)
        if entry is None or entry.get("used") is None:
            return None
        value = entry["used"]
        return int(value) if float(value).is_integer() else float(value)

    return Resources(lut=used("logic"), ff=used("ffs"), dsp=used("dsps"), bram=used("bram"),
                     bram_bits=memory_bits(cfg), fmax_mhz=report.fmax_mhz,
                     source=f"pnr:{report.board}:{report.resource_source}")


def pnr_resources(cfg: AccelConfig, *, board: str | None, work_dir: Path) -> Resources:
    """Synthesis, place and route of ``cfg`` on ``board`` with ``lowbit.boards.build``
    (cached by the build flow in ``work_dir/<board>/<config name>/``). A design that does
    not fit raises its ``BuildError``."""
    try:
        build = importlib.import_module("lowbit.boards.build").build
    except (ImportError, AttributeError):
        raise RuntimeError("resources = 'pnr' needs lowbit.boards.build, which this lowbit "
                           "does not have") from None
    return resources_from_report(build(board, cfg, out_dir=Path(work_dir)), cfg=cfg)


BUILTIN_MODELS: dict[str, ResourceModel] = {
    "analytic": analytic_resources,
    "pnr": pnr_resources,
}
_NEEDS_BOARD = ("pnr",)


def resolve_resource_model(name: str) -> ResourceModel:
    """The function a ``resources`` value names (a built-in or ``module:function``)."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]
    module, _, attr = name.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"resources {name!r} is not callable")
    return fn


def check_resource_model(name, boards) -> None:
    """Refuse an unknown model, or a board-based one without boards."""
    from .spec import SweepSpecError

    allowed = f"one of {', '.join(BUILTIN_MODELS)} or 'package.module:function'"
    if not isinstance(name, str) or not name:
        raise SweepSpecError(f"resources must be {allowed}, not {name!r}")
    if name in BUILTIN_MODELS:
        if name in _NEEDS_BOARD and boards == (None,):
            raise SweepSpecError(f"resources = {name!r} needs boards = [...] naming at least "
                                 f"one board")
        return
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr.isidentifier():
        raise SweepSpecError(f"resources must be {allowed}, not {name!r}")
    try:
        fn = getattr(importlib.import_module(module), attr, None)
    except ImportError as exc:
        raise SweepSpecError(f"resources = {name!r}: cannot import {module!r} ({exc})") \
            from None
    if not callable(fn):
        raise SweepSpecError(f"resources = {name!r}: {module!r} has no function {attr!r}")
