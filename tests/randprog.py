"""Random, deadlock-free instruction streams for timing tests (data is not meaningful)."""

import numpy as np

from lowbit import isa
from lowbit.checks import memory_beats
from lowbit.isa import LoadTarget, Opcode, Unit
from lowbit.program import Program

KINDS = ("load", "load", "compute", "compute", "store", "sync")

def store_2d(cfg, rng, rows: int, base: int, max_reps: int) -> dict:
    """2-D fields of a random STORE of ``rows`` lines per group whose group 0 may start at
    ``base``: one group (40 %; no ``acc_addr`` then, the caller's stands) or up to
    ``max_reps``, with accumulator pitches from 0 (every group reads the same lines) to
    beyond ``rows``, DRAM pitches from 0 (groups overwrite each other) to a few KiB, often
    (group 0, group 1) just before a 4 KiB boundary so that groups split into two bursts;
    every group whole beats, inside memory."""
    line = cfg.out_line_bits // 8
    lpb = max(1, cfg.beat_bytes // line)            # dram_pitch keeps groups beat aligned
    if max_reps < 2 or rng.random() < 0.4:
        return dict(dram_addr=base)
    reps = int(rng.integers(2, max_reps + 1))
    acc_pitch = int(rng.integers(0, min(rows + 9, (cfg.acc_depth - rows) // (reps - 1) + 1)))
    if rng.random() < 0.5:
        base = (base // 4096 + 1) * 4096 - cfg.beat_bytes * int(rng.integers(1, 4))
    cross = (4096 + 4095 - base % 4096) // (line * lpb)       # group 1 ends past 4 KiB
    dram_pitch = lpb * (cross if rng.random() < 0.4 else int(rng.choice(
        [0, rows // lpb, rows // lpb + int(rng.integers(1, 9)),
         int(rng.integers(1, 3 * 4096 // (line * lpb)))])))
    base = min(base, cfg.mem_bytes - (reps - 1) * dram_pitch * line - rows * line)
    base -= base % cfg.beat_bytes
    top = cfg.acc_depth - (reps - 1) * acc_pitch - rows
    return dict(acc_addr=int(rng.integers(0, top + 1)), dram_addr=base, reps_m1=reps - 1,
                acc_pitch=acc_pitch, dram_pitch=dram_pitch)


def random_program(cfg, seed: int, *, length: int = 24, load_runs: bool = False,
                   kinds=KINDS, max_store_rows: int = 12, max_store_reps: int = 5) -> Program:
    """With ``load_runs``, some items are runs of 2 to 12 back-to-back small LOADs to
    rotating targets, with tokens, so several LOADs are in flight at once. ``kinds`` is the
    pool each item's kind is drawn from (repeat a kind to make it likelier); a STORE has at
    most ``max_store_rows`` lines (times lines per beat) per group and at most
    ``max_store_reps`` groups (:func:`store_2d`, drawn from a second generator so that the
    rest of the program does not depend on them)."""
    rng = np.random.default_rng(seed)
    rng2d = np.random.default_rng([seed, 2])
    B = cfg.beat_bytes
    counts = {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}
    instrs = []

    def pop(name):
        if counts[name] and rng.random() < 0.6:
            counts[name] -= 1
            return 1
        return 0

    def push(name):
        if rng.random() < 0.5:
            counts[name] += 1
            return 1
        return 0

    def load(target, rows, row_beats):
        cap = memory_beats(cfg, target)
        rows = min(rows, cap)
        row_beats = max(1, min(row_beats, cap // rows))
        sp = int(rng.integers(0, cap - rows * row_beats + 1))
        base = int(rng.integers(0, (cfg.mem_bytes // 4) // B)) * B
        stride = int(rng.integers(row_beats, row_beats + 300)) * B
        return isa.make(Opcode.LOAD, target=target, sp_addr=sp, rows=rows,
                        row_beats=row_beats, dram_addr=base, stride=stride,
                        pop_next=pop("c2l"), push_next=push("l2c"))

    for _ in range(length):
        kind = rng.choice(list(kinds) + ["loads"] * (2 * load_runs))
        if kind == "loads":
            first = int(rng.integers(0, 3))
            for k in range(int(rng.integers(2, 13))):
                instrs.append(load(LoadTarget((first + k) % 3), int(rng.integers(1, 3)),
                                   int(rng.integers(1, 2 * cfg.max_burst + 2))))
        elif kind == "load":
            target = LoadTarget(int(rng.integers(0, 3)))
            cap = memory_beats(cfg, target)
            rows = int(rng.integers(1, 4))
            row_beats = int(rng.integers(1, max(2, min(40, cap // rows))))
            sp = int(rng.integers(0, cap - rows * row_beats + 1))
            base = int(rng.integers(0, (cfg.mem_bytes // 4) // B)) * B
            stride = int(rng.integers(row_beats, row_beats + 300)) * B
            instrs.append(isa.make(Opcode.LOAD, target=target, sp_addr=sp, rows=rows,
                                   row_beats=row_beats, dram_addr=base, stride=stride,
                                   pop_next=pop("c2l"), push_next=push("l2c")))
        elif kind == "compute":
            rows = int(rng.choice([1, 2, 3, 5, 8, 17, 40]))
            dw = int(rng.random() < 0.3)
            red = int(rng.random() < 0.2)
            reach = int(rng.integers(0, cfg.cols)) if dw else 0
            lines = rows + reach
            instrs.append(isa.make(
                Opcode.COMPUTE, act_addr=int(rng.integers(0, cfg.act_depth - lines + 1)),
                weight_addr=int(rng.integers(0, cfg.weight_words - cfg.weight_tile_beats + 1)),
                acc_addr=int(rng.integers(0, cfg.acc_depth - (1 if red else rows) + 1)),
                rows=rows, reduce=red,
                accumulate=int(rng.integers(0, 2)), act_unsigned=int(rng.integers(0, 2)),
                mul_m1=int(rng.integers(0, 256)), acc_max=int(rng.integers(0, 2)),
                depthwise=dw, dw_reach=reach,
                pop_prev=pop("l2c"), pop_next=pop("s2c"),
                push_prev=push("c2l"), push_next=push("c2s")))
        elif kind == "store":
            lpb = max(1, cfg.bus_bits // cfg.out_line_bits)
            rows = int(rng.integers(1, max(2, min(max_store_rows, cfg.acc_depth // lpb)))) * lpb
            base = int(rng.integers((cfg.mem_bytes // 2) // B, cfg.mem_bytes // B - 4096)) * B
            acc_addr = int(rng.integers(0, cfg.acc_depth - rows + 1))
            shape = store_2d(cfg, rng2d, rows, base, max_store_reps)
            shape.setdefault("acc_addr", acc_addr)
            instrs.append(isa.make(
                Opcode.STORE, rows=rows, **shape,
                param_addr=int(rng.integers(0, cfg.param_depth)), relu=int(rng.integers(0, 2)),
                out_bits=int(rng.integers(2, 9)), out_unsigned=int(rng.integers(0, 2)),
                pop_prev=pop("c2s"), push_prev=push("s2c")))
        else:
            unit = Unit(int(rng.integers(0, 3)))
            f = {"unit": unit}
            if unit == Unit.LOAD:
                f.update(pop_next=pop("c2l"), push_next=push("l2c"))
            elif unit == Unit.COMPUTE:
                f.update(pop_prev=pop("l2c"), pop_next=pop("s2c"), push_prev=push("c2l"),
                         push_next=push("c2s"))
            else:
                f.update(pop_prev=pop("c2s"), push_prev=push("s2c"))
            instrs.append(isa.make(Opcode.SYNC, **f))
    instrs.append(isa.make(Opcode.END))
    return Program(config=cfg, instrs=instrs, segments=[], inputs=[], outputs=[])
