"""Static checks of a program against its config: every access in range and aligned."""

from __future__ import annotations

from . import isa
from .isa import LoadTarget, Opcode

__all__ = ["check_program", "memory_beats", "store_groups"]


def memory_beats(cfg, target: LoadTarget) -> int:
    """Capacity of a LOAD target in bus beats."""
    if target == LoadTarget.ACT:
        return cfg.act_depth * cfg.act_line_bits // cfg.bus_bits
    if target == LoadTarget.WEIGHT:
        return cfg.weight_words
    return cfg.param_depth * cfg.param_line_bits // cfg.bus_bits


def store_groups(cfg, ins) -> tuple[int, tuple[tuple[int, int], ...]]:
    """``(rows, groups)`` of a 2-D STORE (an :class:`~lowbit.isa.Instr` or a dict of its
    fields): the lines per group and, per group in order, its first accumulator line and the
    byte address of its first line (``docs/isa.md``)."""
    if isinstance(ins, dict):
        def get(name):
            return ins.get(name, 0)
    else:
        def get(name):
            return getattr(ins, name)
    acc, dram = get("acc_addr"), get("dram_addr")
    acc_pitch = get("acc_pitch")
    dram_pitch = get("dram_pitch") * (cfg.out_line_bits // 8)
    return get("rows"), tuple((acc + g * acc_pitch, dram + g * dram_pitch)
                              for g in range(get("reps_m1") + 1))


def _check_store(cfg, ins, bad) -> None:
    beat, line = cfg.beat_bytes, cfg.out_line_bits // 8
    reps = ins.reps_m1 + 1
    if ins.rows < 1:
        bad("rows must be at least 1")
    if reps * ins.rows > isa.STORE_MAX_LINES:
        bad(f"writes {reps} groups of {ins.rows} lines = {reps * ins.rows} lines; a STORE "
            f"writes at most {isa.STORE_MAX_LINES}")
    last_acc = ins.acc_addr + (reps - 1) * ins.acc_pitch + ins.rows - 1
    if last_acc >= cfg.acc_depth:
        bad(f"reads accumulator lines up to {last_acc}, acc_depth is {cfg.acc_depth}")
    if ins.param_addr >= cfg.param_depth:
        bad(f"param_addr must be below param_depth={cfg.param_depth}")
    if not 2 <= ins.out_bits <= 8:
        bad(f"out_bits must be from 2 to 8, not {ins.out_bits}")
    nbytes = ins.rows * line
    if nbytes % beat:
        bad(f"a group of {ins.rows} lines is {nbytes} bytes; it must be a multiple of the "
            f"{beat}-byte beat")
    if ins.dram_addr % beat:
        bad(f"dram_addr {ins.dram_addr:#x} must be a multiple of the {beat}-byte beat")
    pitch = ins.dram_pitch * line
    if reps > 1 and pitch % beat:
        bad(f"dram_pitch {ins.dram_pitch} lines is {pitch} bytes; with {reps} groups it must "
            f"be a multiple of the {beat}-byte beat")
    end = ins.dram_addr + (reps - 1) * pitch + nbytes
    if end > cfg.mem_bytes:
        bad(f"writes up to {end:#x} (group {reps - 1}), beyond mem_bytes={cfg.mem_bytes:#x}")


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
            if ins.depthwise and cfg.fir_taps == 0:
                bad("depthwise must be 0: this config has no depthwise FIR mode (dw_taps = 0)")
            reach_max = max(cfg.fir_taps - 1, 0) if ins.depthwise else 0
            if ins.dw_reach > reach_max:
                bad(f"dw_reach must be from 0 to {reach_max} (dw_taps - 1 with depthwise, 0 "
                    f"without), not {ins.dw_reach}")
            lines = ins.rows + ins.dw_reach * ins.depthwise
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
            _check_store(cfg, ins, bad)
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
