#!/usr/bin/env python3
"""Where the logic goes: a per-block LUT4/FF/DSP/BRAM breakdown of the accelerator on ECP5.

Runs YoWASP yosys ``synth_ecp5 -noflatten`` on the same build top and DSP plan as
``lowbit build --board ulx3s-85f`` (the scan wrapper around ``Top(cfg)``), then sums the
per-module ``stat`` over blocks: the PE array (PEs, skew and de-skew registers), the compute
unit's own logic (weight chain, activation feed, scaling, read-modify-write), the store unit,
the load unit, the frontend, CSRs, instruction queues, the memories and the wrapper. Without
flattening, logic cannot be optimized across module boundaries, so the total is a little
above a flattened synthesis; the split is what this is for.

Usage: ``python benchmarks/area.py --rows 16 --weight-bits 4 [--dsp auto|on|off]
[--out DIR] [--json]``. One yosys run (about 10 minutes at 16x16 on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

from lowbit.boards.build import NAME, SOFTMUL, _plan_dsps, _run, _synth_script
from lowbit.boards.targets import get_board
from lowbit.boards.wrapper import make_top
from lowbit.config import AccelConfig

#: Logic cells counted as LUT4 (as nextpnr does: a CCU2C is two LUT4, a PFUMX/L6MUX21 none,
#: a TRELLIS_DPR16X4 LUT RAM takes two LUT4 slots plus one for its write logic).
LUT_WEIGHT = {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 3}


def block_of(module: str) -> str:
    """The block a module belongs to: ``lowbit_build.accel.compute.array.pe_3_4`` ->
    ``array.pe``; ``lowbit_build.accel.store`` -> ``store``."""
    parts = module.split(".")[1:]
    if not parts:
        return "wrapper"
    if parts[0] != "accel":
        return "wrapper"
    parts = parts[1:]
    if not parts:
        return "top (tokens, idle, acc memory)"
    if parts[:2] == ["compute", "array"]:
        if len(parts) == 2:
            return "array (skew, de-skew)"
        return "array PEs"
    if parts[0].startswith("q_"):
        return "instruction queues"
    if parts[0] in ("act", "wgt", "prm"):
        return f"linemem {parts[0]}"
    return parts[0]


def breakdown(stat: dict) -> dict[str, dict[str, int]]:
    blocks: dict[str, dict[str, int]] = {}
    for module, info in stat["modules"].items():
        name = module.lstrip("\\")
        cells = info.get("num_cells_by_type", {})
        b = blocks.setdefault(block_of(name), {"lut4": 0, "ff": 0, "dsp": 0, "bram": 0,
                                               "lutram": 0, "mux": 0, "modules": 0})
        b["modules"] += 1
        b["lut4"] += sum(n * LUT_WEIGHT.get(t, 0) for t, n in cells.items())
        b["ff"] += cells.get("TRELLIS_FF", 0)
        b["dsp"] += cells.get("MULT18X18D", 0)
        b["bram"] += cells.get("DP16KD", 0)
        b["lutram"] += cells.get("TRELLIS_DPR16X4", 0)
        b["mux"] += cells.get("PFUMX", 0) + cells.get("L6MUX21", 0)
    return blocks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--weight-bits", type=int, default=4)
    ap.add_argument("--dsp", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--out", default="lowbit-out/area")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = AccelConfig(rows=args.rows, cols=args.rows, weight_bits=args.weight_bits,
                      act_bits=8, bus_bits=max(32, 8 * args.rows))
    board = get_board("ulx3s-85f")
    bdir = Path(args.out) / f"{cfg.name}-{args.dsp}"
    bdir.mkdir(parents=True, exist_ok=True)
    elab, _ = make_top("accel", cfg, board_clock_hz=board.clock_mhz * 1e6)
    board.platform_cls()().build(elab, name=NAME, do_build=False).extract(bdir)
    plan = _plan_dsps(board, (bdir / f"{NAME}.il").read_text(), args.dsp)
    script = _synth_script(board, plan).replace(f"synth_ecp5 -top {NAME}",
                                                f"synth_ecp5 -noflatten -top {NAME}")
    script = script.replace(f"synth_ecp5 -nodsp -top {NAME}",
                            f"synth_ecp5 -noflatten -nodsp -top {NAME}")
    script = re.sub(r"write_json .*\n", "", script)
    (bdir / "area.ys").write_text(script)
    shutil.copyfile(SOFTMUL, bdir / SOFTMUL.name)     # yosys (WASI) sees the build folder only
    t = time.monotonic()
    if _run("yosys", ["-q", "-l", "area.rpt", "area.ys"], cwd=bdir, log="yosys.log",
            timeout=7200) != 0:
        print(f"yosys failed, see {bdir / 'yosys.log'}", file=sys.stderr)
        return 1
    secs = time.monotonic() - t
    stat = json.loads((bdir / f"{NAME}.stat.json").read_text())
    blocks = breakdown(stat)
    total = {k: sum(b[k] for b in blocks.values()) for k in ("lut4", "ff", "dsp", "bram",
                                                               "lutram", "mux", "modules")}
    result = {"config": cfg.name, "dsp_mapping": plan.describe(), "yosys_seconds": round(secs),
              "total": total, "blocks": blocks}
    (bdir / "area.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"{cfg.name}  DSPs: {plan.describe()}  yosys {secs:.0f} s")
    print(f"{'block':34} {'LUT4':>7} {'FF':>7} {'DSP':>4} {'BRAM':>5} {'PFUMX+L6':>9}")
    for name, b in sorted(blocks.items(), key=lambda kv: -kv[1]["lut4"]):
        print(f"{name:34} {b['lut4']:7} {b['ff']:7} {b['dsp']:4} {b['bram']:5} {b['mux']:9}")
    print(f"{'total':34} {total['lut4']:7} {total['ff']:7} {total['dsp']:4} "
          f"{total['bram']:5} {total['mux']:9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
