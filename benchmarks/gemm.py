#!/usr/bin/env python3
"""GEMM benchmark: cycles, utilization and simulator speed, one JSON object per line.

For each preset (default ``8x8`` and ``16x16``) and shape ``M x K x N`` (default 64x256x128
and 256x256x256), compiles ``y = requant(x @ w)`` with seeded random int weights and inputs
(:func:`lowbit.compiler.compile_gemm`), runs it on the cycle simulator and, unless
``--no-rtl``, on the Verilator RTL, and prints::

    {"config": ..., "shape": [M, K, N], "cycles": sim cycles,
     "ideal_cycles": ceil(M*K*N / (R*C)), "utilization": ideal_cycles / cycles,
     "sim_seconds": ..., "rtl_seconds": ..., "sim_speedup": rtl_seconds / sim_seconds,
     "rtl_cycles": ..., "cycles_match": rtl_cycles == cycles, "outputs_match": ...}

``sim_seconds`` and ``rtl_seconds`` are the wall times of :func:`lowbit.executors.run`. Before
the timed RTL run, a one-tile warm-up run builds the Verilator model (or finds it in the
cache) and elaborates the Verilog (``rtl_warmup_seconds``), so ``rtl_seconds`` is simulation
plus simulator start-up. Progress goes to standard error. Exit status 1 if any RTL run disagrees.

With ``--repeat N`` each timed run is repeated N times and the fastest kept.

Usage: ``python benchmarks/gemm.py [--no-rtl] [--repeat N] [--configs 8x8 16x16]
[--shapes 64x256x128]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from lowbit.compiler import compile_gemm
from lowbit.config import load_config
from lowbit.executors import DEFAULT_MEM_LATENCY, run

DEFAULT_CONFIGS = ("8x8", "16x16")
DEFAULT_SHAPES = ((64, 256, 128), (256, 256, 256))


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be MxKxN, not {text!r}") from None
    if min(m, k, n) < 1:
        raise argparse.ArgumentTypeError(f"shape dimensions must be positive, not {text!r}")
    return m, k, n


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warm_rtl(cfg, mem_latency: int) -> float:
    """Run a one-tile GEMM on the RTL of ``cfg``: builds the Verilator model (or finds it in
    the cache) and elaborates the Verilog once per process. Returns the seconds taken."""
    w = np.zeros((cfg.rows, cfg.cols), dtype=np.int64)
    program = compile_gemm(cfg, a_shape=(1, cfg.rows), weights=w)
    t0 = time.perf_counter()
    run(program, {"x": np.zeros((1, cfg.rows), dtype=np.int64)}, backend="rtl",
        mem_latency=mem_latency)
    return time.perf_counter() - t0


def _best(repeat: int, fn):
    """The result of ``fn()`` with the shortest wall time of ``repeat`` runs."""
    return min((fn() for _ in range(max(1, repeat))), key=lambda r: r.seconds)


def bench(cfg_name: str, shape: tuple[int, int, int], *, seed: int, rtl: bool,
          mem_latency: int, repeat: int = 1) -> dict:
    cfg = load_config(cfg_name)
    m, k, n = shape
    rng = np.random.default_rng(seed)
    wb, ab = cfg.weight_bits, cfg.act_bits
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(k, n))
    x = rng.integers(-(1 << (ab - 1)), 1 << (ab - 1), size=(m, k))
    t0 = time.perf_counter()
    program = compile_gemm(cfg, a_shape=(m, k), weights=w)
    compile_seconds = time.perf_counter() - t0
    sim = _best(repeat, lambda: run(program, {"x": x}, backend="sim", mem_latency=mem_latency))
    ideal = math.ceil(m * k * n / cfg.pes)
    row = {
        "config": cfg_name, "config_name": cfg.name, "shape": [m, k, n],
        "instructions": len(program.instrs), "cycles": sim.cycles, "ideal_cycles": ideal,
        "utilization": round(ideal / sim.cycles, 4),
        "compile_seconds": round(compile_seconds, 3), "sim_seconds": round(sim.seconds, 3),
        "rtl_seconds": None, "sim_speedup": None, "rtl_cycles": None, "cycles_match": None,
    }
    if rtl:
        row["rtl_warmup_seconds"] = round(warm_rtl(cfg, mem_latency), 1)
        res = _best(repeat, lambda: run(program, {"x": x}, backend="rtl",
                                        mem_latency=mem_latency))
        row.update(rtl_seconds=round(res.seconds, 3),
                   sim_speedup=round(res.seconds / sim.seconds, 1),
                   rtl_cycles=res.cycles, cycles_match=res.cycles == sim.cycles,
                   outputs_match=bool(np.array_equal(res.outputs["y"], sim.outputs["y"])))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-rtl", action="store_true", help="skip the Verilator runs")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), metavar="CFG")
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=list(DEFAULT_SHAPES),
                        metavar="MxKxN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mem-latency", type=int, default=DEFAULT_MEM_LATENCY)
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each run this many times and keep the fastest")
    args = parser.parse_args(argv)
    ok = True
    for cfg_name in args.configs:
        for shape in args.shapes:
            log(f"gemm {'x'.join(map(str, shape))} on {cfg_name} ...")
            row = bench(cfg_name, shape, seed=args.seed, rtl=not args.no_rtl,
                        mem_latency=args.mem_latency, repeat=args.repeat)
            ok &= row["cycles_match"] is not False and row.get("outputs_match") is not False
            print(json.dumps(row), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
