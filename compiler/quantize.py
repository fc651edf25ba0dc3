"""Float MLP description and post-training quantization to low-bit integers.

A :class:`FloatMLP` is a list of :class:`FloatLayer` (float weight ``(in, out)``, float bias
``(out,)``, ReLU flag). :func:`quantize_mlp` turns it into a :class:`QuantizedMLP`:

Weights
    ``weight_bits``-bit (2, 3, 4 or 8), symmetric, one scale per output channel, on the full
    two's-complement grid ``[-2^(N-1), 2^(N-1)-1]``. Each channel's clipping value is chosen
    by minimising the weight MSE over a grid of clip ratios (:func:`quantize_weights`); the
    plain min/max scale is one of the candidates, so MSE clipping is never worse.
Activations
    ``act_bits``-bit, one scale per tensor, calibrated on data. A tensor is unsigned
    (``[0, 2^M-1]``) after a ReLU or when it is non-negative on the calibration data (the
    input of image models), otherwise signed (``[-2^(M-1), 2^(M-1)-1]``). The clip value is
    chosen by MSE (default), a percentile or the maximum (:func:`calibrate_scale`).
    The last layer's output is requantized to signed int8 with its own calibrated scale.
Integer layer
    ``acc = x_q @ W_q`` (wrapping at ``acc_bits``), then :func:`lowbit.layout.requantize`
    with ``bias = round(b / (s_in * s_w[j]))`` (int32) and ``mult / 2^shift`` approximating
    ``s_in * s_w[j] / s_out`` with ``mult < 2^16`` as large as possible
    (:func:`quantize_multiplier`).

:meth:`QuantizedMLP.forward_int` is an independent numpy model of that arithmetic (plain
integer matmul plus ``requantize``); it never builds instructions, so comparing it with an
executor's outputs tests the compiler and the executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lowbit.config import SUPPORTED_WEIGHT_BITS
from lowbit.layout import MULT_BITS, SHIFT_MAX, requantize, wrap

__all__ = [
    "FloatLayer",
    "FloatMLP",
    "QuantLayer",
    "QuantizedMLP",
    "calibrate_scale",
    "quantize_mlp",
    "quantize_multiplier",
    "quantize_weights",
    "weight_range",
]

_CLIP_METHODS = ("mse", "percentile", "max")


def weight_range(bits: int) -> tuple[int, int]:
    """The full two's-complement grid of ``bits``-bit weights."""
    _check_weight_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _check_weight_bits(bits) -> None:
    if isinstance(bits, bool) or bits not in SUPPORTED_WEIGHT_BITS:
        allowed = ", ".join(str(b) for b in SUPPORTED_WEIGHT_BITS)
        raise ValueError(f"weight_bits must be one of {allowed}, not {bits!r}")


def _check_act_bits(bits, what: str = "act_bits") -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"{what} must be an integer from 2 to 8, not {bits!r}")


def _act_range(bits: int, unsigned: bool) -> tuple[int, int]:
    if unsigned:
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


# -- float model ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FloatLayer:
    """One float linear layer: ``y = x @ weight + bias``, then ReLU if ``relu``."""

    weight: np.ndarray
    bias: np.ndarray
    relu: bool = True

    def __post_init__(self):
        object.__setattr__(self, "weight", np.asarray(self.weight, dtype=np.float64))
        object.__setattr__(self, "bias", np.asarray(self.bias, dtype=np.float64))
        object.__setattr__(self, "relu", bool(self.relu))


