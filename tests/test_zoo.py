"""The MLPerf Tiny model zoo: published shapes and counts, and compiled models on the cycle
simulator bit-exact against the graph's integer numpy model."""

import json

import numpy as np
import pytest

from lowbit.cli import main
from lowbit.compiler import compile_network, pack_inputs, unpack_outputs
from lowbit.compiler.zoo import MODELS, build, list_models, resnet8, sample_inputs
from lowbit.config import PRESETS
from lowbit.executors import run

# (MACs to the precision MLPerf Tiny states them, in millions; exact MACs; parameters)
COUNTS = {
    "resnet8": ("12.50", 12_501_632, 77_706),
    "ds_cnn": ("2.66", 2_656_768, 22_604),
    "mobilenet_v1": ("7.49", 7_489_664, 210_850),
    "fc_autoencoder": ("0.264", 264_192, 265_864),
}
SHAPES = {
    "resnet8": ([32, 32, 3], [10]),
    "ds_cnn": ([49, 10, 1], [12]),
    "mobilenet_v1": ([96, 96, 3], [2]),
    "fc_autoencoder": ([640], [640]),
}


def test_counts_and_shapes():
    rows = {r["name"]: r for r in list_models()}
    assert list(rows) == list(MODELS) == list(COUNTS)
    for name, (published, macs, params) in COUNTS.items():
        r = rows[name]
        decimals = len(published.split(".")[1])
        assert f"{r['macs'] / 1e6:.{decimals}f}" == published, name
        assert r["macs"] == macs and r["params"] == params, name
        assert r["reference_macs"] == f"{published} M"
        assert list(r["inputs"].values()) == [SHAPES[name][0]]
        assert list(r["outputs"].values()) == [SHAPES[name][1]]


def test_layer_structure():
    g = build("mobilenet_v1")
    dw = [op for op in g.ops if getattr(op, "groups", 1) > 1]
    assert len(dw) == 13 and max(op.weight.shape[3] for op in dw) == 256
    assert sum(getattr(op, "stride", (1, 1)) == (2, 2) for op in dw) == 4
    assert g.tensor(g.ops[0].dst).shape == (48, 48, 8)
    g = build("ds_cnn")
    assert g.ops[0].weight.shape == (10, 4, 1, 64) and g.ops[0].stride == (2, 2)
    assert g.tensor(g.ops[0].dst).shape == (25, 5, 64)
    g = build("resnet8")
    adds = [op for op in g.ops if op.kind == "add"]
    assert len(adds) == 3 and all(1 <= op.mul_a <= 256 and 1 <= op.mul_b <= 256
                                  for op in adds)
    assert [op.weight.shape[:2] for op in g.ops if op.kind == "conv"].count((1, 1)) == 2


def test_weights_are_seeded_and_fit_the_width():
    a, b, c = build("ds_cnn", seed=3), build("ds_cnn", seed=3), build("ds_cnn", seed=4)
    assert np.array_equal(a.ops[2].weight, b.ops[2].weight)
    assert not np.array_equal(a.ops[2].weight, c.ops[2].weight)
    for wb in (2, 4):
        g = build("resnet8", weight_bits=wb)
        lo, hi = -(1 << (wb - 1)), (1 << (wb - 1)) - 1
        ws = [op.weight for op in g.ops if hasattr(op, "weight")]
        assert min(w.min() for w in ws) == lo and max(w.max() for w in ws) == hi


def test_activations_use_their_range():
    """Calibrated scales: no layer's output is all zero or mostly saturated."""
    g = build("resnet8")
    vals = g.evaluate(sample_inputs(g, seed=5))
    for op in g.ops:
        v = vals[op.dst]
        lo, hi = g.tensor(op.dst).range
        assert v.std() > 1, op.name
        saturated = (v == hi) | ((v == lo) & g.tensor(op.dst).signed)
        assert np.sum(saturated) <= max(1, 0.02 * v.size), op.name


def _check_on_sim(g, cfg, *, seed=1, batch=1):
    prog = compile_network(g, cfg, batch=batch)
    inputs = sample_inputs(g, seed=seed, batch=batch)
    res = run(prog, pack_inputs(prog, inputs), backend="sim")
    got = unpack_outputs(prog, res.outputs)
    want = g.forward(inputs)
    for name in g.outputs:
        assert np.array_equal(got[name], want[name]), name
    return prog, res


def test_resnet8_first_residual_stack_on_tiny():
    cfg = PRESETS["tiny"]
    g = resnet8(weight_bits=cfg.weight_bits, stacks=1)
    assert g.outputs == ["s1_add"] and g.tensor("s1_add").shape == (32, 32, 16)
    prog, res = _check_on_sim(g, cfg)
    assert res.cycles > 0 and prog.meta["network"]["macs"] == g.macs()


@pytest.mark.parametrize("cfg", [PRESETS["8x8"].replace(weight_bits=4), PRESETS["16x16"]],
                         ids=["8x8-w4", "16x16"])
def test_autoencoder_on_sim(cfg):
    g = build("fc_autoencoder", weight_bits=cfg.weight_bits)
    _check_on_sim(g, cfg, batch=5)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("wb", [8, 4])
def test_zoo_on_16x16(name, wb):
    """Every model on the 16x16 preset (W8A8 and W4A8): bit-exact on the simulator, and the
    cycle count within a factor of the ideal (regression guard on the schedule)."""
    cfg = PRESETS["16x16"].replace(weight_bits=wb)
    g = build(name, weight_bits=wb)
    prog, res = _check_on_sim(g, cfg)
    ideal = g.macs() / cfg.pes
    floor = {"resnet8": 0.6, "ds_cnn": 0.15, "mobilenet_v1": 0.18, "fc_autoencoder": 0.03}
    assert ideal / res.cycles > floor[name]


def test_cli_zoo(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "resnet8" in out and "12,501,632" in out and "7,489,664" in out
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(MODELS)
    assert main(["zoo", "run", "ds_cnn", "--config", "16x16"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["outputs_match_graph"] and row["cycles"] > row["ideal_cycles"] == 10378
    assert main(["zoo", "run", "nonet"]) == 2
    assert "invalid choice: 'nonet'" in capsys.readouterr().err
