"""Asymmetric activation zero points end to end: the graph model (values ``v = q - zero``,
clamps shifted by the zero point) against compiled programs on the reference interpreter,
the cycle simulator and (one small net) the Verilated RTL, bit-exact, on random nets with
random nonzero zero points; the compiler's bias folding, border fill and STORE offsets are
what makes them agree.
"""

import numpy as np
import pytest
from netcheck import execute as _execute

from lowbit import layout
from lowbit.compiler import (
    CompileError,
    Graph,
    GraphError,
    compile_network,
    pack_inputs,
    unpack_outputs,
)
from lowbit.config import PRESETS
from lowbit.executors import run
from lowbit.layout import requantize

TINY = PRESETS["tiny"]
CONFIGS = {
    "tiny": TINY,
    "tiny-w2": TINY.replace(weight_bits=2),
    "8x8": PRESETS["8x8"],
    # several output tiles, slabs streamed per output block
    "small": TINY.replace(act_depth=64, acc_depth=32, weight_tiles=2),
}


def _values(rng, shape, *, signed=False, zero=0, bits=8):
    """Random values ``v = q - zero`` over the whole stored range."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return rng.integers(lo, hi + 1, shape) - zero


def _zero(rng, signed, bits=8):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    z = 0
    while z == 0:
        z = int(rng.integers(lo, hi + 1))
    return z


def _wr(cfg):
    top = 1 << (cfg.weight_bits - 1)
    return -top, top


# -- the graph model ------------------------------------------------------------------------


def test_graph_model_clamps_to_the_shifted_range():
    """``v = clamp(max(y, 0 if relu) + z, q_min, q_max) - z`` for the requantized ``y``
    (independent numpy): both ends of the shifted range are reached (the ReLU's at 0)."""
    rng = np.random.default_rng(0)
    g = Graph("zp")
    x = _values(rng, (6, 5, 3), zero=37)
    a = g.input("x", (6, 5, 3), signed=False, zero=37, calib=x)
    w = rng.integers(-128, 128, (3, 3, 3, 4))
    h = g.conv2d(a, w, padding=1, out_scale=8.0 / 64, out_signed=False, out_zero=200)
    r = g.conv2d(a, w, padding=1, act="relu", out_scale=8.0 / 64, out_signed=True,
                 out_zero=-100)
    vals = g.evaluate({"x": x})
    assert g.tensor(h).range == (-200, 55) and g.tensor(r).range == (-28, 227)
    op = g.ops[0]
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    acc = sum(np.einsum("hwi,io->hwo", xp[ky:ky + 6, kx:kx + 5], w[ky, kx])
              for ky in range(3) for kx in range(3))
    y = requantize(acc, op.bias, op.mult, op.shift, relu=False, out_bits=32,
                   out_unsigned=False)
    assert np.array_equal(vals[h], np.clip(y + 200, 0, 255) - 200)
    assert np.array_equal(vals[r], np.clip(np.maximum(y, 0) - 100, -128, 127) + 100)
    assert vals[h].min() == -200 and vals[h].max() == 55
    assert vals[r].min() == 0 and vals[r].max() == 227


def test_zero_point_errors():
    g = Graph("zp")
    with pytest.raises(GraphError, match=r"^zero must be from 0 to 255 for an unsigned 8-bit "
                       r"tensor, not 300$"):
        g.input("x", (4, 4, 2), signed=False, zero=300)
    with pytest.raises(GraphError, match=r"^zero must be from -8 to 7 for a signed 4-bit "
                       r"tensor, not 8$"):
        g.input("x", (4, 4, 2), bits=4, zero=8)
    a = g.input("x", (4, 4, 2), signed=False, zero=3)
    with pytest.raises(GraphError, match=r"^out_zero must be from -128 to 127 for a signed "
                       r"8-bit tensor, not 200$"):
        g.conv2d(a, np.ones((1, 1, 2, 2), int), out_scale=1.0, out_zero=200)
    with pytest.raises(GraphError, match=r"^out_zero must be from 0 to 15 for an unsigned "
                       r"4-bit tensor, not 1\.5$"):
        g.linear(g.flatten(a), np.ones((32, 2), int), out_scale=1.0, out_bits=4, act="relu",
                 out_zero=1.5)
    with pytest.raises(ValueError, match=r"^output zero point must be from -128 to 255, not "
                       r"256$"):
        layout.pack_params(np.zeros(2), np.ones(2), np.zeros(2), [0, 256])


def test_folded_bias_must_fit_int32():
    g = Graph("zp")
    a = g.input("x", (3, 3, 2), signed=False, zero=255)
    g.output(g.conv2d(a, np.full((1, 1, 2, 2), 127), bias=np.full(2, -(1 << 31) + 5),
                      out_scale=1.0))
    with pytest.raises(CompileError, match=r"^conv0: the bias with the input zero point "
                       r"\[255\] folded in \(-2147548413\.\.-2147548413\) does not fit int32$"):
        compile_network(g, PRESETS["8x8"])


# -- compiled programs against the graph model -----------------------------------------------


def _random_net(rng, cfg, *, signed_in):
    """conv 3x3 (padding) -> relu6-free asymmetric outputs -> depthwise 3x3 stride 2 ->
    max pool (padding) / avg pool (padding) -> residual add of two tensors with different
    zero points -> standalone ReLU -> global average pool -> flatten -> linear; every tensor
    with a random nonzero zero point."""
    lo, hi = _wr(cfg)
    zx = _zero(rng, signed_in)
    x = _values(rng, (7, 6, 5), signed=signed_in, zero=zx)
    g = Graph("zp", weight_bits=cfg.weight_bits)
    a = g.input("x", (7, 6, 5), signed=signed_in, zero=zx, calib=x)

    def z(signed):
        return dict(out_signed=signed, out_zero=_zero(rng, signed))

    c1 = g.conv2d(a, rng.integers(lo, hi, (3, 3, 5, 6)), padding=1, w_scale=0.5,
                  bias=rng.integers(-50, 50, 6), **z(False))
    c2 = g.conv2d(c1, rng.integers(lo, hi, (3, 3, 1, 6)), groups=6, stride=2, padding=1,
                  act="relu", **z(True))
    mp = g.max_pool2d(c1, 3, stride=2, padding=1)
    ap = g.avg_pool2d(c1, 3, stride=2, padding=1, out_zero=_zero(rng, False))
    s = g.add(c2, mp, **z(False))
    t = g.add(s, ap, act="relu", **z(True))
    r = g.relu(s, out_zero=_zero(rng, False))
    gp = g.global_avg_pool(t, out_zero=_zero(rng, True))
    y = g.linear(g.flatten(r), rng.integers(lo, hi, (4 * 3 * 6, 5)), **z(True))
    g.output(y, gp, mp)
    return g, zx


@pytest.mark.parametrize("name,signed_in", [("tiny", False), ("tiny-w2", True),
                                            ("8x8", False), ("small", True)])
def test_random_net_with_zero_points(name, signed_in):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(len(name) * 7 + signed_in)
    g, zx = _random_net(rng, cfg, signed_in=signed_in)
    assert len({t.zero for t in g.tensors.values()}) >= 6
    x = _values(rng, (7, 6, 5), signed=signed_in, zero=zx)
    for host_im2col in (True, False):
        prog, want, _ = _execute(g, cfg, {"x": x}, host_im2col=host_im2col)
    # the results use their ranges: some outputs clamp at the ends of the shifted range
    assert any(v.min() == g.tensor(k).range[0] or v.max() == g.tensor(k).range[1]
               for k, v in want.items())
    # hidden maps with a border hold their zero point in the program's memory image
    seg = dict(prog.segments)
    c1 = g.tensor("conv0")
    addr = prog.meta["memory_map"]["conv0"]
    assert set(seg[addr]) == {c1.zero & 0xFF}


def test_linear_and_activation_on_flat_tensors():
    """A batch of flat inputs with a zero point: linear layers (output zero points, ReLU
    with an asymmetric output) and a stand-alone ReLU on a flat tensor."""
    cfg = PRESETS["8x8"]
    rng = np.random.default_rng(3)
    x = _values(rng, (6, 20), zero=77)
    g = Graph("flat", weight_bits=8)
    a = g.input("x", (20,), signed=False, zero=77, calib=x)
    h = g.linear(a, rng.integers(-128, 128, (20, 12)), act="relu", out_signed=True,
                 out_zero=-60, bias=rng.integers(-500, 500, 12))
    r = g.relu(g.linear(h, rng.integers(-128, 128, (12, 9)), out_signed=False, out_zero=131),
               out_zero=9)
    g.output(r, h)
    prog = compile_network(g, cfg, batch=6)
    want = g.forward({"x": x})
    for backend in ("reference", "sim"):
        got = unpack_outputs(prog, run(prog, pack_inputs(prog, {"x": x}),
                                       backend=backend).outputs)
        for k, v in want.items():
            assert np.array_equal(got[k], v), (backend, k)


def test_zero_points_on_rtl():
    """A small net with nonzero zero points on the Verilated RTL of ``tiny``: outputs equal
    the graph model's, cycles equal the simulator's."""
    rng = np.random.default_rng(21)
    x = _values(rng, (6, 5, 4), zero=90)
    g = Graph("zp_rtl", weight_bits=4)
    a = g.input("x", (6, 5, 4), signed=False, zero=90, calib=x)
    h = g.conv2d(a, rng.integers(-8, 8, (3, 3, 4, 4)), padding=1, w_scale=0.3,
                 out_signed=False, out_zero=140)
    s = g.add(a, h, act="relu", out_signed=True, out_zero=-77)
    m = g.max_pool2d(s, 3, stride=2, padding=1)
    p = g.global_avg_pool(g.avg_pool2d(h, 2, stride=1, out_zero=30), out_zero=200)
    g.output(g.linear(g.flatten(m), rng.integers(-8, 8, (36, 3)), out_zero=-5), p)
    _, _, res = _execute(g, TINY, {"x": _values(rng, (6, 5, 4), zero=90)}, host_im2col=False,
                         backends=("reference", "sim", "rtl"))
    assert res["rtl"].cycles == res["sim"].cycles


def test_accumulator_wraps_like_the_hardware():
    """With 16-bit accumulators the sums of stored integers ``q = v + zero`` wrap where the
    sums of values would not (and the other way round): the graph model wraps ``acc +
    zero_offset`` as the accelerator does, so the program still equals it bit for bit."""
    cfg = PRESETS["8x8"].replace(acc_bits=16)
    rng = np.random.default_rng(8)
    x = rng.integers(-3, 4, (5, 5, 8))             # values near 0, stored near 250
    g = Graph("wrap", weight_bits=8, acc_bits=16)
    a = g.input("x", (5, 5, 8), signed=False, zero=250, calib=x)
    w = rng.integers(60, 128, (3, 3, 8, 8))
    h = g.conv2d(a, w, padding=1, out_scale=0.2, out_signed=False, out_zero=128)
    y = g.linear(g.flatten(h), rng.integers(-128, 128, (200, 6)), out_scale=4.0,
                 out_zero=-7)
    g.output(h, y)
    op = g.ops[0]
    acc = op.accumulate([x], 16)
    assert np.abs(acc).max() < 1 << 15 < np.abs(acc + op.zero_offset([250])).max()
    _execute(g, cfg, {"x": x})
