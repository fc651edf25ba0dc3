"""Compiler passes: pure functions from one IR to the next, each with a verifier.

Pipeline (:func:`lowbit.compiler.compile_graph`)::

    GraphIR --plan_tiles--> TiledIR --schedule--> ScheduleIR --tokens--> ScheduleIR
            --allocate--> ScheduleIR (addresses) --emit--> Program

Schedule (one linear layer ``(M x K) @ (K x N)``, R x C array, ``R = C``)
----------------------------------------------------------------------------
The batch is padded to ``Mp`` (whole bus beats) and cut into M tiles of ``mt`` rows
(``mt`` <= half the accumulator memory, chosen per layer by a small cost model of the
hardware timing: big tiles amortise the tile switch and reloads, small ones shorten the
pipeline fill); K and N are cut into blocks of ``R`` / ``C``. The loop nest is ::

    for each M tile m:
        for each N block n:                 output tile (m, n): next accumulator buffer
            for each K block k:   COMPUTE  acc[buf] (+)= act[m, k] @ W[k, n]
            STORE  requantize(acc[buf], params[n]) -> out[m, n]

* **Activations**: the activation scratchpad is a ring of slots of ``mt`` lines; one slot
  holds one K block of one M tile. If all ``kb`` blocks of an M tile fit
  (``act_resident``), they are loaded once per M tile and stay resident while every N
  block is computed; when two M tiles fit, the next tile's blocks load into the other
  slots while the current tile computes, spread over its computes. Otherwise (K too large
  for the scratchpad) blocks are streamed through the ring again for every N block. A
  LOAD moves ``act_group`` consecutive blocks (rows of the 2-D transfer = blocks, stride
  = one block of the blocked DRAM layout).
* **Weights**: tiles are stored in DRAM in exactly the order they are consumed (n-major,
  then k), packed, ``weight_group`` tiles per LOAD into a ring of ``weight_slots`` slots,
  so loads run ahead of the computes by up to ``weight_slots - 1`` groups (prefetch while
  computing). If a layer's tiles fit the ring they are loaded once (``weight_resident``);
  otherwise they are streamed again for every M tile. The ring continues across layers,
  so the next layer's first weights load during the previous layer's last tiles.
* **Accumulators**: a ring of buffers of ``mt`` lines, one per output tile, so the STORE
  of a tile overlaps the COMPUTEs of the next ones: two buffers, more when a tile computes
  faster than the previous one drains (result latency plus STORE).
* **Parameters**: one line per N block; a ring of two slots of ``param_group`` lines,
  loaded once per layer when they fit (else per M tile, a slot at a time).

Program order interleaves the three streams: before the COMPUTE with index ``c`` come the
loads needed by computes up to ``c + LOOKAHEAD`` (in the load unit's order), provided the
instructions that still use the old contents of their destination are already in the
program; a STORE follows the last COMPUTE of its tile. Loads that read what the previous
layer stored are placed only when due (not ahead across the layer boundary). The token
pass then adds the pushes/pops that make this order race free (a SYNC on the compute unit
forwards a STORE -> LOAD dependency through DRAM at a layer boundary); the queues
(``queue_depth``) let every unit run ahead of the others within those dependencies.

On the ``16x16`` preset a 256 x 256 x 256 GEMM runs at about 98 % of the ideal
``M*K*N / (R*C)`` cycles in the cycle simulator (M tiles of 64 rows, 8 weight tiles per
LOAD, ~1300 instructions).

Spatial layers (:class:`~lowbit.compiler.ir.SpatialSpec`: convolutions, pooling, adds) are
tiled and scheduled by :mod:`lowbit.compiler.conv` into the same builder, so the weight,
parameter and accumulator rings, the interleaving and the token pass are shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from lowbit import isa, layout
from lowbit.checks import check_program
from lowbit.config import AccelConfig
from lowbit.isa import LoadTarget, Opcode
from lowbit.program import Program, ProgramError, TensorRef

from .ir import (
    GraphIR,
    LayerTiling,
    LinearSpec,
    Op,
    Region,
    ScheduleIR,
    SpatialSpec,
    SpatialTiling,
    TiledIR,
)
from .tokens import assign_tokens, verify_tokens

__all__ = [
    "CompileError",
    "LOOKAHEAD",
    "allocate",
    "check_memory",
    "emit",
    "plan_tiles",
    "schedule",
    "tokens",
    "verify_allocation",
    "verify_graph",
    "verify_program",
    "verify_schedule",
    "verify_tiling",
    "verify_tokens_pass",
]

#: Computes of lookahead when placing loads in program order.
LOOKAHEAD = 2
#: Fixed cost of one LOAD/STORE in the cost model (memory latency plus a few cycles).
_XFER = 24


class CompileError(ValueError):
    """A model the compiler cannot map to the configured accelerator, or a failed check."""


# -- graph ----------------------------------------------------------------------------------



def weight_region(layer: int) -> str:
    """Name of a layer's packed-weight region; ``$`` keeps it apart from tensor names."""
    return f"$w{layer}"


