"""Compiler entry points: quantized MLPs, single GEMM layers and networks (convolutions,
pooling, residual adds, linear layers: :class:`~lowbit.compiler.graph.Graph`) to lowbit
programs."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import numpy as np

from lowbit.config import AccelConfig
from lowbit.program import Program

from . import passes
from .ir import GraphIR, LinearSpec, TensorSpec
from .quantize import QuantizedMLP, quantize_multiplier

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["PASSES", "compile_gemm", "compile_graph", "compile_mlp", "compile_network",
           "default_requant"]

#: Pass names in pipeline order (``dump`` accepts any of them, or ``"all"``).
PASSES = ("graph", "tile", "schedule", "tokens", "allocate")

DumpSpec = Collection[str] | str | None


def _dump_set(dump: DumpSpec) -> frozenset[str]:
    if dump is None:
        return frozenset()
    if isinstance(dump, str):
        dump = PASSES if dump == "all" else (dump,)
    unknown = sorted(set(dump) - set(PASSES))
    if unknown:
        raise ValueError(f"dump names unknown pass {unknown[0]!r}; passes are "
                         f"{', '.join(PASSES)} (or 'all')")
    return frozenset(dump)


def compile_graph(graph: GraphIR, *, dump: DumpSpec = None,
                  dump_fn: Callable[[str, str], None] | None = None) -> Program:
    """Run every pass and its verifier on ``graph``; return the verified program.

    ``dump``: pass names (or ``"all"``) after which ``dump_fn(pass_name, ir_text)`` is
    called (default: print the IR).
    """
    wanted = _dump_set(dump)
    out = dump_fn or (lambda name, text: print(f"=== IR after {name} ===\n{text}"))

    def after(name, ir):
        if name in wanted:
            out(name, ir.dump())
        return ir

    passes.verify_graph(graph)
    passes.check_memory(graph)
    after("graph", graph)
    tiled = passes.plan_tiles(graph)
    passes.verify_tiling(tiled)
    after("tile", tiled)
    sched = passes.schedule(tiled)
    passes.verify_schedule(sched)
    after("schedule", sched)
    sched = passes.tokens(sched)
    passes.verify_tokens_pass(sched)
    after("tokens", sched)
    sched = passes.allocate(sched)
    passes.verify_allocation(sched)
    after("allocate", sched)
    prog = passes.emit(sched)
    passes.verify_program(prog)
    return prog


def _check_config(cfg) -> AccelConfig:
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"cfg must be an AccelConfig, not {type(cfg).__name__}")
    return cfg


def _check_batch(batch) -> int:
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    return int(batch)


def compile_mlp(qmodel: QuantizedMLP, cfg: AccelConfig, *, batch: int,
                dump: DumpSpec = None,
                dump_fn: Callable[[str, str], None] | None = None) -> Program:
    """Compile a quantized MLP for ``batch`` rows: input ``"x"``, output ``"y"``.

    The program's input is ``qmodel.quantize_input(x)``; its output equals
    ``qmodel.forward_int(xq)``. ``qmodel.weight_bits`` must equal ``cfg.weight_bits``
    and ``qmodel.act_bits`` be at most ``cfg.act_bits``.
    """
    cfg = _check_config(cfg)
    if not isinstance(qmodel, QuantizedMLP):
        raise TypeError(f"qmodel must be a QuantizedMLP, not {type(qmodel).__name__}")
    batch = _check_batch(batch)
    if qmodel.weight_bits != cfg.weight_bits:
        raise ValueError(f"model has {qmodel.weight_bits}-bit weights but the accelerator "
                         f"has weight_bits={cfg.weight_bits}; quantize with "
                         f"weight_bits={cfg.weight_bits}")
    if qmodel.act_bits > cfg.act_bits:
        raise ValueError(f"model has {qmodel.act_bits}-bit activations but the accelerator "
                         f"has act_bits={cfg.act_bits}; allowed at most {cfg.act_bits}")
    if qmodel.acc_bits != cfg.acc_bits:
        raise ValueError(f"model assumes acc_bits={qmodel.acc_bits} but the accelerator has "
                         f"acc_bits={cfg.acc_bits}")
    n = len(qmodel.layers)
    tensors = [TensorSpec("x", batch, qmodel.in_features, not qmodel.input_unsigned,
                          qmodel.act_bits, qmodel.input_scale, "input")]
    layers = []
    for i, ql in enumerate(qmodel.layers):
        name = "y" if i == n - 1 else f"h{i + 1}"
        tensors.append(TensorSpec(name, batch, ql.out_features, not ql.out_unsigned,
                                  ql.out_bits, ql.out_scale, "output" if i == n - 1
                                  else "hidden"))
        layers.append(LinearSpec(
            name=f"layer{i}", src=tensors[-2].name, dst=name, weight=ql.weight,
            bias=ql.bias, mult=ql.mult, shift=ql.shift, relu=ql.relu, out_bits=ql.out_bits,
            out_unsigned=ql.out_unsigned, act_unsigned=qmodel.layer_input_unsigned(i)))
    graph = GraphIR(config=cfg, tensors=tuple(tensors), layers=tuple(layers),
                    inputs=("x",), outputs=("y",))
    return compile_graph(graph, dump=dump, dump_fn=dump_fn)


def default_requant(weights: np.ndarray, *, act_unsigned: bool, act_bits: int,
                    out_bits: int, out_unsigned: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mult, shift)`` mapping +-4 standard deviations of the accumulator
    (for inputs uniform over their range) onto the output range."""
    w = np.asarray(weights, dtype=np.float64)
    amax = (1 << act_bits) - 1 if act_unsigned else 1 << (act_bits - 1)
    a_rms = amax / np.sqrt(3.0)
    sigma = np.sqrt((w ** 2).sum(axis=0)) * a_rms
    top = (1 << out_bits) - 1 if out_unsigned else (1 << (out_bits - 1)) - 1
    real = np.where(sigma > 0, top / (4.0 * np.maximum(sigma, 1e-30)), 1.0)
    return quantize_multiplier(real)


