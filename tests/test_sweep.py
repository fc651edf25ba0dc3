"""Design-space sweeps: spec parsing and errors, a small sweep against independent numbers
and a brute-force Pareto front, resumption after SIGKILL, and the Dask path on a real
``distributed.LocalCluster`` giving the local path's results byte for byte."""

import contextlib
import csv
import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lowbit.cli import main
from lowbit.config import AccelConfig, preset
from lowbit.sweep import (
    STORE_NAME,
    Store,
    SweepSpecError,
    analytic_resources,
    load_spec,
    pareto_front,
    parse_spec,
    run_sweep,
)
from lowbit.sweep.worker import DELAY_ENV

# Three array sizes (3x3 is invalid), two weight widths: 6 configs, 4 valid; two workloads.
SMALL_SPEC = """
base = "tiny"
mem_latency = 20

[vary]
"rows,cols" = [[4, 4], [3, 3], [8, 8]]
weight_bits = [2, 4]

[[workload]]
kind = "gemm"
shape = [16, 32, 24]
seed = 3

[[workload]]
kind = "mlp"
name = "digits"
hidden = [32]
train_iters = 30
batch = 16
"""
N_POINTS, N_VALID = 12, 8
OUTPUTS = ("points.csv", "points.json", "summary.txt", "pareto_latency_luts.png",
           "pareto_latency_accuracy.png")


