"""The cycle simulator's timing equals the RTL's, edge for edge, on random programs.

Random deadlock-free programs exercise every unit, SYNC, token waits, full queues, bursts
split at 4 KiB and every store packing case (line = beat, line > beat, line < beat). The
RTL runs under amaranth.sim here (no build needed); tests/test_e2e.py repeats the check on
compiled models through Verilator.
"""

import pytest

from lowbit import isa
from lowbit.config import PRESETS, AccelConfig
from lowbit.isa import Opcode, Unit
from lowbit.program import Program
from lowbit.sim.cycle import simulate_timing
from lowbit.timing import (
    LOAD_BURSTS_OUTSTANDING,
    LOAD_OUTSTANDING,
    STORE_INFLIGHT,
    STORE_STAGES,
)

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


#: Long fetch groups and queues, so dispatch outruns the memory latency and the load unit
#: runs out of in-flight LOAD slots.
WIDE_FETCH = {"4x4-b64-fb32-q16": AccelConfig(rows=4, cols=4, bus_bits=64, queue_depth=16,
                                              fetch_burst=32, max_burst=2, **SMALL)}


@pytest.mark.parametrize("name", sorted(CONFIGS) + sorted(WIDE_FETCH))
@pytest.mark.parametrize("seed", range(3))
def test_overlapping_loads_sim_cycles_equal_rtl_cycles(name, seed):
    """Runs of back-to-back LOADs to different targets, with tokens, keep several LOADs in
    flight (up to LOAD_OUTSTANDING); memory latencies from 1 to 41."""
    cfg = {**CONFIGS, **WIDE_FETCH}[name]
    prog = random_program(cfg, 1000 + seed * 17 + len(name), length=16, load_runs=True)
    latency = (1, 13, 41)[seed]
    events = []
    cycles, _ = simulate_timing(prog, mem_latency=latency, events=events)
    loads = [ev for ev in events if prog.instrs[ev[0]].opcode == Opcode.LOAD]
    assert any(b[2] <= a[5] for a, b in zip(loads, loads[1:], strict=False)), "no overlap"
    _, rtl = run_top(cfg, prog.memory_image(), prog.prog_addr, len(prog.instrs),
                     latency=latency)
    assert rtl["status"] == 0b010
    assert rtl["instrs"] == len(prog.instrs)
    assert cycles == rtl["cycles"]


@pytest.mark.parametrize("latency", [2, 30])
def test_load_slots_bound_loads_in_flight(latency):
    """Many one-beat LOADs: once LOAD_OUTSTANDING are in flight the next one starts on the
    edge after the oldest completes (latency 30), or they never fill up (latency 2)."""
    cfg = WIDE_FETCH["4x4-b64-fb32-q16"]
    n = 2 * LOAD_OUTSTANDING + 3
    instrs = [isa.make(Opcode.LOAD, target=k % 3, sp_addr=k, rows=1, row_beats=1,
                       dram_addr=4096 + 64 * k, stride=0, push_next=int(k == n - 1))
              for k in range(n)]
    instrs += [isa.make(Opcode.SYNC, unit=Unit.COMPUTE, pop_prev=1), isa.make(Opcode.END)]
    prog = Program(config=cfg, instrs=instrs, segments=[], inputs=[], outputs=[])
    events = []
    cycles, _ = simulate_timing(prog, mem_latency=latency, events=events)
    starts, ends = [ev[2] for ev in events[:n]], [ev[5] for ev in events[:n]]
    assert starts[1:] == [s + 1 for s in starts[:-1]] or latency > 20
    if latency > 20:
        assert starts[LOAD_OUTSTANDING] == ends[0] + 1
    _, rtl = run_top(cfg, prog.memory_image(), prog.prog_addr, len(prog.instrs),
                     latency=latency)
    assert rtl["status"] == 0b010
    assert cycles == rtl["cycles"]


@pytest.mark.parametrize("latency", [20, 45])
def test_burst_slots_bound_bursts_in_flight(latency):
    """LOADs of one-beat rows (one burst per beat) and a 4 KiB-split LOAD: at latency 45 more
    than LOAD_BURSTS_OUTSTANDING bursts would be in flight, so ARs wait for burst slots."""
    cfg = WIDE_FETCH["4x4-b64-fb32-q16"]
    B = cfg.beat_bytes
    shapes = [(LOAD_BURSTS_OUTSTANDING + 20, 1, 4096 + 8, 3 * B), (2, 5, 8192 - 2 * B, 4096),
              (LOAD_BURSTS_OUTSTANDING - 3, 1, 64, 8 * B), (1, 9, 4096 * 3 - B, 0)]
    instrs = [isa.make(Opcode.LOAD, target=0, sp_addr=0, rows=rows, row_beats=rb,
                       dram_addr=addr, stride=stride, push_next=1)
              for rows, rb, addr, stride in shapes]
    instrs += [isa.make(Opcode.SYNC, unit=Unit.COMPUTE, pop_prev=1) for _ in shapes]
    instrs.append(isa.make(Opcode.END))
    prog = Program(config=cfg, instrs=instrs, segments=[], inputs=[], outputs=[])
    cycles, _ = simulate_timing(prog, mem_latency=latency)
    _, rtl = run_top(cfg, prog.memory_image(), prog.prog_addr, len(prog.instrs),
                     latency=latency)
    assert rtl["status"] == 0b010
    assert cycles == rtl["cycles"]


