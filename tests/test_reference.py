"""The reference executor on hand-written programs, against plain numpy written here."""

import numpy as np
import pytest

from lowbit import isa
from lowbit.config import AccelConfig, preset
from lowbit.executors import run
from lowbit.isa import LoadTarget, Opcode, Unit
from lowbit.layout import pack_act, pack_params, pack_weight_tile
from lowbit.program import Program, ProgramError, TensorRef
from lowbit.sim.reference import run_reference

L, C_, S = Opcode.LOAD, Opcode.COMPUTE, Opcode.STORE


def _numpy_requant(acc, bias, mult, shift, relu, bits, unsigned):
    """Round half away from zero, written independently of lowbit.layout."""
    out = np.zeros_like(acc)
    for idx, a in np.ndenumerate(acc):
        j = idx[-1]
        x = (int(a) + int(bias[j])) * int(mult[j])
        s = int(shift[j])
        if s:
            mag = (abs(x) + (1 << (s - 1))) >> s
            y = mag if x >= 0 else -mag
        else:
            y = x
        if relu:
            y = max(y, 0)
        lo, hi = (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        out[idx] = min(max(y, lo), hi)
    return out


def _gemm_program(cfg, w, bias, mult, shift, *, m, relu=False, out_bits=8, out_unsigned=False,
                  act_unsigned=False, split_rows=False):
    """One R x C tile GEMM (K = rows, N = cols): load everything, compute, store."""
    B, R, C = cfg.beat_bytes, cfg.rows, cfg.cols
    mp = -(-m // cfg.lines_per_beat) * cfg.lines_per_beat
    wdata = pack_weight_tile(cfg, w)
    pdata = pack_params(bias, mult, shift)
    w_addr, p_addr = 0x1000, 0x2000
    x_addr, y_addr = 0x3000, 0x5000
    instrs = [
        isa.make(L, target=LoadTarget.WEIGHT, sp_addr=3, rows=1,
                 row_beats=cfg.weight_tile_beats, dram_addr=w_addr, stride=0),
        isa.make(L, target=LoadTarget.PARAM, sp_addr=0, rows=1, row_beats=len(pdata) // B,
                 dram_addr=p_addr, stride=0),
        isa.make(L, target=LoadTarget.ACT, sp_addr=0, rows=1, row_beats=mp * R // B,
                 dram_addr=x_addr, stride=0, push_next=1),
    ]
    if split_rows:   # two computes over the two halves of the rows
        half = mp // 2
        instrs += [
            isa.make(C_, act_addr=0, weight_addr=3, acc_addr=5, rows=half,
                     act_unsigned=int(act_unsigned), pop_prev=1),
            isa.make(C_, act_addr=half, weight_addr=3, acc_addr=5 + half, rows=mp - half,
                     accumulate=0, act_unsigned=int(act_unsigned), push_next=1),
        ]
    else:
        instrs.append(isa.make(C_, act_addr=0, weight_addr=3, acc_addr=5, rows=mp,
                               act_unsigned=int(act_unsigned), pop_prev=1, push_next=1))
    instrs += [
        isa.make(S, acc_addr=5, rows=mp, param_addr=0, relu=int(relu), out_bits=out_bits,
                 out_unsigned=int(out_unsigned), dram_addr=y_addr, pop_prev=1),
        isa.make(Opcode.END),
    ]
    return Program(config=cfg, instrs=instrs, segments=[(w_addr, wdata), (p_addr, pdata)],
                   inputs=[TensorRef("x", x_addr, m, R, signed=not act_unsigned)],
                   outputs=[TensorRef("y", y_addr, m, C, signed=not out_unsigned)])


@pytest.mark.parametrize("name", ["tiny", "8x8"])
@pytest.mark.parametrize("act_unsigned,relu,out_unsigned,out_bits",
                         [(False, False, False, 8), (True, True, True, 4),
                          (False, True, False, 5)])
def test_single_tile_gemm(name, act_unsigned, relu, out_unsigned, out_bits):
    cfg = preset(name)
    rng = np.random.default_rng(7)
    R, C = cfg.rows, cfg.cols
    wb = cfg.weight_bits
    m = 11
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(R, C))
    bias = rng.integers(-2000, 2000, size=C)
    mult = rng.integers(1, 1 << 16, size=C)
    shift = rng.integers(8, 24, size=C)
    x = rng.integers(0, 256, size=(m, R)) if act_unsigned else rng.integers(-128, 128, (m, R))
    prog = _gemm_program(cfg, w, bias, mult, shift, m=m, relu=relu, out_bits=out_bits,
                         out_unsigned=out_unsigned, act_unsigned=act_unsigned)
    res = run_reference(prog, {"x": x})
    want = _numpy_requant(x @ w, bias, mult, shift, relu, out_bits, out_unsigned)
    assert np.array_equal(res.outputs["y"], want)
    assert res.cycles is None
    mp = -(-m // cfg.lines_per_beat) * cfg.lines_per_beat
    assert res.counters == {
        "instrs": 6, "load_instrs": 3, "compute_instrs": 1, "store_instrs": 1,
        "sync_instrs": 0, "macs": mp * R * C,
        "dram_read_bytes": cfg.weight_tile_beats * cfg.beat_bytes + C * 8 + mp * R,
        "dram_write_bytes": mp * C,
    }


def test_accumulators_wrap_at_acc_bits():
    cfg = AccelConfig(rows=4, cols=4, weight_bits=8, acc_bits=16, act_depth=64,
                      weight_tiles=2, acc_depth=16, param_depth=4, bus_bits=32,
                      mem_bytes=1 << 16)
    w = np.full((4, 4), 127)
    w[:, 1] = -128
    x = np.full((3, 4), 127)
    x[1] = -128
    ones = np.ones(4, np.int64)
    prog = _gemm_program(cfg, w, np.zeros(4, np.int64), ones, np.zeros(4, np.int64), m=3,
                         out_bits=8)
    res = run_reference(prog, x)      # one input: a bare array is accepted
    acc = x @ w                       # e.g. 4 * 127 * 127 = 64516 -> wraps to -1020
    wrapped = ((acc + (1 << 15)) % (1 << 16)) - (1 << 15)
    assert not np.array_equal(acc, wrapped)
    assert np.array_equal(res.outputs["y"], np.clip(wrapped, -128, 127))


def test_split_rows_match_one_compute():
    """Two computes over halves of the rows give the same result as one."""
    cfg = preset("tiny")
    rng = np.random.default_rng(3)
    w = rng.integers(-8, 8, size=(4, 4))
    x = rng.integers(-128, 128, size=(9, 4))
    z, one = np.zeros(4, np.int64), np.ones(4, np.int64)
    a = run_reference(_gemm_program(cfg, w, z, one, z, m=9, out_bits=8), {"x": x})
    b = run_reference(_gemm_program(cfg, w, z, one, z, m=9, out_bits=8, split_rows=True),
                      {"x": x})
    assert np.array_equal(a.outputs["y"], b.outputs["y"])
    assert np.array_equal(a.outputs["y"], np.clip(x @ w, -128, 127))


def test_accumulate_adds_to_previous_lines():
    """COMPUTE with accumulate=1 adds a second K block; strided 2-D LOAD places blocks."""
    cfg = preset("tiny")
    B = cfg.beat_bytes
    rng = np.random.default_rng(11)
    m, k = 4, 8
    w = rng.integers(-8, 8, size=(k, 4))
    x = rng.integers(-128, 128, size=(m, k))
    xa = 0x4000
    blocked = pack_act(cfg, x)       # two blocks of m lines
    instrs = [
        isa.make(L, target=LoadTarget.WEIGHT, sp_addr=0, rows=2,
                 row_beats=cfg.weight_tile_beats, dram_addr=0x1000,
                 stride=cfg.weight_tile_beats * B),
        isa.make(L, target=LoadTarget.PARAM, sp_addr=0, rows=1, row_beats=32 // B,
                 dram_addr=0x2000, stride=0),
        isa.make(L, target=LoadTarget.ACT, sp_addr=2 * m * 4 // B, rows=2,
                 row_beats=m * 4 // B, dram_addr=xa, stride=m * 4),
        isa.make(C_, act_addr=2 * m, weight_addr=0, acc_addr=0, rows=m),
        isa.make(C_, act_addr=3 * m, weight_addr=cfg.weight_tile_beats, acc_addr=0, rows=m,
                 accumulate=1),
        isa.make(Opcode.SYNC, unit=Unit.STORE),
        isa.make(S, acc_addr=0, rows=m, param_addr=0, out_bits=8, dram_addr=0x6000),
        isa.make(Opcode.END),
    ]
    tiles = pack_weight_tile(cfg, w[:4]) + pack_weight_tile(cfg, w[4:])
    params = pack_params(np.zeros(4), np.ones(4), np.zeros(4))
    prog = Program(config=cfg, instrs=instrs,
                   segments=[(0x1000, tiles), (0x2000, params), (xa, blocked)],
                   inputs=[], outputs=[TensorRef("y", 0x6000, m, 4)])
    res = run_reference(prog, {})
    assert np.array_equal(res.outputs["y"], np.clip(x @ w, -128, 127))
    assert res.counters["sync_instrs"] == 1 and res.counters["store_instrs"] == 2


def test_run_dispatches_to_reference_and_checks_inputs():
    cfg = preset("tiny")
    z, one = np.zeros(4, np.int64), np.ones(4, np.int64)
    prog = _gemm_program(cfg, np.eye(4, dtype=np.int64), z, one, z, m=2)
    x = np.array([[1, -2, 3, -4], [5, 6, -7, 8]])
    res = run(prog, x, backend="reference")
    assert res.backend == "reference" and np.array_equal(res.outputs["y"], x)
    with pytest.raises(ProgramError, match="input 'x' must have shape \\(2, 4\\), not \\(3, 4\\)"):
        run_reference(prog, {"x": np.zeros((3, 4), np.int64)})
    with pytest.raises(ProgramError, match="input 'x' is missing"):
        run_reference(prog, {})


def test_reference_is_fast_on_a_large_program():
    """256 computes of 256 rows on the 16x16 preset run well under a second."""
    import time

    from lowbit.compiler import compile_gemm

    cfg = preset("16x16")
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(256, 256))
    prog = compile_gemm(cfg, a_shape=(256, 256), weights=w, mult=1, shift=12)
    x = rng.integers(-128, 128, size=(256, 256))
    start = time.perf_counter()
    res = run_reference(prog, {"x": x})
    assert time.perf_counter() - start < 2.0
    assert np.array_equal(res.outputs["y"], _numpy_requant_fast(x @ w, 12))
    assert res.counters["macs"] == 256 ** 3


def _numpy_requant_fast(acc, shift):
    mag = (np.abs(acc) + (1 << (shift - 1))) >> shift
    return np.clip(np.where(acc >= 0, mag, -mag), -128, 127)


@pytest.mark.parametrize("name", ["tiny", "8x8", "4x4-b64"])
def test_2d_store_writes_groups_in_order(name):
    """2-D STOREs against a numpy placement written here: group g requantizes accumulator
    lines acc_addr + g * acc_pitch + (0..rows-1) to bytes dram_addr + g * dram_pitch * cols
    on; pitches of 0 repeat lines or overwrite a group with the next, reps_m1 = 0 is the
    1-D STORE. On the 4x4 / 64-bit config two lines share a beat (rows and pitches even)."""
    cfg = preset(name) if name != "4x4-b64" else preset("tiny").replace(bus_bits=64)
    rng = np.random.default_rng(5)
    R, C, wb = cfg.rows, cfg.cols, cfg.weight_bits
    m = 12
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(R, C))
    bias = rng.integers(-2000, 2000, size=C)
    mult = rng.integers(1, 1 << 16, size=C)
    shift = rng.integers(8, 20, size=C)
    x = rng.integers(-128, 128, (m, R))
    prog = _gemm_program(cfg, w, bias, mult, shift, m=m)
    y = _numpy_requant(x @ w, bias, mult, shift, False, 8, False)     # acc line 5 + i
    out_lines, out_addr = 80, 0x6000
    # (acc_addr, rows, reps, acc_pitch, dram line, dram_pitch)
    shapes = [(5, 2, 3, 4, 0, 6), (7, 4, 2, 0, 20, 8), (5, 2, 4, 2, 32, 0),
              (9, 6, 1, 0, 40, 0), (5, 2, 3, 3, 50, 10)]
    stores, want = [], np.zeros((out_lines, C), np.int64)
    for a, rows, reps, ap, line, dp in shapes:
        stores.append(isa.make(S, acc_addr=a, rows=rows, reps_m1=reps - 1, acc_pitch=ap,
                               dram_pitch=dp, out_bits=8, dram_addr=out_addr + line * C))
        for g in range(reps):
            src = a + g * ap - 5
            want[line + g * dp:line + g * dp + rows] = y[src:src + rows]
    instrs = prog.instrs[:-1] + stores + [isa.make(Opcode.END)]
    prog = Program(config=cfg, instrs=instrs, segments=prog.segments, inputs=prog.inputs,
                   outputs=[TensorRef("out", out_addr, out_lines, C, signed=True)])
    res = run_reference(prog, {"x": x})
    assert np.array_equal(res.outputs["out"], want)
    assert res.counters["dram_write_bytes"] == (12 + sum(r * n for _, r, n, *_ in shapes)) * C


def _store_check(cfg, **fields):
    fields = dict(dict(rows=2, out_bits=8, dram_addr=0x100), **fields)
    prog = Program(config=cfg, instrs=[isa.make(S, **fields), isa.make(Opcode.END)],
                   segments=[], inputs=[], outputs=[])
    prog.validate()


@pytest.mark.parametrize("fields,message", [
    (dict(rows=1), "a group of 1 lines is 4 bytes; it must be a multiple of the 8-byte beat"),
    (dict(rows=2, reps_m1=2, dram_pitch=3),
     "dram_pitch 3 lines is 12 bytes; with 3 groups it must be a multiple of the 8-byte beat"),
    (dict(dram_addr=0x104), "dram_addr 0x104 must be a multiple of the 8-byte beat"),
    (dict(acc_addr=200, rows=2, reps_m1=3, acc_pitch=19),
     "reads accumulator lines up to 258, acc_depth is 256"),
    (dict(rows=64, reps_m1=1023, acc_pitch=0),
     "writes 1024 groups of 64 lines = 65536 lines; a STORE writes at most 65535"),
    (dict(dram_addr=(1 << 20) - 64, reps_m1=4, dram_pitch=4),
     r"writes up to 0x100008 \(group 4\), beyond mem_bytes=0x100000"),
])
def test_2d_store_checks(fields, message):
    """Each 2-D STORE rule, pinned (tiny's lines are 4 bytes; on a 64-bit bus a beat holds
    two of them), next to the largest legal extents and the same STORE with one group."""
    cfg = preset("tiny").replace(bus_bits=64)
    _store_check(cfg, acc_addr=200, rows=2, reps_m1=3, acc_pitch=18)     # up to line 255
    _store_check(cfg, dram_addr=(1 << 20) - 72, reps_m1=4, dram_pitch=4)
    _store_check(cfg, rows=64, reps_m1=1022, acc_pitch=0)               # 65472 lines
    with pytest.raises(ProgramError, match=r"instruction 0 \(STORE\(.*\)\): " + message):
        _store_check(cfg, **fields)
    _store_check(cfg, **dict(fields, reps_m1=0, rows=2, dram_addr=0x100, acc_addr=0))
