#!/usr/bin/env python3
"""Model zoo benchmark: the MLPerf Tiny networks on the cycle simulator, one JSON object per
line.

For each model of :mod:`lowbit.compiler.zoo` (seeded random weights) and each config
(default: the ``16x16`` preset at W8A8 and at W4A8, ``PRESETS["16x16"].replace(weight_bits=4)``),
compiles the network (:func:`lowbit.compiler.compile_network`), runs it on the cycle
simulator, checks the outputs against the graph's integer numpy model and prints::

    {"model": ..., "config": "16x16-w8a8", "config_name": ..., "host_im2col": true,
     "instructions": ..., "macs": model MACs, "cycles": sim cycles,
     "ideal_cycles": ceil(macs / (R*C)), "utilization": ideal_cycles / cycles,
     "latency_us": cycles at the config's clock (100 MHz), "compile_seconds": ...,
     "sim_seconds": ..., "outputs_match": ...}

``compile_seconds`` and ``sim_seconds`` are wall times of ``compile_network`` and of
:func:`lowbit.executors.run` (``backend="sim"``: timing plus the functional interpreter).
``--no-im2col`` runs the first convolution on the padded image instead of the host-unfolded
input. Exit status 1 if any output differs from the graph model.

Usage: ``python benchmarks/zoo.py [--models resnet8 ds_cnn] [--weight-bits 8 4]
[--no-im2col] [--mem-latency N]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from lowbit.compiler import compile_network, pack_inputs, unpack_outputs
from lowbit.compiler.zoo import MODELS, build, sample_inputs
from lowbit.config import PRESETS
from lowbit.executors import DEFAULT_MEM_LATENCY, run


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench(model: str, weight_bits: int, *, host_im2col: bool, mem_latency: int,
          seed: int = 0) -> dict:
    cfg = PRESETS["16x16"].replace(weight_bits=weight_bits)
    g = build(model, weight_bits=cfg.weight_bits, act_bits=cfg.act_bits,
              acc_bits=cfg.acc_bits, seed=seed)
    t0 = time.perf_counter()
    program = compile_network(g, cfg, host_im2col=host_im2col)
    compile_seconds = time.perf_counter() - t0
    inputs = sample_inputs(g, seed=seed + 1)
    res = run(program, pack_inputs(program, inputs), backend="sim", mem_latency=mem_latency)
    got = unpack_outputs(program, res.outputs)
    want = g.forward(inputs)
    macs = g.macs()
    ideal = math.ceil(macs / cfg.pes)
    return {
        "model": model, "config": f"16x16-w{cfg.weight_bits}a{cfg.act_bits}",
        "config_name": cfg.name, "host_im2col": host_im2col,
        "instructions": len(program.instrs), "macs": macs, "cycles": res.cycles,
        "ideal_cycles": ideal, "utilization": round(ideal / res.cycles, 4),
        "latency_us": round(res.cycles / cfg.clock_mhz, 1),
        "compile_seconds": round(compile_seconds, 3), "sim_seconds": round(res.seconds, 3),
        "outputs_match": all(np.array_equal(got[k], want[k]) for k in want),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                        metavar="MODEL")
    parser.add_argument("--weight-bits", nargs="+", type=int, default=[8, 4], metavar="B")
    parser.add_argument("--no-im2col", action="store_true",
                        help="the first convolution reads the padded image")
    parser.add_argument("--mem-latency", type=int, default=DEFAULT_MEM_LATENCY)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ok = True
    for wb in args.weight_bits:
        for model in args.models:
            log(f"{model} on 16x16 W{wb}A8 ...")
            row = bench(model, wb, host_im2col=not args.no_im2col,
                        mem_latency=args.mem_latency, seed=args.seed)
            ok &= row["outputs_match"]
            print(json.dumps(row), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
