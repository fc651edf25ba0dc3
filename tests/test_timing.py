"""The cycle simulator's timing equals the RTL's, edge for edge, on random programs.

Random deadlock-free programs exercise every unit, SYNC, token waits, full queues, bursts
split at 4 KiB and every store packing case (line = beat, line > beat, line < beat). The
RTL runs under amaranth.sim here (no build needed); tests/test_e2e.py repeats the check on
compiled models through Verilator.
"""

import pytest

from lowbit.config import PRESETS, AccelConfig
from lowbit.sim.cycle import simulate_timing

from amaranth_top import run_top
from randprog import random_program

SMALL = dict(act_depth=256, weight_tiles=4, acc_depth=128, param_depth=8, mem_bytes=1 << 20)
CONFIGS = {
    "tiny": PRESETS["tiny"],
    "4x4-w3-b64-q2": AccelConfig(rows=4, cols=4, weight_bits=3, bus_bits=64, queue_depth=2,
                                 fetch_burst=2, max_burst=4, **SMALL),
    "2x2-w2-b256": AccelConfig(rows=2, cols=2, weight_bits=2, bus_bits=256, queue_depth=4,
                               fetch_burst=2, max_burst=8, **SMALL),
    "8x8-w4-b32": AccelConfig(rows=8, cols=8, weight_bits=4, bus_bits=32, queue_depth=2,
                              fetch_burst=1, max_burst=3, **SMALL),
    "8x8-w8-b64": AccelConfig(rows=8, cols=8, weight_bits=8, bus_bits=64, **SMALL),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", range(4))
def test_sim_cycles_equal_rtl_cycles(name, seed):
    cfg = CONFIGS[name]
    prog = random_program(cfg, seed * 31 + len(name), length=28)
    latency = 3 + 5 * seed
    _, rtl = run_top(cfg, prog.memory_image(), prog.prog_addr, len(prog.instrs),
                     latency=latency)
    cycles, counters = simulate_timing(prog, mem_latency=latency)
    assert rtl["status"] == 0b010          # done, not busy, no error
    assert rtl["instrs"] == len(prog.instrs)
    assert cycles == rtl["cycles"]
