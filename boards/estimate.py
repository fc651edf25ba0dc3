"""Resource accounting: analytic lower bounds before synthesis, cell counts after it.

The build flow checks fit three times, each cheaper than the next step:

1. :func:`precheck` (instant, from the config): flip-flops the PE array cannot do without
   and block RAMs the scratchpads need. Both are lower bounds, so a design it rejects cannot
   fit; 16x16 on an iCE40UP5K fails here, before yosys starts.
2. :func:`usage_from_stat` (after yosys): sound lower bounds from the synthesized cells
   (an iCE40 logic cell holds one LUT4 and one FF, so LCs >= max(LUT4, FF), and so on).
3. nextpnr's own utilisation, if packing still finds the device too small.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowbit.config import AccelConfig

from .targets import Board

__all__ = ["Memory", "Usage", "array_ff_lower_bound", "bram_blocks", "memories",
           "precheck_usage", "usage_from_nextpnr", "usage_from_stat"]

#: (data width, depth) modes of one block RAM per family. xc7 counts RAMB18 halves.
_BRAM_MODES = {
    "ice40": ((16, 256), (8, 512), (4, 1024), (2, 2048)),
    "ecp5": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),
    "xc7": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),
}
#: Blocks of _BRAM_MODES per counted block (two RAMB18 make one RAMB36).
_BRAM_PER_UNIT = {"ice40": 1, "ecp5": 1, "xc7": 2}


@dataclass(frozen=True)
class Memory:
    """One on-chip memory of the accelerator, as the config sizes it."""

    param: str      # the config field that sets its depth
    name: str
    depth: int
    width: int
    copies: int     # read ports beyond one duplicate a 1R1W block RAM

    @property
    def bits(self) -> int:
        return self.depth * self.width * self.copies


def memories(cfg: AccelConfig) -> list[Memory]:
    """The accelerator's four memories (see ``docs/architecture.md``, Memories)."""
    act_word = max(cfg.act_line_bits, cfg.bus_bits)
    prm_word = max(cfg.param_line_bits, cfg.bus_bits)
    return [
        Memory("act_depth", "activation scratchpad",
               cfg.act_depth * cfg.act_line_bits // act_word, act_word, 1),
        Memory("weight_tiles", "weight scratchpad", cfg.weight_words, cfg.bus_bits, 1),
        Memory("param_depth", "parameter memory",
               cfg.param_depth * cfg.param_line_bits // prm_word, prm_word, 1),
        # Two read ports (read-modify-write and store) and one write port.
        Memory("acc_depth", "accumulator memory", cfg.acc_depth, cfg.cols * cfg.acc_bits, 2),
    ]


def bram_blocks(family: str, depth: int, width: int) -> float:
    """Block RAMs (the board's unit) for a ``depth x width`` memory, best single aspect."""
    best = min(-(-width // w) * -(-depth // d) for w, d in _BRAM_MODES[family])
    return best / _BRAM_PER_UNIT[family]


def array_ff_lower_bound(cfg: AccelConfig) -> int:
    """Flip-flops the PE array needs at the least.

    Per PE: two weight banks and the activation register (distinct signals, never merged);
    the partial sum after row ``i`` carries at least the significant bits of a sum of
    ``i + 1`` products (:func:`lowbit.hw.pe.psum_width`). The bank-select chain is left out:
    PEs on one anti-diagonal share it after synthesis merges equal registers.
    """
    from lowbit.hw.pe import ACT_WIDTH, psum_width

    per_pe = 2 * cfg.weight_bits + ACT_WIDTH
    psum = sum(psum_width(rows=i + 1, weight_bits=cfg.weight_bits, acc_bits=cfg.acc_bits)
               for i in range(cfg.rows))
    return cfg.pes * per_pe + cfg.cols * psum


@dataclass
class Usage:
    """Used resources in the board's units; ``exact`` is False for lower bounds."""

    logic: float
    ffs: int
    dsps: int
    bram: float
    source: str
    exact: bool
    cells: dict

    def table(self, board: Board) -> dict:
        r = board.resources
        return {
            "logic": {"used": self.logic, "available": r.logic, "unit": r.logic_unit},
            "ffs": {"used": self.ffs, "available": r.ffs, "unit": "FF"},
            "dsps": {"used": self.dsps, "available": r.dsps, "unit": r.dsp_unit},
            "bram": {"used": self.bram, "available": r.bram_blocks, "unit": r.bram_unit},
        }

    def overflows(self, board: Board) -> list[tuple[str, float, int]]:
        """(resource, used, available) for every resource over capacity, worst first."""
        out = [(k, v["used"], v["available"]) for k, v in self.table(board).items()
               if v["used"] > v["available"]]
        return sorted(out, key=lambda t: -t[1] / max(t[2], 1))


def precheck_usage(cfg: AccelConfig, board: Board, top: str) -> Usage:
    """Lower bounds from the config alone (no tools)."""
    fam = board.family
    ffs = array_ff_lower_bound(cfg) if top in ("accel", "array", "board") else 0
    bram = 0.0
    if top in ("accel", "board"):
        bram = sum(m.copies * bram_blocks(fam, m.depth, m.width) for m in memories(cfg)
                   if _in_bram(board, m))
    # iCE40: every FF needs a logic cell of its own.
    logic = ffs if fam == "ice40" else 0
    return Usage(logic=logic, ffs=ffs, dsps=0, bram=bram, source="estimate", exact=False,
                 cells={})


def _in_bram(board: Board, mem: Memory) -> bool:
    """Memories too big for the device's LUT RAM (or FFs) go to block RAM."""
    r = board.resources
    spare = r.lutram_kbits * 1024 if r.lutram_kbits else r.ffs // 2
    return mem.depth * mem.width * mem.copies > spare // 4


def _count(cells: dict, *names: str) -> int:
    return sum(cells.get(n, 0) for n in names)


def usage_from_stat(stat: dict, board: Board) -> Usage:
    """Used resources from yosys ``stat -json`` of the flattened, mapped design."""
    mods = stat.get("design") or next(iter(stat["modules"].values()))
    cells = {k: v for k, v in mods["num_cells_by_type"].items() if not k.startswith("$")}
    fam = board.family
    ffs = sum(v for k, v in cells.items() if k.startswith(("SB_DFF", "TRELLIS_FF", "FD")))
    if fam == "ice40":
        logic = max(cells.get("SB_LUT4", 0), ffs)
        dsps, bram = cells.get("SB_MAC16", 0), cells.get("SB_RAM40_4K", 0)
    elif fam == "ecp5":
        # A CCU2C is two LUT4 slots; a TRELLIS_DPR16X4 takes a slice pair (as nextpnr packs).
        logic = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) \
            + 8 * cells.get("TRELLIS_DPR16X4", 0)
        dsps = _count(cells, "MULT18X18D")
        bram = cells.get("DP16KD", 0)
    else:
        luts = sum(cells.get(f"LUT{k}", 0) for k in range(1, 7))
        lutram = (_count(cells, "SRL16E", "SRLC32E", "RAM32X1S", "RAM64X1S")
                  + 2 * _count(cells, "RAM32X1D", "RAM64X1D", "RAM128X1S")
                  + 4 * _count(cells, "RAM32M", "RAM64M", "RAM128X1D", "RAM256X1S"))
        logic = luts + lutram
        dsps = _count(cells, "DSP48E1")
        bram = cells.get("RAMB36E1", 0) + 0.5 * cells.get("RAMB18E1", 0)
    return Usage(logic=logic, ffs=ffs, dsps=dsps, bram=bram, source="yosys", exact=False,
                 cells=dict(sorted(cells.items())))


#: nextpnr bel types per family: (logic, ffs, dsps, bram).
_NEXTPNR_BELS = {
    "ice40": ("ICESTORM_LC", None, "ICESTORM_DSP", "ICESTORM_RAM"),
    "ecp5": ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD"),
}


def usage_from_nextpnr(util: dict, board: Board, synth: Usage) -> Usage:
    """Used resources from nextpnr's report (``utilization``), FFs from synthesis on iCE40."""
    logic, ff, dsp, bram = _NEXTPNR_BELS[board.family]

    def used(bel):
        return util.get(bel, {}).get("used", 0)
    return Usage(logic=used(logic), ffs=used(ff) if ff else synth.ffs, dsps=used(dsp),
                 bram=used(bram), source="nextpnr", exact=True, cells=synth.cells)
