"""``lowbit profile``: per-layer rows and the unit timeline agree with the cycle simulator."""

import json

import numpy as np

from lowbit.cli import main
from lowbit.compiler import FloatLayer, FloatMLP, compile_mlp, quantize_mlp
from lowbit.config import PRESETS
from lowbit.isa import Opcode
from lowbit.profile import profile_program
from lowbit.sim.cycle import simulate_timing


def _mlp_program():
    rng = np.random.default_rng(0)
    layers = [FloatLayer(rng.normal(0, 0.3, (12, 20)), rng.normal(0, 0.1, 20)),
              FloatLayer(rng.normal(0, 0.3, (20, 7)), rng.normal(0, 0.1, 7), relu=False)]
    cfg = PRESETS["tiny"]
    qm = quantize_mlp(FloatMLP(layers), rng.normal(0, 1, (32, 12)), weight_bits=4)
    return compile_mlp(qm, cfg, batch=9)


def test_profile_matches_simulator():
    prog = _mlp_program()
    report = profile_program(prog, mem_latency=20)
    cycles, counters = simulate_timing(prog, mem_latency=20)
    assert report["total"]["cycles"] == cycles
    assert len(report["layers"]) == 2
    assert sum(r["instrs"] for r in report["layers"]) == len(prog.instrs) - 1
    compute = [e for e in report["events"] if e["unit"] == "compute"]
    rows = [i.rows for i in prog.instrs if i.opcode == Opcode.COMPUTE]
    assert sum(e["end"] - e["start"] + 1 for e in compute) >= sum(rows)
    assert sum(r["bytes_moved"] for r in report["layers"]) == report["total"]["bytes_moved"]
    assert report["total"]["bytes_moved"] == \
        counters["dram_read_bytes"] + counters["dram_write_bytes"]
    for r in report["layers"]:
        assert 0 < r["utilization"] <= 1 and r["span"] <= cycles


def test_profile_cli_writes_plots_and_json(tmp_path, capsys):
    path = tmp_path / "mlp.lbp"
    _mlp_program().save(path)
    out = tmp_path / "prof"
    assert main(["profile", str(path), "--out", str(out)]) == 0
    first = (out / "profile.json").read_bytes()
    assert (out / "layers.png").stat().st_size > 1000
    assert (out / "timeline.png").stat().st_size > 1000
    assert main(["profile", str(path), "--out", str(out)]) == 0
    assert (out / "profile.json").read_bytes() == first
    assert json.loads(first)["total"]["cycles"] > 0
    assert main(["profile"]) == 2
    assert "give either a program file or --zoo MODEL" in capsys.readouterr().err
