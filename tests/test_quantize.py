"""The post-training quantizer, the integer model and the digits MLP."""

import re

import numpy as np
import pytest

from lowbit.compiler import (
    FloatLayer,
    FloatMLP,
    QuantizedMLP,
    QuantLayer,
    calibrate_scale,
    quantize_mlp,
    quantize_multiplier,
    quantize_weights,
    train_digits_mlp,
    weight_range,
)


@pytest.fixture(scope="module")
def digits():
    return train_digits_mlp()


# -- weights --------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,lo,hi", [(2, -2, 1), (3, -4, 3), (4, -8, 7), (8, -128, 127)])
def test_full_twos_complement_grid(bits, lo, hi):
    assert weight_range(bits) == (lo, hi)
    rng = np.random.default_rng(bits)
    w = rng.normal(size=(200, 6))
    w[:, 0] = rng.choice([-1.0, 0.5, 0.0], size=200)   # exact on the grid with -2^(bits-1)
    q, s = quantize_weights(w, bits)
    assert q.dtype == np.int64 and q.min() >= lo and q.max() <= hi
    assert s[0] == pytest.approx(1.0 / (1 << (bits - 1)))
    assert np.array_equal(q[:, 0] * s[0], w[:, 0])      # -1.0 uses the extra code
    assert q[:, 0].min() == lo
    assert (q == hi).any()
    assert s.shape == (6,) and (s > 0).all()


def test_mse_clipping_beats_min_max_with_outliers():
    rng = np.random.default_rng(0)
    w = rng.laplace(0.0, 0.05, size=(256, 8))
    w[3, :] = 0.6            # outliers stretch the min/max range of every channel
    w[7, ::2] = -0.5
    for bits, factor in ((2, 0.5), (3, 0.5), (4, 0.8), (8, 1.0)):
        err = {}
        for method in ("mse", "minmax"):
            q, s = quantize_weights(w, bits, method=method)
            err[method] = ((q * s - w) ** 2).sum(axis=0)
        assert (err["mse"] <= err["minmax"]).all()
        assert err["mse"].sum() < factor * err["minmax"].sum(), bits
    # min/max scale is max|w| / (2^(bits-1) - 1)
    _, s = quantize_weights(w, 4, method="minmax")
    assert np.allclose(s, np.abs(w).max(axis=0) / 7)


def test_zero_channel_quantizes_to_zero():
    w = np.zeros((5, 2))
    w[:, 1] = [0.5, -0.25, 0.0, 0.1, -0.5]
    q, s = quantize_weights(w, 4)
    assert (q[:, 0] == 0).all() and s[0] > 0


@pytest.mark.parametrize("bits", [0, 1, 5, 16, True, "4"])
def test_bad_weight_bits(bits):
    with pytest.raises(ValueError, match=re.escape(f"weight_bits must be one of 2, 3, 4, 8, "
                                                   f"not {bits!r}")):
        weight_range(bits)


# -- multipliers and activations -----------------------------------------------------------


def test_quantize_multiplier_precision():
    rng = np.random.default_rng(1)
    r = np.concatenate([10.0 ** rng.uniform(-9, 3, 500), [1.0, 0.5, 2 ** -20, 1234.5]])
    mult, shift = quantize_multiplier(r)
    assert ((mult >= 1 << 15) & (mult < 1 << 16)).all()      # maximal: top bit set
    assert ((shift >= 0) & (shift <= 63)).all()
    assert (np.abs(mult / 2.0 ** shift - r) / r <= 2.0 ** -16).all()
    assert quantize_multiplier(0.0) == (0, 0)
    m, s = quantize_multiplier(1e6)              # beyond 2^16 at shift 0: saturates
    assert (int(m), int(s)) == (65535, 0)
    m, s = quantize_multiplier(2.0 ** -70)       # below 2^-63: fewer bits of mult
    assert int(s) == 63 and int(m) == round(2.0 ** -7)
    with pytest.raises(ValueError, match="must be finite and non-negative, not -1.0"):
        quantize_multiplier(-1.0)


def test_calibrate_scale_methods():
    rng = np.random.default_rng(2)
    v = np.abs(rng.normal(size=10000))
    v[0] = 100.0                                  # one outlier
    s_max = calibrate_scale(v, 8, unsigned=True, method="max")
    assert s_max == pytest.approx(100.0 / 255)
    s_pct = calibrate_scale(v, 8, unsigned=True, method="percentile", percentile=99.0)
    assert s_pct == pytest.approx(np.percentile(v, 99.0) / 255)
    s_mse = calibrate_scale(v, 8, unsigned=True, method="mse")
    assert s_mse < s_max
    signed = calibrate_scale(np.array([-3.0, 1.0, 2.0]), 4, unsigned=False, method="max")
    assert signed == pytest.approx(3.0 / 7)
    with pytest.raises(ValueError, match="method must be one of mse, percentile, max, "
                                         "not 'minmax'"):
        calibrate_scale(v, 8, unsigned=True, method="minmax")


