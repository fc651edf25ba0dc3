"""A small graph IR for quantized networks, with an independent integer numpy model.

A :class:`Graph` is a list of tensors and operators in topological order, built with its
methods (``conv2d``, ``depthwise_conv2d``, ``max_pool2d``, ``avg_pool2d``,
``global_avg_pool``, ``add``, ``flatten``, ``linear``, ``relu``, ``relu6``). Tensors are
integers of ``bits`` bits, signed or unsigned, with one real ``scale`` and an integer zero
point ``zero``: the accelerator stores ``q`` in the ``bits``-bit format, the graph computes
with the value ``v = q - zero`` (real = scale * v), whose range is ``[q_min - zero, q_max -
zero]`` (:attr:`Tensor.range`; :attr:`Tensor.qrange` is the stored format's):

* a **feature map** has shape ``(H, W, C)`` (one image; the value is an ``(H, W, C)`` array);
* a **flat** tensor has shape ``(F,)``; its value is ``(N, F)`` for a batch of ``N`` rows
  (``flatten`` of a map gives ``N = 1``).

Every operator is integer arithmetic that ends in the accelerator's requantization
(:func:`lowbit.layout.requantize`: ``(acc + bias) * mult``, round half away from zero, shift,
optional ReLU on ``v``, clamp to the output's value range ``[q_min - zero, q_max - zero]``),
with ``acc`` wrapped at ``acc_bits`` as the accelerator wraps it (it sums the stored ``q``,
i.e. ``acc`` plus the operator's :meth:`zero_offset` of the input zero points). The
arithmetic is on values ``v``; zero points only move the clamp (the compiler folds the zero
offset into the bias and gives the STORE the output zero point, see
:mod:`lowbit.compiler.conv`):

``Conv2D``
    ``acc[y, x, o] = sum_{ky, kx, i in group(o)} xp[y*sy + ky, x*sx + kx, i] * w[ky, kx, i', o]``
    over the input zero padded (``v = 0``, stored ``q = zero``) by ``padding = (top, bottom,
    left, right)``; ``groups`` splits input and output channels (``groups = C``: depthwise).
``Pool2D``
    ``max``: the maximum over the window of the zero-padded input (zeros, not -inf, in
    the padding), output = that maximum (format, scale and zero point of the input);
    ``avg``: the window sum (padding counted) requantized by ``mult / 2^shift ~= 1 / (kh *
    kw)``. ``global_avg_pool`` is ``avg`` over the whole map (output ``1 x 1``).
``Add``
    ``acc = mul_a * a + mul_b * b`` with integers ``mul_a, mul_b`` in ``1..256`` whose ratio
    approximates ``scale_a / scale_b``; the requantization maps ``scale_a / mul_a`` to the
    output scale.
``Linear``
    ``acc = x @ w`` on flat tensors. ``Flatten`` orders a map's elements ``(y, x, c)``.
``Activation``
    ``relu``/``relu6`` as operators of their own (they are usually fused: ``act=`` of the
    producing operator). ReLU6 is ReLU with an output scale of ``6 / (2^bits - 1)``, so the
    clamp at 6 is the clamp at the top of the unsigned range.

:meth:`Graph.forward` evaluates the graph with plain numpy (padding, window sums, einsum); it
shares nothing with the compiler but the requantization formula of the ISA, so comparing it
with an executor tests the lowering, the schedule and the executor at once.

Scales: a builder method given ``out_scale=None`` calibrates it on the graph's calibration
inputs (``Graph.input(..., calib=...)``): the output scale maps the largest accumulator
magnitude seen (times the accumulator's real unit) to the top of the output range.

Zero points: ``Graph.input(..., zero=z)`` and ``out_zero=z`` on the operators that make a
tensor (``out_signed=`` chooses int/uint storage independently of ``act``; by default a
ReLU output is unsigned, anything else signed). A zero point must lie in its format's
range. Pooling keeps the input's format; ``avg_pool2d``/``global_avg_pool`` take
``out_zero`` (default: the input's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lowbit.layout import requantize, wrap

from .quantize import quantize_multiplier

__all__ = [
    "Activation",
    "Add",
    "Conv2D",
    "Flatten",
    "Graph",
    "GraphError",
    "Linear",
    "Pool2D",
    "Tensor",
    "add_factors",
    "same_padding",
]


class GraphError(ValueError):
    """An operator that does not fit its inputs (shapes, ranges, arguments)."""


def _pos_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise GraphError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise GraphError(f"{name} must be an integer or a pair, not {value!r}")
        return _pos_int(name, value[0]), _pos_int(name, value[1])
    v = _pos_int(name, value)
    return v, v


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``padding="same"``: output ``ceil(size / stride)``, the extra row or
    column at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _padding(value, hw, kernel, stride) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from an int, ``(ph, pw)``, ``((t, b), (l, r))``,
    ``"valid"`` or ``"same"``."""
    if isinstance(value, str):
        if value == "valid":
            return 0, 0, 0, 0
        if value == "same":
            return same_padding(hw[0], kernel[0], stride[0]) + \
                same_padding(hw[1], kernel[1], stride[1])
        raise GraphError(f"padding must be 'same', 'valid' or integers, not {value!r}")

    def nonneg(v):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise GraphError(f"padding must be non-negative integers, not {value!r}")
        return int(v)

    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(isinstance(v, (tuple, list)) for v in value):
            (t, b), (lf, r) = value
            return nonneg(t), nonneg(b), nonneg(lf), nonneg(r)
        if len(value) == 2:
            ph, pw = nonneg(value[0]), nonneg(value[1])
            return ph, ph, pw, pw
        if len(value) == 4:
            return tuple(nonneg(v) for v in value)
        raise GraphError(f"padding must be an int, (ph, pw) or ((top, bottom), (left, right)), "
                         f"not {value!r}")
    p = nonneg(value)
    return p, p, p, p


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _zero(value, bits: int, signed: bool, what: str = "zero") -> int:
    """A zero point checked against the ``bits``-bit format it belongs to."""
    lo, hi = _range(bits, signed)
    kind = "signed" if signed else "unsigned"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not lo <= value <= hi:
        raise GraphError(f"{what} must be from {lo} to {hi} for a{'n' * (not signed)} {kind} "
                         f"{bits}-bit tensor, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Tensor:
    """An integer tensor: ``(H, W, C)`` feature map or ``(F,)`` flat; real = scale * q."""

    name: str
    shape: tuple[int, ...]
    bits: int
    signed: bool
    scale: float
    zero: int = 0

    @property
    def is_map(self) -> bool:
        return len(self.shape) == 3

    @property
    def channels(self) -> int:
        return self.shape[-1]

    @property
    def qrange(self) -> tuple[int, int]:
        """The stored integers' range (the ``bits``-bit format)."""
        return _range(self.bits, self.signed)

    @property
    def range(self) -> tuple[int, int]:
        """The values' range ``[q_min - zero, q_max - zero]``."""
        lo, hi = self.qrange
        return lo - self.zero, hi - self.zero

    def describe(self) -> str:
        kind = "i" if self.signed else "u"
        zero = f" zero={self.zero}" if self.zero else ""
        return (f"{self.name}: {kind}{self.bits} {list(self.shape)} scale={self.scale:.6g}"
                f"{zero}")


# -- operators ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Requant:
    """Fields shared by the operators that end in a requantization."""

    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    relu: bool
    out_bits: int
    out_unsigned: bool
    out_zero: int = 0

    def requant(self, acc: np.ndarray, acc_bits: int, offset=0) -> np.ndarray:
        """The output values ``v = q - out_zero`` of accumulator ``acc`` (of values); the
        accelerator's accumulator holds ``acc + offset`` (:meth:`zero_offset`) and wraps
        that at ``acc_bits``."""
        acc = wrap(np.asarray(acc, np.int64) + offset, acc_bits) - offset
        return requantize(acc, self.bias, self.mult, self.shift, relu=self.relu,
                          out_bits=self.out_bits, out_unsigned=self.out_unsigned,
                          zero=self.out_zero) - self.out_zero

    def zero_offset(self, zeros) -> np.ndarray:
        """What the input zero points ``zeros`` (one per source) add to the accumulator of
        stored integers ``q = v + zero`` (per output channel or one value); the compiler
        subtracts it from the bias (``lowbit.compiler.conv.fold_zero_points``). Here: the
        identity tap of an activation."""
        return np.int64(zeros[0])


@dataclass(frozen=True, eq=False)
class Conv2D(_Requant):
    name: str = ""
    src: str = ""
    dst: str = ""
    weight: np.ndarray = None          # (kh, kw, C_in / groups, C_out)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1

    kind = "conv"

    @property
    def srcs(self) -> tuple[str, ...]:
        return (self.src,)

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight.shape[0], self.weight.shape[1]

    def accumulate(self, xs, acc_bits: int) -> np.ndarray:
        (x,) = xs
        kh, kw, cig, cout = self.weight.shape
        sy, sx = self.stride
        t, b, lf, r = self.padding
        xp = np.pad(np.asarray(x, np.int64), ((t, b), (lf, r), (0, 0)))
        oh = (xp.shape[0] - kh) // sy + 1
        ow = (xp.shape[1] - kw) // sx + 1
        g = self.groups
        cog = cout // g
        w = self.weight.astype(np.int64).reshape(kh, kw, cig, g, cog)
        acc = np.zeros((oh, ow, g, cog), np.int64)
        for ky in range(kh):
            for kx in range(kw):
                win = xp[ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx, :]
                acc += np.einsum("hwgi,igo->hwgo", win.reshape(oh, ow, g, cig), w[ky, kx])
        return acc.reshape(oh, ow, cout)

    def zero_offset(self, zeros) -> np.ndarray:
        """``z * sum(w)`` over each output channel's kernel and input channels (padding
        reads the value 0, stored as ``z``, so every position counts)."""
        return zeros[0] * self.weight.astype(np.int64).sum(axis=(0, 1, 2))

    def macs(self, graph: Graph) -> int:
        oh, ow, cout = graph.tensors[self.dst].shape
        kh, kw, cig, _ = self.weight.shape
        return oh * ow * kh * kw * cig * cout

    def params(self) -> int:
        return int(self.weight.size + self.weight.shape[3])

    def describe(self) -> str:
        kh, kw, cig, cout = self.weight.shape
        dw = " depthwise" if self.groups > 1 and cig == 1 else \
            (f" groups={self.groups}" if self.groups > 1 else "")
        return (f"{self.name}: {self.dst} = conv{kh}x{kw}{dw}({self.src}, C_out={cout}, "
                f"stride={self.stride}, pad={self.padding}, relu={int(self.relu)}, "
                f"out={'u' if self.out_unsigned else 'i'}{self.out_bits})")


@dataclass(frozen=True, eq=False)
class Pool2D(_Requant):
    name: str = ""
    src: str = ""
    dst: str = ""
    mode: str = "max"                  # "max" or "avg"
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def kind(self) -> str:
        return f"{self.mode}pool"

    @property
    def srcs(self) -> tuple[str, ...]:
        return (self.src,)

    def accumulate(self, xs, acc_bits: int) -> np.ndarray:
        (x,) = xs
        kh, kw = self.kernel
        sy, sx = self.stride
        t, b, lf, r = self.padding
        xp = np.pad(np.asarray(x, np.int64), ((t, b), (lf, r), (0, 0)))
        oh = (xp.shape[0] - kh) // sy + 1
        ow = (xp.shape[1] - kw) // sx + 1
        wins = [xp[ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx, :]
                for ky in range(kh) for kx in range(kw)]
        if self.mode == "max":
            return np.max(wins, axis=0)
        return np.sum(wins, axis=0)

    def zero_offset(self, zeros) -> np.ndarray:
        """``z`` (the maximum of stored integers) or ``kh * kw * z`` (the window sum,
        padding counted)."""
        return np.int64(zeros[0] * (self.kernel[0] * self.kernel[1] if self.mode == "avg"
                                    else 1))

    def macs(self, graph: Graph) -> int:
        return 0

    def params(self) -> int:
        return 0

    def describe(self) -> str:
        return (f"{self.name}: {self.dst} = {self.mode}pool{self.kernel[0]}x{self.kernel[1]}"
                f"({self.src}, stride={self.stride}, pad={self.padding}, "
                f"mult={int(self.mult[0])}>>{int(self.shift[0])})")


@dataclass(frozen=True, eq=False)
class Add(_Requant):
    name: str = ""
    a: str = ""
    b: str = ""
    dst: str = ""
    mul_a: int = 1
    mul_b: int = 1

    kind = "add"

    @property
    def srcs(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def accumulate(self, xs, acc_bits: int) -> np.ndarray:
        a, b = (np.asarray(v, np.int64) for v in xs)
        return self.mul_a * a + self.mul_b * b

    def zero_offset(self, zeros) -> np.ndarray:
        return np.int64(self.mul_a * zeros[0] + self.mul_b * zeros[1])

    def macs(self, graph: Graph) -> int:
        return 0

    def params(self) -> int:
        return 0

    def describe(self) -> str:
        return (f"{self.name}: {self.dst} = add({self.mul_a} * {self.a}, {self.mul_b} * "
                f"{self.b}, relu={int(self.relu)})")


@dataclass(frozen=True, eq=False)
class Activation(_Requant):
    """A stand-alone ReLU/ReLU6: ``requantize(x)`` with ``relu`` set."""

    name: str = ""
    src: str = ""
    dst: str = ""
    fn: str = "relu"

    kind = "act"

    @property
    def srcs(self) -> tuple[str, ...]:
        return (self.src,)

    def accumulate(self, xs, acc_bits: int) -> np.ndarray:
        return np.asarray(xs[0], np.int64)

    def macs(self, graph: Graph) -> int:
        return 0

    def params(self) -> int:
        return 0

    def describe(self) -> str:
        return f"{self.name}: {self.dst} = {self.fn}({self.src})"


@dataclass(frozen=True, eq=False)
class Linear(_Requant):
    name: str = ""
    src: str = ""
    dst: str = ""
    weight: np.ndarray = None          # (K, N)

    kind = "linear"

    @property
    def srcs(self) -> tuple[str, ...]:
        return (self.src,)

    def accumulate(self, xs, acc_bits: int) -> np.ndarray:
        return np.asarray(xs[0], np.int64) @ self.weight.astype(np.int64)

    def zero_offset(self, zeros) -> np.ndarray:
        """``z * sum(w)`` over each output's weight column."""
        return zeros[0] * self.weight.astype(np.int64).sum(axis=0)

    def macs(self, graph: Graph) -> int:
        return int(self.weight.size)

    def params(self) -> int:
        return int(self.weight.size + self.weight.shape[1])

    def describe(self) -> str:
        k, n = self.weight.shape
        return (f"{self.name}: {self.dst} = linear({self.src}, w[{k}, {n}], "
                f"relu={int(self.relu)}, out={'u' if self.out_unsigned else 'i'}"
                f"{self.out_bits})")


@dataclass(frozen=True, eq=False)
class Flatten:
    name: str
    src: str
    dst: str

    kind = "flatten"

    @property
    def srcs(self) -> tuple[str, ...]:
        return (self.src,)

    def forward(self, xs, acc_bits: int) -> np.ndarray:
        return np.asarray(xs[0]).reshape(1, -1)

    def macs(self, graph: Graph) -> int:
        return 0

    def params(self) -> int:
        return 0

    def describe(self) -> str:
        return f"{self.name}: {self.dst} = flatten({self.src})"


def _forward(op, xs, acc_bits: int, zeros) -> np.ndarray:
    """``op`` on source values ``xs`` whose zero points are ``zeros``."""
    if isinstance(op, Flatten):
        return op.forward(xs, acc_bits)
    return op.requant(op.accumulate(xs, acc_bits), acc_bits, op.zero_offset(zeros))


def add_factors(ratio: float, limit: int = 256) -> tuple[int, int]:
    """Integers ``(mul_a, mul_b)`` in ``1..limit`` with ``mul_a / mul_b`` closest to
    ``ratio`` (the smallest such pair)."""
    if not ratio > 0 or not np.isfinite(ratio):
        raise GraphError(f"scale ratio must be a positive number, not {ratio!r}")
    best = None
    for mb in range(1, limit + 1):
        ma = min(limit, max(1, round(ratio * mb)))
        err = abs(np.log(ma / mb / ratio))
        if best is None or err < best[0] - 1e-12:
            best = (err, ma, mb)
    return best[1], best[2]


# -- the graph ------------------------------------------------------------------------------


@dataclass
class Graph:
    """Tensors and operators in topological order (build with the methods below).

    ``weight_bits`` is the signed weight width every weight must fit; ``acc_bits`` the
    accumulator width at which sums wrap (both must match the accelerator's config).
    """

    name: str = "net"
    weight_bits: int = 8
    acc_bits: int = 32
    tensors: dict[str, Tensor] = field(default_factory=dict)
    ops: list = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    calib: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    # -- helpers --------------------------------------------------------------------------

    def _name(self, name: str | None, prefix: str) -> str:
        if name is None:
            i = len(self.ops)
            while f"{prefix}{i}" in self.tensors:
                i += 1
            name = f"{prefix}{i}"
        if name in self.tensors:
            raise GraphError(f"tensor name {name!r} is already used")
        return name

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GraphError(f"no tensor {name!r}; tensors are "
                             f"{', '.join(self.tensors)}") from None

    def _zeros(self, op) -> list[int]:
        return [self.tensors[s].zero for s in op.srcs]

    def _map(self, name: str, what: str) -> Tensor:
        t = self.tensor(name)
        if not t.is_map:
            raise GraphError(f"{what} needs a feature map (H, W, C), but {name} has shape "
                             f"{t.shape}")
        return t

    def _add(self, op, dst: Tensor, acc_fn=None):
        self.tensors[dst.name] = dst
        self.ops.append(op)
        if all(s in self.calib for s in op.srcs):
            self.calib[dst.name] = _forward(op, [self.calib[s] for s in op.srcs],
                                            self.acc_bits, self._zeros(op))
        return dst.name

    def _out_scale(self, acc_unit, srcs, accumulate, out_scale, out_bits, unsigned, relu,
                   zero=0):
        """The given ``out_scale``, or one calibrated on ``self.calib``."""
        if out_scale is not None:
            if not out_scale > 0:
                raise GraphError(f"out_scale must be positive, not {out_scale!r}")
            return float(out_scale)
        if not all(s in self.calib for s in srcs):
            raise GraphError("out_scale is required: the graph has no calibration data "
                             "(Graph.input(..., calib=...))")
        acc = accumulate([self.calib[s] for s in srcs], self.acc_bits).astype(np.float64)
        real = acc * np.asarray(acc_unit, np.float64)
        if relu or unsigned:
            real = np.maximum(real, 0)
        top = np.abs(real).max(initial=0.0)
        lo, hi = _range(out_bits, not unsigned)
        span = hi - zero if hi - zero > 0 else zero - lo
        return float(top / span) if top > 0 else float(np.max(acc_unit))

    def _act(self, act, out_bits, out_signed=None, out_zero=0):
        """``(relu, unsigned, zero, fixed_scale)`` for ``act`` in None, "relu", "relu6";
        the output is unsigned after a ReLU and signed otherwise unless ``out_signed`` says;
        ``relu6`` puts 6 at the top of the output's value range."""
        if act not in (None, "relu", "relu6"):
            raise GraphError(f"act must be None, 'relu' or 'relu6', not {act!r}")
        if isinstance(out_bits, bool) or not isinstance(out_bits, (int, np.integer)) \
                or not 2 <= out_bits <= 8:
            raise GraphError(f"out_bits must be an integer from 2 to 8, not {out_bits!r}")
        relu = act is not None
        unsigned = relu if out_signed is None else not out_signed
        zero = _zero(out_zero, out_bits, not unsigned, "out_zero")
        hi = _range(out_bits, not unsigned)[1] - zero
        if act == "relu6":
            if hi <= 0:
                raise GraphError(f"relu6 needs a positive top of the output range, not {hi} "
                                 f"(out_zero={zero})")
            return relu, unsigned, zero, 6.0 / hi
        return relu, unsigned, zero, None

    def _check_weight(self, name, w):
        w = np.asarray(w)
        if w.dtype.kind == "f" and not np.all(w == np.round(w)):
            raise GraphError(f"{name}: weights must be integers")
        w = w.astype(np.int64)
        lo, hi = _range(self.weight_bits, True)
        if w.size and (w.min() < lo or w.max() > hi):
            bad = int(w.min()) if w.min() < lo else int(w.max())
            raise GraphError(f"{name}: weight {bad} is out of range for weight_bits="
                             f"{self.weight_bits}; allowed {lo}..{hi}")
        return w

    def _requant_fields(self, name, n, unit, bias, out_scale):
        bias_v = np.zeros(n, np.int64) if bias is None else \
            np.broadcast_to(np.asarray(bias), (n,)).astype(np.int64).copy()
        if bias_v.min(initial=0) < -(1 << 31) or bias_v.max(initial=0) >= 1 << 31:
            raise GraphError(f"{name}: bias must fit int32")
        mult, shift = quantize_multiplier(np.broadcast_to(np.asarray(unit) / out_scale, (n,)))
        return bias_v, mult, shift

    # -- building -------------------------------------------------------------------------

    def input(self, name: str, shape, *, bits: int = 8, signed: bool = True,
              scale: float = 1.0 / 64, zero: int = 0, calib=None) -> str:
        """A graph input: a map ``(H, W, C)`` or flat ``(F,)`` stored as ``bits``-bit ``q``
        with zero point ``zero`` (values ``v = q - zero``); ``calib``: one example value
        ``v`` (``(H, W, C)``, or ``(N, F)``) used to calibrate the scales of later
        operators."""
        name = self._name(name, "x")
        shape = tuple(_pos_int("shape", v) for v in shape)
        if len(shape) not in (1, 3):
            raise GraphError(f"input shape must be (H, W, C) or (F,), not {shape}")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise GraphError(f"bits must be an integer from 2 to 8, not {bits!r}")
        t = Tensor(name, shape, bits, bool(signed), float(scale), _zero(zero, bits, signed))
        self.tensors[name] = t
        self.inputs.append(name)
        if calib is not None:
            self.calib[name] = self.check_value(name, calib)
        return name

    def output(self, *names: str) -> None:
        for n in names:
            self.tensor(n)
            if n not in self.outputs:
                self.outputs.append(n)

    def conv2d(self, x: str, weight, *, bias=None, w_scale=1.0, stride=1, padding=0,
               groups: int = 1, act: str | None = None, out_scale: float | None = None,
               out_bits: int = 8, out_signed: bool | None = None, out_zero: int = 0,
               name: str | None = None) -> str:
        """2-D convolution; ``weight`` is ``(kh, kw, C_in / groups, C_out)`` integers,
        ``w_scale`` their real scale (scalar or per output channel), ``bias`` integers in
        accumulator units (of values ``v``, zero points excluded)."""
        src = self._map(x, "conv2d")
        name = self._name(name, "conv")
        w = self._check_weight(name, weight)
        if w.ndim != 4:
            raise GraphError(f"{name}: weight must be (kh, kw, C_in / groups, C_out), not "
                             f"shape {w.shape}")
        kh, kw, cig, cout = w.shape
        groups = _pos_int("groups", groups)
        cin = src.channels
        if cin % groups or cout % groups or cig * groups != cin:
            raise GraphError(f"{name}: weight {w.shape} with groups={groups} does not fit "
                             f"{cin} input channels (C_in / groups must be {cin // groups} and "
                             f"C_out a multiple of {groups})")
        stride = _pair("stride", stride)
        pad = _padding(padding, src.shape[:2], (kh, kw), stride)
        oh = (src.shape[0] + pad[0] + pad[1] - kh) // stride[0] + 1
        ow = (src.shape[1] + pad[2] + pad[3] - kw) // stride[1] + 1
        if oh < 1 or ow < 1:
            raise GraphError(f"{name}: kernel {kh}x{kw} does not fit the padded input "
                             f"{src.shape[:2]} with padding {pad}")
        relu, unsigned, zero, fixed = self._act(act, out_bits, out_signed, out_zero)
        unit = src.scale * np.broadcast_to(np.asarray(w_scale, np.float64), (cout,))
        proto = Conv2D(bias=np.zeros(cout, np.int64), mult=np.zeros(cout, np.int64),
                       shift=np.zeros(cout, np.int64), relu=relu, out_bits=out_bits,
                       out_unsigned=unsigned, name=name, src=x, dst=name, weight=w,
                       stride=stride, padding=pad, groups=groups)

        def accumulate(xs, acc_bits):
            acc = proto.accumulate(xs, acc_bits)
            return acc if bias is None else acc + np.asarray(bias, np.int64)

        scale = fixed or self._out_scale(unit, (x,), accumulate, out_scale, out_bits,
                                         unsigned, relu, zero)
        b, m, s = self._requant_fields(name, cout, unit, bias, scale)
        op = Conv2D(bias=b, mult=m, shift=s, relu=relu, out_bits=out_bits,
                    out_unsigned=unsigned, out_zero=zero, name=name, src=x, dst=name,
                    weight=w, stride=stride, padding=pad, groups=groups)
        return self._add(op, Tensor(name, (oh, ow, cout), out_bits, not unsigned, scale, zero))

    def depthwise_conv2d(self, x: str, weight, **kw) -> str:
        """``weight`` is ``(kh, kw, C)`` (or ``(kh, kw, 1, C)``): one filter per channel."""
        w = np.asarray(weight)
        if w.ndim == 3:
            w = w[:, :, None, :]
        c = self._map(x, "depthwise_conv2d").channels
        return self.conv2d(x, w, groups=c, **kw)

    def _pool(self, x, mode, kernel, stride, padding, name, out_scale, out_zero=None):
        src = self._map(x, f"{mode}_pool2d")
        name = self._name(name, f"{mode}pool")
        kernel = _pair("kernel", kernel)
        stride = kernel if stride is None else _pair("stride", stride)
        pad = _padding(padding, src.shape[:2], kernel, stride)
        oh = (src.shape[0] + pad[0] + pad[1] - kernel[0]) // stride[0] + 1
        ow = (src.shape[1] + pad[2] + pad[3] - kernel[1]) // stride[1] + 1
        if oh < 1 or ow < 1:
            raise GraphError(f"{name}: window {kernel} does not fit the padded input "
                             f"{src.shape[:2]}")
        c = src.channels
        zero = src.zero if out_zero is None else _zero(out_zero, src.bits, src.signed,
                                                       "out_zero")
        if mode == "max":
            mult, shift, scale = np.ones(c, np.int64), np.zeros(c, np.int64), src.scale
        else:
            scale = src.scale if out_scale is None else float(out_scale)
            m, s = quantize_multiplier(src.scale / scale / (kernel[0] * kernel[1]))
            mult, shift = np.full(c, int(m), np.int64), np.full(c, int(s), np.int64)
        op = Pool2D(bias=np.zeros(c, np.int64), mult=mult, shift=shift, relu=False,
                    out_bits=src.bits, out_unsigned=not src.signed, out_zero=zero, name=name,
                    src=x, dst=name, mode=mode, kernel=kernel, stride=stride, padding=pad)
        return self._add(op, Tensor(name, (oh, ow, c), src.bits, src.signed, scale, zero))

    def max_pool2d(self, x: str, kernel, *, stride=None, padding=0,
                   name: str | None = None) -> str:
        """Max pooling (zero padding); the output keeps the input's format, scale and zero
        point."""
        return self._pool(x, "max", kernel, stride, padding, name, None)

    def avg_pool2d(self, x: str, kernel, *, stride=None, padding=0,
                   out_scale: float | None = None, out_zero: int | None = None,
                   name: str | None = None) -> str:
        """Average pooling (zero padding counted); output scale and zero point = the
        input's by default."""
        return self._pool(x, "avg", kernel, stride, padding, name, out_scale, out_zero)

    def global_avg_pool(self, x: str, *, out_scale: float | None = None,
                        out_zero: int | None = None, name: str | None = None) -> str:
        """Average over the whole map: ``(H, W, C) -> (1, 1, C)``."""
        h, w, _ = self._map(x, "global_avg_pool").shape
        return self._pool(x, "avg", (h, w), (1, 1), 0, name or self._name(None, "gap"),
                          out_scale, out_zero)

    def add(self, a: str, b: str, *, act: str | None = None, out_scale: float | None = None,
            out_bits: int = 8, out_signed: bool | None = None, out_zero: int = 0,
            name: str | None = None) -> str:
        """``a + b`` (same shape, any scales)."""
        ta, tb = self.tensor(a), self.tensor(b)
        if ta.shape != tb.shape:
            raise GraphError(f"add needs equal shapes, not {a} {ta.shape} and {b} {tb.shape}")
        name = self._name(name, "add")
        amax = max(abs(v) for v in ta.range + tb.range + ta.qrange + tb.qrange)
        limit = min(256, ((1 << (self.acc_bits - 1)) - 1) // (2 * amax))
        if limit < 1:
            raise GraphError(f"{name}: acc_bits={self.acc_bits} cannot hold a sum of two "
                             f"{ta.bits}-bit values")
        ma, mb = add_factors(ta.scale / tb.scale, limit)
        relu, unsigned, zero, fixed = self._act(act, out_bits, out_signed, out_zero)
        c = ta.channels
        unit = ta.scale / ma

        def accumulate(xs, acc_bits):
            return ma * np.asarray(xs[0], np.int64) + mb * np.asarray(xs[1], np.int64)

        scale = fixed or self._out_scale(unit, (a, b), accumulate, out_scale, out_bits,
                                         unsigned, relu, zero)
        bias, m, s = self._requant_fields(name, c, unit, None, scale)
        op = Add(bias=bias, mult=m, shift=s, relu=relu, out_bits=out_bits,
                 out_unsigned=unsigned, out_zero=zero, name=name, a=a, b=b, dst=name,
                 mul_a=ma, mul_b=mb)
        return self._add(op, Tensor(name, ta.shape, out_bits, not unsigned, scale, zero))

    def _activation(self, x, fn, name, out_bits, out_signed, out_zero):
        src = self.tensor(x)
        name = self._name(name, fn)
        out_bits = src.bits if out_bits is None else out_bits
        relu, unsigned, zero, fixed = self._act(fn, out_bits, out_signed, out_zero)
        scale = fixed or src.scale
        c = src.channels
        m, s = quantize_multiplier(src.scale / scale)
        op = Activation(bias=np.zeros(c, np.int64), mult=np.full(c, int(m), np.int64),
                        shift=np.full(c, int(s), np.int64), relu=True, out_bits=out_bits,
                        out_unsigned=unsigned, out_zero=zero, name=name, src=x, dst=name,
                        fn=fn)
        return self._add(op, Tensor(name, src.shape, out_bits, not unsigned, scale, zero))

    def relu(self, x: str, *, name: str | None = None, out_bits: int | None = None,
             out_signed: bool | None = None, out_zero: int = 0) -> str:
        """``max(x, 0)`` at the input's scale (unsigned output unless ``out_signed``)."""
        return self._activation(x, "relu", name, out_bits, out_signed, out_zero)

    def relu6(self, x: str, *, name: str | None = None, out_bits: int | None = None,
              out_signed: bool | None = None, out_zero: int = 0) -> str:
        """``min(max(x, 0), 6)``: 6 at the top of the output's value range."""
        return self._activation(x, "relu6", name, out_bits, out_signed, out_zero)

    def flatten(self, x: str, *, name: str | None = None) -> str:
        """``(H, W, C) -> (H * W * C,)`` in ``(y, x, c)`` order."""
        src = self._map(x, "flatten")
        name = self._name(name, "flat")
        op = Flatten(name, x, name)
        return self._add(op, Tensor(name, (int(np.prod(src.shape)),), src.bits, src.signed,
                                    src.scale, src.zero))

    def linear(self, x: str, weight, *, bias=None, w_scale=1.0, act: str | None = None,
               out_scale: float | None = None, out_bits: int = 8,
               out_signed: bool | None = None, out_zero: int = 0,
               name: str | None = None) -> str:
        """``x @ weight`` on a flat tensor; ``weight`` is ``(K, N)`` integers."""
        src = self.tensor(x)
        if src.is_map:
            raise GraphError(f"linear needs a flat tensor; flatten {x} {src.shape} first")
        name = self._name(name, "fc")
        w = self._check_weight(name, weight)
        if w.ndim != 2 or w.shape[0] != src.channels:
            raise GraphError(f"{name}: weight must be ({src.channels}, N), not {w.shape}")
        n = w.shape[1]
        relu, unsigned, zero, fixed = self._act(act, out_bits, out_signed, out_zero)
        unit = src.scale * np.broadcast_to(np.asarray(w_scale, np.float64), (n,))

        def accumulate(xs, acc_bits):
            acc = np.asarray(xs[0], np.int64) @ w
            return acc if bias is None else acc + np.asarray(bias, np.int64)

        scale = fixed or self._out_scale(unit, (x,), accumulate, out_scale, out_bits,
                                         unsigned, relu, zero)
        b, m, s = self._requant_fields(name, n, unit, bias, scale)
        op = Linear(bias=b, mult=m, shift=s, relu=relu, out_bits=out_bits,
                    out_unsigned=unsigned, out_zero=zero, name=name, src=x, dst=name,
                    weight=w)
        return self._add(op, Tensor(name, (n,), out_bits, not unsigned, scale, zero))

    # -- evaluation -----------------------------------------------------------------------

    def check_value(self, name: str, value) -> np.ndarray:
        """An input value as int64, checked against the tensor's shape and range."""
        t = self.tensor(name)
        v = np.asarray(value)
        if v.dtype.kind == "f" and not np.all(v == np.round(v)):
            raise GraphError(f"input {name!r} must hold integers")
        v = v.astype(np.int64)
        if t.is_map and v.shape != t.shape:
            raise GraphError(f"input {name!r} must have shape {t.shape}, not {v.shape}")
        if not t.is_map and (v.ndim != 2 or v.shape[1] != t.channels):
            raise GraphError(f"input {name!r} must have shape (N, {t.channels}), not "
                             f"{v.shape}")
        lo, hi = t.range
        if v.size and (v.min() < lo or v.max() > hi):
            raise GraphError(f"input {name!r} values must be from {lo} to {hi}, not "
                             f"{v.min()}..{v.max()}")
        return v

    def evaluate(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every tensor's integer value (maps ``(H, W, C)``, flat tensors ``(N, F)``)."""
        vals = {n: self.check_value(n, inputs[n]) if n in inputs else None
                for n in self.inputs}
        missing = [n for n, v in vals.items() if v is None]
        if missing:
            raise GraphError(f"input {missing[0]!r} is missing; inputs are "
                             f"{', '.join(self.inputs)}")
        for op in self.ops:
            vals[op.dst] = _forward(op, [vals[s] for s in op.srcs], self.acc_bits,
                                    self._zeros(op))
        return vals

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs' integer values."""
        vals = self.evaluate(inputs)
        return {n: vals[n] for n in self.outputs}

    # -- statistics -----------------------------------------------------------------------

    def macs(self) -> int:
        """Multiply-accumulates of convolutions and linear layers (per image / row)."""
        return int(sum(op.macs(self) for op in self.ops))

    def params(self) -> int:
        """Weights plus biases."""
        return int(sum(op.params() for op in self.ops))

    def consumers(self, name: str) -> list:
        return [op for op in self.ops if name in op.srcs]

    def dump(self) -> str:
        out = [f"network {self.name} (weight_bits={self.weight_bits}, acc_bits="
               f"{self.acc_bits}): {self.macs()} MACs, {self.params()} parameters"]
        for t in self.tensors.values():
            role = "input " if t.name in self.inputs else \
                ("output " if t.name in self.outputs else "")
            out.append(f"  tensor {role}{t.describe()}")
        out += [f"  {op.describe()}" for op in self.ops]
        return "\n".join(out)
