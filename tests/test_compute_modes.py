"""COMPUTE's scaled accumulation (``mul_m1``), max accumulation (``acc_max``), depthwise
FIR mode (``depthwise``, ``dw_reach``) and row reduction (``reduce``): the RTL equals the reference
interpreter and an independent numpy model, and the simulator's cycles equal the RTL's."""

import re

import numpy as np
import pytest

from lowbit import isa, layout
from lowbit.config import PRESETS
from lowbit.isa import LoadTarget, Opcode
from lowbit.program import Program, TensorRef
from lowbit.sim.cycle import simulate_timing
from lowbit.sim.reference import run_reference

from amaranth_top import run_top

Y_ADDR = 0x4000


def _setup(cfg, acts, tiles, shift):
    """Segments (weight tiles, identity requantization with ``shift``, activations) and the
    three LOADs that bring them in, the last one pushing to compute; tile ``k`` is at weight
    word ``k * weight_tile_beats``."""
    R = cfg.rows
    w_addr, p_addr, a_addr = 0x1000, 0x2000, 0x3000
    segments = [(w_addr, b"".join(layout.pack_weight_tile(cfg, t) for t in tiles)),
                (p_addr, layout.pack_params(np.zeros(R), np.ones(R), np.full(R, shift))),
                (a_addr, layout.pack_act(cfg, acts))]
    loads = [
        isa.make(Opcode.LOAD, target=LoadTarget.WEIGHT, rows=1,
                 row_beats=cfg.weight_tile_beats * len(tiles), dram_addr=w_addr),
        isa.make(Opcode.LOAD, target=LoadTarget.PARAM, rows=1,
                 row_beats=cfg.param_line_bits // cfg.bus_bits, dram_addr=p_addr),
        isa.make(Opcode.LOAD, target=LoadTarget.ACT, rows=1,
                 row_beats=len(acts) * R * 8 // cfg.bus_bits, dram_addr=a_addr, push_next=1),
    ]
    return segments, loads


def _check(cfg, prog, want, latency):
    """Reference and RTL (amaranth.sim) outputs equal ``want``; sim cycles equal RTL's."""
    assert np.array_equal(run_reference(prog, {}).outputs["y"], want)
    mem, rtl = run_top(cfg, prog.memory_image(), 0, len(prog.instrs), latency=latency)
    assert np.array_equal(prog.read_outputs(mem)["y"], want)
    assert simulate_timing(prog, mem_latency=latency)[0] == rtl["cycles"]


def _program(cfg, rng, m, steps):
    """act (2*m + cols, R) and one random weight tile per step; COMPUTE steps (accumulate,
    acc_max, mul_m1, half, depthwise). A depthwise step gets a random ``dw_reach`` and its
    tile zeros in the columns beyond it (the mode's contract)."""
    R, C = cfg.rows, cfg.cols
    wb = cfg.weight_bits
    acts = rng.integers(-128, 128, (2 * m + C, R))
    tiles = [rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (R, C)) for _ in steps]
    reaches = [int(rng.integers(0, cfg.fir_taps)) if dw else 0 for *_, dw in steps]
    for tile, reach, (*_, dw) in zip(tiles, reaches, steps, strict=True):
        if dw:
            tile[:, :C - 1 - reach] = 0
    segments, instrs = _setup(cfg, acts, tiles, 8)
    for k, (accumulate, acc_max, mul_m1, half, dw) in enumerate(steps):
        instrs.append(isa.make(Opcode.COMPUTE, act_addr=half * m, rows=m, accumulate=accumulate,
                               acc_max=acc_max, mul_m1=mul_m1, depthwise=dw,
                               dw_reach=reaches[k], weight_addr=k * cfg.weight_tile_beats,
                               pop_prev=int(k == 0), push_next=int(k == len(steps) - 1)))
    instrs += [isa.make(Opcode.STORE, rows=m, out_bits=8, dram_addr=Y_ADDR, pop_prev=1),
               isa.make(Opcode.END)]
    prog = Program(config=cfg, instrs=instrs, segments=segments, inputs=[],
                   outputs=[TensorRef(name="y", addr=Y_ADDR, rows=m, cols=R)])
    # Independent model.
    acc = None
    for (accumulate, acc_max, mul_m1, half, dw), tile, reach in zip(steps, tiles, reaches,
                                                                   strict=True):
        a0 = half * m
        if dw:   # lane i of line m sums lane i of lines m .. m+reach, weights from the right
            prod = sum(acts[a0 + o:a0 + o + m] * tile[:, C - 1 - o][None, :]
                       for o in range(reach + 1))
        else:
            prod = acts[a0:a0 + m] @ tile
        r = layout.wrap(prod * (mul_m1 + 1), 32)
        if not accumulate:
            acc = r
        elif acc_max:
            acc = np.maximum(acc, r)
        else:
            acc = layout.wrap(acc + r, 32)
    want = layout.requantize(acc, 0, 1, 8, relu=False, out_bits=8, out_unsigned=False)
    return prog, want


@pytest.mark.parametrize("seed", range(3))
def test_scaled_and_max_accumulation(seed):
    cfg = PRESETS["tiny"]
    rng = np.random.default_rng(seed)
    steps = [(0, 0, int(rng.integers(0, 256)), 0, 0),
             (1, 1, int(rng.integers(0, 256)), 1, 0),
             (1, 0, int(rng.integers(0, 256)), 0, 0),
             (1, 1, 0, 1, 0)]
    prog, want = _program(cfg, rng, 8, steps)
    _check(cfg, prog, want, 5)


#: Configs with fewer FIR taps than columns (``dw_taps``).
FEW_TAPS = {"tiny-3taps": PRESETS["tiny"].replace(dw_taps=3),
            "8x8-5taps": PRESETS["8x8"].replace(dw_taps=5)}


@pytest.mark.parametrize("name,seed", [("tiny", 0), ("tiny", 1), ("8x8", 2),
                                       ("tiny-3taps", 5), ("8x8-5taps", 6)])
def test_depthwise_fir_mode(name, seed):
    """Depthwise passes with random reaches (below ``dw_taps``) mixed with matrix passes,
    back to back (the trailing lines of one flow into the array while the next instruction
    streams, and the next tile's nonzero columns must not leak into the last results)."""
    cfg = FEW_TAPS.get(name) or PRESETS[name]
    rng = np.random.default_rng(seed)
    steps = [(0, 0, 0, 0, 1), (1, 0, int(rng.integers(0, 4)), 1, 1), (1, 0, 0, 0, 0),
             (1, 0, 0, 1, 1), (1, 1, 0, 0, 1), (1, 0, 2, 1, 0), (1, 0, 0, 0, 1)]
    prog, want = _program(cfg, rng, 11, steps)
    _check(cfg, prog, want, 4)


@pytest.mark.parametrize("name,seed", [("tiny", 3), ("8x8", 4)])
def test_reduce_sums_or_maxes_every_row_into_one_line(name, seed):
    """``reduce`` COMPUTEs (one sum, one max over rows, each continued by a second reduce
    that accumulates) land in one accumulator line each; back to back they exercise the
    same-address read-modify-write on consecutive edges."""
    cfg = PRESETS[name]
    R = cfg.rows
    rng = np.random.default_rng(seed)
    m = 9
    acts = rng.integers(-128, 128, (2 * m, R))
    tile = rng.integers(-(1 << (cfg.weight_bits - 1)), 1 << (cfg.weight_bits - 1), (R, R))
    segments, instrs = _setup(cfg, acts, [tile], 6)
    lines_per_store = max(1, cfg.bus_bits // cfg.out_line_bits)
    instrs += [
        isa.make(Opcode.COMPUTE, act_addr=0, rows=m, acc_addr=0, reduce=1, mul_m1=2,
                 pop_prev=1),
        isa.make(Opcode.COMPUTE, act_addr=m, rows=m, acc_addr=0, reduce=1, accumulate=1),
        isa.make(Opcode.COMPUTE, act_addr=3, rows=m, acc_addr=1, reduce=1, acc_max=1),
        isa.make(Opcode.COMPUTE, act_addr=1, rows=1, acc_addr=1, reduce=1, acc_max=1,
                 accumulate=1, push_next=1),
        isa.make(Opcode.STORE, rows=lines_per_store * 2, out_bits=8, dram_addr=Y_ADDR,
                 pop_prev=1),
        isa.make(Opcode.END)]
    prog = Program(config=cfg, instrs=instrs, segments=segments, inputs=[],
                   outputs=[TensorRef(name="y", addr=Y_ADDR, rows=2, cols=R)])
    r = acts @ tile
    total = (r[:m] * 3).sum(0) + r[m:].sum(0)
    peak = np.maximum(r[3:3 + m].max(0), r[1])
    want = layout.requantize(np.stack([total, peak]), 0, 1, 6, relu=False, out_bits=8,
                             out_unsigned=False)
    _check(cfg, prog, want, 3)


@pytest.mark.parametrize("taps,depthwise,reach,allowed", [(4, 1, 4, 3), (4, 0, 1, 0),
                                                        (3, 1, 3, 2)])
def test_dw_reach_is_checked_against_taps(taps, depthwise, reach, allowed):
    """``dw_reach`` is at most ``dw_taps - 1`` with ``depthwise`` and 0 without."""
    from lowbit.program import ProgramError

    cfg = PRESETS["tiny"].replace(dw_taps=taps)
    instrs = [isa.make(Opcode.COMPUTE, rows=2, depthwise=depthwise, dw_reach=reach),
              isa.make(Opcode.END)]
    with pytest.raises(ProgramError, match=re.escape(
            f"dw_reach must be from 0 to {allowed} (dw_taps - 1 with depthwise, 0 without), "
            f"not {reach}")):
        Program(config=cfg, instrs=instrs, segments=[], inputs=[], outputs=[]).validate()
    instrs[0] = isa.make(Opcode.COMPUTE, rows=2, depthwise=depthwise, dw_reach=allowed)
    Program(config=cfg, instrs=instrs, segments=[], inputs=[], outputs=[]).validate()


def test_depthwise_is_refused_without_fir_taps():
    """A config built without the FIR mode (``dw_taps = 0``) refuses depthwise COMPUTEs."""
    from lowbit.program import ProgramError

    cfg = PRESETS["tiny"].replace(dw_taps=0)
    instrs = [isa.make(Opcode.COMPUTE, rows=2, depthwise=1), isa.make(Opcode.END)]
    with pytest.raises(ProgramError, match=re.escape(
            "depthwise must be 0: this config has no depthwise FIR mode (dw_taps = 0)")):
        Program(config=cfg, instrs=instrs, segments=[], inputs=[], outputs=[]).validate()