def write_spec(folder: Path, text: str = SMALL_SPEC, name: str = "small.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def spec_of(text: str, base_dir=".") -> object:
    import tomllib

    return parse_spec(tomllib.loads(text), base_dir=base_dir)


GEMM = '\n[[workload]]\nkind = "gemm"\nshape = [4, 4, 4]\n'


# -- spec parsing ---------------------------------------------------------------------------

def test_spec_axes_ranges_and_points():
    spec = spec_of("""
base = {preset = "tiny", clock_mhz = 50}
[vary]
"rows,cols" = [[4, 4], [3, 3]]
bus_bits = {start = 32, stop = 128, mul = 2}
clock_mhz = {start = 50, stop = 100, step = 25}
""" + GEMM)
    assert spec.base == preset("tiny").replace(clock_mhz=50)
    assert [a.label for a in spec.axes] == ["rows,cols", "bus_bits", "clock_mhz"]
    assert spec.axes[1].values == ((32,), (64,), (128,))
    assert spec.axes[2].values == ((50,), (75,), (100,))
    assert spec.n_configs == 18 and spec.n_points == 18
    points = spec.points()
    assert [p.index for p in points] == list(range(18))
    assert points[0].params == {"rows": 4, "cols": 4, "bus_bits": 32, "clock_mhz": 50}
    invalid = [p for p in points if not p.valid]
    assert len(invalid) == 9
    assert invalid[0].error == "rows must be a power of two from 2 to 64, not 3"
    # Keys are stable (the same points from a spec written differently) and distinct.
    again = spec_of("""
base = {preset = "tiny", clock_mhz = 50}
[vary]
"rows,cols" = [[4, 4], [3, 3]]
bus_bits = [32, 64, 128]
clock_mhz = [50, 75, 100]
""" + GEMM).points()
    assert [p.key for p in again] == [p.key for p in points]
    assert len({p.key for p in points}) == 18


def test_point_keys_follow_the_code(monkeypatch):
    """Stored results are reused only while the sources that compute them are unchanged."""
    import lowbit.sweep.spec as spec_module

    text = "[vary]\nweight_bits = [2, 4]" + GEMM
    assert len(spec_module.code_digest()) == 16
    monkeypatch.setattr(spec_module, "code_digest", lambda: "old")
    old = spec_of(text).points()
    monkeypatch.setattr(spec_module, "code_digest", lambda: "new")
    new = spec_of(text).points()
    assert all(a.key != b.key and a.design != b.design for a, b in zip(old, new, strict=True))
    monkeypatch.setattr(spec_module, "code_digest", lambda: "old")
    assert [p.key for p in spec_of(text).points()] == [p.key for p in old]


def test_spec_workloads_and_defaults(tmp_path):
    from lowbit.compiler import compile_gemm

    prog = compile_gemm(preset("tiny"), a_shape=(8, 8), weights=np.ones((8, 4), np.int64))
    prog.save(tmp_path / "g.lbp")
    spec = spec_of("""
[[workload]]
kind = "mlp"
[[workload]]
kind = "gemm"
shape = [8, 16, 8]
relu = true
[[workload]]
kind = "program"
path = "g.lbp"
""", base_dir=tmp_path)
    assert spec.base == preset("default") and spec.resources == "analytic"
    assert spec.boards == (None,) and spec.mem_latency == 20 and spec.n_points == 3
    mlp, gemm, program = spec.workloads
    assert (mlp.name, mlp.hidden, mlp.batch, mlp.train_iters) == ("mlp-64-32", (64, 32), 64, 300)
    assert (gemm.name, gemm.shape, gemm.relu) == ("gemm-8x16x8", (8, 16, 8), True)
    assert program.name == "prog-g" and len(program.sha256) == 64


@pytest.mark.parametrize("text, message", [
    ("foo = 1" + GEMM,
     "unknown spec key 'foo' = 1; allowed keys are base, boards, mem_latency, resources, "
     "vary, workload"),
    ('base = "huge"' + GEMM,
     "base: config must be a preset (16x16, 8x8, default, tiny) or a .json/.toml file, "
     "not 'huge'"),
    ("base = 3" + GEMM,
     "base must be a preset (16x16, 8x8, default, tiny), a .json/.toml config file or a "
     "table of config fields, not 3"),
    ('base = {preset = "tiny", rowz = 4}' + GEMM,
     "unknown config field base.rowz = 4; allowed fields are preset, rows, cols,"),
    ("base = {rows = 5, cols = 5}" + GEMM,
     "base: rows must be a power of two from 2 to 64, not 5"),
    ("[vary]\nrowz = [4]" + GEMM, "vary.rowz: unknown config field 'rowz'; allowed fields are"),
    ('[vary]\nrows = "abc"' + GEMM,
     "vary.rows must be a list of values or a table {start, stop, step} or {start, stop, "
     "mul}, not 'abc'"),
    ("[vary]\nrows = []" + GEMM, "vary.rows must be a non-empty list, not []"),
    ("[vary]\nrows = [4, 8, 4]" + GEMM, "vary.rows lists 4 twice; each value must appear once"),
    ("[vary]\nbus_bits = {start = 32, stop = 16, mul = 2}" + GEMM,
     "vary.bus_bits.stop must be at least start (32), not 16"),
    ("[vary]\nbus_bits = {start = 32, stop = 64}" + GEMM,
     'vary.bus_bits must be a table {start, stop, step} or {start, stop, mul}, not '
     '{"start": 32, "stop": 64}'),
    ("[vary]\nbus_bits = {start = 32, stop = 64, by = 2}" + GEMM,
     "vary.bus_bits has unknown range key 'by'"),
    ("[vary]\nbus_bits = {start = 32, stop = 64, step = 0}" + GEMM,
     "vary.bus_bits.step must be a positive number, not 0"),
    ('[vary]\n"rows,cols" = [[4, 4], [8]]' + GEMM,
     'vary."rows,cols" must be a list of 2 values [rows, cols] in each entry, not [8]'),
    ('[vary]\n"rows,cols" = [[4, 4]]\nrows = [8]' + GEMM,
     "vary.rows: field 'rows' is varied twice"),
    ("", "workload is missing; add at least one [[workload]] table with kind = one of mlp, "
         "gemm, program"),
    ('[[workload]]\nkind = "conv"', "workload[0].kind must be one of mlp, gemm, program, "
                                   "zoo, onnx, not 'conv'"),
    ('[[workload]]\nkind = "gemm"\nshape = [4, 4]',
     "workload[0].shape must be [M, K, N] with integers from 1 to 65536, not [4, 4]"),
    ('[[workload]]\nkind = "gemm"\nshape = [4, 4, 4]\nbatch = 2',
     "unknown key workload[0].batch = 2; a gemm workload allows kind, name, shape, seed, "
     "relu, act_unsigned"),
    ('[[workload]]\nkind = "mlp"\nbatch = 0',
     "workload[0].batch must be an integer from 1 to 450, not 0"),
    ('[[workload]]\nkind = "mlp"\nact_bits = 9',
     "workload[0].act_bits must be an integer from 2 to 8, not 9"),
    ('[[workload]]\nkind = "program"\npath = "nope.lbp"',
     "workload[0].path must be an existing program file (.lbp), not 'nope.lbp'"),
    (GEMM + GEMM, "workload[1].name 'gemm-4x4x4' is used twice; workload names must be unique"),
    ('resources = "pnr"' + GEMM, "resources = 'pnr' needs boards = [...] naming at least "
                                 "one board"),
    ('resources = "magic"' + GEMM, "resources must be one of analytic, pnr or "
                                   "'package.module:function', not 'magic'"),
    ('resources = "os:nothing"' + GEMM, "resources = 'os:nothing': 'os' has no function "
                                        "'nothing'"),
    ("boards = [1]" + GEMM, "boards must be a non-empty list of board names, not [1]"),
    ("mem_latency = 0" + GEMM, "mem_latency must be an integer from 1 to 1000, not 0"),
])
def test_spec_errors(text, message):
    with pytest.raises(SweepSpecError) as info:
        spec_of(text)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_cli_bad_spec_is_one_line_error(tmp_path, capsys):
    spec = write_spec(tmp_path, "[vary]\nweight_bits = {start = 2}" + GEMM, "bad.toml")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lowbit: error: vary.weight_bits must be a table {start, stop, step} or "
                   '{start, stop, mul}, not {"start": 2}']
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lowbit: error: sweep spec {str(tmp_path / 'missing.toml')!r} does not exist"
    write_spec(tmp_path, "[[workload]]\nkind = 'gemm'\nshape = [4, 4, 4]\n[x", "broken.toml")
    assert main(["sweep", str(tmp_path / "broken.toml")]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


# -- Pareto fronts ----------------------------------------------------------------------------

def brute_force_front(values):
    def dominates(b, a):
        return all(x <= y for x, y in zip(b, a, strict=True)) and tuple(b) != tuple(a)
    return [i for i, a in enumerate(values) if not any(dominates(b, a) for b in values)]


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        # Small integer grids make ties and duplicates common.
        values = [tuple(int(v) for v in rng.integers(0, 6, size=2)) for _ in range(n)]
        assert pareto_front(values) == brute_force_front(values), values
    values = [tuple(rng.integers(0, 4, size=3)) for _ in range(40)]
    assert pareto_front(values) == brute_force_front(values)
    assert pareto_front([(1, 5), (2, 4), (2, 6), (3, 4), (1, 5)]) == [0, 1, 4]


# -- analytic resources -----------------------------------------------------------------------

def test_analytic_resources():
    base = preset("default")
    res = analytic_resources(base)
    assert res.source == "analytic" and res.fmax_mhz is None
    assert min(res.lut, res.ff, res.dsp, res.bram, res.bram_bits) > 0
    # Memory bits are exactly what the generator instantiates: activation, weight and
    # parameter scratchpads, and two copies of the accumulator memory.
    assert res.bram_bits == (4096 * 128 + 32 * 8 * 128 + 64 * 1024 + 2 * 1024 * 512)
    # 18-Kbit blocks: 4096x128 -> 2 x 15 (2048x9), 256x128 -> 4 (512x36), 64x1024 -> 29
    # (512x36), 1024x512 -> 29 (1024x18), twice.
    assert res.bram == 30 + 4 + 29 + 2 * 29
    # Monotone in the array size and the weight width; DSPs follow the columns.
    grow = [analytic_resources(base.replace(rows=n, cols=n)) for n in (4, 8, 16, 32)]
    assert all(a.lut < b.lut and a.ff < b.ff for a, b in itertools.pairwise(grow))
    assert [g.dsp for g in grow] == [8, 16, 32, 64]
    widths = [analytic_resources(base.replace(weight_bits=b)).lut for b in (2, 3, 4, 8)]
    assert widths == sorted(widths) and len(set(widths)) == 4
    # Fewer depthwise FIR taps, fewer adders and registers; none without the FIR mode.
    taps = [analytic_resources(base.replace(dw_taps=t)) for t in (0, 3, 9, 16)]
    assert all(a.lut < b.lut and a.ff < b.ff for a, b in itertools.pairwise(taps))


# -- a small sweep ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small sweep run once, uninterrupted, on two local processes."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = write_spec(folder)
    out = folder / "out"
    result = run_sweep(spec, out, workers=2, progress=False, log=lambda s: None)
    return dict(spec=spec, out=out, result=result,
                files={name: (out / name).read_bytes() for name in OUTPUTS[:3]})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_small_sweep_outputs(small):
    out, result = small["out"], small["result"]
    assert result.stats == {"points": N_POINTS, "invalid": 4, "cached": 0, "computed": N_VALID,
                            "crashed": 0}
    assert sorted(result.files) == sorted(OUTPUTS)
    for name in OUTPUTS:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, STORE_NAME])

    rows = read_csv(out / "points.csv")
    assert len(rows) == N_POINTS
    # Sorted by workload (spec order), then cartesian order.
    assert [r["workload"] for r in rows] == ["gemm-16x32x24"] * 6 + ["digits"] * 6
    assert [(r["rows"], r["weight_bits"]) for r in rows[:6]] == [
        ("4", "2"), ("4", "4"), ("3", "2"), ("3", "4"), ("8", "2"), ("8", "4")]
    invalid = [r for r in rows if r["status"] == "invalid"]
    assert len(invalid) == 4
    assert {r["error"] for r in invalid} == {"rows must be a power of two from 2 to 64, not 3"}
    assert all(r["cycles"] == "" and r["config"] == "" for r in invalid)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == N_VALID
    for r in ok:
        cycles, clock = int(r["cycles"]), float(r["clock_mhz"])
        assert r["clock_source"] == "target" and clock == 100.0
        assert float(r["latency_us"]) == pytest.approx(cycles / clock)
        assert 0 < float(r["pe_utilization"]) <= 1
        assert int(r["lut"]) > 0 and r["resources"] == "analytic"
    doc = json.loads((out / "points.json").read_text())
    assert doc["counts"] == {"invalid": 4, "ok": N_VALID}
    assert [p["key"] for p in doc["points"]] == [r["key"] for r in rows]
    summary = (out / "summary.txt").read_text()
    assert summary == result.summary.replace("; computed 8, cached 0", "")
    assert "Pareto fronts per workload" in summary and "digits" in summary


