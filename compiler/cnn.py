"""A small digits CNN: numpy training, post-training quantization to a :class:`Graph`, and the
accuracy table of its low-bit variants on the accelerator.

Network (``8x8x1`` images of scikit-learn's digits, pixels scaled to ``[0, 1]``)::

    conv 3x3 "same" -> C1, ReLU, max pool 2   (8x8 -> 4x4)
    conv 3x3 "same" -> C2, ReLU, max pool 2   (4x4 -> 2x2)
    flatten (y, x, c), linear -> 10 logits

:func:`train_digits_cnn` trains it with plain numpy (im2col convolutions, Adam, softmax
cross-entropy) on a fixed stratified split; the result is the same on every run for a given
``seed``.

:func:`quantize_cnn` is post-training quantization into the graph IR
(:class:`~lowbit.compiler.graph.Graph`), with one weight width per layer (mixed precision):

Weights
    symmetric, per output channel, on the full ``b``-bit grid; the clip value per channel is
    the maximum (``method="minmax"``) or the MSE-optimal clip ratio
    (:func:`~lowbit.compiler.quantize.quantize_weights`, ``method="mse"``).
Bias correction
    (``bias_correction=True``) the expected output error that weight rounding introduces,
    ``E[patch] @ (s_w * W_q - W)`` over the calibration data, is subtracted from the float
    bias before it is quantized (``round(b / (s_in * s_w))``, int32).
Activations
    unsigned ``act_bits`` after every ReLU (and for the input), one scale per tensor from the
    float activations of the calibration images, clipped at the maximum (``"minmax"``) or the
    MSE-optimal clip (:func:`~lowbit.compiler.quantize.calibrate_scale`); max pooling keeps
    its input's scale. The logits are signed int8 clipped at their maximum.

The quantized model's integer semantics are the graph's (:meth:`Graph.forward`), which the
compiled programs reproduce bit for bit on every executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .graph import Graph
from .models import digits_split
from .quantize import calibrate_scale, quantize_weights

__all__ = [
    "CNN_VARIANTS",
    "CnnVariant",
    "DigitsCNN",
    "FloatCNN",
    "QuantizedCNN",
    "accelerator_logits",
    "quantize_cnn",
    "train_digits_cnn",
]

IMAGE = (8, 8, 1)
CLASSES = 10
LAYERS = ("conv1", "conv2", "fc")


# -- float model ----------------------------------------------------------------------------


def _im2col(x: np.ndarray) -> np.ndarray:
    """``(n, H, W, C)`` -> ``(n, H, W, 9 C)`` 3x3 "same" patches in ``(ky, kx, c)`` order."""
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.concatenate([xp[:, ky:ky + h, kx:kx + w, :]
                           for ky in range(3) for kx in range(3)], axis=3)


def _col2im(d: np.ndarray, c: int) -> np.ndarray:
    n, h, w, _ = d.shape
    dx = np.zeros((n, h + 2, w + 2, c))
    for k in range(9):
        ky, kx = divmod(k, 3)
        dx[:, ky:ky + h, kx:kx + w, :] += d[..., k * c:(k + 1) * c]
    return dx[:, 1:-1, 1:-1, :]


def _pool(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@dataclass(frozen=True, eq=False)
class FloatCNN:
    """Float weights: convolutions ``(3, 3, C_in, C_out)``, linear ``(F, 10)``, biases."""

    conv1_w: np.ndarray
    conv1_b: np.ndarray
    conv2_w: np.ndarray
    conv2_b: np.ndarray
    fc_w: np.ndarray
    fc_b: np.ndarray

    def params(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("conv1_w", "conv1_b", "conv2_w", "conv2_b",
                                              "fc_w", "fc_b")}

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each layer's input (``"<layer>_in"``: the conv patches, the flat vector) and the
        network's tensors: ``image``, ``conv1``, ``pool1``, ``conv2``, ``pool2``, ``logits``."""
        x = np.asarray(x, np.float64).reshape(-1, *IMAGE)
        p1 = _im2col(x)
        c1 = np.maximum(p1 @ self.conv1_w.reshape(-1, self.conv1_w.shape[3]) + self.conv1_b, 0)
        m1 = _pool(c1)
        p2 = _im2col(m1)
        c2 = np.maximum(p2 @ self.conv2_w.reshape(-1, self.conv2_w.shape[3]) + self.conv2_b, 0)
        m2 = _pool(c2)
        f = m2.reshape(len(x), -1)
        return {"image": x, "conv1_in": p1, "conv1": c1, "pool1": m1, "conv2_in": p2,
                "conv2": c2, "pool2": m2, "fc_in": f, "logits": f @ self.fc_w + self.fc_b}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.activations(x)["logits"]


