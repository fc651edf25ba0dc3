#!/usr/bin/env python3
"""Full MLPerf Tiny ResNet-8 through the generated Verilog (Verilator), one JSON object.

Builds :func:`lowbit.compiler.zoo.resnet8` (seeded random weights, 32x32x3 input) for a
config (default: the ``tiny`` preset, 4x4 W4, whose Verilator build the tests share), compiles
it, runs it on the cycle simulator and on the RTL, checks both against the graph's integer
numpy model and prints::

    {"model": "resnet8", "config": ..., "stacks": 3, "instructions": ..., "macs": ...,
     "sim_cycles": ..., "rtl_cycles": ..., "cycles_match": ..., "outputs_match": ...,
     "compile_seconds": ..., "sim_seconds": ..., "rtl_seconds": ...,
     "rtl_cycles_per_second": ...}

``rtl_seconds`` is the wall time of :func:`lowbit.executors.run` with ``backend="rtl"``
(Verilator build, when not cached, included). Exit status 1 on any mismatch.

Usage: ``python benchmarks/resnet8_rtl.py [--config tiny] [--stacks 3] [--mem-latency N]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from lowbit.compiler import compile_network, pack_inputs, unpack_outputs
from lowbit.compiler.zoo import resnet8, sample_inputs
from lowbit.config import load_config
from lowbit.executors import DEFAULT_MEM_LATENCY, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", metavar="CFG")
    parser.add_argument("--stacks", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--mem-latency", type=int, default=DEFAULT_MEM_LATENCY)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    g = resnet8(weight_bits=cfg.weight_bits, act_bits=cfg.act_bits, acc_bits=cfg.acc_bits,
                seed=args.seed, stacks=args.stacks)
    t0 = time.perf_counter()
    prog = compile_network(g, cfg)
    compile_seconds = time.perf_counter() - t0
    inputs = sample_inputs(g, seed=args.seed + 1)
    want = g.forward(inputs)
    results, match = {}, True
    for backend in ("sim", "rtl"):
        print(f"resnet8 on {cfg.name}: {backend} ...", file=sys.stderr, flush=True)
        res = run(prog, pack_inputs(prog, inputs), backend=backend,
                  mem_latency=args.mem_latency)
        got = unpack_outputs(prog, res.outputs)
        match &= all(np.array_equal(got[k], want[k]) for k in want)
        results[backend] = res
    sim, rtl = results["sim"], results["rtl"]
    row = {
        "model": "resnet8", "config": cfg.name, "stacks": args.stacks,
        "instructions": len(prog.instrs), "macs": g.macs(),
        "sim_cycles": sim.cycles, "rtl_cycles": rtl.cycles,
        "cycles_match": sim.cycles == rtl.cycles, "outputs_match": match,
        "compile_seconds": round(compile_seconds, 2), "sim_seconds": round(sim.seconds, 2),
        "rtl_seconds": round(rtl.seconds, 2),
        "rtl_cycles_per_second": round(rtl.cycles / rtl.seconds) if rtl.seconds else None,
    }
    print(json.dumps(row), flush=True)
    return 0 if match and row["cycles_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