@dataclass(frozen=True, eq=False)
class FloatMLP:
    """A multi-layer perceptron in floating point (the quantizer's input)."""

    layers: tuple[FloatLayer, ...]

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ValueError("an MLP needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, FloatLayer):
                raise TypeError(f"layer {i} must be a FloatLayer, not {type(layer).__name__}")
            w, b = layer.weight, layer.bias
            if w.ndim != 2 or 0 in w.shape:
                raise ValueError(f"layer {i} weight must be a non-empty 2-D (in, out) array, "
                                 f"not shape {w.shape}")
            if b.shape != (w.shape[1],):
                raise ValueError(f"layer {i} bias must have shape ({w.shape[1]},), "
                                 f"not {b.shape}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"layer {i} has non-finite weights or biases")
            if i and w.shape[0] != layers[i - 1].weight.shape[1]:
                raise ValueError(f"layer {i} expects {w.shape[0]} input features but layer "
                                 f"{i - 1} produces {layers[i - 1].weight.shape[1]}")

    @property
    def in_features(self) -> int:
        return self.layers[0].weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.layers[-1].weight.shape[1]

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """The input followed by every layer's output (after its ReLU)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"input must have shape (batch, {self.in_features}), "
                             f"not {x.shape}")
        out = [x]
        for layer in self.layers:
            x = x @ layer.weight + layer.bias
            if layer.relu:
                x = np.maximum(x, 0.0)
            out.append(x)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.activations(x)[-1]


# -- scales ---------------------------------------------------------------------------------


def quantize_weights(w: np.ndarray, bits: int, *, method: str = "mse",
                     ratios: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric quantization of a ``(in, out)`` weight matrix.

    Returns ``(q, scales)`` with ``q`` on ``[-2^(bits-1), 2^(bits-1)-1]`` and
    ``w ~= q * scales``. ``method="minmax"`` uses ``scale = max|w| / (2^(bits-1)-1)``;
    ``method="mse"`` tries ``ratios`` clip ratios from 0.05 to 1 of that scale (1 and
    ``(2^(bits-1)-1) / 2^(bits-1)`` included) and keeps, per channel, the one with the
    smallest squared error.
    """
    lo, hi = weight_range(bits)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (in, out), not shape {w.shape}")
    if method not in ("mse", "minmax"):
        raise ValueError(f"method must be 'mse' or 'minmax', not {method!r}")
    amax = np.abs(w).max(axis=0)
    base = np.where(amax > 0, amax / hi, 1.0)
    if method == "minmax":
        scales = base
    else:
        best_err = np.full(w.shape[1], np.inf)
        scales = base.copy()
        # hi / (hi + 1) maps max|w| exactly onto the extra negative code -2^(bits-1)
        for ratio in np.unique(np.append(np.linspace(0.05, 1.0, ratios), hi / (hi + 1))):
            s = base * ratio
            err = ((np.clip(np.round(w / s), lo, hi) * s - w) ** 2).sum(axis=0)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            scales = np.where(better, s, scales)
    q = np.clip(np.round(w / scales), lo, hi).astype(np.int64)
    return q, scales


def calibrate_scale(values: np.ndarray, bits: int, *, unsigned: bool, method: str = "mse",
                    percentile: float = 99.99, ratios: int = 100,
                    max_samples: int = 200_000) -> float:
    """A per-tensor activation scale for ``values`` on a ``bits``-bit grid.

    The clip value is the maximum of ``|values|`` (``"max"``), a percentile of it
    (``"percentile"``) or the candidate clip (a ratio from 0.05 to 1 of the maximum) with
    the smallest quantization MSE (``"mse"``). ``scale = clip / qmax`` with ``qmax`` the
    largest positive code.
    """
    _check_act_bits(bits, "bits")
    if method not in _CLIP_METHODS:
        raise ValueError(f"method must be one of {', '.join(_CLIP_METHODS)}, not {method!r}")
    v = np.abs(np.asarray(values, dtype=np.float64).reshape(-1)) if not unsigned \
        else np.maximum(np.asarray(values, dtype=np.float64).reshape(-1), 0.0)
    if v.size > max_samples:  # a deterministic subsample keeps the search fast
        v = v[:: -(-v.size // max_samples)]
    lo, hi = _act_range(bits, unsigned)
    vmax = float(v.max()) if v.size else 0.0
    if vmax <= 0.0:
        return 1.0
    if method == "max":
        return vmax / hi
    if method == "percentile":
        clip = float(np.percentile(v, percentile))
        return (clip if clip > 0 else vmax) / hi
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size > max_samples:
        x = x[:: -(-x.size // max_samples)]
    best, best_err = vmax / hi, np.inf
    for ratio in np.linspace(0.05, 1.0, ratios):
        s = vmax * ratio / hi
        err = float(((np.clip(np.round(x / s), lo, hi) * s - x) ** 2).sum())
        if err < best_err:
            best, best_err = s, err
    return best


def quantize_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(mult, shift)`` with ``mult / 2^shift ~= real``, ``mult < 2^16`` as large as possible.

    ``shift`` is at most :data:`lowbit.layout.SHIFT_MAX`; multipliers too small for that give
    a smaller ``mult`` (possibly 0), multipliers of ``2^16`` or more saturate at
    ``shift = 0``.
    """
    r = np.asarray(real, dtype=np.float64)
    if (r < 0).any() or not np.isfinite(r).all():
        raise ValueError(f"requantization multipliers must be finite and non-negative, "
                         f"not {r[(r < 0) | ~np.isfinite(r)].reshape(-1)[0]}")
    top = 1 << MULT_BITS
    safe = np.where(r > 0, r, 1.0)
    shift = (MULT_BITS - 1) - np.floor(np.log2(safe)).astype(np.int64)
    shift = np.clip(shift, 0, SHIFT_MAX)
    mult = np.round(safe * np.exp2(shift.astype(np.float64))).astype(np.int64)
    over = (mult >= top) & (shift > 0)   # rounding reached 2^16: one bit less
    shift = np.where(over, shift - 1, shift)
    mult = np.where(over, np.round(safe * np.exp2(shift.astype(np.float64))).astype(np.int64),
                    mult)
    mult = np.minimum(mult, top - 1)
    mult = np.where(r > 0, mult, 0)
    shift = np.where(r > 0, shift, 0)
    return mult.astype(np.int64), shift.astype(np.int64)


# -- quantized model ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QuantLayer:
    """One integer layer: ``requantize(x @ weight, bias, mult, shift, ...)``.

    ``weight`` ``(in, out)`` on the ``weight_bits`` grid, ``bias`` int32, ``mult`` /
    ``shift`` per output channel; the output has ``out_bits`` bits, unsigned if
    ``out_unsigned``. ``w_scale`` / ``in_scale`` / ``out_scale`` record the real scales.
    """

    weight: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    relu: bool
    out_bits: int
    out_unsigned: bool
    w_scale: np.ndarray | None = None
    in_scale: float = 1.0
    out_scale: float = 1.0

    def __post_init__(self):
        for name in ("weight", "bias", "mult", "shift"):
            value = np.asarray(getattr(self, name))
            if value.dtype.kind == "f":
                if not np.all(value == np.round(value)):
                    raise ValueError(f"{name} must hold integers")
            object.__setattr__(self, name, value.astype(np.int64))
        object.__setattr__(self, "relu", bool(self.relu))
        object.__setattr__(self, "out_unsigned", bool(self.out_unsigned))

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]


@dataclass(frozen=True, eq=False)
class QuantizedMLP:
    """An integer MLP for ``weight_bits``-bit weights and ``act_bits``-bit activations.

    The input is ``act_bits`` wide (unsigned if ``input_unsigned``) with real value
    ``input_scale * q``; the output is the last layer's (signed int8 when built by
    :func:`quantize_mlp`) with real value ``output_scale * q``.
    """

    layers: tuple[QuantLayer, ...]
    weight_bits: int
    act_bits: int
    input_scale: float
    input_unsigned: bool
    output_scale: float
    acc_bits: int = 32
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        _check_weight_bits(self.weight_bits)
        _check_act_bits(self.act_bits)
        if isinstance(self.acc_bits, bool) or not isinstance(self.acc_bits, int) \
                or not 16 <= self.acc_bits <= 32:
            raise ValueError(f"acc_bits must be an integer from 16 to 32, not {self.acc_bits!r}")
        if not layers:
            raise ValueError("a quantized MLP needs at least one layer")
        lo, hi = weight_range(self.weight_bits)
        for i, layer in enumerate(layers):
            if not isinstance(layer, QuantLayer):
                raise TypeError(f"layer {i} must be a QuantLayer, not {type(layer).__name__}")
            w = layer.weight
            if w.ndim != 2 or 0 in w.shape:
                raise ValueError(f"layer {i} weight must be a non-empty 2-D (in, out) array, "
                                 f"not shape {w.shape}")
            bad = (w < lo) | (w > hi)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ValueError(f"layer {i} weight {int(w[r, c])} at [{r}, {c}] is out of "
                                 f"range for {self.weight_bits}-bit weights; allowed "
                                 f"{lo}..{hi}")
            n = w.shape[1]
            for name in ("bias", "mult", "shift"):
                if getattr(layer, name).shape != (n,):
                    raise ValueError(f"layer {i} {name} must have shape ({n},), not "
                                     f"{getattr(layer, name).shape}")
            _range_check(i, "bias", layer.bias, -(1 << 31), (1 << 31) - 1)
            _range_check(i, "mult", layer.mult, 0, (1 << MULT_BITS) - 1)
            _range_check(i, "shift", layer.shift, 0, SHIFT_MAX)
            _check_act_bits(layer.out_bits, f"layer {i} out_bits")
            if i and w.shape[0] != layers[i - 1].out_features:
                raise ValueError(f"layer {i} expects {w.shape[0]} input features but layer "
                                 f"{i - 1} produces {layers[i - 1].out_features}")

    # -- shapes and ranges ----------------------------------------------------------------

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    @property
    def input_range(self) -> tuple[int, int]:
        return _act_range(self.act_bits, self.input_unsigned)

    def layer_input_unsigned(self, i: int) -> bool:
        return self.input_unsigned if i == 0 else self.layers[i - 1].out_unsigned

    # -- integer arithmetic ---------------------------------------------------------------

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float input ``(batch, in_features)`` to integer codes."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"input must have shape (batch, {self.in_features}), "
                             f"not {x.shape}")
        lo, hi = self.input_range
        return np.clip(np.round(x / self.input_scale), lo, hi).astype(np.int64)

    def forward_int(self, xq: np.ndarray, *, all_layers: bool = False):
        """The integer forward pass (numpy only): the output codes of the last layer.

        With ``all_layers=True``, the list of every layer's output codes.
        """
        x = np.asarray(xq)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"input must have shape (batch, {self.in_features}), "
                             f"not {x.shape}")
        lo, hi = self.input_range
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"input codes must be from {lo} to {hi}, not "
                             f"{x.min()}..{x.max()}")
        x = x.astype(np.int64)
        outs = []
        for layer in self.layers:
            acc = wrap(x @ layer.weight, self.acc_bits)
            x = requantize(acc, layer.bias, layer.mult, layer.shift, relu=layer.relu,
                           out_bits=layer.out_bits, out_unsigned=layer.out_unsigned)
            outs.append(x)
        return outs if all_layers else x

    def dequantize_output(self, yq: np.ndarray) -> np.ndarray:
        return np.asarray(yq, dtype=np.float64) * self.output_scale

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float in, float out, through the integer model."""
        return self.dequantize_output(self.forward_int(self.quantize_input(x)))


def _range_check(i: int, name: str, values: np.ndarray, lo: int, hi: int) -> None:
    bad = (values < lo) | (values > hi)
    if bad.any():
        j = int(np.argwhere(bad)[0][0])
        raise ValueError(f"layer {i} {name} {int(values[j])} of channel {j} is out of range; "
                         f"allowed {lo}..{hi}")


def quantize_mlp(model: FloatMLP, calib: np.ndarray, *, weight_bits: int = 4,
                 act_bits: int = 8, act_clip: str = "mse", percentile: float = 99.99,
                 acc_bits: int = 32) -> QuantizedMLP:
    """Post-training quantization of ``model`` with calibration inputs ``calib``.

    See the module docstring for the scheme. Raises ``ValueError`` for unsupported widths
    or a bias that does not fit int32.
    """
    if not isinstance(model, FloatMLP):
        raise TypeError(f"model must be a FloatMLP, not {type(model).__name__}")
    _check_weight_bits(weight_bits)
    _check_act_bits(act_bits)
    if act_clip not in _CLIP_METHODS:
        raise ValueError(f"act_clip must be one of {', '.join(_CLIP_METHODS)}, "
                         f"not {act_clip!r}")
    acts = model.activations(calib)
    n_layers = len(model.layers)

    def scale_of(values, bits, unsigned):
        return calibrate_scale(values, bits, unsigned=unsigned, method=act_clip,
                               percentile=percentile)

    in_unsigned = bool((acts[0] >= 0).all())
    s_in = scale_of(acts[0], act_bits, in_unsigned)
    input_scale, input_unsigned = s_in, in_unsigned
    layers = []
    for i, layer in enumerate(model.layers):
        last = i == n_layers - 1
        if last:
            out_bits, out_unsigned = 8, False
        else:
            out_bits = act_bits
            out_unsigned = layer.relu or bool((acts[i + 1] >= 0).all())
        s_out = scale_of(acts[i + 1], out_bits, out_unsigned)
        q, s_w = quantize_weights(layer.weight, weight_bits)
        # Near-dead channels (tiny weights) would get a tiny scale and a bias code beyond
        # int32: floor their scale (their weights then round to 0, losing nothing).
        floor = np.maximum(s_w.max() * 2.0 ** -24, np.abs(layer.bias) / (s_in * 2.0 ** 30))
        low = s_w < floor
        if low.any():
            s_w = np.where(low, floor, s_w)
            wlo, whi = weight_range(weight_bits)
            q = np.clip(np.round(layer.weight / s_w), wlo, whi).astype(np.int64)
        bias = np.round(layer.bias / (s_in * s_w))
        if np.abs(bias).max() >= (1 << 31):
            j = int(np.abs(bias).argmax())
            raise ValueError(f"layer {i} bias {layer.bias[j]} of channel {j} does not fit "
                             f"int32 at scale {s_in * s_w[j]:.3g}; allowed "
                             f"{-(1 << 31)}..{(1 << 31) - 1} after scaling")
        mult, shift = quantize_multiplier(s_in * s_w / s_out)
        layers.append(QuantLayer(weight=q, bias=bias.astype(np.int64), mult=mult, shift=shift,
                                 relu=layer.relu, out_bits=out_bits, out_unsigned=out_unsigned,
                                 w_scale=s_w, in_scale=s_in, out_scale=s_out))
        s_in = s_out
    return QuantizedMLP(layers=tuple(layers), weight_bits=weight_bits, act_bits=act_bits,
                        input_scale=input_scale, input_unsigned=input_unsigned,
                        output_scale=s_in, acc_bits=acc_bits,
                        meta={"act_clip": act_clip})
