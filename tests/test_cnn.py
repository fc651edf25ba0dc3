"""The digits CNN (lowbit.compiler.cnn): numpy training checked against finite differences,
post-training quantization (uniform and mixed precision, min/max vs MSE clipping and bias
correction), and the quantized graph on the reference and cycle-simulator executors,
bit-exact against the graph's numpy model (so the accuracies are identical)."""

import re

import numpy as np
import pytest

from lowbit.compiler import compile_network
from lowbit.compiler.cnn import (
    CNN_VARIANTS,
    FloatCNN,
    _gradients,
    accelerator_logits,
    quantize_cnn,
    train_digits_cnn,
)
from lowbit.config import AccelConfig

EPOCHS = 8          # enough for >= 0.97 float accuracy, ~3 s


@pytest.fixture(scope="module")
def data():
    return train_digits_cnn(epochs=EPOCHS)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    model = FloatCNN(conv1_w=rng.normal(0, 0.5, (3, 3, 1, 3)), conv1_b=rng.normal(0, .1, 3),
                     conv2_w=rng.normal(0, 0.3, (3, 3, 3, 2)), conv2_b=rng.normal(0, .1, 2),
                     fc_w=rng.normal(0, 0.3, (8, 10)), fc_b=rng.normal(0, .1, 10))
    x = rng.uniform(0, 1, (4, 8, 8, 1))
    y = rng.integers(0, 10, 4)

    def loss(m):
        z = m.forward(x)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(4), y]))

    grads = _gradients(model, x, y)
    for key, value in model.params().items():
        for idx in list(np.ndindex(value.shape))[:: max(1, value.size // 7)]:
            plus, minus = value.copy(), value.copy()
            plus[idx] += 1e-6
            minus[idx] -= 1e-6
            num = (loss(FloatCNN(**{**model.params(), key: plus}))
                   - loss(FloatCNN(**{**model.params(), key: minus}))) / 2e-6
            assert grads[key][idx] == pytest.approx(num, abs=1e-6, rel=1e-4), (key, idx)


def test_float_accuracy_and_determinism(data):
    assert data.accuracy >= 0.95
    assert data.x_train.shape[1:] == (8, 8, 1) and len(data.x_test) == 450
    again = train_digits_cnn(epochs=1)
    assert np.array_equal(again.model.fc_w, train_digits_cnn(epochs=1).model.fc_w)


def test_ptq_accuracy(data):
    accs = {}
    for method, bc in (("minmax", False), ("mse", False), ("mse", True)):
        for v in CNN_VARIANTS:
            q = quantize_cnn(data.model, data.x_train[:400], weight_bits=v.weight_bits,
                             act_bits=v.act_bits, method=method, bias_correction=bc)
            accs[v.name, method, bc] = float((q.predict(data.x_test) == data.y_test).mean())
    best = {v.name: accs[v.name, "mse", True] for v in CNN_VARIANTS}
    assert best["W8A8"] >= data.accuracy - 0.01
    assert best["W4A8"] >= data.accuracy - 0.02 and best["W4A4"] >= data.accuracy - 0.03
    assert best["W2A8"] >= 0.9
    # MSE clipping with bias correction beats min/max where rounding noise dominates (2 bits)
    assert accs["W2A8", "mse", True] > accs["W2A8", "minmax", False] + 0.1
    # mixed precision (first and last layer W8) beats uniform W2
    assert best["W8-2-8 A8"] >= best["W2A8"]


def test_mixed_precision_graph(data):
    q = quantize_cnn(data.model, data.x_train[:200], weight_bits=(8, 2, 8), act_bits=4)
    g = q.graph
    assert g.weight_bits == 8 and q.weight_bits == (8, 2, 8)
    w = {op.name: op.weight for op in g.ops if hasattr(op, "weight")}
    assert w["conv2"].min() >= -2 and w["conv2"].max() <= 1
    assert w["conv1"].max() > 64 or w["conv1"].min() < -64
    assert g.tensor("image").bits == 4 and not g.tensor("image").signed
    assert g.tensor("conv1").bits == 4 and g.tensor("logits").bits == 8
    assert [op.kind for op in g.ops] == ["conv", "maxpool", "conv", "maxpool", "flatten",
                                         "linear"]


def test_errors(data):
    with pytest.raises(ValueError, match=re.escape("method must be 'mse' or 'minmax', not "
                                                   "'pct'")):
        quantize_cnn(data.model, data.x_train[:10], method="pct")
    with pytest.raises(ValueError, match=re.escape("weight_bits must be one width or one per "
                                                   "layer (conv1, conv2, fc), not (8, 2)")):
        quantize_cnn(data.model, data.x_train[:10], weight_bits=(8, 2))
    with pytest.raises(ValueError, match=re.escape("epochs must be a positive integer, not 0")):
        train_digits_cnn(epochs=0)


@pytest.mark.parametrize("name", ["W4A4", "W8-2-8 A8", "W3A8"])
def test_accelerator_accuracy_equals_quantized(data, name):
    """On the 16x16 array with the variant's widest weight width: the reference and cycle
    simulator logits equal the graph's numpy model image for image."""
    v = next(v for v in CNN_VARIANTS if v.name == name)
    q = quantize_cnn(data.model, data.x_train[:400], weight_bits=v.weight_bits,
                     act_bits=v.act_bits)
    cfg = AccelConfig(weight_bits=max(v.weight_bits))
    prog = compile_network(q.graph, cfg)
    xq = q.quantize_input(data.x_test[:24])
    want = q.forward_int(xq)
    ref, _ = accelerator_logits(prog, xq, backend="reference")
    sim, results = accelerator_logits(prog, xq, backend="sim")
    assert np.array_equal(ref, want) and np.array_equal(sim, want)
    assert len({r.cycles for r in results}) == 1 and results[0].cycles > 0
    acc = float((sim.argmax(axis=1) == data.y_test[:24]).mean())
    assert acc == float((want.argmax(axis=1) == data.y_test[:24]).mean()) >= 0.8


def test_demo_cnn_table(tmp_path):
    """``lowbit demo``'s CNN section (quick mode): every variant compiled, bit-exact on
    reference and sim, the programs written, the table logged."""
    from lowbit.demo import _cnn_table, _log_cnn_table
    from lowbit.program import Program

    cfg = AccelConfig()
    lines = []
    report, files, timing = _cnn_table(cfg, ["reference", "sim"], quick=True, seed=0,
                                       mem_latency=20, out=tmp_path, log=lines.append)
    assert [v["name"] for v in report["variants"]] == [v.name for v in CNN_VARIANTS]
    for v in report["variants"]:
        assert v["accel_accuracy"] == v["quant_accuracy"] > 0.5
        assert v["bit_exact"] == {"reference": True, "sim": True}
        assert v["cycles_per_image"] > 0 and v["config"].startswith("16x16")
        prog = Program.load(tmp_path / v["program"])
        assert prog.config.weight_bits == max(v["weight_bits"])
    assert sorted(files) == sorted(p.name for p in tmp_path.iterdir())
    assert set(timing["variants"]) == {v.name for v in CNN_VARIANTS}
    _log_cnn_table(report, cfg, lines.append)
    table = "\n".join(lines).splitlines()
    assert any(line.startswith("W8-2-8 A8") and "8/2/8" in line for line in table)