#: Deep fetch so that STOREs reach the store unit faster than they complete.
STREAM = dict(SMALL, queue_depth=8, fetch_burst=16)


@pytest.mark.parametrize("shape", [(4, 32), (2, 256), (8, 32)])   # line =, <, > beat
def test_store_stream_overlaps_write_responses(shape):
    """Mostly short STOREs (plus SYNCs on the store unit and the computes that feed their
    tokens) with a long memory latency: STOREs start while earlier ones wait for their B
    responses, up to the in-flight limit."""
    n, bus = shape
    cfg = AccelConfig(rows=n, cols=n, weight_bits=4, bus_bits=bus, max_burst=4, **STREAM)
    name = f"{n}x{bus}"
    prog = random_program(cfg, 7 + len(name), length=40, max_store_rows=2,
                          kinds=("store",) * 6 + ("compute", "sync"))
    latency = 90
    events = []
    cycles, _ = simulate_timing(prog, mem_latency=latency, events=events)
    stores = [e for e in events if prog.instrs[e[0]].opcode == Opcode.STORE]
    # The in-flight limit binds somewhere: a STORE starts right after the completion of
    # the STORE STORE_INFLIGHT before it.
    pairs = zip(stores[:-STORE_INFLIGHT], stores[STORE_INFLIGHT:], strict=True)
    assert any(b[2] == a[5] + 1 for a, b in pairs)
    _, rtl = run_top(cfg, prog.memory_image(), prog.prog_addr, len(prog.instrs),
                     latency=latency)
    assert rtl["status"] == 0b010
    assert rtl["instrs"] == len(prog.instrs)
    assert cycles == rtl["cycles"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_2d_stores_sim_cycles_equal_rtl_cycles(name):
    """Programs rich in 2-D STOREs (up to 8 groups, pitches from 0 up, groups split at
    4 KiB) on every bus / line ratio: the simulator's one-fill timing is the RTL's."""
    cfg = CONFIGS[name]
    prog = random_program(cfg, 500 + len(name), length=24, max_store_reps=8,
                          kinds=("store",) * 4 + ("compute", "load", "sync"))
    line = cfg.out_line_bits // 8
    stores = [i for i in prog.instrs if i.opcode == Opcode.STORE]
    assert sum(i.reps_m1 >= 2 for i in stores) >= 3
    assert any(i.reps_m1 and any((i.dram_addr + g * i.dram_pitch * line) % 4096
                                 + i.rows * line > 4096 for g in range(1, i.reps_m1 + 1))
               for i in stores)
    latency = 11
    _, rtl = run_top(cfg, prog.memory_image(), prog.prog_addr, len(prog.instrs),
                     latency=latency)
    cycles, _ = simulate_timing(prog, mem_latency=latency)
    assert rtl["status"] == 0b010
    assert rtl["instrs"] == len(prog.instrs)
    assert cycles == rtl["cycles"]


@pytest.mark.parametrize("shape", [(4, 32), (2, 256), (8, 32)])   # line =, <, > beat
def test_2d_store_fills_the_pipeline_once(shape):
    """On the RTL a 2-D STORE of 6 groups (across a 4 KiB boundary) takes exactly as long
    as one 1-D STORE of all its lines, and at least (reps - 1) * (STORE_STAGES + 1) cycles
    less than one 1-D STORE per group."""
    n, bus = shape
    cfg = AccelConfig(rows=n, cols=n, weight_bits=4, bus_bits=bus, max_burst=4, **STREAM)
    line, lpb = cfg.out_line_bits // 8, max(1, bus // cfg.out_line_bits)
    rows, reps, pitch = 2 * lpb, 6, 5 * lpb
    base = 4096 * 3 - 2 * pitch * line
    common = dict(param_addr=1, out_bits=8, acc_addr=3)
    variants = {
        "2d": [isa.make(Opcode.STORE, rows=rows, reps_m1=reps - 1, acc_pitch=rows + 1,
                        dram_pitch=pitch, dram_addr=base, **common)],
        "1d": [isa.make(Opcode.STORE, rows=rows * reps, dram_addr=base, **common)],
        "rows": [isa.make(Opcode.STORE, rows=rows, dram_addr=base + g * pitch * line,
                          **common) for g in range(reps)],
    }
    got = {}
    for key, stores in variants.items():
        instrs = stores + [isa.make(Opcode.END)]
        prog = Program(config=cfg, instrs=instrs, segments=[], inputs=[], outputs=[])
        _, rtl = run_top(cfg, prog.memory_image(), prog.prog_addr, len(instrs), latency=7)
        assert rtl["status"] == 0b010
        assert simulate_timing(prog, mem_latency=7)[0] == rtl["cycles"]
        got[key] = rtl["cycles"]
    assert got["2d"] == got["1d"]
    # (the six 1-D STOREs also take longer to fetch)
    assert got["rows"] - got["2d"] >= (reps - 1) * (STORE_STAGES + 1)