def test_small_sweep_numbers_are_independent_results(small):
    """Spot checks against the compiler, the cycle simulator and the quantized model."""
    from lowbit.compiler import compile_gemm, default_requant, quantize_mlp, train_digits_mlp
    from lowbit.sim.cycle import simulate_timing

    rows = {(r["workload"], r["rows"], r["weight_bits"]): r
            for r in read_csv(small["out"] / "points.csv")}
    cfg = preset("tiny").replace(rows=8, cols=8, weight_bits=4)
    rng = np.random.default_rng(3)
    w = rng.integers(-8, 8, size=(32, 24))
    mult, shift = default_requant(w, act_unsigned=False, act_bits=8, out_bits=8,
                                  out_unsigned=False)
    prog = compile_gemm(cfg, a_shape=(16, 32), weights=w, mult=mult, shift=shift)
    cycles, counters = simulate_timing(prog, mem_latency=20)
    gemm = rows[("gemm-16x32x24", "8", "4")]
    assert int(gemm["cycles"]) == cycles and gemm["config"] == cfg.name
    assert float(gemm["pe_utilization"]) == pytest.approx(counters["macs"] / (cycles * 64),
                                                          abs=1e-6)
    assert int(gemm["lut"]) == analytic_resources(cfg).lut
    assert gemm["accuracy"] == ""

    data = train_digits_mlp((32,), 0, max_iter=30)
    for wb in (2, 4):
        qm = quantize_mlp(data.model, data.x_train, weight_bits=wb, act_bits=8)
        want = float((qm.forward_int(qm.quantize_input(data.x_test)).argmax(1)
                      == data.y_test).mean())
        for size in ("4", "8"):
            row = rows[("digits", size, str(wb))]
            assert float(row["accuracy"]) == pytest.approx(want, abs=1e-6)
            assert float(row["float_accuracy"]) == pytest.approx(data.accuracy, abs=1e-6)
            assert row["verified"] == "16"