# -- float and integer models --------------------------------------------------------------


def _tiny_float(rng, dims=(6, 5, 3)):
    layers = []
    for i in range(len(dims) - 1):
        layers.append(FloatLayer(rng.normal(size=(dims[i], dims[i + 1])),
                                 rng.normal(size=dims[i + 1]) * 0.1, relu=i < len(dims) - 2))
    return FloatMLP(tuple(layers))


def test_float_mlp_errors_name_the_layer():
    rng = np.random.default_rng(0)
    good = _tiny_float(rng)
    a, b = good.layers
    with pytest.raises(ValueError, match=re.escape("layer 1 expects 4 input features but "
                                                   "layer 0 produces 5")):
        FloatMLP((a, FloatLayer(np.zeros((4, 3)), np.zeros(3))))
    with pytest.raises(ValueError, match=re.escape("layer 0 bias must have shape (5,), "
                                                   "not (4,)")):
        FloatMLP((FloatLayer(a.weight, np.zeros(4)), b))
    with pytest.raises(ValueError, match=re.escape("input must have shape (batch, 6), "
                                                   "not (2, 7)")):
        good.forward(np.zeros((2, 7)))


def _qlayer(w, *, out_bits=8, relu=False, unsigned=False, n=None):
    n = np.asarray(w).shape[1] if n is None else n
    return QuantLayer(weight=w, bias=np.zeros(n), mult=np.ones(n), shift=np.zeros(n),
                      relu=relu, out_bits=out_bits, out_unsigned=unsigned)


def _qmlp(layers, **kw):
    args = dict(weight_bits=4, act_bits=8, input_scale=1.0, input_unsigned=False,
                output_scale=1.0)
    args.update(kw)
    return QuantizedMLP(layers=tuple(layers), **args)


def test_quantized_mlp_errors_name_layer_value_and_range():
    w = np.zeros((3, 2), np.int64)
    bad = w.copy()
    bad[1, 0] = 9
    with pytest.raises(ValueError, match=re.escape(
            "layer 1 weight 9 at [1, 0] is out of range for 4-bit weights; allowed -8..7")):
        _qmlp([_qlayer(np.zeros((4, 3), np.int64)), _qlayer(bad)])
    with pytest.raises(ValueError, match=re.escape(
            "layer 0 weight -3 at [0, 0] is out of range for 2-bit weights; allowed -2..1")):
        _qmlp([_qlayer(np.full((2, 2), -3))], weight_bits=2)
    with pytest.raises(ValueError, match=re.escape("weight_bits must be one of 2, 3, 4, 8, "
                                                   "not 6")):
        _qmlp([_qlayer(w)], weight_bits=6)
    with pytest.raises(ValueError, match=re.escape("act_bits must be an integer from 2 to 8, "
                                                   "not 9")):
        _qmlp([_qlayer(w)], act_bits=9)
    with pytest.raises(ValueError, match=re.escape("layer 1 expects 4 input features but "
                                                   "layer 0 produces 2")):
        _qmlp([_qlayer(w), _qlayer(np.zeros((4, 2), np.int64))])
    layer = _qlayer(w)
    with pytest.raises(ValueError, match=re.escape("layer 0 mult must have shape (2,), "
                                                   "not (3,)")):
        _qmlp([QuantLayer(weight=w, bias=np.zeros(2), mult=np.ones(3), shift=np.zeros(2),
                          relu=False, out_bits=8, out_unsigned=False)])
    with pytest.raises(ValueError, match=re.escape("layer 0 shift 64 of channel 1 is out of "
                                                   "range; allowed 0..63")):
        _qmlp([QuantLayer(weight=w, bias=layer.bias, mult=layer.mult, shift=[0, 64],
                          relu=False, out_bits=8, out_unsigned=False)])
    with pytest.raises(ValueError, match=re.escape("layer 0 out_bits must be an integer from "
                                                   "2 to 8, not 1")):
        _qmlp([_qlayer(w, out_bits=1)])
    q = _qmlp([_qlayer(w)])
    with pytest.raises(ValueError, match=re.escape("input codes must be from -128 to 127, "
                                                   "not -129..0")):
        q.forward_int(np.array([[-129, 0, 0]]))


