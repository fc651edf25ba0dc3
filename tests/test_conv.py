"""Convolutions, pooling, adds, flatten and activations: compiled programs against the graph's
integer numpy model (``Graph.forward``), on the reference interpreter and the cycle simulator
(bit-exact, same program), for random shapes, strides, paddings, groups and weight widths.

``Graph.forward`` is itself checked against naive loops, so the chain of references is:
loops -> numpy model -> reference == sim (-> RTL for a small sample on ``tiny``).
"""

import re

import numpy as np
import pytest
from netcheck import execute

from lowbit.compiler import (
    CompileError,
    Graph,
    GraphError,
    compile_network,
    conv,
    pack_inputs,
    unpack_outputs,
)
from lowbit.compiler.graph import add_factors, same_padding
from lowbit.config import PRESETS, AccelConfig
from lowbit.executors import run
from lowbit.isa import Opcode
from lowbit.layout import requantize, wrap

TINY = PRESETS["tiny"]
CONFIGS = {
    "tiny": TINY,
    "tiny-w2": TINY.replace(weight_bits=2),
    "tiny-w3": TINY.replace(weight_bits=3),
    "tiny-w8": TINY.replace(weight_bits=8),
    "8x8": PRESETS["8x8"],
    # a small activation scratchpad and accumulator memory: several output tiles, slabs
    # streamed per output block
    "small": TINY.replace(act_depth=64, acc_depth=32, weight_tiles=2),
    # fewer depthwise FIR taps than columns (dw_taps), or none
    "tiny-3taps": TINY.replace(dw_taps=3),
    "8x8-notaps": PRESETS["8x8"].replace(dw_taps=0),
    "16x16-9taps": PRESETS["16x16"].replace(dw_taps=9),
}


def _wrange(cfg):
    return -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1))


def _execute(g: Graph, cfg, inputs, *, host_im2col=True, backends=("reference", "sim")):
    """:func:`netcheck.execute`, and the reference and the simulator count the same MACs and
    DRAM bytes. Returns the program and the results by backend."""
    prog, _, results = execute(g, cfg, inputs, host_im2col=host_im2col, backends=backends)
    if "sim" in results:
        ref, sim = results["reference"].counters, results["sim"].counters
        for key in ("macs", "dram_read_bytes", "dram_write_bytes"):
            assert ref[key] == sim[key], key
    return prog, results


def _image(rng, shape, signed=True):
    return rng.integers(-128, 128, shape) if signed else rng.integers(0, 256, shape)


# -- the numpy model ------------------------------------------------------------------------


def _naive_conv(x, w, stride, pad, groups):
    kh, kw, cig, cout = w.shape
    t, b, lf, r = pad
    xp = np.pad(x, ((t, b), (lf, r), (0, 0)))
    oh = (xp.shape[0] - kh) // stride[0] + 1
    ow = (xp.shape[1] - kw) // stride[1] + 1
    cog = cout // groups
    out = np.zeros((oh, ow, cout), np.int64)
    for y in range(oh):
        for x_ in range(ow):
            for o in range(cout):
                g = o // cog
                for ky in range(kh):
                    for kx in range(kw):
                        for i in range(cig):
                            out[y, x_, o] += xp[y * stride[0] + ky, x_ * stride[1] + kx,
                                                g * cig + i] * w[ky, kx, i, o]
    return out


def test_numpy_model_matches_naive_loops():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (7, 6, 4))
    g = Graph("t", weight_bits=4)
    a = g.input("x", (7, 6, 4), calib=x)
    cases = [((3, 2, 4, 6), (2, 1), (1, 0, 2, 1), 1), ((3, 3, 1, 4), (1, 2), (1, 1, 1, 1), 4),
             ((2, 3, 2, 4), (1, 1), (0, 1, 0, 0), 2)]
    outs = []
    for shape, stride, pad, groups in cases:
        w = rng.integers(-8, 8, shape)
        bias = rng.integers(-100, 100, shape[3])
        outs.append((g.conv2d(a, w, bias=bias, stride=stride, padding=pad, groups=groups),
                     w, stride, pad, groups, bias))
    mp = g.max_pool2d(a, (3, 2), stride=(2, 1), padding=(1, 0, 0, 1))
    vals = g.evaluate({"x": x})
    for name, w, stride, pad, groups, bias in outs:
        op = next(o for o in g.ops if o.dst == name)
        assert np.array_equal(op.bias, bias)
        want = requantize(wrap(_naive_conv(x, w, stride, pad, groups), 32), bias, op.mult,
                          op.shift, relu=False, out_bits=8, out_unsigned=False)
        assert np.array_equal(vals[name], want)
    xp = np.pad(x, ((1, 0), (0, 1), (0, 0)))
    want = np.array([[[xp[2 * y:2 * y + 3, x_:x_ + 2, c].max() for c in range(4)]
                      for x_ in range(6)] for y in range(3)])
    assert np.array_equal(vals[mp], want)