def param_region(layer: int) -> str:
    """Name of a layer's parameter region."""
    return f"$p{layer}"


def weight_load_op(*, layer: int, name: str, grp: int, group: int, count: int, w0: int,
                   tile_beats: int, beat_bytes: int) -> Op:
    """LOAD of ``count`` packed weight tiles of group ``grp`` (``group`` tiles per group) to
    weight word ``w0``."""
    return Op.make(Opcode.LOAD, target=LoadTarget.WEIGHT, sp_addr=w0, rows=count,
                   row_beats=tile_beats, dram_addr=grp * group * tile_beats * beat_bytes,
                   stride=tile_beats * beat_bytes, region=weight_region(layer),
                   note=f"{name} weights {grp * group}..{grp * group + count - 1}")


def param_load_op(*, layer: int, name: str, grp: int, group: int, count: int, line0: int,
                  line_bytes: int, beat_bytes: int) -> Op:
    """LOAD of ``count`` parameter lines of group ``grp`` to parameter line ``line0``."""
    if line_bytes >= beat_bytes:     # one transfer row per line keeps row_beats small
        shape = dict(rows=count, row_beats=line_bytes // beat_bytes, stride=line_bytes)
    else:                            # several lines per beat (2 channels on a wide bus)
        shape = dict(rows=1, row_beats=_ceil_div(count * line_bytes, beat_bytes), stride=0)
    return Op.make(Opcode.LOAD, target=LoadTarget.PARAM, sp_addr=line0 * line_bytes // beat_bytes,
                   dram_addr=grp * group * line_bytes, region=param_region(layer),
                   note=f"{name} params {grp * group}..{grp * group + count - 1}", **shape)


def verify_graph(g: GraphIR) -> None:
    cfg = g.config
    names = [t.name for t in g.tensors]
    if len(set(names)) != len(names):
        raise CompileError(f"tensor names must be unique, not {names}")
    lo, hi = -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1
    for t in g.tensors:
        if t.alias is not None:
            target = g.tensor(t.alias)
            if target.hw is None or t.rows != 1 or t.cols != layout.blocks(
                    cfg, target.cols) * layout.padded_rows(cfg, target.rows) * cfg.rows:
                raise CompileError(f"tensor {t.name}: alias of {t.alias} must be its flat "
                                   f"(1, blocks * lines * rows) view")
        if t.hw is not None and t.rows != t.buf_hw[0] * t.buf_hw[1]:
            raise CompileError(f"tensor {t.name}: {t.rows} rows do not match the stored image "
                               f"{t.buf_hw}")
    for ly in g.layers:
        if isinstance(ly, SpatialSpec):
            from .conv import verify_spatial
            verify_spatial(g, ly)
            continue
        src, dst = g.tensor(ly.src), g.tensor(ly.dst)
        if src.hw is not None or dst.hw is not None:
            raise CompileError(f"{ly.name}: linear layers take and give flat tensors, not "
                               f"feature maps")
        if ly.weight.ndim != 2 or ly.k != src.cols or ly.n != dst.cols:
            raise CompileError(f"{ly.name}: weight shape {ly.weight.shape} does not match "
                               f"{src.name} [{src.rows}, {src.cols}] -> {dst.name} "
                               f"[{dst.rows}, {dst.cols}]")
        if src.rows != dst.rows:
            raise CompileError(f"{ly.name}: batch of {src.name} ({src.rows}) differs from "
                               f"{dst.name} ({dst.rows})")
        if ly.weight.size and (ly.weight.min() < lo or ly.weight.max() > hi):
            bad = int(ly.weight.min()) if ly.weight.min() < lo else int(ly.weight.max())
            raise CompileError(f"{ly.name}: weight {bad} is out of range for "
                               f"weight_bits={cfg.weight_bits}; allowed {lo}..{hi}")
        for name in ("bias", "mult", "shift"):
            if getattr(ly, name).shape != (ly.n,):
                raise CompileError(f"{ly.name}: {name} must have shape ({ly.n},)")
        if ly.act_unsigned == src.signed:
            raise CompileError(f"{ly.name}: act_unsigned={ly.act_unsigned} but {src.name} "
                               f"is {'signed' if src.signed else 'unsigned'}")
        if dst.signed == ly.out_unsigned or dst.bits != ly.out_bits:
            raise CompileError(f"{ly.name}: output format does not match tensor {dst.name}")
    for name in g.inputs + g.outputs:
        g.tensor(name)


# -- tiling ---------------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, b: int) -> int:
    return _ceil_div(a, b) * b


def _ring_geometry(cfg: AccelConfig) -> tuple[int, int, int, int]:
    wtb = cfg.weight_tile_beats
    tiles = min(cfg.weight_tiles, (1 << 16) // wtb)        # weight_addr is 16 bits
    wg = max(1, tiles // 4)
    plpb = max(1, cfg.beat_bytes // (cfg.cols * layout.PARAM_BYTES))
    pg = max(plpb, cfg.param_depth // 2)
    return wg, tiles // wg, pg, cfg.param_depth // pg


def _layer_cost(cfg, mp, mt, kb, nb, wg, w_ring, act_group_fn) -> tuple[int, dict]:
    """Estimated cycles of one layer for M tile ``mt`` (a rough model of ``sim.cycle``)."""
    R, C, B = cfg.rows, cfg.cols, cfg.beat_bytes
    wtb = cfg.weight_tile_beats
    n_m = _ceil_div(mp, mt)
    slots = cfg.act_depth // mt
    resident = slots >= kb
    blk_beats = mt * R // B
    # a tile streams mt rows; its weights preload meanwhile; two tiles apart need R + C
    per_compute = max(mt, wtb + 3, _ceil_div(mt + R + C + 1, 2))
    computes = n_m * nb * kb
    comp = computes * per_compute
    tiles = kb * nb
    w_res = tiles <= w_ring
    w_tiles = tiles if w_res else n_m * tiles
    blocks_loaded = n_m * kb if resident else n_m * nb * kb
    group = act_group_fn(blk_beats, kb, slots, resident)
    n_loads = _ceil_div(blocks_loaded, group) + _ceil_div(w_tiles, wg)
    load = blocks_loaded * blk_beats + w_tiles * wtb + _XFER * n_loads
    store = n_m * nb * (max(mt * C // B, mt) + _XFER)
    fetch = (2 + _XFER + _ceil_div(cfg.fetch_burst * 16, B) + cfg.fetch_burst) \
        / cfg.fetch_burst
    dispatch = int((computes + n_loads + n_m * nb) * fetch)
    prologue = group * blk_beats + min(wg, tiles) * wtb + 2 * _XFER
    epilogue = R + C + mt * C // B + _XFER
    cost = max(comp, load, store, dispatch) + prologue + epilogue
    # A tile's accumulator buffer is reused ``buffers`` tiles later, once it is stored:
    # use just enough buffers to hide the drain (result latency + STORE). Few buffers also
    # make computes wait for (and learn of) recent stores, which the next layer's loads
    # need, so fewer SYNCs stall the compute queue at layer boundaries.
    tile_time = kb * per_compute
    drain = R + C + 2 + max(mt * C // B, mt) + _XFER
    buffers = min(cfg.acc_depth // mt, 2 + _ceil_div(max(0, drain - tile_time), tile_time))
    cost += n_m * nb * max(0, drain - (buffers - 1) * tile_time)
    if not resident or slots < 2 * kb:
        # the activation blocks of an M tile (or of every N block) cannot all load ahead
        exposed = (n_m if resident else n_m * nb) - 1
        cost += exposed * max(0, blk_beats + _XFER - per_compute) * min(kb, slots)
    return int(cost), dict(resident=resident, slots=slots, group=group, w_res=w_res,
                           buffers=buffers)


def _act_group(blk_beats: int, kb: int, slots: int, resident: bool) -> int:
    g = max(1, 32 // blk_beats)
    cap = kb if resident and slots >= 2 * kb else max(1, slots // 2)
    return max(1, min(g, kb, cap))


def plan_tiles(g: GraphIR) -> TiledIR:
    """Choose M tiles, slots and residency for every layer (see the module docstring)."""
    cfg = g.config
    lpb = cfg.lines_per_beat
    wg, wslots, pg, pslots = _ring_geometry(cfg)
    # at least two accumulator buffers (STORE of one tile overlaps COMPUTE of the next)
    acc_cap = cfg.acc_depth // 2 if lpb <= cfg.acc_depth // 2 else cfg.acc_depth
    row_beats_cap = (0xFFFF * cfg.beat_bytes) // cfg.rows      # LOAD.row_beats is 16 bits
    mt_cap = min(acc_cap, cfg.act_depth, 0xFFFF, row_beats_cap) // lpb * lpb
    tilings, layers = [], list(g.layers)
    for i, ly in enumerate(g.layers):
        if isinstance(ly, SpatialSpec):
            from .conv import plan_spatial
            # a depthwise layer comes back with its taps grouped for the chosen pitch
            lt, layers[i] = plan_spatial(cfg, g, ly, i, weight_group=wg, weight_slots=wslots,
                                         param_group=pg, param_slots=pslots)
            tilings.append(lt)
            continue
        m = g.tensor(ly.src).rows
        mp = layout.padded_rows(cfg, m)
        kb, nb = layout.blocks(cfg, ly.k), layout.blocks(cfg, ly.n)
        best = None
        seen = set()
        n_m = 1
        while True:
            mt = _round_up(_ceil_div(mp, n_m), lpb)
            if mt <= mt_cap and mt not in seen:
                seen.add(mt)
                cost, info = _layer_cost(cfg, mp, mt, kb, nb, wg, wg * wslots, _act_group)
                if best is None or cost < best[0] or (cost == best[0] and mt > best[1]):
                    best = (cost, mt, info)
            if mt <= lpb or len(seen) > 512:
                break
            n_m += 1 if n_m < 64 else max(1, n_m // 16)
        cost, mt, info = best
        tiles = tuple((m0, min(mt, mp - m0)) for m0 in range(0, mp, mt))
        tilings.append(LayerTiling(
            layer=i, m=m, mp=mp, k=ly.k, n=ly.n, kb=kb, nb=nb, mt=mt, m_tiles=tiles,
            act_slots=info["slots"], act_resident=info["resident"], act_group=info["group"],
            weight_resident=info["w_res"], param_resident=nb <= pg * pslots,
            acc_buffers=info["buffers"], acc_lines=mt, est_cycles=int(cost)))
    return TiledIR(graph=replace(g, layers=tuple(layers)), tilings=tuple(tilings),
                   weight_group=wg, weight_slots=wslots, param_group=pg, param_slots=pslots)


def verify_tiling(t: TiledIR) -> None:
    cfg = t.config
    lpb = cfg.lines_per_beat
    if t.weight_group * t.weight_slots * cfg.weight_tile_beats > min(cfg.weight_words, 1 << 16):
        raise CompileError("weight ring exceeds the weight scratchpad")
    if t.param_group * t.param_slots > cfg.param_depth or t.param_slots < 2:
        raise CompileError("parameter ring exceeds the parameter memory")
    for ly, lt in zip(t.graph.layers, t.tilings, strict=True):
        if isinstance(ly, SpatialSpec) != isinstance(lt, SpatialTiling):
            raise CompileError(f"layer {lt.layer}: tiling kind does not match the layer")
        if isinstance(lt, SpatialTiling):
            from .conv import verify_spatial_tiling
            verify_spatial_tiling(t, ly, lt)
            continue
        where = f"layer {lt.layer}"
        if lt.mt % lpb or lt.mt < 1 or lt.mt > lt.acc_lines or lt.mt > cfg.act_depth:
            raise CompileError(f"{where}: M tile {lt.mt} is not a multiple of {lpb} lines "
                               f"within the accumulator buffer and scratchpad")
        if lt.acc_buffers * lt.acc_lines > cfg.acc_depth:
            raise CompileError(f"{where}: accumulator buffers exceed acc_depth")
        pos = 0
        for m0, rows in lt.m_tiles:
            if m0 != pos or rows < 1 or rows > lt.mt or rows % lpb:
                raise CompileError(f"{where}: M tiles {lt.m_tiles} do not tile {lt.mp} rows")
            pos += rows
        if pos != lt.mp or lt.mp != layout.padded_rows(cfg, lt.m):
            raise CompileError(f"{where}: M tiles cover {pos} rows, not {lt.mp}")
        if lt.act_slots != cfg.act_depth // lt.mt or (lt.act_resident and lt.act_slots < lt.kb):
            raise CompileError(f"{where}: activation slots inconsistent")
        if lt.weight_resident and lt.kb * lt.nb > t.weight_group * t.weight_slots:
            raise CompileError(f"{where}: resident weights exceed the weight ring")


# -- schedule -------------------------------------------------------------------------------


@dataclass
class _Load:
    op: Op
    due: int                 # index of the first COMPUTE that needs it
    key: int                 # earliest compute index to place it before (<= due)
    prio: int                # order among loads with the same key
    blocker: int = -1        # last position (compute index) that must be placed before it
    store_blocker: int = -1  # ... of which the STOREs
    seq: int = 0


@dataclass
class _Builder:
    cfg: AccelConfig
    loads: list = field(default_factory=list)
    computes: list = field(default_factory=list)      # (op, layer)
    stores: dict = field(default_factory=dict)        # compute index -> [op]
    layer_first: list = field(default_factory=list)   # first compute index of each layer
    state: tuple = (0, 0, 0)                          # weight pos, param pos, tile count

    def __post_init__(self):
        cfg = self.cfg
        self.act_use = np.full(cfg.act_depth, -1, np.int64)       # by line
        self.w_use = np.full(cfg.weight_words, -1, np.int64)      # by word
        self.p_use = np.full(cfg.param_depth, -1, np.int64)       # by line (store positions)
        self.written: dict[str, np.ndarray] = {}                  # tensor -> (blocks, Mp)

    def add_load(self, op: Op, due: int, prio: int, blocker: int, store_blocker: int, *,
                 early: int | None = None) -> None:
        """A load needed by compute ``due``; placed from compute ``early`` on if given."""
        if blocker >= due:
            raise CompileError(f"internal: {op.render()} is due at compute {due} but its "
                               f"destination is in use until {blocker}")
        key = max(blocker + 1, min(due, due if early is None else early))
        self.loads.append(_Load(op, due, key, prio, blocker, store_blocker, len(self.loads)))


def _pack_weights(cfg, w: np.ndarray, kb: int, nb: int) -> bytes:
    R, C = cfg.rows, cfg.cols
    padded = np.zeros((kb * R, nb * C), dtype=np.int64)
    padded[:w.shape[0], :w.shape[1]] = w
    parts = []
    for n in range(nb):
        for k in range(kb):
            parts.append(layout.pack_weight_tile(cfg, padded[k * R:(k + 1) * R,
                                                             n * C:(n + 1) * C]))
    return b"".join(parts)


def _pack_layer_params(cfg, ly: LinearSpec, nb: int, zero: int = 0) -> bytes:
    """The layer's parameter lines; ``zero``: the output tensor's zero point (byte 7)."""
    n = nb * cfg.cols
    bias, mult, shift = (np.zeros(n, np.int64) for _ in range(3))
    bias[:ly.n], mult[:ly.n], shift[:ly.n] = ly.bias, ly.mult, ly.shift
    data = layout.pack_params(bias, mult, shift, zero)
    return data + bytes(-len(data) % cfg.beat_bytes)


def schedule(t: TiledIR) -> ScheduleIR:
    """Lower the tiled layers to LOAD/COMPUTE/STORE ops in program order (no tokens yet)."""
    cfg, g = t.config, t.graph
    bld = _Builder(cfg)
    regions: list[Region] = []
    for ly, lt in zip(g.layers, t.tilings, strict=True):
        if isinstance(ly, SpatialSpec):
            data = b"".join(layout.pack_weight_tile(cfg, tile) for tile in ly.tiles)
        else:
            data = _pack_weights(cfg, ly.weight, lt.kb, lt.nb)
        regions.append(Region(weight_region(lt.layer), "weights", len(data), data))
    for ly, lt in zip(g.layers, t.tilings, strict=True):
        data = _pack_layer_params(cfg, ly, layout.blocks(cfg, ly.n), g.tensor(ly.dst).zero)
        regions.append(Region(param_region(lt.layer), "params", len(data), data))
    for ten in g.tensors:
        if ten.alias is not None:
            continue
        size = layout.act_bytes(cfg, ten.rows, ten.cols)
        # a map's border must read as its zero point (the value 0); inputs bring their own
        fill = ten.zero and ten.role != "input" and any(ten.border)
        regions.append(Region(ten.name, "act", size,
                              bytes([ten.zero & 0xFF]) * size if fill else None))
        bld.written[ten.name] = np.full((layout.blocks(cfg, ten.cols),
                                         layout.padded_rows(cfg, ten.rows)), -1, np.int64)
    for ten in g.tensors:
        if ten.alias is not None:       # the same cells, one line per block
            bld.written[ten.name] = bld.written[ten.alias].reshape(-1, 1)

    wpos = ppos = tile_no = 0
    for ly, lt in zip(g.layers, t.tilings, strict=True):
        if isinstance(ly, SpatialSpec):
            from .conv import schedule_spatial
            schedule_spatial(t, bld, ly, lt, wpos, ppos, tile_no)
        else:
            _schedule_layer(t, bld, ly, lt, wpos, ppos, tile_no)
        wpos, ppos, tile_no = bld.state
    ops = _interleave(bld)
    return ScheduleIR(tiled=t, ops=tuple(ops), regions=tuple(regions),
                      meta={"loads": len(bld.loads), "computes": len(bld.computes)})


def _storage(g: GraphIR, name: str) -> str:
    """The DRAM region holding tensor ``name`` (an alias's target)."""
    alias = g.tensor(name).alias
    return name if alias is None else alias


def _schedule_layer(t: TiledIR, bld: _Builder, ly: LinearSpec, lt: LayerTiling,
                    wpos: int, ppos: int, tile_no: int) -> None:
    cfg = t.config
    R, C, B = cfg.rows, cfg.cols, cfg.beat_bytes
    wtb = cfg.weight_tile_beats
    pline = C * layout.PARAM_BYTES
    mp, mt, kb, nb = lt.mp, lt.mt, lt.kb, lt.nb
    src_written = bld.written[ly.src]
    dst_written = bld.written[ly.dst]
    li = lt.layer
    first = len(bld.computes)
    bld.layer_first.append(first)
    wg = t.weight_group
    n_tiles = kb * nb
    pg = t.param_group
    p_groups = -(-nb // pg)
    apos = 0                                   # activation ring position (per layer)
    w_slot: dict[int, int] = {}                # weight group -> ring slot (current pass)
    p_slot: dict[int, int] = {}
    act_at: dict[tuple, int] = {}              # (m, [n,] k) -> first scratchpad line

    def load_acts(mi: int, m0: int, rows: int, n: int | None, k: int, ci: int) -> None:
        nonlocal apos
        slot = apos % lt.act_slots
        count = min(lt.act_group, kb - k, lt.act_slots - slot)
        lines = slot * mt
        blocker = int(bld.act_use[lines:lines + count * mt].max())
        sb = int(src_written[k:k + count, m0:m0 + rows].max())
        op = Op.make(Opcode.LOAD, target=LoadTarget.ACT, sp_addr=lines * R // B, rows=count,
                     row_beats=rows * R // B, dram_addr=k * mp * R + m0 * R, stride=mp * R,
                     region=_storage(t.graph, ly.src),
                     note=f"{ly.name} act m{mi} k{k}..{k + count - 1}")
        # with double-buffered slots, the blocks of M tile m load while tile m - 1
        # computes, spread evenly over its computes (not in a burst that would hold up
        # the weight loads behind them in the in-order load unit)
        early = None
        if lt.act_resident and mi and lt.act_slots >= 2 * kb:
            early = tile_first[mi - 1] + k * nb
        bld.add_load(op, ci, 1, max(blocker, sb), sb, early=early)
        for j in range(count):      # the transfer packs the blocks ``rows`` lines apart
            act_at[(mi, n, k + j)] = lines + j * rows
        apos += count

    def load_weights(grp: int, ci: int) -> None:
        nonlocal wpos
        slot = wpos % t.weight_slots
        wpos += 1
        count = min(wg, n_tiles - grp * wg)
        w0 = slot * wg * wtb
        blocker = int(bld.w_use[w0:w0 + wg * wtb].max())
        op = weight_load_op(layer=li, name=ly.name, grp=grp, group=wg, count=count, w0=w0,
                            tile_beats=wtb, beat_bytes=B)
        bld.add_load(op, ci, 0, blocker, -1)
        w_slot[grp] = slot

    def load_params(grp: int, key: int) -> None:
        nonlocal ppos
        slot = ppos % t.param_slots
        ppos += 1
        count = min(pg, nb - grp * pg)
        line0 = slot * pg
        blocker = int(bld.p_use[line0:line0 + pg].max())
        op = param_load_op(layer=li, name=ly.name, grp=grp, group=pg, count=count,
                           line0=line0, line_bytes=pline, beat_bytes=B)
        bld.add_load(op, key, 2, blocker, blocker)
        p_slot[grp] = slot

    if lt.param_resident:
        for grp in range(p_groups):
            load_params(grp, first)
    tile_first: list[int] = []                 # first compute of each M tile
    for mi, (m0, rows) in enumerate(lt.m_tiles):
        tile_first.append(len(bld.computes))
        if not lt.weight_resident or mi == 0:
            w_slot.clear()
        if not lt.param_resident:
            p_slot.clear()
        for n in range(nb):
            buf = tile_no % lt.acc_buffers
            tile_no += 1
            acc0 = buf * lt.acc_lines
            for k in range(kb):
                ci = len(bld.computes)
                akey = (mi, None if lt.act_resident else n, k)
                if akey not in act_at:
                    load_acts(mi, m0, rows, akey[1], k, ci)
                t_idx = n * kb + k
                grp = t_idx // wg
                if grp not in w_slot:
                    load_weights(grp, ci)
                word = (w_slot[grp] * wg + t_idx - grp * wg) * wtb
                line = act_at[akey]
                op = Op.make(Opcode.COMPUTE, act_addr=line, weight_addr=word, acc_addr=acc0,
                             rows=rows, accumulate=int(k > 0),
                             act_unsigned=int(ly.act_unsigned),
                             note=f"{ly.name} m{mi} n{n} k{k}")
                bld.computes.append((op, li))
                bld.act_use[line:line + rows] = ci
                bld.w_use[word:word + wtb] = ci
            ci = len(bld.computes) - 1
            pgrp = n // pg
            if pgrp not in p_slot:
                load_params(pgrp, ci)
            pline_no = p_slot[pgrp] * pg + n - pgrp * pg
            op = Op.make(Opcode.STORE, acc_addr=acc0, rows=rows, param_addr=pline_no,
                         relu=int(ly.relu), out_bits=ly.out_bits,
                         out_unsigned=int(ly.out_unsigned), dram_addr=n * mp * C + m0 * C,
                         region=ly.dst, note=f"{ly.name} m{mi} n{n}")
            bld.stores.setdefault(ci, []).append(op)
            bld.p_use[pline_no] = ci
            dst_written[n, m0:m0 + rows] = ci
    bld.state = (wpos, ppos, tile_no)


def _interleave(bld: _Builder) -> list[Op]:
    loads = sorted(bld.loads, key=lambda ld: (ld.key, ld.prio, ld.seq))
    layer_first = bld.layer_first
    ops: list[Op] = []
    li = 0
    held: list[_Load] = []    # read what the current layer stores: placed only when due
    for ci, (cop, layer) in enumerate(bld.computes):
        if held:
            ready = [ld for ld in held if ld.due <= ci or ld.store_blocker < layer_first[layer]]
            held = [ld for ld in held if ld not in ready]
            ops.extend(ld.op for ld in ready)
        while li < len(loads):
            ld = loads[li]
            if ld.key > ci + LOOKAHEAD or ld.blocker >= ci:
                if ld.due <= ci:
                    raise CompileError(f"internal: load {ld.op.render()} is due at compute "
                                       f"{ci} but waits for position {ld.blocker}")
                break
            li += 1
            if ld.due > ci and ld.store_blocker >= layer_first[layer]:
                held.append(ld)
                continue
            ops.append(ld.op)
        ops.append(cop)
        ops.extend(bld.stores.get(ci, ()))
    if li != len(loads) or held:
        raise CompileError("internal: loads left after the last compute")
    return ops


def _provisional_bases(ir: ScheduleIR) -> dict[str, int]:
    """Region addresses with code at 0 sized for the current ops (see :func:`allocate`)."""
    return _layout_regions(ir.config, ir.regions, ir.code_bytes)[0]


def _provisional_program(ir: ScheduleIR) -> Program:
    bases = ir.addresses or _provisional_bases(ir)
    instrs = [_to_instr(op, bases) for op in ir.ops] + [isa.make(Opcode.END)]
    big = ir.config if _layout_regions(ir.config, ir.regions, ir.code_bytes)[1] \
        <= ir.config.mem_bytes else ir.config.replace(mem_bytes=1 << 31)
    return Program(config=big, instrs=instrs, segments=[], inputs=[], outputs=[])


def verify_schedule(ir: ScheduleIR) -> None:
    """Every op in range and aligned (the ISA rules of ``lowbit.checks``); every output
    tile computed over every K block exactly once and stored."""
    try:
        check_program(_provisional_program(ir))
    except ProgramError as exc:
        raise CompileError(f"schedule: {exc}") from None
    computes = [op for op in ir.ops if op.opcode == Opcode.COMPUTE]
    expected = sum(lt.n_computes for lt in ir.tiled.tilings)
    if len(computes) != expected:
        raise CompileError(f"schedule has {len(computes)} COMPUTEs, expected {expected}")
    stores = sum(op.opcode == Opcode.STORE for op in ir.ops)
    expected = sum(lt.n_stores for lt in ir.tiled.tilings)
    if stores != expected:
        raise CompileError(f"schedule has {stores} STOREs, expected {expected}")


# -- tokens ---------------------------------------------------------------------------------


def tokens(ir: ScheduleIR) -> ScheduleIR:
    """Add dependency tokens (and SYNCs) so that the concurrent units are race free."""
    ops = assign_tokens(ir.config, ir.ops, _provisional_bases(ir))
    return replace(ir, ops=tuple(ops), tokens=True)


def verify_tokens_pass(ir: ScheduleIR) -> None:
    bases = ir.addresses or _provisional_bases(ir)
    resolved = [op.with_args(dram_addr=bases[op.region] + op.get("dram_addr"))
                if op.region is not None else op for op in ir.ops]
    try:
        verify_tokens(ir.config, resolved + [Op.make(Opcode.END)],
                      describe=lambda i: f"op {i} ({resolved[i].render()})"
                      if i < len(resolved) else "END")
    except ValueError as exc:
        raise CompileError(f"tokens: {exc}") from None


# -- memory map -----------------------------------------------------------------------------


def _layout_regions(cfg, regions, code_bytes: int) -> tuple[dict[str, int], int]:
    B = cfg.beat_bytes
    addr = -(-code_bytes // B) * B
    bases = {"code": 0}
    for r in regions:
        bases[r.name] = addr
        addr += -(-r.size // B) * B
    return bases, addr


def _check_fits(cfg, regions, code_bytes: int, end: int) -> None:
    if end <= cfg.mem_bytes:
        return
    parts = ", ".join(f"{kind} {sum(r.size for r in regions if r.kind == kind)}"
                      for kind in ("weights", "params", "act"))
    code = f"code {code_bytes}" if code_bytes else "code not counted"
    raise ValueError(f"model needs {end} bytes of external memory but mem_bytes is "
                     f"{cfg.mem_bytes} ({code}, {parts} bytes); use a config with "
                     f"mem_bytes >= {1 << math.ceil(math.log2(end))} or a smaller batch")


def data_regions(g: GraphIR) -> tuple[Region, ...]:
    """The DRAM regions of a graph without their contents (for an early size check)."""
    cfg = g.config
    out = []
    for ly in g.layers:
        nb = layout.blocks(cfg, ly.n)
        tiles = len(ly.tiles) if isinstance(ly, SpatialSpec) else layout.blocks(cfg, ly.k) * nb
        out.append(Region(ly.name, "weights", tiles * cfg.weight_tile_beats * cfg.beat_bytes))
        out.append(Region(ly.name + ".p", "params", _round_up(nb * cfg.cols
                                                              * layout.PARAM_BYTES,
                                                              cfg.beat_bytes)))
    for ten in g.tensors:
        if ten.alias is None:
            out.append(Region(ten.name, "act", layout.act_bytes(cfg, ten.rows, ten.cols)))
    return tuple(out)


def check_memory(g: GraphIR) -> None:
    """Raise ``ValueError`` early when the data alone exceeds ``mem_bytes``."""
    regions = data_regions(g)
    _check_fits(g.config, regions, 0, _layout_regions(g.config, regions, 0)[1])


def allocate(ir: ScheduleIR) -> ScheduleIR:
    """External memory map: code at 0, then weights, parameters and activation buffers
    (input, intermediates, output), every region beat aligned. Raises ``ValueError``
    naming the sizes when it does not fit ``mem_bytes``."""
    cfg = ir.config
    order = {"weights": 0, "params": 1, "act": 2}
    regions = tuple(sorted(ir.regions, key=lambda r: order[r.kind]))
    bases, end = _layout_regions(cfg, regions, ir.code_bytes)
    _check_fits(cfg, regions, ir.code_bytes, end)
    return replace(ir, regions=regions, addresses=bases)


def verify_allocation(ir: ScheduleIR) -> None:
    cfg = ir.config
    B = cfg.beat_bytes
    if ir.addresses is None:
        raise CompileError("allocation: no addresses")
    spans = [(0, ir.code_bytes, "code")]
    spans += [(ir.addresses[r.name], ir.addresses[r.name] + r.size, r.name) for r in ir.regions]
    spans.sort()
    for (_, a1, n0), (b0, _, n1) in zip(spans, spans[1:], strict=False):
        if a1 > b0:
            raise CompileError(f"allocation: {n0} overlaps {n1}")
    for a0, a1, name in spans:
        if a0 % B or a1 > cfg.mem_bytes:
            raise CompileError(f"allocation: {name} at {a0:#x} not beat aligned or beyond "
                               f"mem_bytes")


# -- emission -------------------------------------------------------------------------------


def _to_instr(op: Op, bases: dict[str, int]) -> isa.Instr:
    f = op.fields()
    if op.region is not None:
        f["dram_addr"] = bases[op.region] + f.get("dram_addr", 0)
    return isa.make(op.opcode, **f)


def emit(ir: ScheduleIR) -> Program:
    """The :class:`~lowbit.program.Program`: instructions, constant segments, tensor map."""
    cfg, g = ir.config, ir.tiled.graph
    bases = ir.addresses
    instrs = [_to_instr(op, bases) for op in ir.ops] + [isa.make(Opcode.END)]
    segments = [(bases[r.name], r.data) for r in ir.regions if r.data is not None]

    def ref(name: str) -> TensorRef:
        t = g.tensor(name)
        return TensorRef(name=t.name, addr=bases[_storage(g, t.name)], rows=t.rows,
                         cols=t.cols, signed=t.signed, scale=float(t.scale), bits=t.bits)

    def layer_meta(ly, lt) -> dict:
        if isinstance(ly, SpatialSpec):
            return dict(name=ly.name, kind=ly.kind, out=[*ly.out_hw, ly.n],
                        kernel=list(ly.kernel), stride=list(ly.stride),
                        out_tiles=len(lt.out_tiles), pitch=lt.pitch,
                        act_resident=lt.act_resident, weight_resident=lt.weight_resident,
                        computes=lt.n_computes, macs=ly.macs, est_cycles=lt.est_cycles)
        return dict(name=ly.name, m=lt.m, k=lt.k, n=lt.n, mt=lt.mt, m_tiles=len(lt.m_tiles),
                    act_resident=lt.act_resident, weight_resident=lt.weight_resident,
                    est_cycles=lt.est_cycles)

    meta = {
        "compiler": "lowbit.compiler",
        # The layer each instruction belongs to (its note starts with the layer's name).
        "instr_layers": [op.note.split(" ", 1)[0] if op.note else "" for op in ir.ops],
        "layers": [layer_meta(ly, lt) for ly, lt in zip(g.layers, ir.tiled.tilings,
                                                         strict=True)],
        "memory_map": {name: addr for name, addr in bases.items()},
        "macs": int(sum(op.get("rows") for op in ir.ops if op.opcode == Opcode.COMPUTE)
                    * cfg.rows * cfg.cols),
    }
    return Program(config=cfg, instrs=instrs, segments=segments,
                   inputs=[ref(n) for n in g.inputs], outputs=[ref(n) for n in g.outputs],
                   prog_addr=bases["code"], meta=meta)


def verify_program(prog: Program) -> None:
    """``Program.validate`` plus the token verifier on the final instruction stream."""
    prog.validate()
    try:
        verify_tokens(prog.config, prog.instrs)
    except ValueError as exc:
        raise CompileError(f"program: {exc}") from None