def test_forward_int_by_hand():
    """A two-layer model whose outputs are computed here digit by digit."""
    w1 = np.array([[1, -2], [3, 4], [-1, 0]])
    w2 = np.array([[2], [-3]])
    l1 = QuantLayer(weight=w1, bias=[10, -5], mult=[3, 1], shift=[2, 0], relu=True,
                    out_bits=4, out_unsigned=True)
    l2 = QuantLayer(weight=w2, bias=[1], mult=[1], shift=[1], relu=False, out_bits=8,
                    out_unsigned=False)
    q = _qmlp([l1, l2])
    x = np.array([[5, 2, -7], [-3, 1, 4]])
    # row 0: acc1 = [5+6+7, -10+8] = [18, -2]; +bias [28, -7]; *mult [84, -7];
    #   >>[2, 0] round half away: [21, -7]; relu [21, 0]; clamp 0..15 -> [15, 0]
    #   acc2 = 30; +1 = 31; >>1 -> 15.5 -> 16
    # row 1: acc1 = [-3+3-4, 6+4] = [-4, 10]; +bias [6, 5]; *mult [18, 5]; -> [4.5->5, 5]
    #   acc2 = 10 - 15 = -5; +1 = -4; >>1 -> -2
    assert q.forward_int(x).tolist() == [[16], [-2]]
    assert [o.tolist() for o in q.forward_int(x, all_layers=True)] == \
        [[[15, 0], [5, 5]], [[16], [-2]]]


def test_quantize_mlp_structure():
    rng = np.random.default_rng(5)
    fm = _tiny_float(rng)
    calib = rng.uniform(0, 1, size=(100, 6))
    q = quantize_mlp(fm, calib, weight_bits=3, act_bits=6)
    assert q.input_unsigned and q.input_range == (0, 63)
    l0, l1 = q.layers
    assert l0.relu and l0.out_unsigned and l0.out_bits == 6
    assert not l1.relu and not l1.out_unsigned and l1.out_bits == 8      # int8 output
    assert l0.weight.min() >= -4 and l0.weight.max() <= 3
    assert ((l0.mult >= 1 << 15) | (l0.mult == 0)).all()
    # bias = round(b / (s_in * s_w)), requant = s_in * s_w / s_out
    assert np.array_equal(l0.bias, np.round(fm.layers[0].bias / (q.input_scale * l0.w_scale)))
    real = l0.mult / 2.0 ** l0.shift
    assert np.allclose(real, q.input_scale * l0.w_scale / l0.out_scale, rtol=2 ** -15)
    assert l1.in_scale == l0.out_scale and q.output_scale == l1.out_scale
    signed = quantize_mlp(fm, calib - 0.5, weight_bits=3, act_bits=6)
    assert not signed.input_unsigned and signed.input_range == (-32, 31)
    with pytest.raises(ValueError, match="act_clip must be one of mse, percentile, max, "
                                         "not 'p99'"):
        quantize_mlp(fm, calib, act_clip="p99")
    with pytest.raises(ValueError, match="weight_bits must be one of 2, 3, 4, 8, not 7"):
        quantize_mlp(fm, calib, weight_bits=7)


def test_dead_channel_bias_fits_int32():
    """A channel of ~0 weights with a real bias must not overflow the int32 bias."""
    rng = np.random.default_rng(9)
    w = rng.normal(size=(4, 3))
    w[:, 1] = 1e-12
    fm = FloatMLP((FloatLayer(w, np.array([0.1, -0.3, 0.2]), relu=False),))
    q = quantize_mlp(fm, rng.normal(size=(50, 4)), weight_bits=4)
    assert abs(int(q.layers[0].bias[1])) < 1 << 31
    assert (q.layers[0].weight[:, 1] == 0).all()


# -- digits ---------------------------------------------------------------------------------


def test_digits_float_accuracy_and_split(digits):
    assert digits.accuracy >= 0.95
    assert digits.x_train.shape == (1347, 64) and digits.x_test.shape == (450, 64)
    assert digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    shapes = [ly.weight.shape for ly in digits.model.layers]
    assert shapes == [(64, 64), (64, 32), (32, 10)]
    assert [ly.relu for ly in digits.model.layers] == [True, True, False]


def test_digits_training_is_deterministic(digits):
    again = train_digits_mlp()
    assert again.accuracy == digits.accuracy
    for a, b in zip(again.model.layers, digits.model.layers, strict=True):
        assert np.array_equal(a.weight, b.weight)
    assert np.array_equal(again.y_test, digits.y_test)


@pytest.mark.parametrize("wb,ab,min_acc", [(8, 8, 0.95), (4, 8, 0.94), (3, 8, 0.94),
                                            (2, 8, 0.90), (4, 4, 0.94)])
def test_digits_quantized_accuracy(digits, wb, ab, min_acc):
    q = quantize_mlp(digits.model, digits.x_train, weight_bits=wb, act_bits=ab)
    logits = q.predict(digits.x_test)
    acc = float((logits.argmax(axis=1) == digits.y_test).mean())
    assert acc >= min_acc, acc
    xq = q.quantize_input(digits.x_test)
    assert xq.min() >= 0 and xq.max() <= (1 << ab) - 1
    y = q.forward_int(xq)
    assert y.min() >= -128 and y.max() <= 127
    # the dequantized logits track the float model's
    ref = digits.model.forward(digits.x_test)
    agree = (logits.argmax(axis=1) == ref.argmax(axis=1)).mean()
    assert agree >= min_acc
