#!/usr/bin/env python3
"""FPGA resources and Fmax per array size and precision, one JSON object per line.

Builds (with :func:`lowbit.boards.build`: YoWASP yosys + nextpnr, seeded, cached) each
``rows x cols`` size (default 4, 8, 16) at each precision:

* ``ulx3s-85f`` (ECP5-85F), the whole accelerator (``top="accel"``), W4A8 and W8A8;
* ``icebreaker`` (iCE40UP5K), the whole accelerator at W2A8 and W4A8 (it does not fit: the
  line records the ``BuildError``), and the PE array alone (``top="array"``), W2A8 and W4A8.

Every config is the default :class:`~lowbit.config.AccelConfig` with the array size, the
precision and a bus of ``max(32, 8 * rows)`` bits. Each line::

    {"board", "top", "config", "rows", "weight_bits", "act_bits", "dw_taps", "status", "router",
     "logic", "logic_unit", "ffs", "dsps", "dsp_unit", "bram", "bram_unit",
     "fmax_mhz", "target_mhz", "critical_path", "critical_unit", "dsp_mapping",
     "synth_seconds", "pnr_seconds", "total_seconds", "cached", "message"}

``status`` is ``routed`` or ``does-not-fit``; seconds are those of the original build even
when the report comes from the cache (``cached``). Progress goes to standard error.

Usage: ``python benchmarks/resources.py [--out DIR] [--sizes 4 8 16] [--boards ulx3s-85f]
[--tops accel array] [--precisions W4A8 W8A8] [--dsp-budget N] [--dw-taps T] [--router R]
[--timeout S] [--force]``. The 16x16
ECP5 builds take many minutes each (nextpnr is single-threaded): run them in the background.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from lowbit.boards import ROUTERS, BuildError, build, get_board
from lowbit.config import AccelConfig

#: (board, top, precisions) in run order.
PLAN = (
    ("icebreaker", "array", ((2, 8), (4, 8))),
    ("icebreaker", "accel", ((2, 8), (4, 8))),
    ("ulx3s-85f", "accel", ((4, 8), (8, 8))),
)
DEFAULT_SIZES = (4, 8, 16)


def config_for(rows: int, weight_bits: int, act_bits: int,
               dw_taps: int | None = None) -> AccelConfig:
    return AccelConfig(rows=rows, cols=rows, weight_bits=weight_bits, act_bits=act_bits,
                       bus_bits=max(32, 8 * rows),
                       dw_taps=None if dw_taps is None else min(dw_taps, rows))


def parse_precision(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"[wW](\d+)[aA](\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"precision must look like W4A8, not {text!r}")
    return int(m.group(1)), int(m.group(2))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def row(board: str, top: str, cfg: AccelConfig, report, error: BuildError | None) -> dict:
    res = report.resources if report is not None else {}

    def used(name):
        return res.get(name, {}).get("used")

    cp = report.critical_path if report is not None else None
    secs = report.seconds if report is not None else {}
    return {
        "board": board, "top": top, "config": cfg.name, "rows": cfg.rows,
        "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits, "dw_taps": cfg.fir_taps,
        "status": report.status if report is not None else "error",
        "resource_source": report.resource_source if report is not None else None,
        "logic": used("logic"), "logic_unit": res.get("logic", {}).get("unit"),
        "ffs": used("ffs"), "dsps": used("dsps"), "dsp_unit": res.get("dsps", {}).get("unit"),
        "bram": used("bram"), "bram_unit": res.get("bram", {}).get("unit"),
        "fmax_mhz": report.fmax_mhz if report is not None else None,
        "target_mhz": cfg.clock_mhz,
        "critical_path": f"{cp['from']} -> {cp['to']}" if cp else None,
        "critical_unit": cp["unit"] if cp else None,
        "critical_logic_ns": cp["logic_ns"] if cp else None,
        "critical_routing_ns": cp["routing_ns"] if cp else None,
        "dsp_mapping": report.dsp_mapping if report is not None else None,
        "router": report.router if report is not None else None,
        "synth_seconds": secs.get("synth"), "pnr_seconds": secs.get("pnr"),
        "total_seconds": secs.get("total"),
        "cached": bool(report is not None and report.cached),
        "message": str(error) if error is not None else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="lowbit-out/bench-resources", metavar="DIR",
                        help="build folder (builds are cached there)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    parser.add_argument("--boards", nargs="+", default=None, metavar="BOARD")
    parser.add_argument("--tops", nargs="+", default=None, metavar="TOP")
    parser.add_argument("--precisions", nargs="+", type=parse_precision, default=None,
                        metavar="WxAy", help="override each board's precisions")
    parser.add_argument("--dsp-budget", type=int, default=None, metavar="N",
                        help="cap the DSP blocks of every build (default: the device's)")
    parser.add_argument("--router", choices=ROUTERS, default="auto",
                        help="nextpnr router (default: auto, router2 above half the device)")
    parser.add_argument("--dw-taps", type=int, default=None, metavar="T",
                        help="depthwise FIR taps of every config (default: cols; 0: none)")
    parser.add_argument("--force", action="store_true", help="rebuild cached builds")
    parser.add_argument("--timeout", type=float, default=3600.0, metavar="S",
                        help="bound on each tool run, seconds (default 3600)")
    args = parser.parse_args(argv)

    def budget(board):
        if args.dsp_budget is None:
            return None
        return min(args.dsp_budget, get_board(board).resources.dsps)

    for board, top, precisions in PLAN:
        if args.boards and board not in args.boards or args.tops and top not in args.tops:
            continue
        for rows in args.sizes:
            for wb, ab in args.precisions or precisions:
                cfg = config_for(rows, wb, ab, args.dw_taps)
                log(f"{board} {top} {rows}x{rows} W{wb}A{ab} taps {cfg.fir_taps} ({cfg.name})")
                t = time.monotonic()
                try:
                    report, error = build(board, cfg, out_dir=args.out, top=top,
                                          dsp_budget=budget(board), router=args.router,
                                          force=args.force, timeout=args.timeout,
                                          progress=log), None
                except BuildError as exc:
                    report, error = exc.report, exc
                line = row(board, top, cfg, report, error)
                line["wall_seconds"] = round(time.monotonic() - t, 3)
                print(json.dumps(line, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