def test_same_padding_and_add_factors():
    assert same_padding(32, 3, 2) == (0, 1)       # TensorFlow: the extra row at the end
    assert same_padding(49, 10, 2) == (4, 5)
    assert same_padding(10, 4, 2) == (1, 1)
    assert same_padding(5, 3, 1) == (1, 1)
    assert add_factors(1.0) == (1, 1)
    assert add_factors(0.5) == (1, 2)
    ma, mb = add_factors(np.pi)
    assert abs(ma / mb / np.pi - 1) < 1e-3 and max(ma, mb) <= 256
    ma, mb = add_factors(1000.0)
    assert (ma, mb) == (256, 1)                   # the largest ratio the factors give


# -- random convolutions --------------------------------------------------------------------

# (config, (H, W, C_in), C_out, kernel, stride, padding, groups, seed)
CONVS = [
    ("tiny", (6, 5, 3), 5, (3, 3), (1, 1), 1, 1, 0),
    ("tiny", (9, 7, 6), 7, (3, 3), (2, 2), "same", 1, 1),
    ("tiny", (12, 6, 2), 9, (10, 4), (2, 2), "same", 1, 2),     # DS-CNN's first kernel
    ("tiny", (8, 8, 8), 8, (3, 3), (1, 1), 1, 8, 3),            # depthwise
    ("tiny", (7, 9, 6), 6, (3, 3), (2, 2), (0, 1, 0, 1), 6, 4),  # depthwise, stride 2
    ("tiny", (6, 6, 8), 4, (2, 2), (1, 1), 0, 2, 5),            # two groups of 4
    ("tiny", (5, 7, 6), 9, (1, 1), (2, 1), 0, 3, 6),            # 1x1, groups 3, stride (2,1)
    ("tiny", (11, 10, 5), 4, (5, 5), (3, 3), 2, 1, 7),
    ("tiny", (4, 13, 4), 5, (1, 7), (1, 2), (0, 0, 3, 3), 1, 8),
    ("tiny-w2", (7, 6, 5), 6, (3, 3), (1, 1), 1, 1, 9),
    ("tiny-w2", (8, 8, 4), 4, (3, 3), (1, 1), "same", 4, 10),
    ("tiny-w3", (9, 5, 7), 3, (3, 2), (2, 1), (1, 1, 0, 1), 1, 11),
    ("tiny-w3", (6, 6, 12), 12, (3, 3), (2, 2), 1, 12, 12),
    ("tiny-w8", (7, 7, 3), 10, (3, 3), (1, 1), 1, 1, 13),
    ("tiny-w8", (10, 3, 9), 6, (4, 2), (2, 1), (2, 1, 1, 0), 3, 14),
    ("8x8", (10, 9, 11), 19, (3, 3), (1, 1), 1, 1, 15),
    ("8x8", (9, 9, 16), 16, (3, 3), (2, 2), "same", 16, 16),
    ("small", (9, 8, 6), 10, (3, 3), (1, 1), 1, 1, 17),
    ("small", (11, 7, 9), 5, (3, 3), (2, 2), "same", 1, 18),
    ("tiny", (9, 10, 4), 4, (5, 5), (2, 2), 2, 4, 19),          # depthwise 5x5 stride 2
    ("8x8", (7, 9, 8), 8, (3, 4), (1, 1), (1, 1, 1, 2), 8, 20),  # depthwise, runs 3 + 1
    ("tiny-w2", (6, 11, 8), 8, (3, 3), (1, 2), 1, 8, 21),       # depthwise, stride (1, 2)
]


@pytest.mark.parametrize("case", CONVS, ids=[f"{c[0]}-{c[3][0]}x{c[3][1]}s{c[4][0]}{c[4][1]}"
                                             f"g{c[6]}-{c[7]}" for c in CONVS])
