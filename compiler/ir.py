"""The compiler's typed intermediate representations.

Four levels, each produced by one pass of :mod:`lowbit.compiler.passes` and checked by its
verifier; every level prints itself with ``dump()`` (``compile_mlp(..., dump=...)``).

:class:`GraphIR`
    Tensors (:class:`TensorSpec`) and layers: integer linear layers (:class:`LinearSpec`)
    and spatial layers (:class:`SpatialSpec`: convolutions, pooling, residual adds as
    sums of shifted tap GEMMs, lowered by :mod:`lowbit.compiler.conv`).
:class:`TiledIR`
    The graph plus one :class:`LayerTiling` (linear) or :class:`SpatialTiling` per layer
    (output tiles, scratchpad slots, residency) and the ring geometry of the weight and
    parameter memories.
:class:`ScheduleIR`
    The instruction sequence as :class:`Op` records in program order, with DRAM
    addresses relative to named :class:`Region` s; after the token pass the ops carry
    their dependency flags, after allocation the regions have addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from lowbit.config import AccelConfig
from lowbit.isa import INSTR_BYTES, LoadTarget, Opcode, Unit

__all__ = [
    "GraphIR",
    "LayerTiling",
    "LinearSpec",
    "Op",
    "Region",
    "ScheduleIR",
    "SpatialSpec",
    "SpatialTiling",
    "Tap",
    "TensorSpec",
    "TiledIR",
    "TOKEN_FIELDS",
]

TOKEN_FIELDS = ("pop_prev", "pop_next", "push_prev", "push_next")


# -- graph ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """An activation tensor ``(rows, cols)`` in the blocked layout; ``rows`` is the batch.

    A feature map (``hw`` = ``(H, W)``) is stored with a zero border of ``border`` =
    ``(top, bottom, left, right)`` pixels: ``rows`` = ``(H + top + bottom) * (W + left +
    right)`` lines per channel block, row-major over the padded image, ``cols`` = channels.
    Its producer writes the interior only; the border keeps its initial bytes, ``zero``
    (the zero point: stored ``q = zero`` is the value 0). A tensor with ``alias`` has no
    storage of its own: it is another tensor's bytes seen as ``(rows, cols)`` (a flattened
    map).
    """

    name: str
    rows: int
    cols: int
    signed: bool
    bits: int
    scale: float = 1.0
    role: str = "hidden"   # "input", "hidden" or "output"
    hw: tuple[int, int] | None = None
    border: tuple[int, int, int, int] = (0, 0, 0, 0)
    alias: str | None = None
    zero: int = 0

    @property
    def buf_hw(self) -> tuple[int, int]:
        """Height and width of the stored (padded) image."""
        t, b, lf, r = self.border
        return self.hw[0] + t + b, self.hw[1] + lf + r

    def line(self, y: int, x: int) -> int:
        """Line (within a channel block) of interior pixel ``(y, x)``."""
        t, _, lf, _ = self.border
        return (y + t) * self.buf_hw[1] + x + lf


@dataclass(frozen=True, eq=False)
class LinearSpec:
    """``dst = requantize(src @ weight, bias, mult, shift)`` on ``(M, K) x (K, N)``."""

    name: str
    src: str
    dst: str
    weight: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    relu: bool
    out_bits: int
    out_unsigned: bool
    act_unsigned: bool

    @property
    def k(self) -> int:
        return self.weight.shape[0]

    @property
    def n(self) -> int:
        return self.weight.shape[1]


@dataclass(frozen=True)
class Tap:
    """One COMPUTE of a spatial layer's output tile: source ``src``'s channel block ``k``
    shifted by kernel position ``(ky, kx)``, through weight tile ``tile`` into output block
    ``n``, the products scaled by ``mul`` (``1..256``).

    ``fir`` non-empty is a depthwise FIR tap (COMPUTE ``depthwise``): it covers the kernel
    positions ``fir`` of one stride phase, ``(ky, kx)`` first (the smallest slab line
    offset). With the layer's slab ``pitch``, position ``(y, x)`` is line offset
    ``o = (y - ky) // sy * pitch + (x - kx) // sx`` from the tap's first line and its
    channel weights sit on tile column ``cols - 1 - o`` (lane ``i`` in row ``i``); the
    COMPUTE's ``dw_reach`` is the largest ``o``."""

    n: int
    src: int
    k: int
    ky: int
    kx: int
    tile: int
    mul: int = 1
    fir: tuple[tuple[int, int], ...] = ()

    @property
    def positions(self) -> tuple[tuple[int, int], ...]:
        """The kernel positions ``(ky, kx)`` the tap covers."""
        return self.fir or ((self.ky, self.kx),)

    def reach(self, sx: int) -> int:
        """The last kernel column offset (in strided pixels) the tap's window reads."""
        return max(x // sx for _, x in self.positions)

    def depth(self, sy: int) -> int:
        """The last kernel row offset (in strided pixels) the tap's window reads."""
        return max(y // sy for y, _ in self.positions)

    def offsets(self, stride: tuple[int, int], pitch: int) -> tuple[int, ...]:
        """Slab line offset of each of :attr:`positions` from the tap's first line."""
        sy, sx = stride
        return tuple((y // sy - self.ky // sy) * pitch + x // sx - self.kx // sx
                     for y, x in self.positions)

    def dw_reach(self, stride: tuple[int, int], pitch: int) -> int:
        """The COMPUTE's ``dw_reach``: 0 for an ordinary tap."""
        return max(self.offsets(stride, pitch)) if self.fir else 0


@dataclass(frozen=True, eq=False)
class SpatialSpec:
    """``dst[y, x, n-block] = requantize(reduce over taps t of
    t.mul * src[t.src][y*sy + oy + t.ky, x*sx + ox + t.kx, k-block] @ tiles[t.tile])``

    where ``(oy, ox)`` = ``origins[t.src]`` is where the window of output pixel ``(0, 0)``
    starts in the stored (padded) source image, and the reduction is a sum, or a maximum
    when ``acc_max``. ``taps`` are grouped by output block ``n`` (ascending); within a
    block, the taps of one source block are consecutive. ``kind`` names what the layer
    came from (``conv``, ``dwconv``, ``maxpool``, ``avgpool``, ``add``, ``act``).

    ``pitch`` > 0 fixes the slab pitch of every output tile (the tiles of depthwise FIR
    taps depend on it); 0 lets each tile use ``cols + max tap reach``.
    """

    name: str
    kind: str
    srcs: tuple[str, ...]
    dst: str
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    origins: tuple[tuple[int, int], ...]
    taps: tuple[Tap, ...]
    tiles: np.ndarray              # (T, rows, cols) integer weight tiles
    acc_max: bool
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    relu: bool
    out_bits: int
    out_unsigned: bool
    act_unsigned: tuple[bool, ...]
    macs: int = 0                  # useful multiply-accumulates (for reports)
    pitch: int = 0                 # fixed slab pitch (depthwise FIR taps), 0: per tile

    @property
    def n(self) -> int:
        return self.bias.shape[0]

    def taps_of(self, n: int) -> tuple[Tap, ...]:
        return tuple(t for t in self.taps if t.n == n)

    @cached_property
    def reach(self) -> int:
        """The largest :meth:`Tap.reach` over the taps (strided pixels)."""
        return max(t.reach(self.stride[1]) for t in self.taps)

    @cached_property
    def depth(self) -> int:
        """The largest :meth:`Tap.depth` over the taps (strided rows)."""
        return max(t.depth(self.stride[0]) for t in self.taps)

    @cached_property
    def phase_window(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Per stride phase ``(ky % sy, kx % sx)`` its taps use: the largest
        ``(depth, reach)`` of those taps. Computed once: the tiling search asks often."""
        sy, sx = self.stride
        out: dict[tuple[int, int], tuple[int, int]] = {}
        for t in self.taps:
            key = (t.ky % sy, t.kx % sx)
            d, r = out.get(key, (0, 0))
            out[key] = (max(d, t.depth(sy)), max(r, t.reach(sx)))
        return out


@dataclass(frozen=True, eq=False)
class GraphIR:
    config: AccelConfig
    tensors: tuple[TensorSpec, ...]
    layers: tuple[LinearSpec | SpatialSpec, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def tensor(self, name: str) -> TensorSpec:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def dump(self) -> str:
        out = [f"graph config={self.config.name}"]
        for t in self.tensors:
            kind = "i" if t.signed else "u"
            geo = ""
            if t.hw is not None:
                geo = f" map {t.hw[0]}x{t.hw[1]} border {t.border}"
            if t.alias is not None:
                geo += f" alias of {t.alias}"
            out.append(f"  tensor {t.name}: {t.role} {kind}{t.bits} [{t.rows}, {t.cols}] "
                       f"scale={t.scale:.6g}{geo}")
        for ly in self.layers:
            if isinstance(ly, SpatialSpec):
                out.append(f"  {ly.name}: {ly.dst} = {ly.kind}({', '.join(ly.srcs)}, kernel "
                           f"{ly.kernel[0]}x{ly.kernel[1]} stride {ly.stride} origins "
                           f"{list(ly.origins)} -> {ly.out_hw[0]}x{ly.out_hw[1]}x{ly.n}, "
                           f"{len(ly.taps)} taps, {len(ly.tiles)} tiles, "
                           + (f"pitch {ly.pitch}, " if ly.pitch else "") +
                           f"{'max' if ly.acc_max else 'sum'}, relu={int(ly.relu)}, "
                           f"out={'u' if ly.out_unsigned else 'i'}{ly.out_bits})")
                continue
            w = ly.weight
            out.append(f"  {ly.name}: {ly.dst} = linear({ly.src}, w[{ly.k}, {ly.n}] "
                       f"range {int(w.min())}..{int(w.max())}, relu={int(ly.relu)}, "
                       f"out={'u' if ly.out_unsigned else 'i'}{ly.out_bits}, "
                       f"act_unsigned={int(ly.act_unsigned)})")
        return "\n".join(out)


# -- tiling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTiling:
    """How one layer is cut into tiles and placed in the scratchpads.

    ``m_tiles`` are ``(first row, rows)`` pairs covering the padded batch ``mp``; each
    output tile is computed into the next of ``acc_buffers`` accumulator buffers of
    ``acc_lines`` lines. The activation scratchpad is
    a ring of ``act_slots`` slots of ``mt`` lines, each holding one ``rows``-wide K block of
    one M tile; ``act_resident`` means all ``kb`` blocks of an M tile stay loaded while every
    N block is computed (otherwise blocks are streamed again for every N block).
    ``act_group`` blocks are moved per LOAD.
    """

    layer: int
    m: int
    mp: int
    k: int
    n: int
    kb: int
    nb: int
    mt: int
    m_tiles: tuple[tuple[int, int], ...]
    act_slots: int
    act_resident: bool
    act_group: int
    weight_resident: bool
    param_resident: bool
    acc_buffers: int
    acc_lines: int
    est_cycles: int

    @property
    def n_computes(self) -> int:
        return len(self.m_tiles) * self.nb * self.kb

    @property
    def n_stores(self) -> int:
        return len(self.m_tiles) * self.nb

    def dump(self) -> str:
        return (f"  layer {self.layer}: M={self.m} (padded {self.mp}) K={self.k} N={self.n} "
                f"-> {len(self.m_tiles)} M tiles of {self.mt} rows x {self.kb} K blocks x "
                f"{self.nb} N blocks; act slots={self.act_slots} "
                f"{'resident' if self.act_resident else 'streamed'} group={self.act_group}; "
                f"weights {'resident' if self.weight_resident else 'streamed'}; params "
                f"{'resident' if self.param_resident else 'streamed'}; acc "
                f"{self.acc_buffers} x {self.acc_lines} lines; est {self.est_cycles} cycles")


@dataclass(frozen=True)
class SpatialTiling:
    """How one spatial layer is cut into output tiles and placed in the scratchpads.

    ``out_tiles`` are ``(y0, rows, x0, cols)`` rectangles of output pixels. For a tile, each
    source channel block is loaded as a *slab*: for every stride phase ``(py, px)`` used by
    a kernel position, a plane of input rows ``y0*sy + oy + py + sy*i`` by columns
    ``x0*sx + ox + px + sx*j``, ``pitch`` lines per row, at ``planes[(py, px)]`` lines
    into the slab. Tap ``(ky, kx)`` then streams ``(rows - 1) * pitch + cols`` consecutive
    lines from ``plane(ky % sy, kx % sx) + (ky // sy) * pitch + kx // sx``, and output pixel
    ``(r, c)`` of the tile lands in accumulator line ``r * pitch + c`` (lines with
    ``c >= cols`` are computed and never stored). Slabs live in a ring of ``act_slots``
    slots of ``slab_lines``; ``act_resident`` means every slab of an output tile stays
    loaded while all its output blocks are computed (otherwise slabs are loaded again for
    every output block).

    ``reduce_rows`` (a pooling layer with a 1x1 output): instead, per channel block, each
    chunk of ``reduce_rows`` window rows is one 2-D LOAD into ``reduce_rows * pitch``
    consecutive lines and one COMPUTE with ``reduce``, accumulator line ``n`` collecting
    the sum (or maximum) of block ``n``.
    """

    layer: int
    out_tiles: tuple[tuple[int, int, int, int], ...]
    pitch: int
    planes: tuple[tuple[int, int, int], ...]     # (py, px, first line in the slab)
    slab_lines: int
    slabs: int                                   # distinct source blocks per output tile
    act_slots: int
    act_resident: bool
    weight_resident: bool
    param_resident: bool
    acc_buffers: int
    acc_lines: int
    est_cycles: int
    n_computes: int
    n_stores: int
    reduce_rows: int = 0

    def dump(self) -> str:
        if self.reduce_rows:
            return (f"  layer {self.layer}: row reduction, {self.reduce_rows} rows x "
                    f"{self.pitch} pixels per slab, act slots={self.act_slots}; acc "
                    f"{self.acc_buffers} x {self.acc_lines} lines; {self.n_computes} "
                    f"computes, {self.n_stores} stores; est {self.est_cycles} cycles")
        y0, rows, x0, cols = self.out_tiles[0]
        return (f"  layer {self.layer}: {len(self.out_tiles)} output tiles of up to {rows}x"
                f"{cols} pixels, pitch {self.pitch}, {len(self.planes)} phase planes, slab "
                f"{self.slab_lines} lines x {self.slabs} blocks, act slots={self.act_slots} "
                f"{'resident' if self.act_resident else 'streamed'}; weights "
                f"{'resident' if self.weight_resident else 'streamed'}; params "
                f"{'resident' if self.param_resident else 'streamed'}; acc "
                f"{self.acc_buffers} x {self.acc_lines} lines; {self.n_computes} computes, "
                f"{self.n_stores} stores; est {self.est_cycles} cycles")


@dataclass(frozen=True, eq=False)
class TiledIR:
    graph: GraphIR
    tilings: tuple[LayerTiling | SpatialTiling, ...]
    weight_group: int    # tiles per weight LOAD (one ring slot)
    weight_slots: int    # slots in the weight ring
    param_group: int     # parameter lines per parameter LOAD (one ring slot)
    param_slots: int

    @property
    def config(self) -> AccelConfig:
        return self.graph.config

    def dump(self) -> str:
        out = [self.graph.dump(),
               f"tiling: weight ring {self.weight_slots} slots x {self.weight_group} tiles, "
               f"param ring {self.param_slots} slots x {self.param_group} lines"]
        out += [t.dump() for t in self.tilings]
        return "\n".join(out)


# -- schedule -------------------------------------------------------------------------------


_UNIT_OF = {Opcode.LOAD: Unit.LOAD, Opcode.COMPUTE: Unit.COMPUTE, Opcode.STORE: Unit.STORE}


@dataclass(frozen=True)
class Op:
    """One instruction of the schedule.

    ``args`` are ISA fields by name (tokens included once assigned). For LOAD and STORE,
    ``dram_addr`` is an offset into DRAM region ``region`` until emission.
    """

    opcode: Opcode
    args: tuple[tuple[str, int], ...]
    region: str | None = None
    note: str = ""

    @classmethod
    def make(cls, opcode: Opcode, *, region: str | None = None, note: str = "",
             **args) -> Op:
        return cls(Opcode(opcode), tuple(sorted((k, int(v)) for k, v in args.items())),
                   region, note)

    @property
    def unit(self) -> Unit:
        if self.opcode == Opcode.SYNC:
            return Unit(self.get("unit"))
        return _UNIT_OF[self.opcode]

    def get(self, name: str, default: int = 0) -> int:
        for k, v in self.args:
            if k == name:
                return v
        return default

    def fields(self) -> dict[str, int]:
        return dict(self.args)

    def with_args(self, **changes) -> Op:
        d = dict(self.args)
        d.update({k: int(v) for k, v in changes.items()})
        return replace(self, args=tuple(sorted(d.items())))

    def render(self) -> str:
        d = dict(self.args)
        toks = "".join(c for c, f in zip("<>^v", ("pop_prev", "pop_next", "push_prev",
                                                  "push_next"), strict=True) if d.get(f))
        body = []
        for k, v in d.items():
            if k in TOKEN_FIELDS or (k == "unit" and self.opcode == Opcode.SYNC):
                continue
            if k == "target":
                body.append(f"target={LoadTarget(v).name}")
            elif k == "dram_addr" and self.region is not None:
                body.append(f"dram={self.region}+{v:#x}")
            else:
                body.append(f"{k}={v}")
        name = self.opcode.name if self.opcode != Opcode.SYNC else f"SYNC.{self.unit.name}"
        tok = f" [{toks}]" if toks else ""
        note = f"  ; {self.note}" if self.note else ""
        return f"{name}{tok} {' '.join(body)}{note}"


@dataclass(frozen=True, eq=False)
class Region:
    """A DRAM region: constants (``data``) or an activation buffer (``data`` is None)."""

    name: str
    kind: str           # "weights", "params" or "act"
    size: int
    data: bytes | None = None


@dataclass(frozen=True, eq=False)
class ScheduleIR:
    tiled: TiledIR
    ops: tuple[Op, ...]
    regions: tuple[Region, ...]
    tokens: bool = False
    addresses: dict[str, int] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def config(self) -> AccelConfig:
        return self.tiled.config

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def code_bytes(self) -> int:
        return (len(self.ops) + 1) * INSTR_BYTES   # END included

    def dump(self) -> str:
        out = [f"schedule: {len(self.ops)} ops (+END), tokens "
               f"{'assigned' if self.tokens else 'not assigned'}"]
        for r in self.regions:
            where = f" @ {self.addresses[r.name]:#x}" if self.addresses else ""
            out.append(f"  region {r.name}: {r.kind} {r.size} bytes{where}")
        if self.addresses and "code" in self.addresses:
            out.append(f"  region code @ {self.addresses['code']:#x}")
        for i, op in enumerate(self.ops):
            out.append(f"  {i:5d} {op.render()}")
        return "\n".join(out)
