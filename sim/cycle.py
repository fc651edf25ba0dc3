"""The cycle-accurate simulator: exact RTL cycle counts at transaction level.

The simulator never steps a clock. It walks the program once, in program order, and
computes for every instruction the clock edge at which it is dispatched, starts (takes its
tokens) and completes (gives its tokens), from closed-form latencies of each unit
(:class:`Timing`, derived from the same config the hardware is generated from). The walk is
exact because every dependency points backwards in program order: a queue slot frees when
an earlier instruction of the same unit starts, and a token is given by an earlier
instruction (the compiler's invariant; a program that breaks it deadlocks the hardware and
is refused here).

Outputs come from the functional interpreter (:mod:`lowbit.sim.reference`), which is exact
for race-free programs. Latency model, per unit (``L`` = memory latency, edges counted from
the CTRL write that starts the program; see ``docs/architecture.md``):

* fetch: AR two edges after the previous group's last dispatch (edge ``s+2`` for the first
  group); the group's beats arrive from ``L`` edges later; one dispatch per edge, waiting
  while the target queue is full.
* load (up to ``LOAD_OUTSTANDING`` LOADs and ``LOAD_BURSTS_OUTSTANDING`` bursts in flight):
  a LOAD starts at ``S`` >= dispatch + 1, >= the edge registering the previous LOAD's last
  AR, >= completion + 1 of the LOAD ``LOAD_OUTSTANDING`` back. Its bursts (in program
  order over all LOADs: ``n_j`` beats) register their AR at ``g_j = max(S + 1, e_{j-K} +
  1)`` (its first) or ``max(g_{j-1} + 1, e_{j-K} + 1)`` (``K`` = burst slots); the AR is at
  ``g_j + 1``; the last beat at ``e_j = max(g_j + 1 + L, e_{j-1} + 1) + n_j - 1``. It
  completes at its last burst's ``e_j``. Without waits: ``max(S + L + beats + 1, E' +
  beats)``. A SYNC starts >= every LOAD's completion + 1 and completes one edge later;
  the next start is one edge after that.
* compute: preload start ``P`` >= dispatch + 1 and previous hand-off + 1; hand-off
  ``X >= P + nw + 2``, >= the previous instruction's last row, >= the last row of the
  tile two before + ``bank_wait`` + 1; rows issue at ``X+1 .. X+rows`` (a depthwise
  COMPUTE reads ``dw_reach`` more lines after them, holding S as long); completes
  ``result`` edges after its last row ``X + rows``.
* store: start ``S`` >= dispatch + 1 and >= the previous STORE's last W beat ``S' + F +
  max(beats', lines')`` with ``F = STORE_STAGES + 1`` (``lines = reps * rows`` over all
  groups of a 2-D STORE, ``beats`` their bus beats: one pipeline fill per STORE); completes
  at ``S + F + max(beats, lines) + L`` (its last B response), in order; at most
  ``STORE_INFLIGHT`` STOREs started and not completed; a SYNC starts after every earlier
  STORE completed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from lowbit.executors import RunResult
from lowbit.isa import Opcode, Unit
from lowbit.program import Program, ProgramError
from lowbit.timing import (
    LOAD_BURSTS_OUTSTANDING,
    LOAD_OUTSTANDING,
    STORE_INFLIGHT,
    STORE_STAGES,
    compute_timing,
)

from .reference import run_reference

__all__ = ["Timing", "run_cycle_sim", "simulate_timing"]


@dataclass(frozen=True)
class Timing:
    """Every fixed latency of the hardware for one config and memory latency."""

    mem_latency: int
    weight_tile_beats: int
    result: int          # activation read -> accumulator write
    bank_wait: int       # last read of a tile -> its bank may be reloaded
    queue_depth: int
    fetch_burst: int
    instr_beats_num: int  # beats for n instructions = ceil(n * num / den)
    instr_beats_den: int
    out_line_bits: int
    bus_bits: int

    @classmethod
    def of(cls, cfg, mem_latency: int) -> Timing:
        ct = compute_timing(cfg)
        return cls(mem_latency=mem_latency, weight_tile_beats=cfg.weight_tile_beats,
                   result=ct["result"], bank_wait=ct["bank_wait"],
                   queue_depth=cfg.queue_depth, fetch_burst=cfg.fetch_burst,
                   instr_beats_num=128, instr_beats_den=cfg.bus_bits,
                   out_line_bits=cfg.out_line_bits, bus_bits=cfg.bus_bits)

    def fetch_beats(self, n: int) -> int:
        return -(-n * self.instr_beats_num // self.instr_beats_den)


def _burst_splitter(cfg):
    """``bursts(ins)``: the beat counts of the bursts a LOAD issues, in order (rows split into
    bursts of at most ``max_burst`` beats that never cross a 4 KiB boundary), memoised per
    shape."""
    B, MB = cfg.beat_bytes, cfg.max_burst
    cache: dict[tuple[int, int, int, int], tuple[int, ...]] = {}

    def bursts(ins) -> tuple[int, ...]:
        key = (ins.dram_addr % 4096, ins.stride % 4096, ins.rows, ins.row_beats)
        out = cache.get(key)
        if out is None:
            out = []
            for r in range(ins.rows):
                addr, left = (key[0] + r * key[1]) % 4096, ins.row_beats
                while left:
                    n = min(left, MB, (4096 - addr % 4096) // B)
                    out.append(n)
                    addr, left = addr + n * B, left - n
            out = cache[key] = tuple(out)
        return out

    return bursts


class _Tokens:
    """Give edges of one counter, matched in order to takes."""

    def __init__(self, name):
        self.name, self.gives, self.takes = name, [], 0

    def take_edge(self, index: int) -> int:
        if self.takes >= len(self.gives):
            raise ProgramError(f"instruction {index} waits for a {self.name} token that no "
                               f"earlier instruction gives: the hardware would deadlock")
        edge = self.gives[self.takes] + 1
        self.takes += 1
        return edge


def simulate_timing(program: Program, *, mem_latency: int,
                    events: list | None = None) -> tuple[int, dict]:
    """``(cycles, counters)`` of ``program`` on its config's hardware.

    With ``events`` (a list), appends one ``(index, unit, start, busy_from, busy_to, end)``
    per executed instruction: the edge it took its tokens, the edges its unit was busy with
    it (for COMPUTE: the rows streamed) and the edge it completed."""
    cfg = program.config
    tm = Timing.of(cfg, mem_latency)
    L, Q, FB = tm.mem_latency, tm.queue_depth, tm.fetch_burst
    tok = {k: _Tokens(k) for k in ("load->compute", "compute->load", "compute->store",
                                   "store->compute")}
    pops: dict[Unit, list[int]] = {u: [] for u in Unit}
    counters = {k: 0 for k in (
        "load_busy", "compute_busy", "store_busy", "load_wait", "compute_wait", "store_wait",
        "dram_read_bytes", "dram_write_bytes", "imem_read_bytes", "macs", "compute_rows",
        "dispatch_stall")}

    s = 0                       # edge of the CTRL write
    load_free = compute_pfree = store_free = 0
    store_ends: list[int] = []  # completion edges of STOREs, in order
    s_free = 0                  # compute S stage accepts a hand-off at this edge or later
    last_rows: list[int] = []   # last-row edges of COMPUTE tiles, in order
    load_idle = compute_idle = store_idle = 0
    load_r_end = -1             # edge of the last R beat of the latest LOAD
    load_ends: list[int] = []   # completion edges of the LOADs, in order
    load_bursts = _burst_splitter(cfg)
    KB = LOAD_BURSTS_OUTSTANDING
    burst_ends: deque[int] = deque(maxlen=KB)   # last-beat edges of the latest KB bursts
    n = len(program.instrs)
    group_end = -1
    next_attempt = 0
    fetch_start = s             # edge at which FETCH state is entered
    d_end = None
    for i, ins in enumerate(program.instrs):
        if i > group_end:        # fetch a new group
            count = min(FB, n - i)
            beats = tm.fetch_beats(count)
            ar = fetch_start + 2
            next_attempt = ar + L + beats
            group_end = i + count - 1
            counters["imem_read_bytes"] += beats * cfg.beat_bytes
        if ins.opcode == Opcode.END:
            d_end = next_attempt
            break
        unit = ins.unit
        k = len(pops[unit])
        d = next_attempt
        if k >= Q:
            d = max(d, pops[unit][k - Q] + 1)
        counters["dispatch_stall"] += d - next_attempt
        next_attempt = d + 1
        if i == group_end:
            fetch_start = d
        if unit == Unit.LOAD:
            load = ins.opcode == Opcode.LOAD
            ready = max(d + 1, load_free)
            if not load:                            # a SYNC waits for every LOAD in flight
                ready = max(ready, load_r_end + 1)
            elif len(load_ends) >= LOAD_OUTSTANDING:   # a free descriptor FIFO entry
                ready = max(ready, load_ends[-LOAD_OUTSTANDING] + 1)
            start = ready
            if ins.pop_next:
                start = max(start, tok["compute->load"].take_edge(i))
            counters["load_wait"] += start - ready
            if load:
                beats = ins.rows * ins.row_beats
                g = start               # edge registering the burst's AR (AR one edge later)
                for blen in load_bursts(ins):
                    g += 1
                    if len(burst_ends) == KB:        # a burst slot frees at its last beat
                        g = max(g, burst_ends[0] + 1)
                    load_r_end = max(g + 1 + L, load_r_end + 1) + blen - 1
                    burst_ends.append(load_r_end)
                end = load_r_end
                load_ends.append(end)
                load_free = g
                counters["dram_read_bytes"] += beats * cfg.beat_bytes
            else:
                end = start + 1
                load_free = start + 2
            busy = (start, end)
            counters["load_busy"] += max(end + 1, load_idle) - max(start, load_idle)
            load_idle = max(load_idle, end + 1)
            if ins.push_next:
                tok["load->compute"].gives.append(end)
        elif unit == Unit.COMPUTE:
            ready = max(d + 1, compute_pfree)
            start = ready
            if ins.pop_prev:
                start = max(start, tok["load->compute"].take_edge(i))
            if ins.pop_next:
                start = max(start, tok["store->compute"].take_edge(i))
            counters["compute_wait"] += start - ready
            sync = ins.opcode == Opcode.SYNC
            x = max(start + (1 if sync else tm.weight_tile_beats + 2), s_free)
            if not sync and len(last_rows) >= 2:
                x = max(x, last_rows[-2] + tm.bank_wait + 1)
            rows = 1 if sync else ins.rows
            tail = 0 if sync else ins.dw_reach * ins.depthwise
            last = x + rows + tail
            busy = (x + 1, last)
            s_free = last
            compute_pfree = x + 1
            end = x + rows + tm.result
            if sync:
                compute_idle = max(compute_idle,
                                   end + 1 if (ins.push_prev or ins.push_next) else x + 2)
            else:
                last_rows.append(last)
                compute_idle = max(compute_idle, end + 1)
                counters["macs"] += rows * cfg.rows * cfg.cols
                counters["compute_rows"] += rows
                counters["compute_busy"] += rows + tail
            if ins.push_prev:
                tok["compute->load"].gives.append(end)
            if ins.push_next:
                tok["compute->store"].gives.append(end)
        else:
            ready = max(d + 1, store_free)
            if ins.opcode == Opcode.STORE:
                if len(store_ends) >= STORE_INFLIGHT:
                    ready = max(ready, store_ends[-STORE_INFLIGHT] + 1)
            elif store_ends:
                ready = max(ready, store_ends[-1] + 1)
            start = ready
            if ins.pop_prev:
                start = max(start, tok["compute->store"].take_edge(i))
            counters["store_wait"] += start - ready
            if ins.opcode == Opcode.STORE:
                lines = (ins.reps_m1 + 1) * ins.rows       # every group, one pipeline fill
                beats = lines * tm.out_line_bits // tm.bus_bits
                # The next STORE may start on the edge of this one's last W beat.
                store_free = start + STORE_STAGES + 1 + max(beats, lines)
                end = store_free + L
                store_ends.append(end)
                busy = (start, store_free - 1)
                counters["dram_write_bytes"] += beats * cfg.beat_bytes
            else:
                end = start + 1
                store_free = start + 2
                busy = (start, end)
            counters["store_busy"] += store_free - start
            store_idle = max(store_idle, end + 1)
            if ins.push_prev:
                tok["store->compute"].gives.append(end)
        pops[unit].append(start)
        if events is not None:
            events.append((i, unit, start, busy[0], busy[1], end))
    if d_end is None:
        raise ProgramError("program has no END")
    done = max(d_end + 1, load_idle, compute_idle, store_idle)
    for t in tok.values():
        if t.takes != len(t.gives):
            counters.setdefault("unbalanced_tokens", 0)
            counters["unbalanced_tokens"] += len(t.gives) - t.takes
    counters["instrs"] = n
    cycles = done - s
    return cycles, counters


def run_cycle_sim(program: Program, inputs, *, mem_latency: int) -> RunResult:
    cycles, counters = simulate_timing(program, mem_latency=mem_latency)
    functional = run_reference(program, inputs)
    return RunResult(outputs=functional.outputs, cycles=cycles, counters=counters)
