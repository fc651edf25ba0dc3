#!/usr/bin/env python3
"""What an ECP5 multiply costs in a clock period with and without the DSP's own registers.

One MULT18X18D (a PE's 9-bit activation times an 8-bit weight, signed) between fabric
flip-flops that feed it and a 17-bit accumulator it feeds, placed and routed alone on the
LFE5U-85F (YoWASP yosys + nextpnr, seed 1), four ways: the block's input and output
registers off (what yosys' ``synth_ecp5`` infers from ``$mul``: the fabric registers around
it make one FF -> DSP -> FF path), input registers on, output register on, both. Prints one
JSON object per variant: ``{"variant", "reg_input", "reg_output", "fmax_mhz", "latency"}``
(``latency``: cycles from the operand flip-flops to the accumulator).

It shows the ceiling the DSP-mapped multipliers (PEs, the compute unit's scaling, the store
unit's partial products) put on the whole accelerator while they are inferred without
their registers (see docs/boards.md, "What limits Fmax").

Usage: ``python benchmarks/dsp_regs.py [--out DIR]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from lowbit.boards.build import _run

VARIANTS = (("none", False, False), ("input", True, False), ("output", False, True),
            ("both", True, True))


def verilog(reg_input: bool, reg_output: bool) -> str:
    clk = {True: '"CLK0"', False: '"NONE"'}
    a = ",".join(f".A{i}(a[{min(i, 8)}])" for i in range(18))
    b = ",".join(f".B{i}(b[{min(i, 7)}])" for i in range(18))
    p = ",".join(f".P{i}(p[{i}])" for i in range(17))
    return f"""module top(input clk, input [8:0] a_in, input [7:0] b_in, output reg [16:0] acc);
  reg [8:0] a; reg [7:0] b; wire [16:0] p;
  always @(posedge clk) begin a <= a_in; b <= b_in; acc <= acc + p; end
  MULT18X18D #(.REG_INPUTA_CLK({clk[reg_input]}), .REG_INPUTB_CLK({clk[reg_input]}),
               .REG_OUTPUT_CLK({clk[reg_output]}), .GSR("DISABLED"))
    m ({a}, {b}, {p}, .SIGNEDA(1'b1), .SIGNEDB(1'b1), .SOURCEA(1'b0), .SOURCEB(1'b0),
       .CLK0(clk), .CE0(1'b1), .RST0(1'b0));
endmodule
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="keep the builds here (default: a temp dir)")
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="lowbit-dsp-"))
    for name, reg_in, reg_out in VARIANTS:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "top.v").write_text(verilog(reg_in, reg_out))
        (d / "synth.ys").write_text("read_verilog -lib +/ecp5/cells_bb.v\nread_verilog top.v\n"
                                    "synth_ecp5 -top top -json top.json\n")
        if _run("yosys", ["-q", "synth.ys"], cwd=d, log="yosys.log", timeout=600) != 0:
            print(f"yosys failed, see {d / 'yosys.log'}", file=sys.stderr)
            return 1
        if _run("nextpnr-ecp5", ["--85k", "--package", "CABGA381", "--json", "top.json",
                                 "--freq", "400", "--seed", "1", "--timing-allow-fail"],
                cwd=d, log="nextpnr.log", timeout=600) != 0:
            print(f"nextpnr failed, see {d / 'nextpnr.log'}", file=sys.stderr)
            return 1
        found = re.findall(r"Max frequency for clock [^:]*: ([0-9.]+) MHz",
                           (d / "nextpnr.log").read_text())
        print(json.dumps({"variant": name, "reg_input": reg_in, "reg_output": reg_out,
                          "fmax_mhz": float(found[-1]) if found else None,
                          "latency": 1 + reg_in + reg_out}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
