"""Convolutions, pooling and residual adds as implicit GEMMs on the systolic array.

Lowering (:func:`lower`, network :class:`~lowbit.compiler.graph.Graph` -> :class:`GraphIR`)
-----------------------------------------------------------------------------------------
Feature maps live in DRAM in the blocked layout of ``lowbit.layout`` with one line per
pixel: channel block ``b`` holds the padded image row-major, ``(H + top + bottom) * (W + left
+ right)`` lines of ``rows`` channels. The border is as wide as the largest padding any
consumer needs and holds the tensor's zero point (the value 0): the program's memory image
fills the buffers of tensors with a nonzero zero point with it (:func:`pack_inputs` the
inputs' borders), the producer stores only the interior, so a consumer's window reads
padding like any other pixel.

Zero points: memory holds ``q = v + zero`` and the array sums ``q``. Every layer's bias
absorbs its inputs' zero points (:func:`fold_zero_points`, the graph operators'
``zero_offset``): ``- z * sum(w)`` over each
output channel's kernel (convolution, linear; border pixels and padding channels have zero
weights), ``- z * kh * kw`` (average pooling, padding counted), ``- z`` (max pooling, an
activation), ``- mul_a * z_a - mul_b * z_b`` (residual add); the STORE adds the output's
zero point (parameter byte 7) after the ReLU, before the clamp.

Every spatial operator becomes a :class:`SpatialSpec`: a list of *taps*, each one COMPUTE
``acc (+)= mul * shifted(src, ky, kx)[k-block] @ tile`` into one output channel block:

* ``Conv2D`` (any ``kh x kw``, stride, padding, groups): a tap per (output block, input
  block, kernel position); the tile is the kernel position's weights restricted to the two
  blocks. Blocks of different groups have no tap, so a depthwise convolution is one
  *diagonal* tile per (block, position) at this level; the tiling pass fixes its slab pitch
  and groups those into depthwise FIR taps (:func:`_fir_spec`, COMPUTE ``depthwise``): the
  positions of one stride phase within ``dw_taps - 1`` slab lines of each other share a
  COMPUTE.
* ``Pool2D``: identity tiles; ``max`` keeps the maximum (``acc_max``), ``avg`` sums and the
  STORE requantizes by ``~1 / (kh * kw)``; ``global_avg_pool`` is ``avg`` over the map.
* ``Add``: two identity taps per block, scaled by the integers ``mul_a``, ``mul_b``
  (COMPUTE ``mul_m1``), then the STORE's requantization.
* ``Activation`` (ReLU/ReLU6 on a map): one identity tap and the STORE's clamp.
* ``Linear`` stays a :class:`LinearSpec`; ``Flatten`` is free: the flat tensor is an alias
  of the map's bytes (``(1, blocks * lines * rows)``) and the linear layer's weight rows are
  permuted to that order (zero for border pixels and padding channels).

Schedule of a spatial layer (:func:`plan_spatial`, :func:`schedule_spatial`)
-----------------------------------------------------------------------------
The output is cut into tiles of ``rows x cols`` pixels. For one tile, each source channel
block is loaded as a *slab*: the input window of the tile split into the stride phases its
taps use (``(ky % sy, kx % sx)``), each phase a plane of ``pitch`` lines per row. With
stride 1 in x a phase plane is one LOAD (2-D: one transfer row per image row); with a
larger x stride the LOAD's stride walks every ``sx``-th pixel of one image row. Every tap is
then one COMPUTE over ``(rows - 1) * pitch + cols`` consecutive slab lines starting at its
phase plane plus ``(ky // sy) * pitch + kx // sx``: output pixel ``(r, c)`` lands in
accumulator line ``r * pitch + c``; the ``pitch - cols`` lines between rows are computed
and never stored. One 2-D STORE per channel block writes the tile's rows (a group per
output row, ``pitch`` accumulator lines and the destination's row width in DRAM apart) into
the destination's interior (a 1-D STORE of the whole tile when neither side has gaps).

This needs one activation line to be whole bus beats (``act_line_bits >= bus_bits``: the
presets ``tiny``, ``8x8``, ``16x16`` and ``default`` have ``act_line_bits == bus_bits``),
so that a LOAD can gather single pixels. Configs with several lines per beat are refused
with a :class:`CompileError` naming the numbers (``lowbit.compiler`` has no im2col copy).

A pooling layer with a ``1 x 1`` output over several channel blocks (global pooling) is
scheduled *pixel-major* instead: one 2-D LOAD per input pixel gathers its channel blocks
into consecutive lines (``rows`` = blocks, ``stride`` = one block plane) and one COMPUTE per
pixel streams them into accumulator lines ``0 .. blocks-1``, rather than one one-line
COMPUTE per pixel and block.

Tiles are chosen by a cost model (larger tiles amortise loads and per-instruction costs;
they must fit half the accumulator memory and the activation scratchpad). Weight tiles
stay resident when the layer's distinct tiles fit the weight ring, otherwise they stream in
order for every output tile; slabs stay resident (and the next tile's slabs load during the
current one when there is room) or are loaded again for every output block.

``compile_network`` also offers ``host_im2col``: an input image consumed by one ordinary
convolution is handed over by the host already unfolded (``(OH * OW, kh * kw * C)``, see
:func:`pack_inputs`), and that convolution becomes a 1x1 convolution. For 1- or 3-channel
images this fills the array's rows instead of one or three of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lowbit import isa, layout
from lowbit.config import AccelConfig
from lowbit.isa import LoadTarget, Opcode
from lowbit.timing import STORE_STAGES

from .graph import Activation, Add, Conv2D, Flatten, Graph, Linear, Pool2D
from .ir import GraphIR, LinearSpec, Op, SpatialSpec, SpatialTiling, Tap, TensorSpec, TiledIR
from .passes import (
    _XFER,
    CompileError,
    _Builder,
    _ceil_div,
    _ring_geometry,
    param_load_op,
    weight_load_op,
)

__all__ = [
    "check_spatial_config",
    "fold_zero_points",
    "lower",
    "pack_inputs",
    "plan_spatial",
    "schedule_spatial",
    "unpack_outputs",
    "verify_spatial",
    "verify_spatial_tiling",
]


#: Load-unit cycles a LOAD costs in the tiling model's throughput term besides its beats (its
#: start and address phase; its latency overlaps with the LOADs in flight).
_LOAD_ISSUE = 4


# -- config ---------------------------------------------------------------------------------


def check_spatial_config(cfg: AccelConfig) -> None:
    """Refuse configs whose activation lines are narrower than a bus beat."""
    if cfg.act_line_bits < cfg.bus_bits:
        raise CompileError(
            f"feature maps need an activation line (rows * 8 = {cfg.act_line_bits} bits) of "
            f"at least one bus beat ({cfg.bus_bits} bits) so that a LOAD can gather single "
            f"pixels; this config packs {cfg.lines_per_beat} lines per beat. Use rows >= "
            f"{cfg.bus_bits // 8} or bus_bits <= {cfg.act_line_bits}")


# -- lowering -------------------------------------------------------------------------------


def _im2col_rewrite(net: Graph, cfg: AccelConfig) -> tuple[Graph, dict]:
    """Input images consumed only by one ungrouped convolution whose unfolded channels fill
    fewer blocks: hand them over unfolded and make the convolution 1x1."""
    tensors, ops, info = dict(net.tensors), list(net.ops), {}
    for name in net.inputs:
        t = net.tensors[name]
        users = net.consumers(name)
        if not t.is_map or name in net.outputs or len(users) != 1 \
                or not isinstance(users[0], Conv2D) or users[0].groups != 1:
            continue
        op = users[0]
        kh, kw, cin, cout = op.weight.shape
        if layout.blocks(cfg, cin) * kh * kw <= layout.blocks(cfg, kh * kw * cin):
            continue
        oh, ow, _ = net.tensors[op.dst].shape
        tensors[name] = dataclasses.replace(t, shape=(oh, ow, kh * kw * cin))
        ops[ops.index(op)] = dataclasses.replace(
            op, weight=op.weight.reshape(1, 1, kh * kw * cin, cout), stride=(1, 1),
            padding=(0, 0, 0, 0))
        info[name] = dict(kernel=[kh, kw], stride=list(op.stride), padding=list(op.padding),
                          image=list(t.shape))
    if not info:
        return net, {}
    return dataclasses.replace(net, tensors=tensors, ops=ops, calib={}), info


def _borders(net: Graph) -> dict[str, tuple[int, int, int, int]]:
    out = {}
    for name, t in net.tensors.items():
        if not t.is_map:
            continue
        need = [0, 0, 0, 0]
        for op in net.consumers(name):
            if isinstance(op, (Conv2D, Pool2D)):
                need = [max(a, b) for a, b in zip(need, op.padding, strict=True)]
        out[name] = tuple(need)
    return out


def fold_zero_points(net: Graph, op) -> np.ndarray:
    """``op``'s bias for the accelerator, whose accumulator sums stored integers ``q = v +
    zero``: the graph bias minus the operator's ``zero_offset`` of its input zero points
    (see the module docstring). Raises :class:`CompileError` when it leaves int32."""
    z = [net.tensors[s].zero for s in op.srcs]
    bias = np.asarray(op.bias, np.int64) - op.zero_offset(z)
    if bias.min(initial=0) < -(1 << 31) or bias.max(initial=0) >= 1 << 31:
        raise CompileError(f"{op.name}: the bias with the input zero point {z} folded in "
                           f"({int(bias.min())}..{int(bias.max())}) does not fit int32")
    return np.broadcast_to(bias, np.shape(op.bias)).copy()


def _dedupe(cfg, taps: list[Tap], tiles: list[np.ndarray]):
    """Share identical tiles when the distinct ones fit the weight ring (then they stay
    resident); otherwise keep one tile per tap, in tap order (streamed)."""
    wg, wslots, _, _ = _ring_geometry(cfg)
    index: dict[bytes, int] = {}
    uniq, remap = [], []
    for t in tiles:
        key = t.tobytes()
        if key not in index:
            index[key] = len(uniq)
            uniq.append(t)
        remap.append(index[key])
    if len(uniq) <= wg * wslots:
        taps = [dataclasses.replace(tp, tile=remap[tp.tile]) for tp in taps]
        return taps, np.array(uniq, dtype=np.int64).reshape(-1, cfg.rows, cfg.cols)
    order = [tiles[tp.tile] for tp in taps]
    taps = [dataclasses.replace(tp, tile=i) for i, tp in enumerate(taps)]
    return taps, np.array(order, dtype=np.int64).reshape(-1, cfg.rows, cfg.cols)


def _conv_taps(cfg, op: Conv2D, cin: int):
    R, C = cfg.rows, cfg.cols
    kh, kw, cig, cout = op.weight.shape
    g = op.groups
    cog = cout // g
    kb, nb = layout.blocks(cfg, cin), layout.blocks(cfg, cout)
    ci = np.arange(kb * R)
    co = np.arange(nb * C)
    same = (ci[:, None] // cig) == (co[None, :] // cog)
    same &= (ci[:, None] < cin) & (co[None, :] < cout)
    dense = np.zeros((kh, kw, kb * R, nb * C), np.int64)
    rows_i, cols_o = np.nonzero(same)
    dense[:, :, rows_i, cols_o] = op.weight[:, :, rows_i % cig, cols_o]
    taps, tiles = [], []
    for n in range(nb):
        for k in range(kb):
            if not same[k * R:(k + 1) * R, n * C:(n + 1) * C].any():
                continue
            for ky in range(kh):
                for kx in range(kw):
                    taps.append(Tap(n=n, src=0, k=k, ky=ky, kx=kx, tile=len(tiles)))
                    tiles.append(dense[ky, kx, k * R:(k + 1) * R, n * C:(n + 1) * C])
    return _dedupe(cfg, taps, tiles)


def _fir_spec(cfg, ly: SpatialSpec, pitch: int) -> SpatialSpec:
    """``ly`` (a depthwise layer of diagonal taps, one per block and kernel position) with
    its taps grouped into depthwise FIR taps for slab ``pitch``: per block and stride phase
    plane, the kernel positions in order of line offset ``(ky // sy) * pitch + kx // sx``,
    each group the positions within ``fir_taps - 1`` lines of its first (the FIR's reach,
    :attr:`~lowbit.config.AccelConfig.dw_taps`); position ``o`` lines after the first puts
    its channel weights on tile column ``cols - 1 - o``."""
    C, T = cfg.cols, cfg.fir_taps
    sy, sx = ly.stride
    taps, tiles = [], []
    for n in range(layout.blocks(cfg, ly.n)):
        planes: dict[tuple[int, int], list[Tap]] = {}
        for tp in ly.taps_of(n):
            planes.setdefault((tp.ky % sy, tp.kx % sx), []).append(tp)
        for plane in sorted(planes):
            members = sorted(planes[plane],
                             key=lambda t: (t.ky // sy) * pitch + t.kx // sx)
            while members:
                first = members[0]
                group = [t for t in members
                         if (t.ky // sy - first.ky // sy) * pitch + t.kx // sx
                         - first.kx // sx < T]
                members = members[len(group):]
                fir = Tap(n=n, src=first.src, k=first.k, ky=first.ky, kx=first.kx,
                          tile=len(tiles), mul=first.mul,
                          fir=tuple((t.ky, t.kx) for t in group))
                tile = np.zeros((cfg.rows, C), np.int64)
                for t, o in zip(group, fir.offsets(ly.stride, pitch), strict=True):
                    tile[:, C - 1 - o] = np.diagonal(ly.tiles[t.tile])
                taps.append(fir)
                tiles.append(tile)
    taps, tiles = _dedupe(cfg, taps, tiles)
    return dataclasses.replace(ly, taps=tuple(taps), tiles=tiles, pitch=pitch)


def _identity_taps(cfg, nb: int, per_block) -> tuple[list[Tap], np.ndarray]:
    taps = [Tap(n=n, src=s, k=n, ky=ky, kx=kx, tile=0, mul=mul)
            for n in range(nb) for s, ky, kx, mul in per_block]
    return taps, np.eye(cfg.rows, cfg.cols, dtype=np.int64)[None]


def lower(net: Graph, cfg: AccelConfig, *, batch: int = 1,
          host_im2col: bool = True) -> tuple[GraphIR, dict]:
    """The :class:`GraphIR` of ``net`` for ``cfg`` and the I/O description that
    :func:`pack_inputs` and :func:`unpack_outputs` use (stored in the program's
    ``meta["network"]``)."""
    if not isinstance(net, Graph):
        raise TypeError(f"net must be a Graph, not {type(net).__name__}")
    if net.weight_bits != cfg.weight_bits:
        raise ValueError(f"network has {net.weight_bits}-bit weights but the accelerator has "
                         f"weight_bits={cfg.weight_bits}")
    if net.acc_bits != cfg.acc_bits:
        raise ValueError(f"network assumes acc_bits={net.acc_bits} but the accelerator has "
                         f"acc_bits={cfg.acc_bits}")
    if not net.outputs:
        raise ValueError(f"network {net.name!r} has no outputs (Graph.output)")
    for t in net.tensors.values():
        if t.bits > cfg.act_bits:
            raise ValueError(f"tensor {t.name} has {t.bits}-bit values but the accelerator "
                             f"has act_bits={cfg.act_bits}")
    maps = any(t.is_map for t in net.tensors.values())
    if maps:
        check_spatial_config(cfg)
        if batch != 1:
            raise ValueError(f"networks with feature maps run one image at a time (batch 1), "
                             f"not batch {batch}")
    im2col: dict = {}
    if host_im2col:
        net, im2col = _im2col_rewrite(net, cfg)
    borders = _borders(net)
    R = cfg.rows
    specs: dict[str, TensorSpec] = {}
    io: dict = {"inputs": {}, "outputs": {}}
    for name, t in net.tensors.items():
        role = "input" if name in net.inputs else ("output" if name in net.outputs
                                                   else "hidden")
        if t.is_map:
            h, w, c = t.shape
            bt, bb, bl, br = borders[name]
            specs[name] = TensorSpec(name, (h + bt + bb) * (w + bl + br), c, t.signed, t.bits,
                                     t.scale, role, hw=(h, w), border=borders[name],
                                     zero=t.zero)
        else:
            specs[name] = TensorSpec(name, batch, t.channels, t.signed, t.bits, t.scale, role,
                                     zero=t.zero)
    layers: list = []
    for op in net.ops:
        if isinstance(op, Flatten):
            src = specs[op.src]
            k = layout.blocks(cfg, src.cols) * layout.padded_rows(cfg, src.rows) * R
            specs[op.dst] = dataclasses.replace(specs[op.dst], rows=1, cols=k, alias=op.src)
            continue
        if isinstance(op, Linear):
            layers.append(_lower_linear(cfg, net, specs, op))
            continue
        if isinstance(op, Activation) and not net.tensors[op.src].is_map:
            c = specs[op.src].cols
            layers.append(LinearSpec(
                name=op.name, src=op.src, dst=op.dst, weight=np.eye(c, dtype=np.int64),
                bias=fold_zero_points(net, op), mult=op.mult, shift=op.shift, relu=op.relu,
                out_bits=op.out_bits, out_unsigned=op.out_unsigned,
                act_unsigned=not specs[op.src].signed))
            continue
        layers.append(_lower_spatial(cfg, net, specs, op))
    for name in net.inputs + net.outputs:
        t, s = net.tensors[name], specs[name]
        d = dict(shape=list(t.shape), border=list(s.border), rows=s.rows, cols=s.cols,
                 zero=t.zero)
        if name in im2col:
            d["im2col"] = im2col[name]
        if s.alias is not None:
            src = net.tensors[s.alias]
            d["flatten_of"] = dict(shape=list(src.shape), border=list(specs[s.alias].border))
        if name in net.inputs:
            io["inputs"][name] = d
        if name in net.outputs:
            io["outputs"][name] = {k: v for k, v in d.items() if k != "im2col"}
    ir = GraphIR(config=cfg, tensors=tuple(specs.values()), layers=tuple(layers),
                 inputs=tuple(net.inputs), outputs=tuple(net.outputs))
    return ir, io


def _flat_order(cfg, spec: TensorSpec, shape) -> np.ndarray:
    """For a flattened map: the alias row of each element of ``flatten`` (``(y, x, c)``)."""
    h, w, c = shape
    mp = layout.padded_rows(cfg, spec.rows)
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    line = (y + spec.border[0]) * spec.buf_hw[1] + x + spec.border[2]
    return (((ch // cfg.rows) * mp + line) * cfg.rows + ch % cfg.rows).reshape(-1)


def _lower_linear(cfg, net: Graph, specs, op: Linear) -> LinearSpec:
    src = specs[op.src]
    w = op.weight
    if src.alias is not None:
        full = np.zeros((src.cols, w.shape[1]), np.int64)
        full[_flat_order(cfg, specs[src.alias], net.tensors[src.alias].shape)] = w
        w = full
    return LinearSpec(name=op.name, src=op.src, dst=op.dst, weight=w,
                      bias=fold_zero_points(net, op),
                      mult=op.mult, shift=op.shift, relu=op.relu, out_bits=op.out_bits,
                      out_unsigned=op.out_unsigned, act_unsigned=not src.signed)


def _lower_spatial(cfg, net: Graph, specs, op) -> SpatialSpec:
    dst = net.tensors[op.dst]
    oh, ow, cout = dst.shape
    nb = layout.blocks(cfg, cout)
    srcs = tuple(op.srcs)
    for s in srcs:
        if not net.tensors[s].is_map:
            raise CompileError(f"{op.name}: {s} must be a feature map")
    pad = getattr(op, "padding", (0, 0, 0, 0))
    origins = tuple((specs[s].border[0] - pad[0], specs[s].border[2] - pad[2]) for s in srcs)
    acc_max = False
    if isinstance(op, Conv2D):
        taps, tiles = _conv_taps(cfg, op, net.tensors[op.src].channels)
        kind = "dwconv" if op.groups > 1 and op.weight.shape[2] == 1 else "conv"
        kernel, stride = op.kernel, op.stride
    elif isinstance(op, Pool2D):
        kh, kw = op.kernel
        taps, tiles = _identity_taps(cfg, nb, [(0, ky, kx, 1) for ky in range(kh)
                                                for kx in range(kw)])
        acc_max = op.mode == "max"
        kind, kernel, stride = op.kind, op.kernel, op.stride
    elif isinstance(op, Add):
        taps, tiles = _identity_taps(cfg, nb, [(0, 0, 0, op.mul_a), (1, 0, 0, op.mul_b)])
        kind, kernel, stride = "add", (1, 1), (1, 1)
    elif isinstance(op, Activation):
        taps, tiles = _identity_taps(cfg, nb, [(0, 0, 0, 1)])
        kind, kernel, stride = "act", (1, 1), (1, 1)
    else:  # pragma: no cover - every Graph operator is handled above
        raise CompileError(f"{op.name}: no lowering for {type(op).__name__}")
    return SpatialSpec(
        name=op.name, kind=kind, srcs=srcs, dst=op.dst, out_hw=(oh, ow), kernel=kernel,
        stride=stride, origins=origins, taps=tuple(taps), tiles=tiles, acc_max=acc_max,
        bias=fold_zero_points(net, op), mult=op.mult, shift=op.shift, relu=op.relu,
        out_bits=op.out_bits, out_unsigned=op.out_unsigned,
        act_unsigned=tuple(not specs[s].signed for s in srcs), macs=op.macs(net))


# -- verification of the graph level --------------------------------------------------------


def verify_spatial(g: GraphIR, ly: SpatialSpec) -> None:
    """Shapes, window bounds, tap order and ranges of one spatial layer."""
    cfg = g.config
    where = ly.name
    dst = g.tensor(ly.dst)
    if dst.hw != ly.out_hw or dst.cols != ly.n:
        raise CompileError(f"{where}: output {ly.out_hw}x{ly.n} does not match tensor "
                           f"{dst.name} {dst.hw}x{dst.cols}")
    if dst.signed == ly.out_unsigned or dst.bits != ly.out_bits:
        raise CompileError(f"{where}: output format does not match tensor {dst.name}")
    if len(ly.origins) != len(ly.srcs) or len(ly.act_unsigned) != len(ly.srcs):
        raise CompileError(f"{where}: one origin and signedness per source required")
    sy, sx = ly.stride
    kh, kw = ly.kernel
    oh, ow = ly.out_hw
    for i, name in enumerate(ly.srcs):
        src = g.tensor(name)
        if src.hw is None:
            raise CompileError(f"{where}: source {name} is not a feature map")
        if ly.act_unsigned[i] == src.signed:
            raise CompileError(f"{where}: act_unsigned of {name} does not match the tensor")
        hb, wb = src.buf_hw
        y0, x0 = ly.origins[i]
        if y0 < 0 or x0 < 0 or y0 + (oh - 1) * sy + kh > hb or x0 + (ow - 1) * sx + kw > wb:
            raise CompileError(f"{where}: the window of {name} (origin {(y0, x0)}, kernel "
                               f"{ly.kernel}, stride {ly.stride}, output {ly.out_hw}) leaves "
                               f"its stored image {hb}x{wb}")
    nb = layout.blocks(cfg, ly.n)
    lo, hi = -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1
    if ly.tiles.ndim != 3 or ly.tiles.shape[1:] != (cfg.rows, cfg.cols):
        raise CompileError(f"{where}: tiles must have shape (T, {cfg.rows}, {cfg.cols}), not "
                           f"{ly.tiles.shape}")
    if ly.tiles.size and (ly.tiles.min() < lo or ly.tiles.max() > hi):
        raise CompileError(f"{where}: weight out of range for weight_bits={cfg.weight_bits}")
    prev_n, seen = -1, set()
    for tp in ly.taps:
        if tp.n < prev_n:
            raise CompileError(f"{where}: taps must be grouped by output block")
        if tp.n != prev_n:
            prev_n, seen, last = tp.n, set(), None
        key = (tp.src, tp.k)
        if key != last and key in seen:
            raise CompileError(f"{where}: the taps of source block {key} in output block "
                               f"{tp.n} are not consecutive")
        seen.add(key)
        last = key
        src = g.tensor(ly.srcs[tp.src])
        if not (0 <= tp.n < nb and 0 <= tp.k < layout.blocks(cfg, src.cols)
                and 0 <= tp.ky < kh and 0 <= tp.kx < kw and 0 <= tp.tile < len(ly.tiles)
                and 1 <= tp.mul <= 256
                and all(0 <= y < kh and 0 <= x < kw and y % sy == tp.ky % sy
                        and x % sx == tp.kx % sx for y, x in tp.positions)):
            raise CompileError(f"{where}: tap {tp} out of range")
        if tp.fir:
            _verify_fir(cfg, ly, tp)
    if sorted({tp.n for tp in ly.taps}) != list(range(nb)):
        raise CompileError(f"{where}: every output block needs at least one tap")
    for name in ("bias", "mult", "shift"):
        if getattr(ly, name).shape != (ly.n,):
            raise CompileError(f"{where}: {name} must have shape ({ly.n},)")


def _verify_fir(cfg, ly: SpatialSpec, tp: Tap) -> None:
    """A depthwise FIR tap: a fixed layer pitch, distinct line offsets from 0 (its first
    position) to at most ``fir_taps - 1``, and zero weights in the tile columns beyond its
    reach (the COMPUTE contract)."""
    C, T = cfg.cols, cfg.fir_taps
    offs = tp.offsets(ly.stride, ly.pitch) if ly.pitch > 0 else ()
    if not offs or offs[0] != 0 or min(offs) != 0 or max(offs) >= T \
            or len(set(offs)) != len(offs):
        raise CompileError(f"{ly.name}: depthwise tap {tp} needs line offsets from 0 to at "
                           f"most dw_taps - 1 = {T - 1} at the layer pitch {ly.pitch}, not "
                           f"{list(offs)}")
    if ly.tiles[tp.tile][:, :C - 1 - max(offs)].any():
        raise CompileError(f"{ly.name}: tile {tp.tile} of depthwise tap {tp} has weights "
                           f"beyond its reach {max(offs)}")


# -- tiling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    pitch: int
    hq: int
    planes: tuple[tuple[int, int, int], ...]
    slab_lines: int
    acc_lines: int


def _geometry(ly: SpatialSpec, nr: int, nc: int) -> _Geometry:
    used = sorted(ly.phase_window)
    pitch = _tile_pitch(ly, nc)
    hq = nr + ly.depth
    planes = tuple((py, px, i * hq * pitch) for i, (py, px) in enumerate(used))
    return _Geometry(pitch, hq, planes, len(used) * hq * pitch, (nr - 1) * pitch + nc)


def _phase_extent(ly: SpatialSpec, py: int, px: int, nr: int, nc: int) -> tuple[int, int]:
    """Rows and columns of phase plane ``(py, px)`` that a ``nr x nc`` tile loads (with
    stride 1 in x, whole pitch-wide rows: one 2-D LOAD per plane)."""
    depth, reach = ly.phase_window[py, px]
    if ly.stride[1] == 1:
        return nr + depth, _tile_pitch(ly, nc)
    return nr + depth, nc + reach


def _left_shift(ly: SpatialSpec, nc: int) -> int:
    """Columns a tile ``nc`` wide loads left of its window: with stride 1 in x a plane row
    is ``pitch`` columns, so a tile narrower than a fixed pitch allows starts its slab rows
    that much further left (its COMPUTEs start as much later in the slab)."""
    if ly.stride[1] != 1:
        return 0
    return _tile_pitch(ly, nc) - nc - ly.reach


def _tile_pitch(ly: SpatialSpec, nc: int) -> int:
    """Slab lines per row (and accumulator lines per output row) of a tile ``nc`` wide: the
    layer's fixed pitch if it has one (depthwise FIR taps), else ``nc`` plus the window's
    reach. A depthwise COMPUTE's trailing lines stay inside its phase plane: its last
    position's offset plus ``(nr - 1) * pitch + nc`` lines is at most the plane's
    ``(nr + depth) * pitch``."""
    return ly.pitch or nc + ly.reach


def _splits(total: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(size, total - s)) for s in range(0, total, size)]


def _slab_keys(ly: SpatialSpec, n: int | None = None) -> list[tuple[int, int]]:
    keys = []
    for t in ly.taps:
        if (n is None or t.n == n) and (t.src, t.k) not in keys:
            keys.append((t.src, t.k))
    return keys


def _field_max(name: str) -> int:
    return (1 << isa.field_offsets(Opcode.STORE)[name][1]) - 1


def _store_spans(g: GraphIR, ly: SpatialSpec, pitch: int, nr: int,
                 nc: int) -> list[tuple[int, int, int]]:
    """The STOREs of one channel block of an ``nr x nc`` output tile whose rows are ``pitch``
    accumulator lines apart: ``(first output row, groups, lines per group)`` each. One STORE
    of ``nr * nc`` lines when neither side has gaps; else one 2-D STORE of ``nr`` groups
    (one per output row), split only where a field would overflow: chunks of rows when
    ``reps`` or the line total would, one STORE per row when a pitch would."""
    dst_w = g.tensor(ly.dst).buf_hw[1]
    if pitch == nc and dst_w == nc:
        return [(0, 1, nr * nc)]
    if nr > 1 and (pitch > _field_max("acc_pitch") or dst_w > _field_max("dram_pitch")):
        return [(r, 1, nc) for r in range(nr)]
    most = min(_field_max("reps_m1") + 1, isa.STORE_MAX_LINES // nc)
    return [(r, min(most, nr - r), nc) for r in range(0, nr, most)]


def _stores_per_tile(g: GraphIR, ly: SpatialSpec, geo: _Geometry, nr: int, nc: int) -> int:
    return len(_store_spans(g, ly, geo.pitch, nr, nc))


def _spatial_cost(cfg, g, ly, nr, nc, wg, ring, acc_cap) -> tuple[int, dict] | None:
    R, C, B = cfg.rows, cfg.cols, cfg.beat_bytes
    lb = cfg.act_line_bits // cfg.bus_bits
    wtb = cfg.weight_tile_beats
    oh, ow = ly.out_hw
    sx = ly.stride[1]
    geo = _geometry(ly, nr, nc)
    depth = cfg.act_depth
    if geo.acc_lines > acc_cap or geo.slab_lines > depth \
            or geo.slab_lines * lb > 1 << 16 \
            or nc + ly.reach > geo.pitch:
        return None
    nt = _ceil_div(oh, nr) * _ceil_div(ow, nc)
    nb = layout.blocks(cfg, ly.n)
    slots = depth // geo.slab_lines
    keys = _slab_keys(ly)
    resident = slots >= len(keys)
    per_n = [len(_slab_keys(ly, n)) for n in range(nb)]
    n_taps = len(ly.taps)
    rows = geo.acc_lines

    def per_compute(tp: Tap) -> int:
        """S-stage cycles of one COMPUTE: its lines, the weight preload, or half the pair
        of COMPUTEs between reuses of a weight bank."""
        lines = rows + tp.dw_reach(ly.stride, geo.pitch)
        return max(lines, wtb + 3, _ceil_div(lines + R + C + 1, 2))

    comp = nt * sum(per_compute(tp) for tp in ly.taps)
    mean_compute = _ceil_div(comp, nt * n_taps)
    ext = [_phase_extent(ly, py, px, nr, nc) for py, px, _ in geo.planes]
    loads_per_slab = len(ext) if sx == 1 else sum(r for r, _ in ext)
    beats_per_slab = sum(r * c for r, c in ext) * lb
    slabs = nt * (len(keys) if resident else sum(per_n))
    # LOADs overlap (LOAD_OUTSTANDING in flight): a few issue cycles each, not _XFER
    act = slabs * (beats_per_slab + _LOAD_ISSUE * loads_per_slab)
    n_tiles = len(ly.tiles)
    w_res = n_tiles <= ring
    n_w = n_tiles if w_res else nt * n_tiles
    wload = n_w * wtb + _XFER * _ceil_div(n_w, wg)
    spt = _stores_per_tile(g, ly, geo, nr, nc)
    # the store unit per tile and block: a pipeline fill per STORE, a beat per line
    # (lowbit.timing.STORE_STAGES)
    store_busy = spt * (STORE_STAGES + 1) + nr * nc * max(1, lb)
    store = nt * nb * (store_busy + 4)
    instrs = nt * n_taps + slabs * loads_per_slab + _ceil_div(n_w, wg) + nt * nb * spt
    fetch = (2 + _XFER + _ceil_div(cfg.fetch_burst * 16, B) + cfg.fetch_burst) \
        / cfg.fetch_burst
    dispatch = int(instrs * fetch)
    slab_time = beats_per_slab + _LOAD_ISSUE * loads_per_slab + _XFER   # one latency
    prologue = slab_time + min(wg, n_tiles) * wtb + 2 * _XFER
    epilogue = R + C + nb * store_busy + _XFER     # the last tile's blocks drain
    cost = max(comp, act + wload, store, dispatch) + prologue + epilogue
    if not (resident and slots >= 2 * len(keys)):
        cost += (nt - 1) * max(0, slab_time - mean_compute)
    tile_time = max(1, sum(per_compute(tp) for tp in ly.taps_of(0)))
    drain = R + C + 2 + store_busy + 2 * _XFER
    buffers = min(cfg.acc_depth // rows,
                  2 + _ceil_div(max(0, drain - tile_time), tile_time))
    cost += nt * nb * max(0, drain - (buffers - 1) * tile_time)
    return int(cost), dict(geo=geo, slots=slots, resident=resident, w_res=w_res,
                           buffers=buffers, spt=spt, slabs=len(keys))


def _global_window(cfg, ly: SpatialSpec) -> tuple[int, int] | None:
    """The window ``(kh, kw)`` of a pooling layer with a 1x1 output whose every block uses
    the same tile and scale at every position, when one image row of it fits half the
    activation scratchpad (it is then scheduled as row reductions); else None."""
    nb = layout.blocks(cfg, ly.n)
    if ly.kind not in ("avgpool", "maxpool") or ly.out_hw != (1, 1):
        return None
    kh, kw = ly.kernel
    first = ly.taps_of(0)
    if len(first) != kh * kw or kw > cfg.act_depth // 2 or nb > cfg.acc_depth // 2:
        return None
    for n in range(nb):
        taps = ly.taps_of(n)
        if len(taps) != len(first) or any(
                (t.src, t.k, t.ky, t.kx, t.tile, t.mul) != (0, n, f.ky, f.kx, first[0].tile,
                                                            first[0].mul)
                for t, f in zip(taps, first, strict=True)):
            return None
    return kh, kw


def _uniform_store(g: GraphIR, ly: SpatialSpec) -> bool:
    """One STORE can write every block of a 1x1 output: full blocks and the same
    requantization for every channel; a 1-D STORE of one line per block, or a 2-D STORE of
    a group per block when the destination has a border (block planes of more than one line,
    the plane size fitting ``dram_pitch``)."""
    cfg = g.config
    mp = layout.padded_rows(cfg, g.tensor(ly.dst).rows)
    nb = layout.blocks(cfg, ly.n)
    return (mp == 1 or (mp <= _field_max("dram_pitch") and nb <= _field_max("reps_m1") + 1)) \
        and ly.n % cfg.cols == 0 and all(np.all(v == v[0]) for v in (ly.bias, ly.mult, ly.shift))


def _plan_reduce(cfg, g, ly, index, window, *, param_group, param_slots) -> SpatialTiling:
    R, C = cfg.rows, cfg.cols
    lb = cfg.act_line_bits // cfg.bus_bits
    nb = layout.blocks(cfg, ly.n)
    kh, kw = window
    chunk = max(1, min(kh, cfg.act_depth // (2 * kw)))
    slab = chunk * kw
    chunks = nb * _ceil_div(kh, chunk)
    per_compute = max(slab, cfg.weight_tile_beats + 3)
    cost = max(chunks * per_compute, chunks * (_XFER + slab * lb)) + 2 * _XFER + R + C
    return SpatialTiling(
        layer=index, out_tiles=((0, 1, 0, 1),), pitch=kw, planes=((0, 0, 0),),
        slab_lines=slab, slabs=nb, act_slots=cfg.act_depth // slab, act_resident=True,
        weight_resident=True, param_resident=nb <= param_group * param_slots,
        acc_buffers=min(2, cfg.acc_depth // nb), acc_lines=nb, est_cycles=int(cost),
        n_computes=chunks, n_stores=1 if _uniform_store(g, ly) else nb,
        reduce_rows=chunk)


def _fir_candidate(cfg, ly: SpatialSpec):
    """For a depthwise layer of diagonal taps: a function of a tile width giving the layer
    with depthwise FIR taps for that width's pitch (one per pitch); else None (also when the
    config has no FIR mode, ``dw_taps = 0``)."""
    if ly.kind != "dwconv" or ly.pitch or any(tp.fir for tp in ly.taps) \
            or cfg.fir_taps == 0:
        return None
    specs: dict[int, SpatialSpec] = {}

    def spec(nc: int) -> SpatialSpec:
        pitch = _tile_pitch(ly, nc)
        if pitch not in specs:
            specs[pitch] = _fir_spec(cfg, ly, pitch)
        return specs[pitch]

    return spec


def plan_spatial(cfg: AccelConfig, g: GraphIR, ly: SpatialSpec, index: int, *,
                 weight_group: int, weight_slots: int, param_group: int,
                 param_slots: int) -> tuple[SpatialTiling, SpatialSpec]:
    """Choose the output tiles of a spatial layer (see the module docstring); return them
    and the layer, a depthwise one with its taps grouped into depthwise FIR taps for the
    chosen tile pitch."""
    window = _global_window(cfg, ly)
    if window is not None:
        return _plan_reduce(cfg, g, ly, index, window, param_group=param_group,
                            param_slots=param_slots), ly
    oh, ow = ly.out_hw
    acc_cap = cfg.acc_depth // 2
    ring = weight_group * weight_slots
    fir = _fir_candidate(cfg, ly)
    best = None
    for n_tx in range(1, ow + 1):
        nc = _ceil_div(ow, n_tx)
        if n_tx > 1 and nc == _ceil_div(ow, n_tx - 1):
            continue
        for n_ty in range(1, oh + 1):
            nr = _ceil_div(oh, n_ty)
            if n_ty > 1 and nr == _ceil_div(oh, n_ty - 1):
                continue
            cand = fir(nc) if fir else ly
            got = _spatial_cost(cfg, g, cand, nr, nc, weight_group, ring, acc_cap)
            if got is not None and (best is None or got[0] < best[0]):
                best = (got[0], nr, nc, got[1], cand)
        if best is not None and n_tx >= 2 and fir is None:
            break      # narrower tiles only pay for depthwise FIR taps (more per COMPUTE)
    if best is None:
        geo = _geometry(ly, 1, 1)
        raise CompileError(f"{ly.name}: even a 1x1 output tile needs a slab of "
                           f"{geo.slab_lines} activation lines for its {ly.kernel[0]}x"
                           f"{ly.kernel[1]} window (stride {ly.stride}), but act_depth is "
                           f"{cfg.act_depth}")
    cost, nr, nc, info, ly = best
    geo = info["geo"]
    tiles = tuple((y0, r, x0, c) for y0, r in _splits(oh, nr) for x0, c in _splits(ow, nc))
    nb = layout.blocks(cfg, ly.n)
    n_stores = sum(nb * len(_store_spans(g, ly, _tile_pitch(ly, c), r, c))
                   for _, r, _, c in tiles)
    return SpatialTiling(
        layer=index, out_tiles=tiles, pitch=geo.pitch, planes=geo.planes,
        slab_lines=geo.slab_lines, slabs=info["slabs"], act_slots=info["slots"],
        act_resident=info["resident"], weight_resident=info["w_res"],
        param_resident=nb <= param_group * param_slots, acc_buffers=info["buffers"],
        acc_lines=geo.acc_lines, est_cycles=cost, n_computes=len(tiles) * len(ly.taps),
        n_stores=n_stores), ly


def verify_spatial_tiling(t: TiledIR, ly: SpatialSpec, lt: SpatialTiling) -> None:
    cfg = t.config
    where = f"layer {lt.layer}"
    verify_spatial(t.graph, ly)
    if ly.pitch and ly.pitch != lt.pitch:
        raise CompileError(f"{where}: tiling pitch {lt.pitch} differs from the layer's fixed "
                           f"pitch {ly.pitch}")
    if lt.reduce_rows:
        window = _global_window(cfg, ly)
        nb = layout.blocks(cfg, ly.n)
        if window is None or lt.n_computes != nb * _ceil_div(window[0], lt.reduce_rows) \
                or lt.acc_lines != nb or lt.slab_lines != lt.reduce_rows * window[1] \
                or lt.act_slots * lt.slab_lines > cfg.act_depth \
                or lt.acc_buffers * lt.acc_lines > cfg.acc_depth or lt.acc_buffers < 1:
            raise CompileError(f"{where}: inconsistent row-reduction tiling")
        return
    oh, ow = ly.out_hw
    covered = np.zeros((oh, ow), np.int64)
    for y0, r, x0, c in lt.out_tiles:
        if r < 1 or c < 1 or y0 < 0 or x0 < 0 or y0 + r > oh or x0 + c > ow:
            raise CompileError(f"{where}: output tile {(y0, r, x0, c)} outside {oh}x{ow}")
        covered[y0:y0 + r, x0:x0 + c] += 1
        pitch = _tile_pitch(ly, c)
        if _left_shift(ly, c) > x0:
            raise CompileError(f"{where}: output tile {(y0, r, x0, c)} is narrower than the "
                               f"pitch {pitch} allows but starts at column {x0}")
        if pitch > lt.pitch or (r - 1) * pitch + c > lt.acc_lines:
            raise CompileError(f"{where}: output tile {(y0, r, x0, c)} exceeds the pitch or "
                               f"the accumulator buffer")
        ends = [off for _, _, off in lt.planes[1:]] + [lt.slab_lines]
        for (py, px, off), end in zip(lt.planes, ends, strict=True):
            rows, cols = _phase_extent(ly, py, px, r, c)
            if cols > pitch or off + rows * pitch > end:
                raise CompileError(f"{where}: phase plane {(py, px)} overruns the slab")
    if not (covered == 1).all():
        raise CompileError(f"{where}: output tiles do not cover the {oh}x{ow} output once")
    if lt.act_slots * lt.slab_lines > cfg.act_depth or lt.act_slots < 1:
        raise CompileError(f"{where}: activation slots exceed act_depth")
    if lt.acc_buffers < 1 or lt.acc_buffers * lt.acc_lines > cfg.acc_depth:
        raise CompileError(f"{where}: accumulator buffers exceed acc_depth")
    if lt.act_resident and lt.act_slots < lt.slabs:
        raise CompileError(f"{where}: resident slabs exceed the activation slots")
    if lt.weight_resident and len(ly.tiles) > t.weight_group * t.weight_slots:
        raise CompileError(f"{where}: resident weights exceed the weight ring")
    if not lt.weight_resident:
        order = [tp.tile for tp in ly.taps]
        if order != sorted(order):
            raise CompileError(f"{where}: streamed weight tiles must be used in order")


# -- schedule -------------------------------------------------------------------------------


def schedule_spatial(t: TiledIR, bld: _Builder, ly: SpatialSpec, lt: SpatialTiling,
                     wpos: int, ppos: int, tile_no: int) -> None:
    """Append the loads, computes and stores of one spatial layer to ``bld``."""
    cfg, g = t.config, t.graph
    R, C, B = cfg.rows, cfg.cols, cfg.beat_bytes
    lb = cfg.act_line_bits // cfg.bus_bits
    wtb = cfg.weight_tile_beats
    pline = C * layout.PARAM_BYTES
    sy, sx = ly.stride
    srcs = [g.tensor(s) for s in ly.srcs]
    dst = g.tensor(ly.dst)
    dst_mp = layout.padded_rows(cfg, dst.rows)
    src_written = [bld.written[s] for s in ly.srcs]
    dst_written = bld.written[ly.dst]
    li = lt.layer
    first = len(bld.computes)
    bld.layer_first.append(first)
    nb = layout.blocks(cfg, ly.n)
    wg, n_tiles = t.weight_group, len(ly.tiles)
    pg = t.param_group
    p_groups = _ceil_div(nb, pg)
    plane_of = {(py, px): off for py, px, off in lt.planes}
    taps_by_n = [ly.taps_of(n) for n in range(nb)]
    keys_all = _slab_keys(ly)
    double = lt.act_resident and lt.act_slots >= 2 * len(keys_all)
    state = dict(apos=0, wpos=wpos, ppos=ppos, xfer=0)
    w_slot: dict[int, int] = {}
    p_slot: dict[int, int] = {}
    slab_at: dict[tuple, int] = {}
    tile_first: list[int] = []

    def ahead(ci: int, beats: int, loads: int, rows: int) -> int:
        """An early position for a load of ``beats`` beats in ``loads`` transfers due at
        compute ``ci``: enough computes of ``rows`` lines before it to hide the transfer."""
        return max(0, ci - 1 - _ceil_div(beats + _XFER * loads, max(rows, wtb + 3)))

    def transfers_of(tile) -> int:
        _, nr, _, nc = tile
        ext = [_phase_extent(ly, py, px, nr, nc) for py, px, _ in lt.planes]
        return len(ext) if sx == 1 else sum(r for r, _ in ext)

    def load_slab(ti: int, tile, si: int, k: int, ci: int, spread: bool) -> int:
        slot = state["apos"] % lt.act_slots
        state["apos"] += 1
        line0 = slot * lt.slab_lines
        blocker = int(bld.act_use[line0:line0 + lt.slab_lines].max())
        src = srcs[si]
        wb = src.buf_hw[1]
        base = k * layout.padded_rows(cfg, src.rows)
        flat_written = src_written[si][k]
        y0, nr, x0, nc = tile
        pitch = _tile_pitch(ly, nc)
        oy, ox = ly.origins[si]
        r0, c0 = oy + y0 * sy, ox + (x0 - _left_shift(ly, nc)) * sx
        ext = [_phase_extent(ly, py, px, nr, nc) for py, px, _ in lt.planes]
        early = ahead(ci, sum(r * c for r, c in ext) * lb, transfers_of(tile),
                      (nr - 1) * pitch + nc)
        for py, px, off in lt.planes:
            rows, cols = _phase_extent(ly, py, px, nr, nc)
            first_line = (r0 + py) * wb + c0 + px
            if sx == 1:
                transfers = [(first_line, off, dict(rows=rows, row_beats=cols * lb,
                                                    stride=sy * wb * R),
                              (first_line + sy * wb * np.arange(rows)[:, None]
                               + np.arange(cols)[None, :]))]
            else:
                transfers = [(first_line + i * sy * wb, off + i * pitch,
                              dict(rows=cols, row_beats=lb, stride=sx * R),
                              first_line + i * sy * wb + sx * np.arange(cols))
                             for i in range(rows)]
            for dline, sp_line, shape, lines in transfers:
                if spread:
                    # the next tile's transfers, one by one, evenly over this tile's computes
                    # (a burst would fill the load queue and stall dispatch)
                    early = tile_first[ti - 1] + state["xfer"] * len(ly.taps) \
                        // (len(keys_all) * transfers_of(tile))
                    state["xfer"] += 1
                sb = int(flat_written[lines.reshape(-1)].max())
                op = Op.make(Opcode.LOAD, target=LoadTarget.ACT, sp_addr=(line0 + sp_line) * lb,
                             dram_addr=(base + dline) * R, region=src.name,
                             note=f"{ly.name} slab t{ti} {ly.srcs[si]}[{k}] phase "
                                  f"{py},{px}", **shape)
                bld.add_load(op, ci, 1, max(blocker, sb), sb, early=early)
        return line0

    def load_weights(grp: int, ci: int, rows: int) -> None:
        slot = state["wpos"] % t.weight_slots
        state["wpos"] += 1
        count = min(wg, n_tiles - grp * wg)
        w0 = slot * wg * wtb
        blocker = int(bld.w_use[w0:w0 + wg * wtb].max())
        op = weight_load_op(layer=li, name=ly.name, grp=grp, group=wg, count=count, w0=w0,
                            tile_beats=wtb, beat_bytes=B)
        bld.add_load(op, ci, 0, blocker, -1, early=ahead(ci, count * wtb, 1, rows))
        w_slot[grp] = slot

    def load_params(grp: int, key: int) -> None:
        slot = state["ppos"] % t.param_slots
        state["ppos"] += 1
        count = min(pg, nb - grp * pg)
        line0 = slot * pg
        blocker = int(bld.p_use[line0:line0 + pg].max())
        op = param_load_op(layer=li, name=ly.name, grp=grp, group=pg, count=count,
                           line0=line0, line_bytes=pline, beat_bytes=B)
        bld.add_load(op, key, 2, blocker, blocker, early=key - 1)
        p_slot[grp] = slot

    if lt.param_resident:
        for grp in range(p_groups):
            load_params(grp, first)
    if lt.reduce_rows:
        _reduce(t, bld, ly, lt, tile_no, state, load_weights, load_params, w_slot, p_slot,
                ahead)
        return
    for ti, tile in enumerate(lt.out_tiles):
        tile_first.append(len(bld.computes))
        state["xfer"] = 0
        if not lt.weight_resident:
            w_slot.clear()
        if not lt.param_resident:
            p_slot.clear()
        y0, nr, x0, nc = tile
        pitch = _tile_pitch(ly, nc)
        rows = (nr - 1) * pitch + nc
        for n in range(nb):
            buf = tile_no % lt.acc_buffers
            tile_no += 1
            acc0 = buf * lt.acc_lines
            for j, tp in enumerate(taps_by_n[n]):
                ci = len(bld.computes)
                key = (ti, None if lt.act_resident else n, tp.src, tp.k)
                if key not in slab_at:
                    slab_at[key] = load_slab(ti, tile, tp.src, tp.k, ci, double and ti > 0)
                grp = tp.tile // wg
                if grp not in w_slot:
                    load_weights(grp, ci, rows)
                word = (w_slot[grp] * wg + tp.tile - grp * wg) * wtb
                line = slab_at[key] + plane_of[(tp.ky % sy, tp.kx % sx)] \
                    + (tp.ky // sy) * pitch + tp.kx // sx + _left_shift(ly, nc)
                reach = tp.dw_reach(ly.stride, pitch)
                op = Op.make(Opcode.COMPUTE, act_addr=line, weight_addr=word, acc_addr=acc0,
                             rows=rows, accumulate=int(j > 0),
                             act_unsigned=int(ly.act_unsigned[tp.src]), mul_m1=tp.mul - 1,
                             acc_max=int(ly.acc_max and j > 0), depthwise=int(bool(tp.fir)),
                             dw_reach=reach,
                             note=f"{ly.name} t{ti} n{n} {ly.srcs[tp.src]}[{tp.k}] "
                                  f"tap {tp.ky},{tp.kx}"
                                  + (f" fir x{len(tp.fir)}" if tp.fir else ""))
                bld.computes.append((op, li))
                bld.act_use[line:line + rows + reach] = ci
                bld.w_use[word:word + wtb] = ci
            ci = len(bld.computes) - 1
            pgrp = n // pg
            if pgrp not in p_slot:
                load_params(pgrp, ci)
            pline_no = p_slot[pgrp] * pg + n - pgrp * pg
            ops = []
            for r0, reps, count in _store_spans(g, ly, pitch, nr, nc):
                line = dst.line(y0 + r0, x0)
                two_d = dict(reps_m1=reps - 1, acc_pitch=pitch, dram_pitch=dst.buf_hw[1]) \
                    if reps > 1 else {}
                ops.append(Op.make(Opcode.STORE, acc_addr=acc0 + r0 * pitch, rows=count,
                                   param_addr=pline_no, relu=int(ly.relu),
                                   out_bits=ly.out_bits, out_unsigned=int(ly.out_unsigned),
                                   dram_addr=(n * dst_mp + line) * C, region=ly.dst,
                                   note=f"{ly.name} t{ti} n{n} rows {y0 + r0}.."
                                        f"{y0 + r0 + max(reps, count // nc) - 1}", **two_d))
                for r in range(reps):
                    gl = line + r * dst.buf_hw[1]
                    dst_written[n, gl:gl + count] = ci
            bld.stores.setdefault(ci, []).extend(ops)
            bld.p_use[pline_no] = ci
    bld.state = (state["wpos"], state["ppos"], tile_no)


def _reduce(t: TiledIR, bld: _Builder, ly: SpatialSpec, lt: SpatialTiling, tile_no,
            state, load_weights, load_params, w_slot, p_slot, ahead) -> None:
    """Global pooling as row reductions: per channel block and chunk of window rows, one
    2-D LOAD of the window's pixels and one COMPUTE with ``reduce`` summing (or taking the
    maximum of) all of them into accumulator line ``n``."""
    cfg, g = t.config, t.graph
    R, C = cfg.rows, cfg.cols
    lb = cfg.act_line_bits // cfg.bus_bits
    wtb, wg, pg = cfg.weight_tile_beats, t.weight_group, t.param_group
    src, dst = g.tensor(ly.srcs[0]), g.tensor(ly.dst)
    mp, dst_mp = layout.padded_rows(cfg, src.rows), layout.padded_rows(cfg, dst.rows)
    written = bld.written[ly.srcs[0]]
    nb = layout.blocks(cfg, ly.n)
    oy, ox = ly.origins[0]
    wb = src.buf_hw[1]
    kh, kw = ly.kernel
    tap0 = ly.taps_of(0)[0]
    acc0 = (tile_no % lt.acc_buffers) * lt.acc_lines
    for n in range(nb):
        for c, (y0, cr) in enumerate(_splits(kh, lt.reduce_rows)):
            ci = len(bld.computes)
            line0 = (state["apos"] % lt.act_slots) * lt.slab_lines
            state["apos"] += 1
            blocker = int(bld.act_use[line0:line0 + lt.slab_lines].max())
            sline = (oy + y0) * wb + ox
            lines = sline + wb * np.arange(cr)[:, None] + np.arange(kw)[None, :]
            sb = int(written[n, lines.reshape(-1)].max())
            op = Op.make(Opcode.LOAD, target=LoadTarget.ACT, sp_addr=line0 * lb, rows=cr,
                         row_beats=kw * lb, dram_addr=(n * mp + sline) * R, stride=wb * R,
                         region=src.name, note=f"{ly.name} block {n} rows {y0}..{y0 + cr - 1}")
            bld.add_load(op, ci, 1, max(blocker, sb), sb,
                         early=ahead(ci, cr * kw * lb, 1, cr * kw))
            grp = tap0.tile // wg
            if grp not in w_slot:
                load_weights(grp, ci, cr * kw)
            word = (w_slot[grp] * wg + tap0.tile - grp * wg) * wtb
            op = Op.make(Opcode.COMPUTE, act_addr=line0, weight_addr=word, acc_addr=acc0 + n,
                         rows=cr * kw, reduce=1, accumulate=int(c > 0),
                         act_unsigned=int(ly.act_unsigned[0]), mul_m1=tap0.mul - 1,
                         acc_max=int(ly.acc_max),
                         note=f"{ly.name} block {n} rows {y0}..{y0 + cr - 1}")
            bld.computes.append((op, lt.layer))
            bld.act_use[line0:line0 + cr * kw] = ci
            bld.w_use[word:word + wtb] = ci
    ci = len(bld.computes) - 1
    line = dst.line(0, 0)
    blocks = [(0, nb)] if _uniform_store(g, ly) else [(n, 1) for n in range(nb)]
    ops = []
    for n, count in blocks:
        pgrp = n // pg
        if pgrp not in p_slot:
            load_params(pgrp, ci)
        pline_no = p_slot[pgrp] * pg + n - pgrp * pg
        # blocks one plane of dst_mp lines apart: 1-D when the planes are single lines
        shape = dict(rows=count) if dst_mp == 1 or count == 1 else \
            dict(rows=1, reps_m1=count - 1, acc_pitch=1, dram_pitch=dst_mp)
        ops.append(Op.make(Opcode.STORE, acc_addr=acc0 + n, param_addr=pline_no,
                           relu=int(ly.relu), out_bits=ly.out_bits,
                           out_unsigned=int(ly.out_unsigned),
                           dram_addr=(n * dst_mp + line) * C, region=ly.dst,
                           note=f"{ly.name} blocks {n}..{n + count - 1}", **shape))
        bld.written[ly.dst][n:n + count, line] = ci
        bld.p_use[pline_no] = ci
    bld.stores.setdefault(ci, []).extend(ops)
    bld.state = (state["wpos"], state["ppos"], tile_no + 1)


# -- program inputs and outputs -------------------------------------------------------------


def _io(program) -> dict:
    try:
        return program.meta["network"]
    except KeyError:
        raise ValueError("program was not compiled by compile_network (no meta['network'])") \
            from None


def _im2col(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    kh, kw = kernel
    sy, sx = stride
    t, b, lf, r = padding
    xp = np.pad(x, ((t, b), (lf, r), (0, 0)))
    oh = (xp.shape[0] - kh) // sy + 1
    ow = (xp.shape[1] - kw) // sx + 1
    cols = [xp[ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx, :]
            for ky in range(kh) for kx in range(kw)]
    return np.concatenate(cols, axis=2)


def pack_inputs(program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Network input values ``v`` (maps ``(H, W, C)``, flat ``(N, F)``) as the program's 2-D
    input tensors of stored integers ``q = v + zero``: maps padded with a border of value 0
    (``q = zero``), or unfolded for ``host_im2col``."""
    io = _io(program)["inputs"]
    out = {}
    for name, d in io.items():
        if name not in inputs:
            raise ValueError(f"input {name!r} is missing; inputs are {', '.join(io)}")
        x = np.asarray(inputs[name], dtype=np.int64)
        if "im2col" in d:
            m = d["im2col"]
            if list(x.shape) != m["image"]:
                raise ValueError(f"input {name!r} must have shape {tuple(m['image'])}, not "
                                 f"{x.shape}")
            x = _im2col(x, m["kernel"], m["stride"], m["padding"])
        if len(d["shape"]) == 3:
            if list(x.shape) != d["shape"]:
                raise ValueError(f"input {name!r} must have shape {tuple(d['shape'])}, not "
                                 f"{x.shape}")
            t, b, lf, r = d["border"]
            x = np.pad(x, ((t, b), (lf, r), (0, 0))).reshape(-1, x.shape[2])
        out[name] = x + d.get("zero", 0)
    return out


def unpack_outputs(program, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The program's 2-D outputs (stored ``q``) as network values ``v = q - zero`` (maps
    without their border)."""
    out = {}
    for name, d in _io(program)["outputs"].items():
        y = np.asarray(outputs[name]) - d.get("zero", 0)
        if "flatten_of" in d:
            h, w, c = d["flatten_of"]["shape"]
            t, b, lf, r = d["flatten_of"]["border"]
            hb, wb = h + t + b, w + lf + r
            R = program.config.rows
            nb = -(-c // R)
            img = y.reshape(nb, hb * wb, R)[:, :, :].transpose(1, 0, 2).reshape(hb, wb, nb * R)
            y = img[t:t + h, lf:lf + w, :c].reshape(1, -1)
        elif len(d["shape"]) == 3:
            h, w, c = d["shape"]
            t, b, lf, r = d["border"]
            y = y.reshape(h + t + b, w + lf + r, c)[t:t + h, lf:lf + w]
        out[name] = y
    return out
