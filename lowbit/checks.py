"""Static checks of a program against its config: every access in range and aligned."""

from __future__ import annotations

from . import isa
from .isa import LoadTarget, Opcode

__all__ = ["check_program", "memory_beats"]


def memory_beats(cfg, target: LoadTarget) -> int:
    """Capacity of a LOAD target in bus beats."""
    if target == LoadTarget.ACT:
        return cfg.act_depth * cfg.act_line_bits // cfg.bus_bits
    if target == LoadTarget.WEIGHT:
        return cfg.weight_words
    return cfg.param_depth * cfg.param_line_bits // cfg.bus_bits


def check_program(prog) -> None:
    from .program import ProgramError

    cfg = prog.config
    beat = cfg.beat_bytes
    n = len(prog.instrs)
    if n == 0 or prog.instrs[-1].opcode != Opcode.END:
        raise ProgramError("program must end with END")
    code_end = prog.prog_addr + n * isa.INSTR_BYTES
    if prog.prog_addr % beat or code_end > cfg.mem_bytes:
        raise ProgramError(f"code at {prog.prog_addr:#x}..{code_end:#x} must be beat aligned "
                           f"and inside mem_bytes={cfg.mem_bytes:#x}")
    for addr, data in prog.segments:
        if addr < 0 or addr + len(data) > cfg.mem_bytes:
            raise ProgramError(f"memory segment {addr:#x}+{len(data)} is outside "
                               f"mem_bytes={cfg.mem_bytes:#x}")
    for i, ins in enumerate(prog.instrs):
        def bad(msg, i=i, ins=ins):
            raise ProgramError(f"instruction {i} ({ins!r}): {msg}")

        if ins.opcode == Opcode.END and i != n - 1:
            bad("END must be the last instruction")
        if ins.opcode == Opcode.LOAD:
            if ins.target not in tuple(LoadTarget):
                bad(f"target must be one of {[t.value for t in LoadTarget]}")
            if ins.rows < 1 or ins.row_beats < 1:
                bad("rows and row_beats must be at least 1")
            cap = memory_beats(cfg, LoadTarget(ins.target))
            if ins.sp_addr + ins.rows * ins.row_beats > cap:
                bad(f"writes beats {ins.sp_addr}..{ins.sp_addr + ins.rows * ins.row_beats - 1}"
                    f" of a {LoadTarget(ins.target).name} memory of {cap} beats")
            if ins.dram_addr % beat or ins.stride % beat:
                bad(f"dram_addr and stride must be multiples of the {beat}-byte beat")
            last = ins.dram_addr + (ins.rows - 1) * ins.stride + ins.row_beats * beat
            if last > cfg.mem_bytes:
                bad(f"reads up to {last:#x}, beyond mem_bytes={cfg.mem_bytes:#x}")
        elif ins.opcode == Opcode.COMPUTE:
            if ins.rows < 1:
                bad("rows must be at least 1")
            lines = ins.rows + cfg.dw_tail * ins.depthwise
            if ins.act_addr + lines > cfg.act_depth:
                bad(f"reads activation lines up to {ins.act_addr + lines - 1}, "
                    f"act_depth is {cfg.act_depth}")
            written = 1 if ins.reduce else ins.rows
            if ins.acc_addr + written > cfg.acc_depth:
                bad(f"writes accumulator lines up to {ins.acc_addr + written - 1}, "
                    f"acc_depth is {cfg.acc_depth}")
            if ins.weight_addr + cfg.weight_tile_beats > cfg.weight_words:
                bad(f"weight tile at word {ins.weight_addr} overruns the "
                    f"{cfg.weight_words}-word weight scratchpad")
        elif ins.opcode == Opcode.STORE:
            if ins.rows < 1:
                bad("rows must be at least 1")
            if ins.acc_addr + ins.rows > cfg.acc_depth:
                bad(f"reads accumulator lines up to {ins.acc_addr + ins.rows - 1}, "
                    f"acc_depth is {cfg.acc_depth}")
            if ins.param_addr >= cfg.param_depth:
                bad(f"param_addr must be below param_depth={cfg.param_depth}")
            if not 2 <= ins.out_bits <= 8:
                bad(f"out_bits must be from 2 to 8, not {ins.out_bits}")
            nbytes = ins.rows * cfg.out_line_bits // 8
            if ins.dram_addr % beat or nbytes % beat:
                bad(f"stores {nbytes} bytes at {ins.dram_addr:#x}; both must be multiples "
                    f"of the {beat}-byte beat")
            if ins.dram_addr + nbytes > cfg.mem_bytes:
                bad(f"writes beyond mem_bytes={cfg.mem_bytes:#x}")
        elif ins.opcode == Opcode.SYNC:
            if ins.get("unit") not in tuple(isa.Unit):
                bad(f"unit must be one of {[u.value for u in isa.Unit]}")
        unit = ins.unit
        if unit == isa.Unit.LOAD and ins.pop_prev | ins.push_prev:
            bad("the load unit has no previous unit (pop_prev/push_prev must be 0)")
        if unit == isa.Unit.STORE and ins.pop_next | ins.push_next:
            bad("the store unit has no next unit (pop_next/push_next must be 0)")
        if ins.opcode == Opcode.END and (ins.pop_prev | ins.pop_next | ins.push_prev
                                         | ins.push_next):
            bad("END carries no tokens")
