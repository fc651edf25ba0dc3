"""End to end: one compiled program on reference, cycle simulator and Verilator RTL.

Outputs must be bit-exact against an independent numpy model and across executors, and the
simulator's cycle count must equal the RTL's CYCLES register exactly. Verilator builds are
cached per config (one build per hardware variant per run).
"""

import numpy as np
import pytest

from lowbit.compiler import compile_gemm, compile_mlp
from lowbit.config import PRESETS, AccelConfig
from lowbit.executors import run
from lowbit.layout import requantize

TINY = PRESETS["tiny"]
HW = {
    "4x4-w4": TINY,
    "4x4-w2": TINY.replace(weight_bits=2),
    "4x4-w3": TINY.replace(weight_bits=3, bus_bits=64, act_depth=64),
    "4x4-w8": TINY.replace(weight_bits=8),
    "8x8-w4-b64": AccelConfig(rows=8, cols=8, weight_bits=4, bus_bits=64, act_depth=256,
                              weight_tiles=8, acc_depth=256, param_depth=16, queue_depth=4,
                              fetch_burst=4, mem_bytes=1 << 20),
}

# (hardware, M, K, N, relu, act_unsigned, seed): shapes deliberately not multiples of the
# array, K spanning several tiles, one K too large for the 4x4-w3 activation scratchpad.
GEMMS = [
    ("4x4-w4", 5, 7, 6, False, False, 0),
    ("4x4-w4", 1, 4, 4, True, False, 1),
    ("4x4-w4", 13, 29, 11, True, True, 2),
    ("4x4-w4", 32, 16, 9, False, True, 3),
    ("4x4-w2", 9, 21, 7, False, False, 4),
    ("4x4-w2", 17, 10, 13, True, True, 5),
    ("4x4-w2", 3, 40, 5, False, False, 6),
    ("4x4-w3", 6, 70, 5, True, False, 7),
    ("4x4-w3", 11, 9, 18, False, True, 8),
    ("4x4-w3", 20, 300, 3, False, False, 9),
    ("4x4-w8", 7, 15, 9, False, False, 10),
    ("4x4-w8", 16, 33, 4, True, True, 11),
    ("4x4-w8", 2, 3, 2, False, True, 12),
    ("8x8-w4-b64", 10, 19, 12, True, False, 13),
    ("8x8-w4-b64", 33, 64, 17, False, True, 14),
    ("8x8-w4-b64", 4, 100, 8, False, False, 15),
    ("8x8-w4-b64", 40, 9, 30, True, True, 16),
    ("8x8-w4-b64", 1, 8, 1, False, False, 17),
]


def _gemm_case(hw, m, k, n, relu, uns, seed):
    cfg = HW[hw]
    rng = np.random.default_rng(seed)
    wb = cfg.weight_bits
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (k, n))
    x = rng.integers(0, 256, (m, k)) if uns else rng.integers(-128, 128, (m, k))
    bias = rng.integers(-2000, 2000, n)
    mult = rng.integers(1 << 12, 1 << 16, n)
    shift = rng.integers(12, 22, n)
    prog = compile_gemm(cfg, a_shape=(m, k), weights=w, bias=bias, mult=mult, shift=shift,
                        relu=relu, act_unsigned=uns, out_bits=8)
    want = requantize(x @ w, bias, mult, shift, relu=relu, out_bits=8, out_unsigned=False)
    return prog, x, want


def _check_all(prog, x, want):
    results = {b: run(prog, {"x": x}, backend=b) for b in ("reference", "sim", "rtl")}
    for backend, res in results.items():
        assert np.array_equal(res.outputs["y"], want), backend
    assert results["sim"].cycles == results["rtl"].cycles
    for key in ("dram_read_bytes", "dram_write_bytes", "imem_read_bytes"):
        assert results["sim"].counters[key] == results["rtl"].counters[key], key
    return results


@pytest.mark.parametrize("case", GEMMS, ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}" for c in GEMMS])
def test_gemm_reference_sim_rtl_agree(case):
    prog, x, want = _gemm_case(*case)
    _check_all(prog, x, want)


def _random_mlp(cfg, sizes, seed, act_bits=8):
    from lowbit.compiler import FloatLayer, FloatMLP, quantize_mlp

    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(FloatLayer(rng.normal(0, 1 / np.sqrt(a), (a, b)),
                                 rng.normal(0, 0.1, b), relu=i < len(sizes) - 2))
    calib = rng.normal(0, 1, (64, sizes[0]))
    qm = quantize_mlp(FloatMLP(layers), calib, weight_bits=cfg.weight_bits, act_bits=act_bits)
    return qm, calib


@pytest.mark.parametrize("hw,sizes,batch,seed", [
    ("4x4-w4", (11, 9, 5), 6, 20),
    ("4x4-w2", (16, 24, 10), 12, 21),
    ("4x4-w8", (7, 13, 6, 3), 5, 22),
    ("8x8-w4-b64", (30, 17, 10), 9, 23),
])
def test_mlp_reference_sim_rtl_agree(hw, sizes, batch, seed):
    cfg = HW[hw]
    qm, calib = _random_mlp(cfg, sizes, seed)
    xq = qm.quantize_input(calib[:batch])
    want = qm.forward_int(xq)
    prog = compile_mlp(qm, cfg, batch=batch)
    inputs = {prog.inputs[0].name: xq}
    results = {b: run(prog, inputs, backend=b) for b in ("reference", "sim", "rtl")}
    out = prog.outputs[0].name
    for backend, res in results.items():
        assert np.array_equal(res.outputs[out], want), backend
    assert results["sim"].cycles == results["rtl"].cycles