def compile_gemm(cfg: AccelConfig, *, a_shape: tuple[int, int], weights: np.ndarray,
                 bias: np.ndarray | None = None, mult: np.ndarray | None = None,
                 shift: np.ndarray | None = None, relu: bool = False,
                 act_unsigned: bool = False, out_bits: int | None = None,
                 out_unsigned: bool = False, dump: DumpSpec = None,
                 dump_fn: Callable[[str, str], None] | None = None) -> Program:
    """One layer ``y = requantize(x @ weights, bias, mult, shift)``: input ``"x"`` of shape
    ``a_shape = (M, K)`` (``cfg.act_bits`` wide, unsigned if ``act_unsigned``), output
    ``"y"`` ``(M, N)`` of ``out_bits`` (default ``cfg.act_bits``).

    ``bias`` defaults to 0; ``mult``/``shift`` default to :func:`default_requant`, which
    spreads typical outputs over the output range. Scalars broadcast to every channel.
    """
    cfg = _check_config(cfg)
    if not (isinstance(a_shape, (tuple, list)) and len(a_shape) == 2):
        raise ValueError(f"a_shape must be (M, K), not {a_shape!r}")
    m, k = (int(v) for v in a_shape)
    if m < 1 or k < 1:
        raise ValueError(f"a_shape must be positive, not {tuple(a_shape)}")
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[0] != k or w.shape[1] < 1:
        raise ValueError(f"weights must have shape ({k}, N) for a_shape {tuple(a_shape)}, "
                         f"not {w.shape}")
    if w.dtype.kind == "f" and not np.all(w == np.round(w)):
        raise ValueError("weights must be integers")
    w = w.astype(np.int64)
    lo, hi = -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1
    bad = (w < lo) | (w > hi)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"weight {int(w[r, c])} at [{r}, {c}] is out of range for "
                         f"weight_bits={cfg.weight_bits}; allowed {lo}..{hi}")
    n = w.shape[1]
    out_bits = cfg.act_bits if out_bits is None else out_bits
    if isinstance(out_bits, bool) or not isinstance(out_bits, (int, np.integer)) \
            or not 2 <= out_bits <= 8:
        raise ValueError(f"out_bits must be an integer from 2 to 8, not {out_bits!r}")

    def per_channel(name, value, default):
        v = np.broadcast_to(np.asarray(default if value is None else value), (n,))
        if v.dtype.kind == "f" and not np.all(v == np.round(v)):
            raise ValueError(f"{name} must be integers")
        return v.astype(np.int64).copy()

    if mult is None or shift is None:
        dm, ds = default_requant(w, act_unsigned=act_unsigned, act_bits=cfg.act_bits,
                                 out_bits=out_bits, out_unsigned=out_unsigned)
        mult = dm if mult is None else mult
        shift = ds if shift is None else shift
    bias_v = per_channel("bias", bias, 0)
    mult_v = per_channel("mult", mult, 0)
    shift_v = per_channel("shift", shift, 0)
    for name, v, vlo, vhi in (("bias", bias_v, -(1 << 31), (1 << 31) - 1),
                              ("mult", mult_v, 0, 0xFFFF), ("shift", shift_v, 0, 63)):
        if v.min() < vlo or v.max() > vhi:
            badv = int(v.min()) if v.min() < vlo else int(v.max())
            raise ValueError(f"{name} {badv} is out of range; allowed {vlo}..{vhi}")
    tensors = (TensorSpec("x", m, k, not act_unsigned, cfg.act_bits, 1.0, "input"),
               TensorSpec("y", m, n, not out_unsigned, out_bits, 1.0, "output"))
    layer = LinearSpec(name="gemm", src="x", dst="y", weight=w, bias=bias_v, mult=mult_v,
                       shift=shift_v, relu=bool(relu), out_bits=int(out_bits),
                       out_unsigned=bool(out_unsigned), act_unsigned=bool(act_unsigned))
    graph = GraphIR(config=cfg, tensors=tensors, layers=(layer,), inputs=("x",),
                    outputs=("y",))
    return compile_graph(graph, dump=dump, dump_fn=dump_fn)


def compile_network(net: Graph, cfg: AccelConfig, *, batch: int = 1, host_im2col: bool = True,
                    dump: DumpSpec = None,
                    dump_fn: Callable[[str, str], None] | None = None) -> Program:
    """Compile a :class:`~lowbit.compiler.graph.Graph` (see :mod:`lowbit.compiler.conv`).

    Program inputs and outputs keep the graph's tensor names and hold stored integers ``q =
    v + zero``; feature maps are stored with their border (of value 0, ``q = zero``), so
    convert values with :func:`lowbit.compiler.conv.pack_inputs` and
    :func:`~lowbit.compiler.conv.unpack_outputs` (their description is in
    ``program.meta["network"]``). The outputs equal ``net.forward(inputs)``. ``batch`` is
    the row count of flat inputs (networks with feature maps run batch 1);
    ``host_im2col`` lets the host unfold an input image for its first convolution.
    """
    from .conv import lower

    cfg = _check_config(cfg)
    batch = _check_batch(batch)
    graph, io = lower(net, cfg, batch=batch, host_im2col=bool(host_im2col))
    prog = compile_graph(graph, dump=dump, dump_fn=dump_fn)
    prog.meta["network"] = dict(io, name=net.name, macs=net.macs(), params=net.params())
    return prog
