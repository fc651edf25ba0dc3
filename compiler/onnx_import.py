"""Import quantized ONNX models (QDQ and QONNX) into the graph IR.

Two encodings of a quantized network are understood:

QDQ (``onnxruntime.quantization.quantize_static``, ``QuantFormat.QDQ``)
    Float operators between ``QuantizeLinear``/``DequantizeLinear`` pairs. Weights are
    ``DequantizeLinear`` of integer initializers (per-tensor or per-channel along the output
    channel axis, zero point 0; 4-bit weights may be stored as int8 within ``-8..7`` or as
    INT4), biases int32 at scale ``s_x * s_w`` (or float, then quantized here).
    Activations are per-tensor.
QONNX (``Quant`` of domain ``qonnx.custom_op.general``, as Brevitas exports)
    ``Quant(x, scale, zeropt, bitwidth)`` with attributes ``signed``, ``narrow``,
    ``rounding_mode``: on an initializer it quantizes a weight (bit widths 2..8; ``narrow``
    allowed, any rounding mode, applied here); on an activation it is a ``QuantizeLinear``
    followed by a ``DequantizeLinear`` with a ``bitwidth``-bit integer range.

Operators: ``Conv`` (any kernel, stride, padding, groups), ``MatMul`` and ``Gemm`` (constant
weights), ``Add``, ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``, ``Relu``, ``Clip(0, max)``,
``Flatten`` and ``Reshape`` to ``(N, F)``. Each quantized compute result becomes one graph
operator whose requantization maps to the next ``QuantizeLinear``'s scale; a ``Relu`` or
``Clip(0, max)`` between is fused, a constant ``Add`` after ``Conv``/``MatMul``/``Gemm``
folds into the bias.

Zero points: a quantized activation ``q`` with (per-tensor, any) zero point ``z`` is the
graph value ``v = q - z``. When ``[q_min - z, q_max - z]`` (cut at 0 after a ``Relu``) is
itself a plain signed ``[-2^(b-1), 2^(b-1) - 1]`` or unsigned ``[0, 2^b - 1]`` range (int8
with ``z = 0``, uint8 with ``z = 0`` or ``128``, int8 with ``z = -128`` or int8 after a
``Relu`` = unsigned 7 or 8 bits, ...) the graph tensor has that format and zero point 0;
otherwise (asymmetric calibration, ``quantize_static``'s default) it keeps the ONNX format
and its zero point ``z`` (:class:`~lowbit.compiler.graph.Tensor` ``zero``): the compiler
folds input zero points into the biases, fills padding borders with ``z`` and the STORE
adds the output zero point after the ReLU, before the clamp (``docs/onnx.md``). Weights
need zero point 0; activation zero points are per tensor and QONNX ``zeropt`` must be an
integer.

Feature maps are NCHW in ONNX (batch 1) and ``(H, W, C)`` in the graph; ``Flatten`` orders
``(c, y, x)`` in ONNX and ``(y, x, c)`` in the graph, so the following ``Gemm``/``MatMul``
weight rows are permuted (:meth:`OnnxGraph.quantize_inputs` and
:meth:`OnnxGraph.dequantize_outputs` convert values at the boundary).

Rounding: onnxruntime requantizes with float scales and rounds half to even; the graph uses
an integer ``mult / 2^shift`` (``mult < 2^16``) and rounds half away from zero, so results
may differ by one LSB where the scaled accumulator lies within about ``2^-16`` relative of a
rounding boundary (see ``docs/onnx.md`` for measured agreement).

Anything else is refused with :class:`OnnxImportError` naming the node, its op type and what
is supported.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.config import SUPPORTED_WEIGHT_BITS

from .graph import Graph, GraphError

__all__ = [
    "SUPPORTED_OPS",
    "OnnxGraph",
    "OnnxImportError",
    "compile_onnx",
    "import_onnx",
    "main",
]

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")

#: Operator types the importer understands (QONNX ``Quant`` in the domains above).
SUPPORTED_OPS = ("QuantizeLinear", "DequantizeLinear", "Quant", "Conv", "MatMul", "Gemm",
                 "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Flatten",
                 "Reshape", "Clip", "Constant", "Identity")

_ROUNDING = {
    "ROUND": np.round,                     # numpy rounds half to even, as QONNX does
    "HALF_EVEN": np.round,
    "ROUND_TO_ZERO": np.trunc,
    "FLOOR": np.floor,
    "CEIL": np.ceil,
}


class OnnxImportError(ValueError):
    """A model the importer cannot represent: a malformed file, or a node (named, with its op
    type) using an unsupported operator, attribute, bit width or quantization."""


# -- values tracked per ONNX tensor -------------------------------------------------------


@dataclass
class _Const:
    value: np.ndarray


@dataclass
class _QConst:
    """An integer constant with its real scale (per tensor or along ``axis``)."""

    q: np.ndarray
    scale: np.ndarray
    axis: int
    node: Any
    bits: int = 8


@dataclass
class _Real:
    """A real value held by graph tensor ``t`` (real = scale * v); ``perm`` for flat tensors
    made by ``Flatten``: graph element ``i`` is ONNX element ``perm[i]``."""

    t: str
    perm: np.ndarray | None = None


@dataclass
class _FloatInput:
    name: str
    shape: tuple[int, ...]


@dataclass
class _Pending:
    """A float result not yet quantized: ``build(out_scale, fmt, name)`` emits the graph
    operator once the ``QuantizeLinear`` that ends it is seen (``fmt``: :class:`_Format`)."""

    node: Any
    build: Any
    relu: bool = False
    passthrough: str | None = None   # source tensor of MaxPool (format and scale kept)
    perm: np.ndarray | None = None
    keeps: str | None = None         # source tensor of a pooling (format kept)
    clip: float | None = None        # upper bound of a Clip(0, max) after the ReLU
    clip_node: Any = None
    fold: Any = None                 # (state, unit, n): a constant Add folds into the bias


@dataclass(frozen=True)
class _Format:
    """The graph format of a quantized ONNX activation: ``bits``-bit, ``signed``, graph zero
    point ``zero``; ``relu``: the operator ends in a ReLU."""

    bits: int
    signed: bool
    zero: int
    relu: bool


@dataclass
class _QInt:
    t: str
    scale: float
    zero: int
    perm: np.ndarray | None = None


# -- the result -----------------------------------------------------------------------------


@dataclass
class OnnxGraph(Graph):
    """A :class:`~lowbit.compiler.graph.Graph` imported from ONNX, with the quantization of
    its inputs and outputs: ``io[onnx_name] = (graph_name, scale, zero_point, qmin, qmax,
    onnx_shape, perm)``."""

    onnx_inputs: dict[str, tuple] = field(default_factory=dict)
    onnx_outputs: dict[str, tuple] = field(default_factory=dict)
    #: every quantized ONNX tensor (``QuantizeLinear``/activation ``Quant`` output):
    #: ``(graph_name, zero_point, perm)``
    quantized: dict[str, tuple] = field(default_factory=dict)

    @staticmethod
    def to_onnx_layout(value: np.ndarray, perm: np.ndarray | None = None) -> np.ndarray:
        """A graph value in ONNX layout: maps ``(H, W, C) -> (1, C, H, W)``; flat values
        made by ``Flatten`` back to ONNX's ``(c, y, x)`` order."""
        v = np.asarray(value)
        if v.ndim == 3:
            return v.transpose(2, 0, 1)[None]
        if perm is not None:
            w = np.empty_like(v)
            w[:, perm] = v
            return w
        return v

    def quantize_inputs(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Float ONNX inputs (NCHW / ``(N, F)``) -> graph integer inputs, quantized like
        ``QuantizeLinear`` (round half to even, saturate) minus the zero point."""
        out = {}
        for oname, (gname, scale, zero, qmin, qmax, shape, _) in self.onnx_inputs.items():
            if oname not in feeds:
                raise ValueError(f"input {oname!r} is missing; inputs are "
                                 f"{', '.join(self.onnx_inputs)}")
            x = np.asarray(feeds[oname], np.float32)
            q = np.clip(np.round(x / np.float32(scale)) + zero, qmin, qmax).astype(np.int64)
            v = q - zero
            out[gname] = v[0].transpose(1, 2, 0) if len(shape) == 4 else v.reshape(-1, v.shape[-1])
        return out

    def integer_outputs(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph outputs as ONNX-layout integers ``q - zero_point`` (NCHW / ``(N, F)``)."""
        res = {}
        for oname, (gname, _s, _z, _lo, _hi, shape, perm) in self.onnx_outputs.items():
            v = self.to_onnx_layout(np.asarray(outputs[gname], np.int64), perm)
            res[oname] = v.reshape(shape) if shape and all(d > 0 for d in shape) else v
        return res

    def dequantize_outputs(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph outputs as the real values the ONNX model's outputs hold."""
        ints = self.integer_outputs(outputs)
        return {k: v * self.onnx_outputs[k][1] for k, v in ints.items()}


# -- helpers ------------------------------------------------------------------------------


def _node_err(node, what: str, supported: str) -> OnnxImportError:
    name = node.name or (node.output[0] if node.output else "?")
    return OnnxImportError(f"node {name!r} ({node.op_type}): {what}; supported: {supported}")


def _pool_window(node, attrs) -> tuple[tuple, tuple, tuple]:
    """``(kernel, stride, (top, bottom, left, right) padding)`` of a pooling node."""
    if "kernel_shape" not in attrs:
        raise _node_err(node, "kernel_shape is missing", "a kernel_shape attribute")
    pads = attrs.get("pads", [0, 0, 0, 0])
    return (tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", [1, 1])),
            (pads[0], pads[2], pads[1], pads[3]))


def _ident(s: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", s)
    return s if s and not s[0].isdigit() else f"t_{s}"


def _load(model) -> Any:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        data, where = bytes(model), "model bytes"
    else:
        path = Path(model)
        where = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise OnnxImportError(f"{where}: cannot read the file ({e.strerror})") from None
    try:
        m = onnx.load_model_from_string(data)
    except Exception as e:   # protobuf raises DecodeError and friends
        raise OnnxImportError(f"{where}: not an ONNX model (protobuf parse failed: "
                              f"{type(e).__name__})") from None
    if not m.graph.node or not m.graph.output:
        raise OnnxImportError(f"{where}: not an ONNX model (no graph nodes or outputs; "
                              f"truncated or not ONNX)")
    return m


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_attrs(node, attrs, allowed: dict[str, Any]) -> None:
    """``allowed[name]`` is None (any value) or the only accepted value."""
    for k, v in attrs.items():
        if k not in allowed:
            raise _node_err(node, f"attribute {k}={v!r} is not supported",
                            ", ".join(allowed) or "no attributes")
        want = allowed[k]
        if want is not None and v != want and not (isinstance(v, bytes) and v.decode() == want):
            raise _node_err(node, f"attribute {k}={v!r} is not supported", f"{k}={want!r}")


_QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15),
           "int16": (-32768, 32767), "uint16": (0, 65535),
           "int32": (-(1 << 31), (1 << 31) - 1)}


def _fmt(lo: int, hi: int, relu: bool):
    """``(bits, signed, relu)`` of the integer range ``[lo, hi]`` (cut at 0 by ``relu``), or
    None if it is neither ``[-2^(b-1), 2^(b-1)-1]`` nor ``[0, 2^b - 1]`` with b in 2..8."""
    if relu:
        lo = max(lo, 0)
    if lo == 0 and hi >= 3 and (hi + 1) & hi == 0:
        b = (hi + 1).bit_length() - 1
        return (b, False, True) if b <= 8 else None
    if lo == -(hi + 1) and hi >= 1 and (hi + 1) & hi == 0:
        b = (hi + 1).bit_length()
        return (b, True, False) if 2 <= b <= 8 else None
    return None


def _fuse_relu(graph, consts) -> list:
    """Drop ``Q_a -> DQ_a`` from ``op -> Q_a -> DQ_a -> Relu -> Q_b`` when each link has one
    consumer and ``Q_a``, ``Q_b`` quantize alike (what ``quantize_static`` writes around a
    ReLU): the operator then ends in a ReLU requantized straight to ``Q_b``. Exact for any
    zero point ``z`` in the range ``[q_min, q_max]``: ``max(clamp(round(x / s) + z), z) ==
    clamp(max(round(x / s), 0) + z)`` (a clamp and a maximum with a constant inside the
    range commute), and the STORE computes the right side: ReLU, ``+ z``, clamp."""
    import onnx

    nodes = list(graph.node)
    uses: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            uses.setdefault(i, []).append(n)
    outs = {o.name for o in graph.output}
    by_out = {o: n for n in nodes for o in n.output}

    def same(a, b):
        pa, pb = list(a.input[1:]), list(b.input[1:])
        if len(pa) != len(pb):
            return False
        for x, y in zip(pa, pb, strict=True):
            if x == y:
                continue
            if x not in consts or y not in consts:
                return False
            vx, vy = np.asarray(consts[x]), np.asarray(consts[y])
            if vx.dtype != vy.dtype or vx.shape != vy.shape or not np.array_equal(vx, vy):
                return False
        return True

    drop = set()
    new = {}
    for relu in nodes:
        if relu.op_type not in ("Relu", "Clip") or relu.domain not in ("", "ai.onnx"):
            continue
        dq = by_out.get(relu.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = by_out.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        qb = uses.get(relu.output[0], [])
        src = by_out.get(q.input[0])
        if len(qb) != 1 or qb[0].op_type != "QuantizeLinear" or not same(q, qb[0]) \
                or src is None or src.op_type not in ("Conv", "Gemm", "MatMul", "Add") \
                or len(uses.get(q.input[0], [])) != 1 or len(uses.get(q.output[0], [])) != 1 \
                or len(uses.get(dq.output[0], [])) != 1 \
                or {q.input[0], q.output[0], dq.output[0]} & outs:
            continue
        drop.update((id(q), id(dq)))
        r = onnx.NodeProto()
        r.CopyFrom(relu)
        r.input[0] = q.input[0]
        new[id(relu)] = r
    return [new.get(id(n), n) for n in nodes if id(n) not in drop]


# -- the importer ---------------------------------------------------------------------------


class _Importer:
    def __init__(self, model, weight_bits, acc_bits, name):
        from onnx import numpy_helper

        self.nh = numpy_helper
        self.m = model
        self.vals: dict[str, Any] = {}
        self.weights: list[tuple[Any, np.ndarray]] = []
        self.weight_bits = weight_bits
        self.g = OnnxGraph(name=name or _ident(model.graph.name or "onnx"), weight_bits=8,
                           acc_bits=acc_bits)
        self.used: set[str] = set()
        self.consumers: dict[str, int] = {}
        self.preferred: dict[str, str] = {}

    def gname(self, base: str) -> str:
        n = _ident(base)
        i, cand = 1, n
        while cand in self.used:
            cand = f"{n}_{i}"
            i += 1
        self.used.add(cand)
        return cand

    # -- values --

    def get(self, node, name):
        if name == "":
            return None
        if name not in self.vals:
            raise _node_err(node, f"input {name!r} is not produced by any node", "a valid graph")
        return self.vals[name]

    def const(self, node, name, what):
        v = self.get(node, name)
        if not isinstance(v, _Const):
            raise _node_err(node, f"{what} {name!r} must be a constant initializer",
                            "constant scales, zero points and shapes")
        return v.value

    def real(self, node, name) -> _Real:
        v = self.get(node, name)
        if isinstance(v, _Real):
            return v
        raise _node_err(node, f"input {name!r} is not a quantized activation (put it between "
                        f"QuantizeLinear and DequantizeLinear)",
                        "quantized activations (QDQ or QONNX Quant) and quantized weights")

    def weight(self, node, name) -> _QConst:
        v = self.get(node, name)
        if isinstance(v, _QConst):
            if v.bits > 8:
                raise _node_err(v.node, f"bit width {v.bits} on weight {name!r} is not "
                                "supported", "weight bit widths 2 to 8")
            return v
        raise _node_err(node, f"weight {name!r} is not quantized", "weights given as "
                        "DequantizeLinear or QONNX Quant of an integer/float initializer")

    # -- driver --

    def run(self):
        m = self.m
        for init in m.graph.initializer:
            self.vals[init.name] = _Const(self.nh.to_array(init))
        inits = {i.name for i in m.graph.initializer}
        for vi in m.graph.input:
            if vi.name in inits:
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                         for d in vi.type.tensor_type.shape.dim)
            self.vals[vi.name] = _FloatInput(vi.name, dims)
        nodes = _fuse_relu(m.graph, {k: v.value for k, v in self.vals.items()
                                     if isinstance(v, _Const)})
        # name the tensor behind each graph output ``... -> Q -> DQ -> out`` after ``out``
        by_out = {o: n for n in nodes for o in n.output}
        self.preferred: dict[str, str] = {}
        for vo in m.graph.output:
            dq = by_out.get(vo.name)
            q = by_out.get(dq.input[0]) if dq is not None and dq.input else None
            if q is not None and dq.op_type in ("DequantizeLinear", "Quant") \
                    and q.op_type == "QuantizeLinear":
                self.preferred[q.input[0]] = vo.name
            elif dq is not None and dq.op_type == "Quant" and dq.input:
                self.preferred[dq.input[0]] = vo.name
        for node in nodes:
            self.check_op(node)
            for i in node.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        for node in nodes:
            self.node(node)
        for vo in m.graph.output:
            v = self.vals.get(vo.name)
            dims = tuple(d.dim_value for d in vo.type.tensor_type.shape.dim)
            if isinstance(v, _Real):
                t = self.g.tensors[v.t]
                self.g.output(v.t)
                self.g.onnx_outputs[vo.name] = (v.t, t.scale, 0, *t.range, dims, v.perm)
            elif isinstance(v, _QInt):
                t = self.g.tensors[v.t]
                self.g.output(v.t)
                lo, hi = t.range        # values q - zero: the ONNX integers' range
                self.g.onnx_outputs[vo.name] = (v.t, v.scale, v.zero, lo + v.zero,
                                                hi + v.zero, dims, v.perm)
            else:
                raise OnnxImportError(f"graph output {vo.name!r} is not a quantized tensor "
                                      f"(end the model with QuantizeLinear/DequantizeLinear "
                                      f"or a QONNX Quant)")
        self.fix_weight_bits()
        return self.g

    def fix_weight_bits(self):
        lo = min((int(w.min()) for _, w in self.weights if w.size), default=0)
        hi = max((int(w.max()) for _, w in self.weights if w.size), default=0)
        need = next((b for b in sorted(SUPPORTED_WEIGHT_BITS)
                     if -(1 << (b - 1)) <= lo and hi < (1 << (b - 1))), None)
        if self.weight_bits is None:
            if need is None:
                raise OnnxImportError(f"weights range {lo}..{hi} fits no supported weight "
                                      f"width {sorted(SUPPORTED_WEIGHT_BITS)}")
            self.g.weight_bits = need
            return
        wb = self.weight_bits
        for node, w in self.weights:
            if w.size and (w.min() < -(1 << (wb - 1)) or w.max() >= 1 << (wb - 1)):
                raise _node_err(node, f"weights range {int(w.min())}..{int(w.max())} does not "
                                f"fit weight_bits={wb}",
                                f"{-(1 << (wb - 1))}..{(1 << (wb - 1)) - 1}")
        self.g.weight_bits = wb

    @staticmethod
    def check_op(node) -> None:
        op = node.op_type
        if op == "Quant" and node.domain in QONNX_DOMAINS:
            return
        # onnxruntime writes 4-bit Q/DQ in com.microsoft before opset 21 (same semantics)
        qdq_ms = node.domain == "com.microsoft" and op in ("QuantizeLinear", "DequantizeLinear")
        if (node.domain not in ("", "ai.onnx") and not qdq_ms) or op not in SUPPORTED_OPS \
                or op == "Quant":
            dom = f" (domain {node.domain!r})" if node.domain else ""
            hint = "; this is the QOperator format, quantize with QuantFormat.QDQ" \
                if op.startswith("QLinear") or op in ("QGemm", "ConvInteger",
                                                      "MatMulInteger") else ""
            raise _node_err(node, f"operator {op}{dom} is not supported{hint}",
                            ", ".join(SUPPORTED_OPS))

    def node(self, node):
        if node.op_type == "Quant":
            return self.quant(node)
        getattr(self, f"op_{node.op_type}")(node)

    # -- quantization nodes --

    def op_Constant(self, node):
        from onnx import helper

        a = node.attribute[0]
        v = helper.get_attribute_value(a)
        self.vals[node.output[0]] = _Const(self.nh.to_array(v) if a.name == "value"
                                           else np.asarray(v))

    def op_Identity(self, node):
        self.vals[node.output[0]] = self.get(node, node.input[0])

    def _scale_zero(self, node, attrs):
        _check_attrs(node, attrs, {"axis": None, "saturate": None, "block_size": 0,
                                   "output_dtype": None})
        scale = np.asarray(self.const(node, node.input[1], "scale"), np.float64)
        if len(node.input) > 2 and node.input[2]:
            zp = self.const(node, node.input[2], "zero point")
        else:
            zp = np.zeros(scale.shape, np.uint8)
        dt = np.asarray(zp).dtype
        key = str(dt) if str(dt) in _QRANGE else {"int4": "int4", "uint4": "uint4"}.get(
            getattr(dt, "name", ""), None)
        if key is None:
            raise _node_err(node, f"zero point type {dt} is not supported",
                            "int8, uint8, int4, uint4")
        return scale, np.asarray(zp).astype(np.int64), _QRANGE[key]

    def op_QuantizeLinear(self, node):
        attrs = _attrs(node)
        scale, zp, (qmin, qmax) = self._scale_zero(node, attrs)
        if scale.size != 1 or zp.size != 1:
            raise _node_err(node, "per-channel activation quantization is not supported",
                            "one scale and one zero point per activation tensor")
        self.quantize(node, node.input[0], float(scale.reshape(-1)[0]),
                      int(zp.reshape(-1)[0]), qmin, qmax)

    def quantize(self, node, src, scale, zero, qmin, qmax):
        """Quantize float ``src`` to ``[qmin, qmax]`` with ``scale``/``zero``: emits the
        pending operator (or graph input) and records a :class:`_QInt`."""
        v = self.get(node, src)
        out = node.output[0]
        relu = isinstance(v, _Pending) and v.relu
        fmt = _fmt(qmin - zero, qmax - zero, relu)
        if fmt is not None:
            # values q - z form a plain signed/unsigned range: graph zero point 0
            bits, signed, fmt_relu = fmt
            gzero = 0
        else:
            base = _fmt(qmin, qmax, False)
            if base is None:
                raise _node_err(node, f"integer range {qmin}..{qmax} is not supported",
                                "ranges -2^(b-1)..2^(b-1)-1 or 0..2^b-1 with b from 2 to 8")
            (bits, signed, _), gzero, fmt_relu = base, zero, False
        f = _Format(bits, signed, gzero, fmt_relu or relu)
        if isinstance(v, _FloatInput):
            shape = v.shape
            if len(shape) == 4 and shape[0] in (1, -1) and all(d > 0 for d in shape[1:]):
                gshape = (shape[2], shape[3], shape[1])
            elif len(shape) == 2 and shape[1] > 0:
                gshape = (shape[1],)
            else:
                raise _node_err(node, f"input {src!r} has shape {shape}",
                                "NCHW inputs with batch 1 or (N, F) inputs")
            name = self.gname(src)
            self.emit(node, lambda: self.g.input(name, gshape, bits=bits, signed=signed,
                                                 scale=scale, zero=gzero))
            self.g.onnx_inputs[src] = (name, scale, zero, qmin, qmax, shape, None)
            self.vals[out] = _QInt(name, scale, zero)
            self.g.quantized[out] = (name, zero, None)
            return
        if isinstance(v, _Real):
            # requantizing a real value that is already a graph tensor: only the identity
            t = self.g.tensors[v.t]
            if not np.isclose(t.scale, scale, rtol=1e-6) or t.range[0] < qmin - zero \
                    or t.range[1] > qmax - zero:
                raise _node_err(node, f"requantizes {src!r} from scale {t.scale:.6g} "
                                f"{t.range} to scale {scale:.6g} {(qmin - zero, qmax - zero)}",
                                "the same scale and a range that holds the source")
            self.vals[out] = _QInt(v.t, scale, zero, v.perm)
            self.g.quantized[out] = (v.t, zero, v.perm)
            return
        if not isinstance(v, _Pending):
            raise _node_err(node, f"input {src!r} is not an activation",
                            "quantizing graph inputs and operator results")
        if v.passthrough is not None:
            t = self.g.tensors[v.passthrough]
            if not np.isclose(t.scale, scale, rtol=1e-6):
                raise _node_err(v.node, f"output scale {scale:.6g} differs from the input "
                                f"scale {t.scale:.6g}", "the same scale on both sides")
        if v.clip is not None and v.clip / scale < (qmax - zero) - 0.5:
            raise _node_err(v.clip_node, f"max={v.clip:.6g} is {v.clip / scale:.2f} LSB at "
                            f"the output scale {scale:.6g}, below the top of the range "
                            f"{(qmax - zero)}", "a max that rounds to the top of "
                            "the output range or above (ReLU6 at scale 6 / (2^b - 1))")
        name = v.build(scale, f, self.gname(self.preferred.get(src, src)))
        t = self.g.tensors[name]
        want = (max(qmin - zero, 0) if fmt_relu else qmin - zero, qmax - zero)
        if v.keeps is not None and t.range != want:
            # a pooling keeps its input's format; exact when each bound either agrees or
            # cannot be reached: values stay in the input's range times src_scale / scale
            src_scale = self.g.tensors[v.keeps].scale
            shrinks = scale >= src_scale * (1 - 1e-6)
            lo_ok = t.range[0] == want[0] or (want[0] <= t.range[0]
                                                and (t.range[0] == 0 or shrinks))
            hi_ok = t.range[1] == want[1] or (want[1] >= t.range[1] and shrinks)
            if not (lo_ok and hi_ok):
                raise _node_err(v.node, f"output range {want[0]}..{want[1]} at scale "
                                f"{scale:.6g} differs from the input's {t.range[0]}.."
                                f"{t.range[1]} at scale {src_scale:.6g}",
                                "the input's range, or a wider one the result cannot reach")
        self.vals[out] = _QInt(name, scale, zero, v.perm)
        self.g.quantized[out] = (name, zero, v.perm)

    def op_DequantizeLinear(self, node):
        attrs = _attrs(node)
        scale, zp, _ = self._scale_zero(node, attrs)
        v = self.get(node, node.input[0])
        out = node.output[0]
        if isinstance(v, _QInt):
            if scale.size != 1 or not np.isclose(float(scale.reshape(-1)[0]), v.scale,
                                                  rtol=1e-6) or int(zp.reshape(-1)[0]) != v.zero:
                raise _node_err(node, "scale or zero point differs from the QuantizeLinear's",
                                "DequantizeLinear with the parameters of its QuantizeLinear")
            self.vals[out] = _Real(v.t, v.perm)
            return
        if isinstance(v, _Const):
            q = np.asarray(v.value)
            if q.dtype.kind == "f":
                raise _node_err(node, "input is a float constant", "integer initializers")
            if np.any(zp != 0):
                raise _node_err(node, "weight zero point is not 0",
                                "symmetric weights (zero point 0)")
            axis = int(attrs.get("axis", 1))
            if scale.size == 1:
                axis = -1
            elif axis < 0:
                axis += q.ndim
            self.vals[out] = _QConst(q.astype(np.int64), scale.reshape(-1), axis, node)
            return
        raise _node_err(node, f"input {node.input[0]!r} is neither a QuantizeLinear output nor "
                        "an integer initializer", "QDQ pairs and quantized initializers")

    def quant(self, node):
        """QONNX ``Quant(x, scale, zeropt, bitwidth)``."""
        attrs = _attrs(node)
        _check_attrs(node, attrs, {"signed": None, "narrow": None, "rounding_mode": None})
        signed = int(attrs.get("signed", 1))
        narrow = int(attrs.get("narrow", 0))
        mode = attrs.get("rounding_mode", "ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        bw = np.asarray(self.const(node, node.input[3], "bitwidth")).reshape(-1)
        scale = np.asarray(self.const(node, node.input[1], "scale"), np.float64)
        zp = np.asarray(self.const(node, node.input[2], "zero point"), np.float64)
        if bw.size != 1 or bw[0] != np.round(bw[0]):
            raise _node_err(node, f"bit width {bw.tolist()} is not one integer",
                            "integer bit widths 2 to 8")
        bits = int(bw[0])
        v = self.get(node, node.input[0])
        # biases may be quantized wider (to 32 bits); weights() refuses more than 8
        top = 32 if isinstance(v, _Const) else 8
        if not 2 <= bits <= top:
            raise _node_err(node, f"bit width {bits} is not supported",
                            "bit widths 2 to 8 (1-bit/bipolar weights are not mapped)")
        if mode not in _ROUNDING:
            raise _node_err(node, f"rounding_mode {mode!r} is not supported",
                            ", ".join(_ROUNDING))
        if zp.size != 1:
            raise _node_err(node, f"zero point {zp.reshape(-1).tolist()} has several values",
                            "one integer zero point per tensor")
        if zp.reshape(-1)[0] != np.round(zp.reshape(-1)[0]):
            raise _node_err(node, f"zero point {float(zp.reshape(-1)[0]):g} is not an integer",
                            "one integer zero point per tensor")
        zero = int(zp.reshape(-1)[0])
        qmin = -(1 << (bits - 1)) + narrow if signed else 0
        qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
        v = self.get(node, node.input[0])
        out = node.output[0]
        if isinstance(v, _Const):
            x = np.asarray(v.value, np.float64)
            if zero != 0:
                raise _node_err(node, "weight zero point is not 0",
                                "symmetric weights (zero point 0)")
            s = np.broadcast_to(scale, np.broadcast_shapes(scale.shape, x.shape))
            q = np.clip(_ROUNDING[mode](x / s), qmin, qmax).astype(np.int64)
            nz = [i for i, d in enumerate(scale.shape) if d > 1]
            if len(nz) > 1:
                raise _node_err(node, f"scale shape {scale.shape} varies along several axes",
                                "per-tensor or per-channel scales")
            axis = nz[0] + x.ndim - scale.ndim if nz else -1
            flat = scale.reshape(-1)
            self.vals[out] = _QConst(q, flat if nz else flat[:1], axis, node, bits)
            return
        if scale.size != 1:
            raise _node_err(node, "per-channel activation quantization is not supported",
                            "one scale per activation tensor")
        if mode not in ("ROUND", "HALF_EVEN"):
            raise _node_err(node, f"rounding_mode {mode!r} on an activation is not supported",
                            "ROUND (the requantization rounds to nearest)")
        if narrow and signed:
            raise _node_err(node, "narrow=1 on a signed activation is not supported",
                            "narrow=0 (the requantization clamps at -2^(b-1))")
        self._quant_act(node, scale, zero, qmin, qmax)

    def _quant_act(self, node, scale, zero, qmin, qmax):
        # QONNX: q = clip(round(x / s + z), qmin, qmax); y = (q - z) * s, so the integer
        # range of q - z is [qmin - z, qmax - z], like a QuantizeLinear of range qmin..qmax.
        self.quantize(node, node.input[0], float(scale.reshape(-1)[0]), zero, qmin, qmax)
        q = self.vals[node.output[0]]
        self.vals[node.output[0]] = _Real(q.t, q.perm)

    # -- compute operators --

    def pending(self, node, build, **kw):
        self.vals[node.output[0]] = _Pending(node, build, **kw)

    def bias(self, node, name, unit, n):
        if len(node.input) <= 2 or not node.input[2]:
            return None
        return self.bias_value(node, self.get(node, name), name, unit, n)

    def bias_value(self, node, v, name, unit, n):
        """Integer bias in accumulator units (``unit = s_x * s_w``) of constant ``v``."""
        if isinstance(v, _QConst):
            real = v.q.reshape(-1) * np.broadcast_to(v.scale, v.q.reshape(-1).shape)
        elif isinstance(v, _Const):
            real = np.asarray(v.value, np.float64).reshape(-1)
        else:
            raise _node_err(node, f"bias {name!r} is not a constant", "constant biases")
        if real.size not in (1, n):
            raise _node_err(node, f"bias has {real.size} values for {n} channels",
                            "one bias per output channel")
        real = np.broadcast_to(real, (n,))
        if isinstance(v, _QConst) and np.allclose(v.scale, unit, rtol=1e-5):
            return np.broadcast_to(v.q.reshape(-1), (n,)).astype(np.int64)
        return np.round(real / unit).astype(np.int64)

    def op_Conv(self, node):
        attrs = _attrs(node)
        _check_attrs(node, attrs, {"kernel_shape": None, "pads": None, "strides": None,
                                   "group": None, "dilations": None, "auto_pad": "NOTSET"})
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise _node_err(node, f"dilations={attrs['dilations']} is not supported",
                            "dilations 1")
        x = self.real(node, node.input[0])
        w = self.weight(node, node.input[1])
        if w.q.ndim != 4:
            raise _node_err(node, f"weight shape {w.q.shape} is not 2-D convolution",
                            "Conv on NCHW maps, weight (O, I/group, kh, kw)")
        cout = w.q.shape[0]
        if w.axis not in (-1, 0):
            raise _node_err(node, f"weight quantization axis {w.axis} is not supported",
                            "per-tensor or per output channel (axis 0)")
        self.weights.append((node, w.q))
        src = self.g.tensors[x.t]
        wscale = np.broadcast_to(w.scale, (cout,))
        unit = src.scale * wscale
        state = {"bias": self.bias(node, node.input[2] if len(node.input) > 2 else "", unit,
                                   cout)}
        pads = attrs.get("pads", [0, 0, 0, 0])
        pad = (pads[0], pads[2], pads[1], pads[3])
        stride = tuple(attrs.get("strides", [1, 1]))
        groups = int(attrs.get("group", 1))
        weight = w.q.transpose(2, 3, 1, 0)

        def build(scale, f, name):
            return self.emit(node, lambda: self.g.conv2d(
                x.t, weight, bias=state["bias"], w_scale=wscale, stride=stride, padding=pad,
                groups=groups, act="relu" if f.relu else None, out_scale=scale,
                out_bits=f.bits, out_signed=f.signed, out_zero=f.zero, name=name))
        self.pending(node, build, fold=(state, unit, cout))

    def emit(self, node, fn):
        try:
            return fn()
        except GraphError as e:
            raise _node_err(node, str(e), "shapes and ranges the graph IR accepts") from None

    def _linear(self, node, x, w, kn: np.ndarray, axis_out: int, bias_name):
        src = self.g.tensors[x.t]
        if src.is_map:
            raise _node_err(node, f"input {node.input[0]!r} is a feature map {src.shape}",
                            "MatMul/Gemm on flat (N, F) tensors (Flatten first)")
        if w.axis not in (-1, axis_out):
            raise _node_err(node, f"weight quantization axis {w.axis} is not the output axis",
                            f"per-tensor or per output channel (axis {axis_out})")
        k, n = kn.shape
        if k != src.channels:
            raise _node_err(node, f"weight has {k} rows for {src.channels} input features",
                            "matching shapes")
        if x.perm is not None:
            kn = kn[x.perm]
        self.weights.append((node, kn))
        wscale = np.broadcast_to(w.scale, (n,))
        unit = src.scale * wscale
        state = {"bias": self.bias(node, bias_name, unit, n)}

        def build(scale, f, name):
            return self.emit(node, lambda: self.g.linear(
                x.t, kn, bias=state["bias"], w_scale=wscale, act="relu" if f.relu else None,
                out_scale=scale, out_bits=f.bits, out_signed=f.signed, out_zero=f.zero,
                name=name))
        self.pending(node, build, fold=(state, unit, n))

    def op_MatMul(self, node):
        x = self.real(node, node.input[0])
        w = self.weight(node, node.input[1])
        if w.q.ndim != 2:
            raise _node_err(node, f"weight shape {w.q.shape}", "2-D (K, N) weights")
        self._linear(node, x, w, w.q, 1, "")

    def op_Gemm(self, node):
        attrs = _attrs(node)
        _check_attrs(node, attrs, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": None})
        x = self.real(node, node.input[0])
        w = self.weight(node, node.input[1])
        if w.q.ndim != 2:
            raise _node_err(node, f"weight shape {w.q.shape}", "2-D weights")
        tb = int(attrs.get("transB", 0))
        self._linear(node, x, w, w.q.T if tb else w.q, 0 if tb else 1,
                     node.input[2] if len(node.input) > 2 else "")

    def op_Add(self, node):
        va, vb = (self.get(node, i) for i in node.input[:2])
        for p, c, cname in ((va, vb, node.input[1]), (vb, va, node.input[0])):
            if isinstance(p, _Pending) and p.fold is not None and not p.relu \
                    and isinstance(c, (_Const, _QConst)) and self.consumers.get(
                        node.input[0] if p is va else node.input[1], 0) == 1:
                # MatMul/Conv + constant (a bias, as QONNX exports linear layers): fold it
                state, unit, n = p.fold
                extra = self.bias_value(node, c, cname, unit, n)
                state["bias"] = extra if state["bias"] is None else state["bias"] + extra
                self.vals[node.output[0]] = p
                return
        a = self.real(node, node.input[0])
        b = self.real(node, node.input[1])

        def build(scale, f, name):
            return self.emit(node, lambda: self.g.add(
                a.t, b.t, act="relu" if f.relu else None, out_scale=scale, out_bits=f.bits,
                out_signed=f.signed, out_zero=f.zero, name=name))
        self.pending(node, build)

    def op_Relu(self, node):
        v = self.get(node, node.input[0])
        if isinstance(v, _Pending) and self.consumers.get(node.input[0], 0) == 1:
            kept = self.g.tensors[v.keeps] if v.keeps is not None else None
            if kept is not None and kept.range[0] < 0:
                what = "a signed tensor" if kept.signed else \
                    f"a tensor with zero point {kept.zero} (values {kept.range[0]}..)"
                raise _node_err(node, f"Relu after {v.node.op_type} of {what}",
                                "Relu on Conv, Gemm, MatMul, Add results or on quantized "
                                "activations")
            # on a source without negative values the Relu is the identity
            self.vals[node.output[0]] = _Pending(v.node, v.build, v.keeps is None,
                                                 v.passthrough, v.perm, v.keeps, v.clip,
                                                 v.clip_node)
            return
        x = self.real(node, node.input[0])

        def build(scale, f, name):
            t = self.g.tensors[x.t]
            if not np.isclose(t.scale, scale, rtol=1e-6):
                raise _node_err(node, f"output scale {scale:.6g} differs from the input "
                                f"scale {t.scale:.6g}", "the same scale on both sides")
            return self.emit(node, lambda: self.g.relu(x.t, name=name, out_bits=f.bits,
                                                       out_signed=f.signed, out_zero=f.zero))
        self.pending(node, build, perm=x.perm)

    def op_Clip(self, node):
        """``Clip(0, max)`` (ReLU6): a ReLU whose ``max`` must round to the top of the output
        range or above, so that the requantization's clamp is the clip."""
        attrs = _attrs(node)
        _check_attrs(node, attrs, {"min": None, "max": None})
        lo, hi = attrs.get("min"), attrs.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(np.asarray(self.const(node, node.input[1], "min")))
        if len(node.input) > 2 and node.input[2]:
            hi = float(np.asarray(self.const(node, node.input[2], "max")))
        if lo is None or lo != 0:
            raise _node_err(node, f"min={lo} is not supported", "Clip(0, max) (ReLU, ReLU6)")
        v = self.get(node, node.input[0])
        if isinstance(v, _Pending) and v.keeps is None \
                and self.consumers.get(node.input[0], 0) == 1:
            self.vals[node.output[0]] = _Pending(v.node, v.build, True, None, v.perm, None,
                                                 hi, node)
            return
        raise _node_err(node, "Clip on a stored tensor or after pooling",
                        "Clip(0, max) on Conv, Gemm, MatMul, Add results (fused)")

    def op_MaxPool(self, node):
        attrs = _attrs(node)
        _check_attrs(node, attrs, {"kernel_shape": None, "pads": None, "strides": None,
                                   "dilations": None, "ceil_mode": 0, "auto_pad": "NOTSET",
                                   "storage_order": 0})
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise _node_err(node, f"dilations={attrs['dilations']} is not supported",
                            "dilations 1")
        x = self.real(node, node.input[0])
        pads = attrs.get("pads", [0, 0, 0, 0])
        src = self.g.tensors[x.t]
        if any(pads) and src.range[0] < 0:
            what = "a signed input" if src.signed else \
                f"an input with zero point {src.zero} (values {src.range[0]}..)"
            raise _node_err(node, f"padding {what} (the hardware pads with the value 0, "
                            "ONNX with -inf)", "padding on inputs without negative values "
                            "(post-ReLU) only")
        k, stride, pad = _pool_window(node, attrs)

        def build(scale, f, name):
            return self.emit(node, lambda: self.g.max_pool2d(x.t, k, stride=stride,
                                                             padding=pad, name=name))
        self.pending(node, build, passthrough=x.t, keeps=x.t)

    def op_AveragePool(self, node):
        attrs = _attrs(node)
        _check_attrs(node, attrs, {"kernel_shape": None, "pads": None, "strides": None,
                                   "ceil_mode": 0, "auto_pad": "NOTSET",
                                   "count_include_pad": None, "dilations": None})
        pads = attrs.get("pads", [0, 0, 0, 0])
        if any(pads) and not attrs.get("count_include_pad", 0):
            raise _node_err(node, "padding with count_include_pad=0",
                            "count_include_pad=1 or no padding (the window sum is divided "
                            "by kh * kw)")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise _node_err(node, "dilations", "dilations 1")
        x = self.real(node, node.input[0])
        k, stride, pad = _pool_window(node, attrs)

        def build(scale, f, name):
            return self.emit(node, lambda: self.g.avg_pool2d(
                x.t, k, stride=stride, padding=pad, out_scale=scale,
                out_zero=self.pool_zero(x.t, f), name=name))
        self.pending(node, build, keeps=x.t)

    def op_GlobalAveragePool(self, node):
        _check_attrs(node, _attrs(node), {})
        x = self.real(node, node.input[0])

        def build(scale, f, name):
            return self.emit(node, lambda: self.g.global_avg_pool(
                x.t, out_scale=scale, out_zero=self.pool_zero(x.t, f), name=name))
        self.pending(node, build, keeps=x.t)

    def pool_zero(self, src: str, f: _Format) -> int | None:
        """An average pooling keeps its input's format: the output's zero point when the
        format agrees, else the input's (:meth:`quantize` then checks the range)."""
        t = self.g.tensors[src]
        return f.zero if (f.bits, f.signed) == (t.bits, t.signed) else None

    def flatten(self, node, x):
        src = self.g.tensors[x.t]
        if not src.is_map:
            self.vals[node.output[0]] = x
            return
        h, w, c = src.shape
        perm = (np.arange(c)[None, None, :] * h * w + np.arange(h)[:, None, None] * w
                + np.arange(w)[None, :, None]).reshape(-1)
        flat = self.emit(node, lambda: self.g.flatten(x.t, name=self.gname(node.output[0])))
        self.vals[node.output[0]] = _Real(flat, perm)

    def op_Flatten(self, node):
        attrs = _attrs(node)
        _check_attrs(node, attrs, {"axis": 1})
        self.flatten(node, self.real(node, node.input[0]))

    def op_Reshape(self, node):
        _check_attrs(node, _attrs(node), {"allowzero": 0})
        x = self.real(node, node.input[0])
        shape = [int(d) for d in np.asarray(self.const(node, node.input[1], "shape"))]
        src = self.g.tensors[x.t]
        n = int(np.prod(src.shape))
        if len(shape) != 2 or shape[0] not in (1, -1, 0) or shape[1] not in (-1, n):
            raise _node_err(node, f"target shape {shape} for a {src.shape} tensor",
                            f"flattening to (1, {n}) or (1, -1)")
        self.flatten(node, x)


# -- public API -----------------------------------------------------------------------------


def import_onnx(model, *, weight_bits: int | None = None, acc_bits: int = 32,
                name: str | None = None) -> OnnxGraph:
    """Import a quantized ONNX model (path, bytes or ``onnx.ModelProto``) as an
    :class:`OnnxGraph`.

    ``weight_bits``: the graph's signed weight width (every weight must fit it; default: the
    smallest supported width holding all weights). ``acc_bits``: the accumulator width.
    Raises :class:`OnnxImportError` for malformed files and unsupported nodes.
    """
    if weight_bits is not None and (isinstance(weight_bits, bool)
                                    or weight_bits not in SUPPORTED_WEIGHT_BITS):
        raise ValueError(f"weight_bits must be one of {sorted(SUPPORTED_WEIGHT_BITS)}, not "
                         f"{weight_bits!r}")
    m = _load(model)
    return _Importer(m, weight_bits, acc_bits, name).run()


def compile_onnx(model, cfg, *, batch: int | None = None, host_im2col: bool = True, **kw):
    """Import ``model`` for ``cfg`` (its weight and accumulator widths) and compile it with
    :func:`~lowbit.compiler.api.compile_network`: returns ``(graph, program)``; feed
    ``graph.quantize_inputs(...)`` through :func:`~lowbit.compiler.conv.pack_inputs`.
    ``batch`` (rows of flat inputs) defaults to the ONNX input's fixed batch size, else 1."""
    from .api import compile_network

    g = import_onnx(model, weight_bits=cfg.weight_bits, acc_bits=cfg.acc_bits)
    if batch is None:
        dims = [v[5][0] for v in g.onnx_inputs.values() if len(v[5]) == 2 and v[5][0] > 0]
        batch = max(dims, default=1)
    return g, compile_network(g, cfg, batch=batch, host_im2col=host_im2col, **kw)


def register_cli(subparsers) -> None:
    """``lowbit import-onnx MODEL --config CFG [-o PROG]``: import a QDQ/QONNX model, compile
    it and (with ``-o``) save the program; errors reach the CLI as one-line ValueErrors."""
    p = subparsers.add_parser("import-onnx", help="import a quantized ONNX/QONNX model and "
                                                  "compile it")
    p.add_argument("model", metavar="MODEL", help="ONNX file (QDQ or QONNX)")
    p.add_argument("--config", default="default", metavar="CFG",
                   help="preset or .json/.toml config (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="PROG", help="write the program (.lbp)")
    p.set_defaults(func=_cmd_import_onnx)


def _cmd_import_onnx(args) -> int:
    from lowbit.config import load_config

    cfg = load_config(args.config)
    g, prog = compile_onnx(args.model, cfg)
    print(g.dump())
    print(f"compiled for {cfg.name}: {len(prog.instrs)} instructions")
    if args.output:
        prog.save(args.output)
        print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m lowbit.compiler.onnx_import MODEL [--config PRESET]``: import, compile and
    print the graph; errors are one line on stderr and exit status 1."""
    import argparse

    from lowbit.config import preset

    p = argparse.ArgumentParser(prog="python -m lowbit.compiler.onnx_import")
    p.add_argument("model")
    p.add_argument("--config", default=None, help="preset to compile for")
    a = p.parse_args(argv)
    try:
        if a.config:
            g, prog = compile_onnx(a.model, preset(a.config))
            print(g.dump())
            print(f"compiled for {a.config}: {len(prog.instrs)} instructions")
        else:
            print(import_onnx(a.model).dump())
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # an importer bug: still one line, no traceback
        print(f"error: internal error importing {a.model} ({type(e).__name__}: {e}); please "
              f"report it", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