def test_small_sweep_pareto_flags_match_brute_force(small):
    rows = read_csv(small["out"] / "points.csv")
    for workload in ("gemm-16x32x24", "digits"):
        ok = [r for r in rows if r["workload"] == workload and r["status"] == "ok"]
        lut = brute_force_front([(int(r["lut"]), float(r["latency_us"])) for r in ok])
        assert [r["pareto_lut"] == "True" for r in ok] == [i in lut for i in range(len(ok))]
        assert lut, workload
        if workload == "digits":
            acc = brute_force_front([(float(r["latency_us"]), -float(r["accuracy"]))
                                     for r in ok])
            assert [r["pareto_accuracy"] == "True" for r in ok] == \
                [i in acc for i in range(len(ok))]
            assert acc
        else:
            assert all(r["pareto_accuracy"] == "False" for r in ok)
    doc = json.loads((small["out"] / "points.json").read_text())
    front_keys = {r["key"] for r in rows if r["pareto_lut"] == "True"}
    assert {k for f in doc["pareto"].values() for k in f["lut"]} == front_keys


def test_rerun_is_all_cached_and_identical(small, tmp_path):
    result = run_sweep(small["spec"], small["out"], workers=2, progress=False,
                       log=lambda s: None)
    assert result.stats["computed"] == 0 and result.stats["cached"] == N_VALID
    for name, data in small["files"].items():
        assert (small["out"] / name).read_bytes() == data, name