class DigitsCNN(NamedTuple):
    """A trained CNN, its train/test split (images ``(n, 8, 8, 1)`` in ``[0, 1]``) and its
    float test accuracy."""

    model: FloatCNN
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    accuracy: float


def train_digits_cnn(channels: tuple[int, int] = (16, 32), seed: int = 0, *,
                     epochs: int = 30, batch: int = 32, lr: float = 3e-3,
                     weight_decay: float = 1e-4, test_size: float = 0.25) -> DigitsCNN:
    """Train the CNN with numpy (Adam, softmax cross-entropy, He initialisation)."""
    c1, c2 = (int(c) for c in channels)
    if c1 < 1 or c2 < 1:
        raise ValueError(f"channels must be positive, not {channels}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
    x_train, x_test, y_train, y_test = digits_split(seed, test_size)
    x_train, x_test = x_train.reshape(-1, *IMAGE), x_test.reshape(-1, *IMAGE)
    rng = np.random.default_rng(seed)
    feat = 2 * 2 * c2
    p = {"conv1_w": rng.normal(0, np.sqrt(2 / 9), (3, 3, 1, c1)), "conv1_b": np.zeros(c1),
         "conv2_w": rng.normal(0, np.sqrt(2 / (9 * c1)), (3, 3, c1, c2)),
         "conv2_b": np.zeros(c2),
         "fc_w": rng.normal(0, np.sqrt(1 / feat), (feat, CLASSES)), "fc_b": np.zeros(CLASSES)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    n = len(x_train)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            grads = _gradients(FloatCNN(**p), x_train[idx], y_train[idx])
            step += 1
            for k, g in grads.items():
                if k.endswith("_w"):
                    g = g + weight_decay * p[k]
                m[k] = b1 * m[k] + (1 - b1) * g
                v[k] = b2 * v[k] + (1 - b2) * g * g
                mh, vh = m[k] / (1 - b1 ** step), v[k] / (1 - b2 ** step)
                p[k] = p[k] - lr * mh / (np.sqrt(vh) + eps)
    model = FloatCNN(**p)
    accuracy = float((model.forward(x_test).argmax(axis=1) == y_test).mean())
    return DigitsCNN(model, x_train, y_train, x_test, y_test, accuracy)


def _pool_backward(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    blocks = x.reshape(n, h // 2, 2, w // 2, 2, c)
    mask = blocks == blocks.max(axis=(2, 4), keepdims=True)
    mask = mask / mask.sum(axis=(2, 4), keepdims=True)
    return (mask * d[:, :, None, :, None, :]).reshape(x.shape)


def _gradients(model: FloatCNN, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    a = model.activations(x)
    n = len(x)
    z = a["logits"] - a["logits"].max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    prob[np.arange(n), y] -= 1
    dz = prob / n
    g = {"fc_w": a["fc_in"].T @ dz, "fc_b": dz.sum(axis=0)}
    dm2 = (dz @ model.fc_w.T).reshape(a["pool2"].shape)
    dc2 = _pool_backward(a["conv2"], dm2) * (a["conv2"] > 0)
    c1, c2 = model.conv2_w.shape[2:]
    g["conv2_w"] = (a["conv2_in"].reshape(-1, 9 * c1).T @ dc2.reshape(-1, c2)).reshape(
        model.conv2_w.shape)
    g["conv2_b"] = dc2.sum(axis=(0, 1, 2))
    dm1 = _col2im(dc2 @ model.conv2_w.reshape(-1, c2).T, c1)
    dc1 = _pool_backward(a["conv1"], dm1) * (a["conv1"] > 0)
    g["conv1_w"] = (a["conv1_in"].reshape(-1, 9).T @ dc1.reshape(-1, c1)).reshape(
        model.conv1_w.shape)
    g["conv1_b"] = dc1.sum(axis=(0, 1, 2))
    return g


# -- post-training quantization -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QuantizedCNN:
    """The quantized network as a graph; ``weight_bits`` per layer (conv1, conv2, fc)."""

    graph: Graph
    weight_bits: tuple[int, int, int]
    act_bits: int
    method: str
    bias_correction: bool

    @property
    def input_scale(self) -> float:
        return self.graph.tensor("image").scale

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float images ``(n, 8, 8, 1)`` (or ``(n, 64)``) to unsigned integer codes."""
        t = self.graph.tensor("image")
        lo, hi = t.range
        x = np.asarray(x, np.float64).reshape(-1, *IMAGE)
        return np.clip(np.round(x / t.scale), lo, hi).astype(np.int64)

    def forward_int(self, xq: np.ndarray) -> np.ndarray:
        """Integer logits ``(n, 10)`` of the graph's numpy model, one image at a time."""
        return np.concatenate([self.graph.forward({"image": img})["logits"] for img in xq])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward_int(self.quantize_input(x)).argmax(axis=1)


def _widths(weight_bits) -> tuple[int, int, int]:
    if isinstance(weight_bits, (int, np.integer)) and not isinstance(weight_bits, bool):
        return (int(weight_bits),) * 3
    wb = tuple(weight_bits)
    if len(wb) != 3:
        raise ValueError(f"weight_bits must be one width or one per layer "
                         f"({', '.join(LAYERS)}), not {weight_bits!r}")
    return tuple(int(b) for b in wb)


def quantize_cnn(model: FloatCNN, calib: np.ndarray, *, weight_bits=8, act_bits: int = 8,
                 method: str = "mse", bias_correction: bool = True,
                 name: str = "digits_cnn") -> QuantizedCNN:
    """Post-training quantization of ``model`` calibrated on the images ``calib`` (see the
    module docstring). ``weight_bits``: one width, or ``(conv1, conv2, fc)`` widths."""
    if method not in ("mse", "minmax"):
        raise ValueError(f"method must be 'mse' or 'minmax', not {method!r}")
    wbits = _widths(weight_bits)
    a = model.activations(calib)
    act_clip = "mse" if method == "mse" else "max"

    def act_scale(values, bits=act_bits, unsigned=True, clip=act_clip):
        return calibrate_scale(values, bits, unsigned=unsigned, method=clip)

    g = Graph(name, weight_bits=max(wbits))
    s_in = act_scale(a["image"], clip="max")
    h = g.input("image", IMAGE, bits=act_bits, signed=False, scale=s_in)
    layers = (("conv1", model.conv1_w, model.conv1_b), ("conv2", model.conv2_w, model.conv2_b),
              ("fc", model.fc_w, model.fc_b))
    for (lname, w, b), wb in zip(layers, wbits, strict=True):
        cout = w.shape[-1]
        w2 = w.reshape(-1, cout)
        q, s_w = quantize_weights(w2, wb, method=method)
        if bias_correction:
            b = b - a[f"{lname}_in"].reshape(-1, w2.shape[0]).mean(axis=0) @ (q * s_w - w2)
        s_x = g.tensor(h).scale
        bias = np.round(b / (s_x * s_w)).astype(np.int64)
        if lname == "fc":
            s_out = act_scale(a["logits"], bits=8, unsigned=False, clip="max")
            h = g.linear(g.flatten(h, name="flat"), q, bias=bias, w_scale=s_w,
                         out_scale=s_out, out_bits=8, name="logits")
        else:
            s_out = act_scale(a[lname])
            h = g.conv2d(h, q.reshape(w.shape), bias=bias, w_scale=s_w, padding="same",
                         act="relu", out_scale=s_out, out_bits=act_bits, name=lname)
            h = g.max_pool2d(h, 2, name=f"pool{lname[-1]}")
    g.output(h)
    return QuantizedCNN(g, wbits, int(act_bits), method, bool(bias_correction))


# -- the accuracy table ---------------------------------------------------------------------


class CnnVariant(NamedTuple):
    name: str
    weight_bits: tuple[int, int, int]      # conv1, conv2, fc
    act_bits: int


#: The table's rows: uniform widths, then mixed precision (first and last layer W8).
CNN_VARIANTS: tuple[CnnVariant, ...] = (
    CnnVariant("W8A8", (8, 8, 8), 8),
    CnnVariant("W4A8", (4, 4, 4), 8),
    CnnVariant("W4A4", (4, 4, 4), 4),
    CnnVariant("W3A8", (3, 3, 3), 8),
    CnnVariant("W2A8", (2, 2, 2), 8),
    CnnVariant("W8-2-8 A8", (8, 2, 8), 8),
    CnnVariant("W4-2-4 A4", (4, 2, 4), 4),
)


def accelerator_logits(program, xq: np.ndarray, *, backend: str = "reference",
                       **options) -> tuple[np.ndarray, list]:
    """Run every image of ``xq`` through ``program`` (batch 1); the logits ``(n, 10)`` and
    the run results."""
    from lowbit.executors import run

    from .conv import pack_inputs, unpack_outputs

    outs, results = [], []
    for img in xq:
        res = run(program, pack_inputs(program, {"image": img}), backend=backend, **options)
        outs.append(unpack_outputs(program, res.outputs)["logits"])
        results.append(res)
    return np.concatenate(outs), results