def test_random_conv_matches_numpy(case):
    name, shape, cout, kernel, stride, pad, groups, seed = case
    cfg = CONFIGS[name]
    rng = np.random.default_rng(seed)
    lo, hi = _wrange(cfg)
    signed = seed % 3 != 0
    x = _image(rng, shape, signed)
    g = Graph("conv", weight_bits=cfg.weight_bits)
    a = g.input("x", shape, signed=signed, calib=x)
    w = rng.integers(lo, hi, (*kernel, shape[2] // groups, cout))
    act = (None, "relu", "relu6")[seed % 3]
    y = g.conv2d(a, w, bias=rng.integers(-300, 300, cout), stride=stride, padding=pad,
                 groups=groups, act=act, w_scale=rng.uniform(0.5, 2, cout))
    g.output(y)
    x2 = _image(rng, shape, signed)
    prog, _ = _execute(g, cfg, {"x": x2}, host_im2col=seed % 2 == 0)
    assert prog.meta["layers"][0]["kind"] in ("conv", "dwconv")
    if groups == shape[2] == cout:
        assert prog.meta["layers"][0]["kind"] == "dwconv"


DW_CONFIGS = ("tiny", "tiny-w3", "8x8", "small", "16x16", "tiny-3taps", "8x8-notaps",
              "16x16-9taps")
DW_KERNELS = ((3, 3), (5, 5), (3, 5), (1, 3), (3, 1), (2, 2), (7, 7))
DW_STRIDES = ((1, 1), (2, 2), (1, 2), (2, 1))


def _dw_case(seed):
    """A random depthwise layer: config, map (H, W, C), kernel, stride, padding."""
    rng = np.random.default_rng(1000 + seed)
    name = DW_CONFIGS[seed % len(DW_CONFIGS)]
    cfg = CONFIGS.get(name) or PRESETS[name]
    kernel = DW_KERNELS[int(rng.integers(len(DW_KERNELS)))]
    stride = DW_STRIDES[int(rng.integers(len(DW_STRIDES)))]
    pad = tuple(int(rng.integers(0, k)) for k in (kernel[0], kernel[0], kernel[1], kernel[1]))
    h = kernel[0] + int(rng.integers(0, 12))
    w = kernel[1] + int(rng.integers(0, 25))
    c = int(rng.integers(1, 2 * cfg.rows + 2))
    return name, cfg, (h, w, c), kernel, stride, pad, rng


@pytest.mark.parametrize("seed", range(24))
def test_random_depthwise_matches_numpy(seed):
    """Random depthwise layers (kernels up to 7x7, strides 1 and 2 per axis, paddings, map
    widths up to 31, channel counts across blocks) on several configs, some with fewer FIR
    taps than columns or none: reference and cycle simulator bit-exact against the graph
    model; every COMPUTE is a depthwise FIR tap whose reach stays below ``dw_taps`` (a
    diagonal-tile COMPUTE without taps), and every kernel position is in one tap per
    block."""
    name, cfg, shape, kernel, stride, pad, rng = _dw_case(seed)
    lo, hi = _wrange(cfg)
    signed = seed % 3 != 0
    g = Graph("dw", weight_bits=cfg.weight_bits)
    a = g.input("x", shape, signed=signed, calib=_image(rng, shape, signed))
    w = rng.integers(lo, hi, (*kernel, 1, shape[2]))
    g.output(g.conv2d(a, w, bias=rng.integers(-300, 300, shape[2]), stride=stride,
                      padding=pad, groups=shape[2], act=(None, "relu")[seed % 2]))
    prog, _ = _execute(g, cfg, {"x": _image(rng, shape, signed)})
    assert prog.meta["layers"][0]["kind"] == "dwconv"
    computes = [i for i in prog.instrs if i.opcode == Opcode.COMPUTE]
    if cfg.fir_taps:
        assert computes and all(i.depthwise and i.dw_reach < cfg.fir_taps for i in computes)
    else:
        assert computes and not any(i.depthwise for i in computes)
    from lowbit.compiler import passes
    from lowbit.compiler.conv import lower

    ly = passes.plan_tiles(lower(g, cfg)[0]).graph.layers[0]
    for n in range(-(-shape[2] // cfg.rows)):
        covered = sorted(p for tp in ly.taps_of(n)
                         for p in (tp.fir if cfg.fir_taps else [(tp.ky, tp.kx)]))
        assert covered == [(y, x) for y in range(kernel[0]) for x in range(kernel[1])]


# (case, config, map, kernel, stride, forced tile width)
DW_FORCED = [
    ("edge", "8x8", (10, 23, 8), (3, 3), (1, 1), 8),       # tiles 8, 8, 7 wide
    ("edge", "tiny", (7, 10, 5), (3, 3), (1, 1), 3),       # tiles 3, 3, 3, 1 wide
    ("edge", "8x8", (9, 21, 8), (3, 3), (2, 2), 4),        # stride 2: tiles 4, 4, 3
    ("split", "16x16", (12, 12, 16), (3, 3), (1, 1), 12),  # offsets 0..2, 14..16, 28..30
    ("split", "tiny", (6, 5, 3), (3, 3), (1, 1), 1),       # pitch 3: 0..3, 4..7, 8
]


@pytest.mark.parametrize("case", DW_FORCED, ids=[f"{c[0]}-{c[1]}-{c[5]}" for c in DW_FORCED])
def test_depthwise_edge_tiles_and_split_rows(case, monkeypatch):
    """Depthwise layers planned with a forced tile width: a narrower edge tile (with stride
    1 in x its slab rows start left of its window under the layer's fixed pitch), or taps
    that split a kernel row across COMPUTEs: bit-exact, and the case really occurs."""
    from lowbit.compiler import conv, passes

    kind, name, shape, kernel, stride, width = case
    cfg = CONFIGS.get(name) or PRESETS[name]
    cost = conv._spatial_cost
    monkeypatch.setattr(conv, "_spatial_cost",
                        lambda cfg, g, ly, nr, nc, *a: cost(cfg, g, ly, nr, nc, *a)
                        if nc == width or ly.kind != "dwconv" else None)
    rng = np.random.default_rng(7)
    g = Graph("dw", weight_bits=cfg.weight_bits)
    a = g.input("x", shape, calib=_image(rng, shape))
    lo, hi = _wrange(cfg)
    g.output(g.conv2d(a, rng.integers(lo, hi, (*kernel, 1, shape[2])), stride=stride,
                      padding=kernel[0] // 2, groups=shape[2]))
    _execute(g, cfg, {"x": _image(rng, shape)})
    t = passes.plan_tiles(conv.lower(g, cfg)[0])
    ly, lt = t.graph.layers[0], t.tilings[0]
    if kind == "edge":
        assert len({c for *_, c in lt.out_tiles}) > 1
    else:
        assert any(len({y for y, _ in tp.fir}) > 1 and tp.kx > 0 for tp in ly.taps)


def test_stacked_convs_with_several_output_tiles():
    """Three layers on a config whose scratchpads force many output tiles and streamed
    slabs; the layers' borders differ (the producer stores into the interior)."""
    cfg = CONFIGS["small"]
    rng = np.random.default_rng(3)
    x = _image(rng, (13, 11, 5))
    g = Graph("stack", weight_bits=4)
    a = g.input("x", (13, 11, 5), calib=x)
    h = g.conv2d(a, rng.integers(-8, 8, (3, 3, 5, 7)), padding=1, act="relu")
    h = g.conv2d(h, rng.integers(-8, 8, (5, 3, 7, 6)), stride=(2, 1), padding=(2, 2, 1, 1),
                 act="relu")
    h = g.conv2d(h, rng.integers(-8, 8, (3, 3, 1, 6)), groups=6, padding="same")
    g.output(h)
    prog, res = _execute(g, cfg, {"x": _image(rng, (13, 11, 5))})
    assert all(ly["out_tiles"] > 1 for ly in prog.meta["layers"])
    assert res["sim"].cycles > 0


def test_depthwise_uses_fir_taps_and_reports_utilization():
    """A 3x3 depthwise layer becomes depthwise FIR taps for the chosen pitch p: per channel
    block, the kernel positions in order of line offset ``ky * p + kx``, each tap those
    within ``cols - 1`` lines of its first; lane i's weight for a position ``o`` lines after
    the first sits at tile position (i, cols - 1 - o), nowhere else; every position once."""
    cfg = PRESETS["8x8"]
    rng = np.random.default_rng(0)
    x = _image(rng, (6, 6, 16))
    g = Graph("dw", weight_bits=8)
    a = g.input("x", (6, 6, 16), calib=x)
    w = rng.integers(-128, 128, (3, 3, 16))
    g.output(g.depthwise_conv2d(a, w, padding=1))
    from lowbit.compiler import passes
    from lowbit.compiler.conv import lower

    graph, _ = lower(g, cfg)
    tiled = passes.plan_tiles(graph)
    ly, lt = tiled.graph.layers[0], tiled.tilings[0]
    p = ly.pitch
    assert ly.kind == "dwconv" and p == lt.pitch == max(c for *_, c in lt.out_tiles) + 2
    for n in range(2):
        offsets = sorted(ky * p + kx for ky in range(3) for kx in range(3))
        groups = []
        while offsets:
            groups.append([o for o in offsets if o - offsets[0] < 8])
            offsets = offsets[len(groups[-1]):]
        taps = ly.taps_of(n)
        assert [sorted(ky * p + kx for ky, kx in tp.fir) for tp in taps] == groups
        for tp in taps:
            want = np.zeros((8, 8), np.int64)
            for ky, kx in tp.fir:
                want[:, 7 - (ky - tp.ky) * p - (kx - tp.kx)] = w[ky, kx, n * 8:(n + 1) * 8]
            assert np.array_equal(ly.tiles[tp.tile], want)
    prog, res = _execute(g, cfg, {"x": x})
    computes = [i for i in prog.instrs if i.opcode == Opcode.COMPUTE]
    assert all(i.depthwise for i in computes)
    assert sorted({i.dw_reach for i in computes}) == sorted({grp[-1] - grp[0] for grp in groups})
    macs = g.macs()
    assert macs == 6 * 6 * 9 * 16
    # MAC slots: every tile streams (rows - 1) * p + cols lines per tap and block
    slots = res["sim"].counters["macs"]
    per_tile = sum((r - 1) * p + c for _, r, _, c in lt.out_tiles)
    assert slots == 64 * per_tile * len(groups) * 2
    assert sum(i.rows for i in computes) * 64 == slots


# -- pooling, add, activations, flatten -----------------------------------------------------


@pytest.mark.parametrize("name,signed", [("tiny", True), ("tiny-w2", False), ("8x8", False)])
def test_pooling(name, signed):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(len(name))
    x = _image(rng, (9, 8, 6), signed)
    g = Graph("pool", weight_bits=cfg.weight_bits)
    a = g.input("x", (9, 8, 6), signed=signed, calib=x)
    m1 = g.max_pool2d(a, 2)
    m2 = g.max_pool2d(a, 3, stride=2, padding=1)
    p1 = g.avg_pool2d(a, 3, stride=1, padding=1)
    p2 = g.avg_pool2d(a, (2, 3), stride=(2, 3))
    gp = g.global_avg_pool(a)
    g.output(m1, m2, p1, p2, gp)
    prog, _ = _execute(g, cfg, {"x": _image(rng, (9, 8, 6), signed)})
    kinds = {ly["kind"] for ly in prog.meta["layers"]}
    assert kinds == {"maxpool", "avgpool"}
    maxes = [i for i in prog.instrs if i.opcode == Opcode.COMPUTE and i.acc_max]
    assert maxes and all(i.accumulate for i in maxes)


@pytest.mark.parametrize("channels,config", [(24, "8x8"), (20, "8x8"), (6, "small")])
def test_global_pooling_is_a_row_reduction(channels, config):
    """A 1x1-output pooling: per channel block one 2-D LOAD of the window (rows = window
    rows, stride = the padded image row) and one ``reduce`` COMPUTE over its pixels (in
    chunks of rows when the window does not fit the scratchpad); one STORE for all blocks
    when they are full and share their requantization."""
    cfg = CONFIGS[config] if config in CONFIGS else PRESETS[config]
    rng = np.random.default_rng(channels)
    x = _image(rng, (5, 7, channels), signed=False)
    g = Graph("gap", weight_bits=cfg.weight_bits)
    a = g.input("x", (5, 7, channels), signed=False, calib=x)
    top = 1 << (cfg.weight_bits - 1)
    h = g.conv2d(a, rng.integers(-top, top, (3, 3, channels, channels)), padding=1,
                 act="relu")
    g.output(g.global_avg_pool(h), g.max_pool2d(h, (5, 7)))
    prog, _ = _execute(g, cfg, {"x": _image(rng, (5, 7, channels), signed=False)})
    R = cfg.rows
    nb = -(-channels // R)
    reduces = [i for i in prog.instrs if i.opcode == Opcode.COMPUTE and i.reduce]
    chunk = max(1, min(5, cfg.act_depth // 14))
    assert len(reduces) == 2 * nb * -(-5 // chunk)
    assert sum(i.rows for i in reduces) == 2 * nb * 35
    assert {i.acc_max for i in reduces} == {0, 1}
    stores = [i for i in prog.instrs if i.opcode == Opcode.STORE and i.rows <= nb]
    assert len(stores) == (2 if channels % R == 0 else 2 * nb)


@pytest.mark.parametrize("name", ["tiny", "tiny-w2", "8x8"])
def test_residual_add_with_different_scales(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(7)
    x = _image(rng, (6, 7, 10))
    g = Graph("res", weight_bits=cfg.weight_bits)
    a = g.input("x", (6, 7, 10), calib=x)
    lo, hi = _wrange(cfg)
    h = g.conv2d(a, rng.integers(lo, hi, (3, 3, 10, 10)), padding=1, act="relu",
                 w_scale=0.37)
    s = g.add(a, h, act="relu")                  # signed int8 + unsigned, scales differ
    t = g.add(s, h)
    g.output(g.conv2d(t, rng.integers(lo, hi, (3, 3, 10, 4)), padding=1), s)
    op = next(o for o in g.ops if o.dst == s)
    ratio = g.tensor(a).scale / g.tensor(h).scale
    assert abs(op.mul_a / op.mul_b / ratio - 1) < 0.01
    prog, _ = _execute(g, cfg, {"x": _image(rng, (6, 7, 10))})
    scaled = {i.mul_m1 + 1 for i in prog.instrs if i.opcode == Opcode.COMPUTE and i.mul_m1}
    assert {op.mul_a, op.mul_b} - {1} <= scaled


def test_activations_flatten_and_linear():
    """ReLU/ReLU6 on maps and flat tensors; flatten of a map that also has a zero border
    for a padded consumer (the flat view skips the border and padding channels)."""
    cfg = TINY
    rng = np.random.default_rng(11)
    x = _image(rng, (5, 4, 6))
    g = Graph("flat", weight_bits=4)
    a = g.input("x", (5, 4, 6), calib=x)
    r = g.relu6(a)
    c = g.conv2d(r, rng.integers(-8, 8, (3, 3, 6, 3)), padding=1)
    f = g.flatten(r)
    y = g.linear(f, rng.integers(-8, 8, (5 * 4 * 6, 7)), act="relu")
    z = g.relu(g.linear(g.flatten(c), rng.integers(-8, 8, (60, 5))))
    g.output(y, z, c)
    prog, _ = _execute(g, cfg, {"x": _image(rng, (5, 4, 6))})
    ins = prog.meta["network"]["inputs"]["x"]
    assert ins["border"] == [0, 0, 0, 0]
    assert g.tensor(r).scale == pytest.approx(6 / 255)


def test_flatten_as_output_and_dense_batch():
    cfg = TINY
    rng = np.random.default_rng(5)
    x = _image(rng, (3, 3, 5))
    g = Graph("f", weight_bits=4)
    a = g.input("x", (3, 3, 5), calib=x)
    g.output(g.flatten(g.max_pool2d(a, 2, stride=1, padding=(0, 1, 0, 1))))
    _execute(g, cfg, {"x": x})
    d = Graph("dense", weight_bits=4)
    v = d.input("v", (13,), calib=rng.integers(-128, 128, (20, 13)))
    d.output(d.relu6(d.linear(v, rng.integers(-8, 8, (13, 6)))))
    prog = compile_network(d, cfg, batch=9)
    v9 = rng.integers(-128, 128, (9, 13))
    got = run(prog, pack_inputs(prog, {"v": v9}), backend="sim").outputs
    assert np.array_equal(unpack_outputs(prog, got)[d.outputs[0]], d.forward({"v": v9})[
        d.outputs[0]])


def test_host_im2col_is_equivalent_and_fewer_computes():
    cfg = PRESETS["8x8"]
    rng = np.random.default_rng(2)
    x = _image(rng, (12, 10, 3))
    g = Graph("first", weight_bits=8)
    a = g.input("x", (12, 10, 3), calib=x)
    g.output(g.conv2d(a, rng.integers(-128, 128, (3, 3, 3, 8)), stride=2, padding="same",
                      act="relu"))
    p_img, r_img = _execute(g, cfg, {"x": x}, host_im2col=False)
    p_col, r_col = _execute(g, cfg, {"x": x}, host_im2col=True)
    assert p_col.meta["network"]["inputs"]["x"]["im2col"]["kernel"] == [3, 3]
    assert p_img.inputs[0].rows == 13 * 11 and p_col.inputs[0].cols == 27
    assert r_col["sim"].counters["macs"] < r_img["sim"].counters["macs"] / 2
    assert r_col["sim"].cycles < r_img["sim"].cycles


# -- errors ---------------------------------------------------------------------------------


def test_config_with_several_lines_per_beat_is_refused():
    cfg = AccelConfig(rows=2, cols=2, weight_bits=4, act_depth=64, weight_tiles=4,
                      acc_depth=32, param_depth=4, bus_bits=32, mem_bytes=1 << 18)
    g = Graph("x", weight_bits=4)
    a = g.input("x", (4, 4, 2), calib=np.zeros((4, 4, 2)))
    g.output(g.max_pool2d(a, 2))
    with pytest.raises(CompileError, match=re.escape(
            "feature maps need an activation line (rows * 8 = 16 bits) of at least one bus "
            "beat (32 bits) so that a LOAD can gather single pixels; this config packs 2 "
            "lines per beat. Use rows >= 4 or bus_bits <= 16")):
        compile_network(g, cfg)


def test_graph_errors():
    g = Graph("e", weight_bits=4)
    a = g.input("x", (5, 5, 4), calib=np.zeros((5, 5, 4)))
    with pytest.raises(GraphError, match=re.escape(
            "conv0: weight 9 is out of range for weight_bits=4; allowed -8..7")):
        g.conv2d(a, np.full((3, 3, 4, 2), 9))
    with pytest.raises(GraphError, match=re.escape(
            "conv0: weight (3, 3, 2, 4) with groups=3 does not fit 4 input channels")):
        g.conv2d(a, np.zeros((3, 3, 2, 4)), groups=3)
    with pytest.raises(GraphError, match=re.escape(
            "conv0: kernel 7x7 does not fit the padded input (5, 5) with padding (0, 0, 0, 0)")):
        g.conv2d(a, np.zeros((7, 7, 4, 2)))
    with pytest.raises(GraphError, match=re.escape(
            "linear needs a flat tensor; flatten x (5, 5, 4) first")):
        g.linear(a, np.zeros((100, 2)))
    b = g.input("y", (5, 4, 4))
    with pytest.raises(GraphError, match=re.escape(
            "add needs equal shapes, not x (5, 5, 4) and y (5, 4, 4)")):
        g.add(a, b)
    with pytest.raises(GraphError, match=re.escape(
            "out_scale is required: the graph has no calibration data")):
        g.conv2d(b, np.zeros((1, 1, 4, 4)))
    with pytest.raises(GraphError, match=re.escape(
            "input 'x' values must be from -128 to 127, not -200..-200")):
        g.forward({"x": np.full((5, 5, 4), -200), "y": np.zeros((5, 4, 4))})
    g.output(g.max_pool2d(a, 2))
    with pytest.raises(ValueError, match=re.escape(
            "network has 4-bit weights but the accelerator has weight_bits=8")):
        compile_network(g, PRESETS["8x8"])


# -- RTL ------------------------------------------------------------------------------------


RTL_CASES = [
    ((5, 6, 3), 5, (3, 3), (1, 1), 1, 1),
    ((7, 6, 4), 4, (3, 3), (2, 2), "same", 4),
    ((6, 7, 8), 8, (3, 3), (1, 1), 1, 8),
]


@pytest.mark.parametrize("case", RTL_CASES, ids=["conv3x3", "dw3x3s2", "dw3x3"])
def test_conv_on_rtl(case):
    """A small sample on the Verilated RTL of ``tiny`` (cached build): outputs and cycles
    equal to the simulator's."""
    shape, cout, kernel, stride, pad, groups = case
    rng = np.random.default_rng(sum(shape))
    x = _image(rng, shape)
    g = Graph("rtl", weight_bits=4)
    a = g.input("x", shape, calib=x)
    h = g.conv2d(a, rng.integers(-8, 8, (*kernel, shape[2] // groups, cout)), stride=stride,
                 padding=pad, groups=groups, act="relu")
    g.output(g.max_pool2d(h, 2, stride=1))
    _, res = _execute(g, TINY, {"x": x}, host_im2col=False,
                      backends=("reference", "sim", "rtl"))
    assert res["rtl"].cycles == res["sim"].cycles


def test_pool_add_linear_on_rtl():
    """ISA v2 on the RTL: scaled identity taps (``mul_m1``) of a residual add, ``acc_max``
    of max pooling, average pooling, the global pooling's row reduction, flatten and a
    linear layer."""
    rng = np.random.default_rng(21)
    x = _image(rng, (6, 5, 4))
    g = Graph("rtl2", weight_bits=4)
    a = g.input("x", (6, 5, 4), calib=x)
    h = g.conv2d(a, rng.integers(-8, 8, (3, 3, 4, 4)), padding=1, act="relu", w_scale=0.3)
    s = g.add(a, h, act="relu")
    m = g.max_pool2d(s, 3, stride=2, padding=1)
    p = g.global_avg_pool(g.avg_pool2d(m, 2, stride=1))
    g.output(g.linear(g.flatten(p), rng.integers(-8, 8, (4, 3))))
    prog, res = _execute(g, TINY, {"x": _image(rng, (6, 5, 4))},
                         backends=("reference", "sim", "rtl"))
    assert any(i.opcode == Opcode.COMPUTE and i.mul_m1 for i in prog.instrs)
    assert any(i.opcode == Opcode.COMPUTE and i.reduce for i in prog.instrs)
    assert res["rtl"].cycles == res["sim"].cycles


# -- IR, verifiers, program files -----------------------------------------------------------


def _small_net(rng, cfg=TINY):
    x = _image(rng, (7, 6, 5))
    g = Graph("small", weight_bits=cfg.weight_bits)
    a = g.input("x", (7, 6, 5), calib=x)
    h = g.conv2d(a, rng.integers(-8, 8, (3, 3, 5, 6)), stride=2, padding="same", act="relu")
    g.output(h, g.max_pool2d(h, 3, stride=1, padding=1))
    return g, x


def test_dump_and_program_file_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    g, x = _small_net(rng)
    seen = {}
    prog = compile_network(g, TINY, host_im2col=False, dump="all",
                           dump_fn=lambda name, text: seen.setdefault(name, text))
    assert "tensor conv0: hidden u8 [16, 6] scale=" not in seen["graph"]
    assert "tensor conv0: output u8 [30, 6]" in seen["graph"]        # 4x3 map, border 1
    assert "map 4x3 border (1, 1, 1, 1)" in seen["graph"]
    assert "conv0: conv0 = conv(x, kernel 3x3 stride (2, 2)" in seen["graph"]
    assert "output tiles of up to" in seen["tile"] and "phase planes" in seen["tile"]
    assert "slab t0 x[0] phase 1,1" in seen["schedule"]
    from lowbit.program import Program

    again = Program.load(prog.save(tmp_path / "net.lbp"))
    assert again.meta["network"] == prog.meta["network"]
    out = unpack_outputs(again, run(again, pack_inputs(again, {"x": x}),
                                    backend="reference").outputs)
    want = g.forward({"x": x})
    assert all(np.array_equal(out[k], want[k]) for k in want)
    assert out["conv0"].shape == (4, 3, 6)       # its border (for the pool) is stripped


def test_spatial_verifiers_reject_corrupted_ir():
    from dataclasses import replace

    from lowbit.compiler import passes
    from lowbit.compiler.conv import lower

    rng = np.random.default_rng(6)
    g, _ = _small_net(rng)
    graph, _ = lower(g, TINY, host_im2col=False)
    passes.verify_graph(graph)
    conv = graph.layers[0]
    bad = replace(graph, layers=(replace(conv, origins=((2, 0),)),) + graph.layers[1:])
    with pytest.raises(CompileError, match=re.escape(
            "conv0: the window of x (origin (2, 0), kernel (3, 3), stride (2, 2), output "
            "(4, 3)) leaves its stored image 9x7")):
        passes.verify_graph(bad)
    taps = conv.taps[1:] + conv.taps[:1]
    with pytest.raises(CompileError, match="conv0: taps must be grouped by output block"):
        passes.verify_graph(replace(graph, layers=(replace(conv, taps=taps),)
                                    + graph.layers[1:]))
    tiled = passes.plan_tiles(graph)
    passes.verify_tiling(tiled)
    lt = tiled.tilings[0]
    with pytest.raises(CompileError, match=re.escape(
            "layer 0: output tiles do not cover the 4x3 output once")):
        passes.verify_tiling(replace(tiled, tilings=(replace(lt, out_tiles=lt.out_tiles[1:]),)
                                     + tiled.tilings[1:]))
    with pytest.raises(CompileError, match="layer 0: activation slots exceed act_depth"):
        passes.verify_tiling(replace(tiled, tilings=(replace(lt, act_slots=1000),)
                                     + tiled.tilings[1:]))
    sched = passes.schedule(tiled)
    passes.verify_schedule(sched)
    ops = tuple(op for op in sched.ops if not (op.opcode == Opcode.STORE
                                               and op.note.startswith("maxpool")))
    with pytest.raises(CompileError, match=r"schedule has \d+ STOREs, expected \d+"):
        passes.verify_schedule(replace(sched, ops=ops))


def test_global_pool_into_a_padded_map_is_one_2d_store():
    """A global pooling whose output feeds a padded convolution: its blocks' planes are
    ``3 x 3`` lines apart, so the one STORE for all blocks is 2-D (a line per block, pitch
    one plane); and the 3x3 convolution's tile (accumulator rows two lines wider than the
    map) goes out as one 2-D STORE per block (a group per row)."""
    cfg = CONFIGS["tiny"]
    rng = np.random.default_rng(4)
    channels, R = 12, cfg.rows
    nb = channels // R
    g = Graph("gap_pad", weight_bits=cfg.weight_bits)
    a = g.input("x", (5, 7, channels), signed=False, calib=_image(rng, (5, 7, channels),
                                                                  signed=False))
    top = 1 << (cfg.weight_bits - 1)
    h = g.conv2d(a, rng.integers(-top, top, (3, 3, channels, channels)), padding=1,
                 act="relu")
    p = g.global_avg_pool(h)
    g.output(g.conv2d(p, rng.integers(-top, top, (3, 3, channels, R)), padding=1))
    prog, _ = _execute(g, cfg, {"x": _image(rng, (5, 7, channels), signed=False)})
    stores = [i for i in prog.instrs if i.opcode == Opcode.STORE]
    pool = [i for i in stores if i.rows == 1 and i.acc_pitch == 1]
    assert [(i.reps_m1 + 1, i.dram_pitch) for i in pool] == [(nb, 9)]
    conv = [i for i in stores if i.rows == 7]    # the 5x7 map: one tile, rows 9 lines apart
    assert [(i.reps_m1 + 1, i.acc_pitch, i.dram_pitch) for i in conv] == [(5, 9, 7)] * nb


@pytest.mark.parametrize("limit,shapes", [
    ({"reps_m1": 1}, [(2, 7), (2, 7), (1, 7)]),        # at most two groups: rows 0-1, 2-3, 4
    ({"acc_pitch": 8}, [(1, 7)] * 5),                  # the pitch (9) overflows: one per row
    ({"dram_pitch": 6}, [(1, 7)] * 5),                 # the map row (7 lines) overflows
])
def test_2d_store_splits_where_a_field_would_overflow(monkeypatch, limit, shapes):
    """With a STORE field narrowed (conv._field_max), the 5x7 tile's block is split into
    several STOREs only as far as needed, and the outputs stay exact."""
    real = conv._field_max
    monkeypatch.setattr(conv, "_field_max", lambda name: limit.get(name, real(name)))
    cfg = CONFIGS["tiny"]
    rng = np.random.default_rng(8)
    g = Graph("split", weight_bits=cfg.weight_bits)
    a = g.input("x", (5, 7, 4), signed=False, calib=_image(rng, (5, 7, 4), signed=False))
    top = 1 << (cfg.weight_bits - 1)
    g.output(g.conv2d(a, rng.integers(-top, top, (3, 3, 4, 4)), padding=1))
    prog, _ = _execute(g, cfg, {"x": _image(rng, (5, 7, 4), signed=False)})
    stores = [i for i in prog.instrs if i.opcode == Opcode.STORE]
    assert [(i.reps_m1 + 1, i.rows) for i in stores] == shapes