# -- resumption -------------------------------------------------------------------------------

def lowbit_cmd():
    exe = Path(sys.executable).parent / "lowbit"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "lowbit.cli"]


def store_count(path: Path) -> int:
    if not path.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    except sqlite3.OperationalError:        # tables not created yet
        return 0


def test_resume_after_sigkill(small, tmp_path):
    out = tmp_path / "out"
    store_path = out / STORE_NAME
    env = dict(os.environ, **{DELAY_ENV: "0.5"})
    env.pop("LOWBIT_TRACEBACK", None)
    proc = subprocess.Popen(lowbit_cmd() + ["sweep", str(small["spec"]), "--out", str(out),
                                            "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while store_count(store_path) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no point stored in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert b"sweep [" in err          # the progress bar ran
    with Store(store_path) as store:
        before = store.point_runs()
    assert 2 <= len(before) < N_VALID
    assert set(before.values()) == {1}
    assert not list(out.glob("points.*"))   # killed before the outputs

    result = run_sweep(small["spec"], out, workers=2, progress=False, log=lambda s: None)
    assert result.stats["cached"] == len(before)
    assert result.stats["computed"] == N_VALID - len(before)
    with Store(store_path) as store:
        after = store.point_runs()
        runs = store.runs()
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(after.values()).count(2) == N_VALID - len(before)
    assert [(r["run"], r["points"], r["computed"]) for r in runs] == \
        [(1, N_POINTS, len(before)), (2, N_POINTS, N_VALID - len(before))]
    for name, data in small["files"].items():
        assert (out / name).read_bytes() == data, name


# -- Dask -------------------------------------------------------------------------------------

def test_dask_cluster_matches_local(small, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        result = run_sweep(small["spec"], tmp_path / "out", scheduler=cluster.scheduler_address,
                           progress=False, log=lambda s: None)
    assert result.stats["computed"] == N_VALID
    for name, data in small["files"].items():
        assert (tmp_path / "out" / name).read_bytes() == data, name


def test_cli_bad_scheduler_address(small, tmp_path, capsys, monkeypatch):
    import lowbit.sweep.runner

    monkeypatch.setattr(lowbit.sweep.runner, "CONNECT_TIMEOUT", "1s")
    code = main(["sweep", str(small["spec"]), "--out", str(tmp_path / "o"),
                 "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("lowbit: error: "), err
    assert "tcp://127.0.0.1:9" in err[0]


# -- programs, custom resource models, Fmax ---------------------------------------------------

def fake_pnr(cfg, *, board, work_dir):
    """A resource model for the test: 'achieves' 80 MHz on 4x4 arrays, 40 MHz otherwise."""
    return {"lut": 1000 * cfg.rows, "ff": 1, "dsp": 0, "bram": 1, "bram_bits": 1,
            "fmax_mhz": 80.0 if cfg.rows == 4 else 40.0, "source": f"fake:{board}"}


def test_program_workload_custom_resources_and_fmax(tmp_path, capsys):
    from lowbit.compiler import compile_gemm

    cfg = preset("tiny")
    prog = compile_gemm(cfg, a_shape=(8, 16), weights=np.ones((16, 8), np.int64))
    prog.save(tmp_path / "g.lbp")
    spec = write_spec(tmp_path, f"""
base = "tiny"
resources = "{__name__}:fake_pnr"
boards = ["icebreaker"]
[vary]
"rows,cols" = [[4, 4], [8, 8]]
queue_depth = [2, 4]
[[workload]]
kind = "program"
path = "g.lbp"
""", "prog.toml")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "Pareto fronts per workload" in captured.out and "latency at achieved Fmax" \
        in captured.out
    assert "sweep [" in captured.err
    rows = read_csv(tmp_path / "out" / "points.csv")
    assert [(r["rows"], r["queue_depth"], r["status"]) for r in rows] == [
        ("4", "2", "ok"), ("4", "4", "ok"), ("8", "2", "error"), ("8", "4", "error")]
    assert rows[2]["error"] == "program 'g.lbp' was compiled for rows=4; this point has rows=8"
    from lowbit.sim.cycle import simulate_timing

    for r in rows[:2]:
        depth = int(r["queue_depth"])
        want, _ = simulate_timing(dataclasses.replace(prog, config=cfg.replace(
            queue_depth=depth)), mem_latency=20)
        assert int(r["cycles"]) == want
        assert r["board"] == "icebreaker" and r["resources"] == "fake:icebreaker"
        assert r["clock_source"] == "fmax" and float(r["clock_mhz"]) == 80.0
        assert float(r["latency_us"]) == pytest.approx(want / 80.0)


def test_pnr_resources_from_a_build_report(monkeypatch, tmp_path):
    """The pnr model reads lowbit.boards' BuildReport: used counts, Fmax, cache folder."""
    boards_build = pytest.importorskip("lowbit.boards.build")
    from lowbit.boards.report import BuildReport
    from lowbit.sweep.resources import pnr_resources

    cfg = preset("tiny")
    calls = []

    def fake_build(board, config, *, out_dir):
        calls.append((board, config, out_dir))
        table = {name: {"used": used, "available": 1000, "unit": "u"}
                 for name, used in (("logic", 812), ("ffs", 640), ("dsps", 4), ("bram", 6.5))}
        return BuildReport(board=board, part="p", family="ecp5", config=config.name,
                           config_fields=config.to_dict(), top="accel", top_description="",
                           status="routed", resources=table, resource_source="nextpnr",
                           target_mhz=100.0, fmax_mhz=87.25)

    monkeypatch.setattr(boards_build, "build", fake_build)
    res = pnr_resources(cfg, board="ulx3s-85f", work_dir=tmp_path)
    assert calls == [("ulx3s-85f", cfg, tmp_path)]
    assert (res.lut, res.ff, res.dsp, res.bram, res.fmax_mhz) == (812, 640, 4, 6.5, 87.25)
    assert res.bram_bits == analytic_resources(cfg).bram_bits
    assert res.source == "pnr:ulx3s-85f:nextpnr"


def test_unknown_board_is_refused():
    from lowbit.sweep.resources import known_boards

    known = known_boards()
    if known is None:
        pytest.skip("lowbit.boards does not list its boards")
    with pytest.raises(SweepSpecError) as info:
        spec_of('boards = ["icebreaker", "nope"]' + GEMM)
    assert str(info.value) == f"boards must be one of {', '.join(sorted(known))}, not 'nope'"


def test_spec_file_base_relative_to_spec(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mine.toml").write_text(preset("tiny").replace(bus_bits=64).to_toml())
    spec = load_spec(write_spec(tmp_path, 'base = "cfg/mine.toml"' + GEMM, "s.toml"))
    assert spec.base == AccelConfig.from_toml(preset("tiny").replace(bus_bits=64).to_toml())


# -- failures, caching across specs, progress -------------------------------------------------

GEMM_SPEC = """
base = "tiny"
resources = "{resources}"
[vary]
weight_bits = {bits}
[[workload]]
kind = "gemm"
shape = [8, 16, 8]
"""


def failing_resources(cfg, *, board, work_dir):
    raise ValueError(f"no room for weight_bits={cfg.weight_bits}")


def test_crash_is_reported_not_stored_and_retried(tmp_path, capsys, monkeypatch):
    import lowbit.sweep.worker as worker

    spec = write_spec(tmp_path, GEMM_SPEC.format(resources="analytic", bits="[2, 4]"))
    real = worker._run_gemm

    def flaky(cfg, wl, mem_latency):
        if cfg.weight_bits == 4:
            raise RuntimeError("simulated bug")
        return real(cfg, wl, mem_latency)

    monkeypatch.setattr(worker, "_run_gemm", flaky)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "lowbit: 1 points crashed (not stored; rerun to retry)" in out
    assert "RuntimeError: simulated bug" in out
    rows = read_csv(tmp_path / "out" / "points.csv")
    assert [r["status"] for r in rows] == ["ok", "crash"]
    with Store(tmp_path / "out" / STORE_NAME) as store:
        assert store.count() == 1
    monkeypatch.setattr(worker, "_run_gemm", real)
    result = run_sweep(spec, tmp_path / "out", workers=1, progress=False, log=lambda s: None)
    assert (result.stats["cached"], result.stats["computed"]) == (1, 1)
    assert [r["status"] for r in result.rows] == ["ok", "ok"]


def test_failed_resources_make_errors_and_are_retried(tmp_path):
    spec = write_spec(tmp_path, GEMM_SPEC.format(resources=f"{__name__}:failing_resources",
                                                 bits="[2]"))
    result = run_sweep(spec, tmp_path / "out", workers=1, progress=False, log=lambda s: None)
    (row,) = result.rows
    assert row["status"] == "error" and row["cycles"] > 0 and row["lut"] is None
    assert row["error"] == ("resources (test_sweep:failing_resources): ValueError: no room for "
                            "weight_bits=2")
    with Store(tmp_path / "out" / STORE_NAME) as store:
        assert (store.count("points"), store.count("resources")) == (1, 0)
    again = run_sweep(spec, tmp_path / "out", workers=1, progress=False, log=lambda s: None)
    assert again.stats["computed"] == 0 and again.rows[0]["error"] == row["error"]


def test_widening_an_axis_reuses_stored_points(tmp_path):
    out = tmp_path / "out"
    narrow = write_spec(tmp_path, GEMM_SPEC.format(resources="analytic", bits="[2, 4]"), "a.toml")
    wide = write_spec(tmp_path, GEMM_SPEC.format(resources="analytic", bits="[2, 3, 4, 8]"),
                      "b.toml")
    first = run_sweep(narrow, out, workers=1, progress=False, log=lambda s: None)
    second = run_sweep(wide, out, workers=1, progress=False, log=lambda s: None)
    assert (second.stats["cached"], second.stats["computed"]) == (2, 2)
    by_bits = {r["params"]["weight_bits"]: r for r in second.rows}
    for r in first.rows:
        assert by_bits[r["params"]["weight_bits"]]["cycles"] == r["cycles"]


def test_progress_bar():
    import io

    from lowbit.sweep import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress(4, stream=tty, width=8)
    for done in range(5):
        bar.update(done, cached=1, invalid=0, failed=0)
    bar.close()
    text = tty.getvalue()
    assert text.count("\r") == 5 and text.endswith("\n")
    assert "\rsweep [########] 4/4 points (1 cached, 0 invalid, 0 failed) 00:00\n" in text
    log = io.StringIO()
    bar = Progress(100, stream=log, width=10)
    for done in range(101):
        bar.update(done, cached=0, invalid=0, failed=0)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("sweep [##########] 100/100 points")


# -- network workloads: zoo models and ONNX files ----------------------------------------------

def _sweep_rows(tmp_path, text: str, name: str) -> list[dict]:
    """Run the spec ``text`` on one worker; its points.csv rows."""
    spec = write_spec(tmp_path, text, name)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    return read_csv(tmp_path / "out" / "points.csv")


def test_zoo_workload_varies_the_depthwise_taps(tmp_path):
    """DS-CNN from the zoo on 16x16 with 16, 3 and no depthwise FIR taps: every point equals
    the graph's integer model (checked in the worker), and fewer taps cost cycles and save
    LUTs, each point's cycles those of compiling and simulating the network directly."""
    from lowbit.compiler import compile_network, pack_inputs, zoo
    from lowbit.executors import run

    rows = _sweep_rows(tmp_path, """
base = "default"
[vary]
dw_taps = [16, 3, 0]
[[workload]]
kind = "zoo"
model = "ds_cnn"
""", "zoo.toml")
    assert [(r["dw_taps"], r["status"], r["verified"]) for r in rows] == [
        ("16", "ok", "1"), ("3", "ok", "1"), ("0", "ok", "1")]
    cycles = [int(r["cycles"]) for r in rows]
    luts = [int(r["lut"]) for r in rows]
    assert cycles[0] < cycles[1] < cycles[2] and luts[0] > luts[1] > luts[2]
    for r, taps in zip(rows, (16, 3, 0), strict=True):
        cfg = preset("default").replace(dw_taps=taps)
        g = zoo.build("ds_cnn", weight_bits=cfg.weight_bits, act_bits=cfg.act_bits)
        prog = compile_network(g, cfg)
        inputs = zoo.sample_inputs(g, seed=1)
        res = run(prog, pack_inputs(prog, inputs), backend="sim", mem_latency=20)
        assert int(r["cycles"]) == res.cycles
        assert float(r["useful_utilization"]) == pytest.approx(
            g.macs() / (res.cycles * cfg.pes), abs=1e-6)


def test_onnx_workload_compiles_the_file_per_point(tmp_path):
    """A QDQ ONNX file with 4-bit weights on W4 and W8 configs (it fits both) and W2 (its
    weights do not fit: an error naming the width); outputs checked in the worker."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    wq = rng.integers(-8, 8, (24, 12)).astype(np.int8)
    nodes = [
        oh.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
        oh.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
        oh.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        oh.make_node("MatMul", ["xd", "wd"], ["m"]),
        oh.make_node("QuantizeLinear", ["m", "sy", "z"], ["yq"]),
        oh.make_node("DequantizeLinear", ["yq", "sy", "z"], ["y"]),
    ]
    inits = [nh.from_array(wq, "wq"), nh.from_array(np.float32(0.04), "ws"),
             nh.from_array(np.float32(0.02), "sx"), nh.from_array(np.float32(0.05), "sy"),
             nh.from_array(np.int8(0), "z")]
    graph = oh.make_graph(nodes, "mm", [oh.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                  [4, 24])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4, 12])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    (tmp_path / "mm.onnx").write_bytes(model.SerializeToString())
    rows = _sweep_rows(tmp_path, """
base = "tiny"
[vary]
weight_bits = [4, 8, 2]
[[workload]]
kind = "onnx"
path = "mm.onnx"
""", "onnx.toml")
    assert [(r["weight_bits"], r["status"]) for r in rows] == [
        ("4", "ok"), ("8", "ok"), ("2", "error")]
    assert rows[0]["workload"] == "onnx-mm"
    assert float(rows[0]["useful_utilization"]) == pytest.approx(
        24 * 12 / (int(rows[0]["cycles"]) * 16), abs=1e-6)
    assert rows[2]["error"] == ("node 'm' (MatMul): weights range -8..7 does not fit "
                                "weight_bits=2; supported: -2..1")


@pytest.mark.parametrize("table,message", [
    ('kind = "zoo"\nmodel = "alexnet"', "workload[0].model must be one of resnet8, ds_cnn, "
                                        "mobilenet_v1, fc_autoencoder, not 'alexnet'"),
    ('kind = "zoo"\nmodel = "ds_cnn"\nhost_im2col = 1',
     "workload[0].host_im2col must be true or false, not 1"),
    ('kind = "onnx"\npath = "none.onnx"',
     "workload[0].path must be an existing quantized ONNX or QONNX file, not 'none.onnx'"),
    ('kind = "zoo"\nmodel = "ds_cnn"\nbatch = 2',
     "unknown key workload[0].batch = 2; a zoo workload allows kind, name, model, seed, "
     "host_im2col"),
])
def test_network_workload_spec_errors(tmp_path, table, message):
    with pytest.raises(SweepSpecError) as info:
        spec_of("[[workload]]\n" + table + "\n", base_dir=tmp_path)
    assert str(info.value) == message
